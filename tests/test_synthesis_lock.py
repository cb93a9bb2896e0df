"""One run per synthetic shard set: a second run on an output in use stops at once."""

from __future__ import annotations

import os
import shutil

import pytest

import aras400k.synthesis.jobs as jobs
from aras400k.cli import LOCKED_STATUS
from aras400k.cli.synth import main
from aras400k.data.shards import read_manifest
from aras400k.locking import LockedError, RunLock, exclusive_lock, lock_path
from aras400k.synthesis.conditional import synthesize_conditional
from aras400k.synthesis.label import label_shards
from aras400k.synthesis.unconditional import synthesize_unconditional
from tests.conftest import write_random_set
from tests.test_synthesis_spade import gan_ckpt  # noqa: F401 (a fixture)


@pytest.fixture
def masks(tmp_path):
    return write_random_set(tmp_path / "masks", 4, per_shard=2, prefix="p")


def test_every_synthesis_refuses_an_output_in_use(masks, tmp_path):
    out = tmp_path / "out"
    ckpt = tmp_path / "any.ckpt"  # never read: the lock is taken first
    with exclusive_lock(out):
        with pytest.raises(LockedError, match=rf"out is in use by another run \(pid {os.getpid()} on "):
            synthesize_conditional(ckpt, masks, out, progress=False)
        with pytest.raises(LockedError, match="out is in use by another run"):
            synthesize_unconditional(ckpt, out, n=2, progress=False)
        with pytest.raises(LockedError, match="out is in use by another run"):
            label_shards(ckpt, masks, out, progress=False)
    with exclusive_lock(out / "part-0-of-2"):  # a worker's part is locked on its own
        with pytest.raises(LockedError, match="part-0-of-2 is in use"):
            synthesize_unconditional(ckpt, out, n=2, shard_index=0, num_shards=2, progress=False)
        with pytest.raises(FileNotFoundError):  # worker 1 gets past its lock
            synthesize_unconditional(ckpt, out, n=2, shard_index=1, num_shards=2, progress=False)
    assert not (out / ".partial").exists()


def test_lock_outlives_the_work_folder_and_is_gone_after_the_run(gan_ckpt, masks, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "out"
    removed = []
    rmtree = shutil.rmtree

    def rmtree_then_check(path, *args, **kwargs):
        rmtree(path, *args, **kwargs)
        with pytest.raises(LockedError):  # deleting the work folder left the lock in place
            RunLock(out).acquire()
        removed.append(path)

    monkeypatch.setattr(jobs.shutil, "rmtree", rmtree_then_check)
    synthesize_conditional(gan_ckpt, masks, out, per_mask=1, batch_size=2, device="cpu", progress=False)
    assert removed == [out / ".partial"]
    assert read_manifest(out)["num_samples"] == 4
    assert not lock_path(out).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["masks", "out"]


def test_cli_prints_one_line_for_an_output_in_use(gan_ckpt, masks, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    with exclusive_lock(out), pytest.raises(SystemExit) as exc:
        main(["spade", "--ckpt", str(gan_ckpt), "--masks", str(masks), "--out", str(out), "--progress", "false"])
    assert exc.value.code == LOCKED_STATUS
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aras-synth: error: {out} is in use by another run (pid {os.getpid()} on ")
    assert err.endswith("; wait for it or stop it") and "\n" not in err
