"""Scale-out: DDP training over shards sees every sample once and reduces metrics across ranks.

Two processes (``tests/ddp_worker.py``, one per rank, started the way torchrun or SLURM
would: ``LOCAL_RANK`` etc. set, so Lightning launches nothing) train
:class:`SegmentationTask` for one epoch with Lightning's ``ddp`` strategy on CPU (gloo),
with the data read in the main process and with two loader workers per rank. Each rank
writes what it saw; the tests check the records against the shard sets and against a
single-process computation.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from aras400k.data.shards import iter_raw_samples, shard_paths
from aras400k.metrics.segmentation import SegmentationMetrics
from tests.conftest import write_random_set

WORKER = Path(__file__).with_name("ddp_worker.py")
TIMEOUT_S = 150
SIZE = 32
# 24 train samples in shards of 5 (5,5,5,5,4), so rank and worker slices cut through shards.
# 13 validation samples: ranks get 6 and 7, unequal shares and batch counts.
N_TRAIN, N_VAL = 24, 13
# (loader workers per rank, batch size). 2 ranks x 2 workers cut the train set into 4
# slices of 6: whole batches of 3, but with batches of 4 every worker ends on a partial one.
IN_PROCESS, WORKERS, PARTIAL_BATCHES = (0, 3), (2, 3), (2, 4)
CONFIGS = (IN_PROCESS, WORKERS, PARTIAL_BATCHES)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(train: Path, val: Path, out: Path, attempts: int = 2) -> None:
    """Run both ranks to the end; fail with a rank's log if one fails.

    A launch in which both ranks are still alive at the timeout is a hang, not a failure
    of the code under test (seen once in many runs: a DataLoader worker forked from a
    rank deadlocked on a lock another thread held at the fork); it is killed and
    started again once. A rank that exits with an error fails the test at once.
    """
    for _ in range(attempts - 1):
        if _launch_once(train, val, out):
            return
        warnings.warn(f"DDP ranks hung for {TIMEOUT_S} s; launching them again", RuntimeWarning, stacklevel=2)
    if not _launch_once(train, val, out):
        pytest.fail(f"DDP ranks hung for {TIMEOUT_S} s in {attempts} launches; see {out}/rank*.log")


def _launch_once(train: Path, val: Path, out: Path) -> bool:
    """One launch; ``False`` when both ranks were still running at the timeout (killed), else ``True``."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
    }
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback whatever the hostname resolves to
    command = [sys.executable, str(WORKER), str(train), str(val), str(out), *(f"{nw}:{bs}" for nw, bs in CONFIGS)]
    procs, logs = [], []
    hung = False
    try:
        for rank in range(2):
            logs.append((out / f"rank{rank}.log").open("w"))
            rank_env = {**env, "LOCAL_RANK": str(rank), "RANK": str(rank)}
            procs.append(
                subprocess.Popen(
                    command, env=rank_env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        # Stop at the first failure: the other rank would wait for it until the timeout.
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
        hung = all(p.poll() is None for p in procs)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the rank and any loader worker it forked
            proc.wait()
        for log in logs:
            log.close()
    if hung:
        return False
    # Report the rank that failed first (a killed partner exits with -9).
    for rank, proc in sorted(enumerate(procs), key=lambda item: item[1].returncode == -signal.SIGKILL):
        if proc.returncode != 0:
            tail = (out / f"rank{rank}.log").read_text()[-4000:]
            pytest.fail(f"DDP rank {rank} exited with {proc.returncode} (timeout {TIMEOUT_S} s); its log ends:\n{tail}")
    return True


def _record(stem: Path) -> dict[str, Any]:
    return {**json.loads(stem.with_suffix(".json").read_text()), **torch.load(stem.with_suffix(".pt"))}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Shard sets, and both ranks' records for every configuration."""
    root = tmp_path_factory.mktemp("ddp")
    train = write_random_set(root / "train", N_TRAIN, size=SIZE, per_shard=5, prefix="t")
    val = write_random_set(root / "val", N_VAL, size=SIZE, split="val", per_shard=3, prefix="v")
    out = root / "out"
    out.mkdir()
    _launch(train, val, out)
    records = {
        config: [_record(out / f"{config[0]}x{config[1]}_rank{rank}") for rank in range(2)] for config in CONFIGS
    }
    return {"train": train, "val": val, "records": records}


def _keys(shard_set: Path) -> list[str]:
    """Every key of a shard set, read straight from its shards."""
    return [raw["__key__"] for shard in shard_paths(shard_set) for raw in iter_raw_samples(shard)]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    "config",
    [
        IN_PROCESS,
        WORKERS,
        PARTIAL_BATCHES,  # each worker ends on its own partial batch: len(loader) must count them all
    ],
    ids=["in_process", "2_workers", "2_workers_partial_batches"],
)
def test_ranks_see_disjoint_samples_covering_each_set_once(ddp_run, config):
    rank0, rank1 = ddp_run["records"][config]
    assert (rank0["rank"], rank1["rank"], rank0["world_size"]) == (0, 1, 2)
    for stage, shard_set in (("train", ddp_run["train"]), ("val", ddp_run["val"])):
        keys0, keys1 = rank0[f"{stage}_keys"], rank1[f"{stage}_keys"]
        assert len(keys0) == len(set(keys0)) and len(keys1) == len(set(keys1)), f"{stage}: a rank repeats a sample"
        assert not set(keys0) & set(keys1), f"{stage}: both ranks saw {sorted(set(keys0) & set(keys1))}"
        expected = _keys(shard_set)
        assert sorted(keys0 + keys1) == sorted(expected), (
            f"{stage}: no rank saw {sorted(set(expected) - set(keys0 + keys1))}"
        )
        # Each rank's len(), from which Lightning counts its batches, is what it yields.
        assert (len(keys0), len(keys1)) == (rank0[f"{stage}_len"], rank1[f"{stage}_len"])


@pytest.mark.parametrize("config", [IN_PROCESS, WORKERS], ids=["in_process", "2_workers"])
def test_metrics_are_reduced_across_ranks(ddp_run, config):
    rank0, rank1 = ddp_run["records"][config]
    # Every epoch-level value is the same on both ranks, the loss included.
    logged = {k for k in rank0["metrics"] if k.startswith(("val_", "train_")) and not k.endswith("_step")}
    assert {"val_f1_macro", "val_iou_macro", "val_accuracy", "val_f1_tree", "val_loss", "train_f1_macro"} <= logged
    assert logged <= set(rank1["metrics"])
    differ = {k: (rank0["metrics"][k], rank1["metrics"][k]) for k in logged}
    differ = {k: v for k, v in differ.items() if not _same(*v)}
    assert not differ, f"metrics differ between ranks: {differ}"

    # ... and each equals one process computing over both ranks' predictions.
    preds = torch.cat([rank0["preds"], rank1["preds"]]).long()
    masks = torch.cat([rank0["masks"], rank1["masks"]]).long()
    assert len(masks) == N_VAL
    single = SegmentationMetrics(7)
    single.update(preds, masks)
    for name, value in single.compute().items():
        assert _same(rank0["metrics"][f"val_{name}"], float(value)), name

    # The confusion matrix the task keeps for figures is the global one on every rank.
    for record in (rank0, rank1):
        assert torch.equal(torch.tensor(record["confmat"]["val"]), single.confmat)
        assert torch.tensor(record["confmat"]["train"]).sum() == N_TRAIN * SIZE * SIZE  # every train pixel once

    # The epoch loss is the sample-weighted mean over both ranks' batches.
    losses = rank0["val_losses"] + rank1["val_losses"]
    mean = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert rank0["metrics"]["val_loss"] == pytest.approx(mean, rel=1e-5)

    # The paper's reference: scikit-learn's macro F1 over the flattened pixels.
    metrics = pytest.importorskip("sklearn.metrics")
    f1 = metrics.f1_score(masks.flatten(), preds.flatten(), average="macro", zero_division=0)
    assert rank0["metrics"]["val_f1_macro"] == pytest.approx(f1, rel=1e-5)
