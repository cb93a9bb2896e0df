"""Remote reads have deadlines and names: every command takes a URL shard set, a stalled
server or a truncated remote tar fails in one line that names the shard."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aras400k.cli.caption import main as caption_main
from aras400k.cli.data import main as data_main
from aras400k.cli.synth import main as synth_main
from aras400k.data.remote import DEADLINE_ENV, ShardTimeoutError, as_location, open_shard, read_deadline
from aras400k.data.shards import iter_raw_samples, read_manifest, shard_paths
from aras400k.data.stats import load_compositions
from aras400k.data.verify import verify_shards
from aras400k.evaluation.config import DatasetSpec, EvalConfig, check_inputs
from tests.data.test_remote import NUM_TRAIN, root, server  # noqa: F401  (a tiny set served on 127.0.0.1)

TRAIN_KEYS = [f"t{i:04d}" for i in range(NUM_TRAIN)]


@pytest.fixture(scope="module")
def truncated(root: Path) -> str:  # noqa: F811
    """A copy of ``train`` whose second shard is cut after 3000 bytes (its manifest unchanged)."""
    out = root / "trunc"
    out.mkdir(exist_ok=True)
    for path in (root / "train").iterdir():
        data = path.read_bytes()
        (out / path.name).write_bytes(data[:3000] if path.name == "train-000001.tar" else data)
    return "trunc"


class _Trickle(BaseHTTPRequestHandler):
    """Promises 10 kB, then sends one byte every 20 s (until the test ends)."""

    stop = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10240")
        self.end_headers()
        for _ in range(10):  # bounded: at most 10 bytes, and the test's end stops it at once
            try:
                self.wfile.write(b"\0")
                self.wfile.flush()
            except OSError:
                return  # the reader gave up and shut the connection
            if self.stop.wait(20.0):
                return

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def trickle() -> Iterator[str]:
    """A server that trickles a byte every 20 s; yields its base URL."""
    _Trickle.stop.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    _Trickle.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], status: int) -> str:
    with pytest.raises(SystemExit) as exit_info:
        data_main(args)
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- deadlines ----------------------------------------------------------------------------------


def test_a_trickling_server_fails_at_the_deadline_naming_the_shard(trickle: str) -> None:
    url = f"{trickle}/set/shard-000000.tar"
    started = time.monotonic()
    with pytest.raises(ShardTimeoutError, match=rf"^{url}: no complete read within 1 s \(deadline"):
        list(iter_raw_samples(url, deadline_s=1))
    assert time.monotonic() - started < 5


def test_the_deadline_comes_from_the_environment(trickle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEADLINE_ENV, "1")
    started = time.monotonic()
    with pytest.raises(ShardTimeoutError, match=r"shard-000000\.tar: no complete read within 1 s"):
        list(iter_raw_samples(f"{trickle}/set/shard-000000.tar"))
    with pytest.raises(ShardTimeoutError, match=r"/set/manifest\.json: no complete read within 1 s"):
        read_manifest(f"{trickle}/set/")
    assert time.monotonic() - started < 8


def test_a_stalled_pipe_command_is_stopped_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(ShardTimeoutError, match=r"^pipe:sleep 20: no complete read within 1 s"):
        with open_shard("pipe:sleep 20", deadline_s=1) as stream:
            stream.read()
    assert time.monotonic() - started < 5


def test_the_deadline_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    assert read_deadline() == 600.0 and read_deadline(2) == 2.0 and read_deadline(0) is None
    monkeypatch.setenv(DEADLINE_ENV, "none")
    assert read_deadline() is None
    monkeypatch.setenv(DEADLINE_ENV, "ten")
    with pytest.raises(ValueError, match=rf"{DEADLINE_ENV}='ten' must be seconds"):
        read_deadline()


def test_only_time_spent_waiting_for_bytes_counts(server: str) -> None:  # noqa: F811
    """A caller slow with the samples (a model labelling them) is never cut off."""
    keys = []
    for raw in iter_raw_samples(f"{server}/train/train-000000.tar", deadline_s=0.5):
        keys.append(raw["__key__"])
        time.sleep(0.2)  # 0.8 s in all between reads
    assert keys == TRAIN_KEYS[:4]


# -- every command takes an http URL --------------------------------------------------------------


def test_as_location_keeps_urls_as_strings(root: Path) -> None:  # noqa: F811
    assert as_location("http://host/set/") == "http://host/set/"
    assert as_location("pipe:cat a.tar") == "pipe:cat a.tar"
    assert as_location(str(root)) == root


def test_aras_data_stats_verify_preview_and_merge_take_an_http_folder(
    server: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"{server}/train/"
    assert data_main(["stats", url, f"{server}/val"]) == 0
    table = capsys.readouterr().out
    assert "| class | train | val |" in table and f"| samples | {NUM_TRAIN} | 4 |" in table
    assert [d.label for d in load_compositions([url, f"{server}/val/"])] == ["train", "val"]

    assert data_main(["verify", url, "--quiet", "true"]) == 0
    assert f"{server}/train: {NUM_TRAIN} samples decoded, OK" in capsys.readouterr().out

    assert data_main(["preview", url, "--out", str(tmp_path / "grid.png"), "--n", "4"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0

    assert data_main(["merge", url, "--out", str(tmp_path / "merged")]) == 0
    assert read_manifest(tmp_path / "merged")["num_samples"] == NUM_TRAIN
    assert verify_shards(tmp_path / "merged", progress=False).ok
    assert [p.name for p in shard_paths(tmp_path / "merged")] == [f"train-{i:06d}.tar" for i in range(3)]


def test_aras_synth_label_takes_an_http_folder(server: str, tmp_path: Path) -> None:  # noqa: F811
    from tests.models.spade.test_module import make_segmenter_checkpoint

    ckpt = make_segmenter_checkpoint(tmp_path / "seg.ckpt")
    out = tmp_path / "labelled"
    args = ["label", "--ckpt", str(ckpt), "--input", f"{server}/train/", "--out", str(out)]
    assert synth_main([*args, "--device", "cpu", "--progress", "false", "--batch_size", "8"]) == 0
    manifest = read_manifest(out)
    assert manifest["num_samples"] == NUM_TRAIN and manifest["labelled_from"] == f"{server}/train/"
    assert verify_shards(out, progress=False).ok


def test_aras_synth_spade_takes_an_http_folder(server: str, tmp_path: Path) -> None:  # noqa: F811
    import torch

    from tests.models.spade.test_module import tiny_gan

    gan = tiny_gan()
    gan.configure_models()
    ckpt = tmp_path / "spade.ckpt"
    torch.save({"hyper_parameters": dict(gan.hparams), "state_dict": gan.state_dict()}, ckpt)
    out = tmp_path / "spade"
    args = ["spade", "--ckpt", str(ckpt), "--masks", f"{server}/train/", "--out", str(out), "--use_ema", "false"]
    assert synth_main([*args, "--device", "cpu", "--progress", "false"]) == 0
    manifest = read_manifest(out)
    assert manifest["num_samples"] == NUM_TRAIN and manifest["conditioned_on"] == f"{server}/train/"


def test_aras_caption_records_an_http_input_as_given(server: str, tmp_path: Path) -> None:  # noqa: F811
    url = f"{server}/train/"
    args = ["--input", url, "--out", str(tmp_path / "c.jsonl"), "--shards_out", str(tmp_path / "captioned")]
    assert caption_main([*args, "--mode", "text", "--progress", "false"]) == 0
    manifest = read_manifest(tmp_path / "captioned")
    assert manifest["parent"] == url and manifest["num_samples"] == NUM_TRAIN


def test_aras_eval_checks_an_http_dataset(server: str) -> None:  # noqa: F811
    config = EvalConfig(datasets=[DatasetSpec(name="web", path=f"{server}/train/")], max_samples=None)
    (inputs,) = check_inputs(config)
    assert inputs.keys == TRAIN_KEYS and inputs.total_samples == NUM_TRAIN
    missing = EvalConfig(datasets=[DatasetSpec(name="gone", path=f"{server}/nothing/")])
    with pytest.raises(ValueError, match=r"dataset 'gone': .*/nothing is not a shard set"):
        check_inputs(missing)


# -- truncated remote tars ----------------------------------------------------------------------


def test_a_truncated_remote_shard_is_named(
    server: str,  # noqa: F811
    truncated: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"{server}/{truncated}/"
    err = _one_line_error(capsys, ["preview", url, "--out", str(tmp_path / "grid.png"), "--n", "10"], 1)
    assert f"{server}/{truncated}/train-000001.tar" in err and "truncated or corrupt" in err

    assert data_main(["stats", url]) == 0  # stats reads the manifest only
    assert f"| samples | {NUM_TRAIN} |" in capsys.readouterr().out

    assert data_main(["verify", url, "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    assert "problem: train-000001.tar: tar file is corrupt after" in out
