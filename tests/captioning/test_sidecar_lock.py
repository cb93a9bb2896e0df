"""Two captioning runs on one sidecar: the second is refused while the first holds it; repairs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence

import pytest

from aras400k.captioning import (
    CaptionBackend,
    Captioner,
    CaptionRequest,
    CaptionSidecarWriter,
    read_caption_records,
    repair_sidecar,
)
from aras400k.captioning.parts import part_sidecar_path
from aras400k.cli import LOCKED_STATUS
from aras400k.cli.caption import main
from aras400k.locking import LockedError, RunLock, exclusive_lock, lock_path


class _BlockingBackend(CaptionBackend):
    """Answers like the template one, but its first batch waits until ``release`` is set."""

    name = "blocking"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    @property
    def model_name(self) -> str:
        return "blocking"

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        self.started.set()
        assert self.release.wait(30), "the test never released the first run"
        return [f"caption of {r.key} number {r.index} seed {r.seed}" for r in requests]


class _FastBackend(_BlockingBackend):
    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        return [f"caption of {r.key} number {r.index} seed {r.seed}" for r in requests]


def _captioner(backend: CaptionBackend) -> Captioner:
    return Captioner("text", backend=backend, captions_per_image=2, batch_size=4, progress=False)


def test_second_run_on_a_sidecar_in_use_is_refused(demo_root, tmp_path):
    out = tmp_path / "caps.jsonl"
    blocking = _BlockingBackend()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            _captioner(blocking).caption_shards(demo_root / "val", out, limit=3)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert blocking.started.wait(30)
        with pytest.raises(RuntimeError, match=r"caps\.jsonl is in use by another run \(pid \d+ on "):
            _captioner(_FastBackend()).caption_shards(demo_root / "val", out, limit=3)
    finally:
        blocking.release.set()
        thread.join(30)
    assert not errors
    records = read_caption_records(out)  # no (key, index) twice
    assert len(records) == 6


def _cli_args(demo_root, out, *extra: str) -> list[str]:
    return [
        "--input", str(demo_root / "val"), "--out", str(out), "--limit", "4", "--captions_per_image", "1",
        "--batch_size", "2", "--progress", "false", *extra,
    ]  # fmt: skip


def _refused(capsys, args) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == LOCKED_STATUS
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-caption: error:") and "\n" not in err, err
    return err


def test_cli_refuses_a_sidecar_in_use_in_one_line(demo_root, tmp_path, capsys):
    out = tmp_path / "caps.jsonl"
    holder = f"(pid {os.getpid()} on {socket.gethostname()})"
    with exclusive_lock(out):
        err = _refused(capsys, _cli_args(demo_root, out))
        assert err == f"aras-caption: error: {out} is in use by another run {holder}; wait for it or stop it"
        # In another process too: one line on stderr, no traceback, exit status 75.
        done = subprocess.run(
            [sys.executable, "-m", "aras400k.cli.caption", *_cli_args(demo_root, out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == LOCKED_STATUS and done.stdout == ""
        assert done.stderr.strip() == err, done.stderr
    assert not out.exists()  # the refused runs wrote nothing
    assert main(_cli_args(demo_root, out)) == 0 and len(read_caption_records(out)) == 4
    assert not lock_path(out).exists()


def test_cli_workers_and_merge_hold_their_own_locks(demo_root, tmp_path, capsys):
    out = tmp_path / "caps.jsonl"
    worker = ["--num_shards", "2", "--shard_index"]
    with exclusive_lock(part_sidecar_path(out, 0, 2)):
        assert "is in use by another run" in _refused(capsys, _cli_args(demo_root, out, *worker, "0"))
        assert main(_cli_args(demo_root, out, *worker, "1")) == 0  # the other worker's part is free
    assert main(_cli_args(demo_root, out, *worker, "0")) == 0
    with exclusive_lock(part_sidecar_path(out, 1, 2)):
        err = _refused(capsys, _cli_args(demo_root, out, "--num_shards", "2", "--merge", "true"))
        assert f"{part_sidecar_path(out, 1, 2)} is in use" in err  # a worker still running
    with exclusive_lock(out):
        err = _refused(capsys, _cli_args(demo_root, out, "--num_shards", "2", "--merge", "true"))
        assert f"{out} is in use" in err
    capsys.readouterr()
    assert main(_cli_args(demo_root, out, "--num_shards", "2", "--merge", "true")) == 0
    assert len(read_caption_records(out)) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".lock") == []


def test_writer_holds_the_lock_while_open(tmp_path):
    out = tmp_path / "caps.jsonl"
    with CaptionSidecarWriter(out) as writer:
        writer.write([_record("a", 0)])
        with pytest.raises(LockedError, match="is in use by another run"):
            CaptionSidecarWriter(out)
        with pytest.raises(LockedError):
            repair_sidecar(out)
    with CaptionSidecarWriter(out) as writer:  # released on close
        assert writer.done == {("a", 0)}
    with pytest.raises(ValueError, match="not a held lock"):
        CaptionSidecarWriter(out, lock=RunLock(out))
    with exclusive_lock(tmp_path / "other.jsonl") as other, pytest.raises(ValueError, match="not a held lock"):
        CaptionSidecarWriter(out, lock=other)
    with exclusive_lock(out) as lock:
        with CaptionSidecarWriter(out, lock=lock) as writer:
            writer.write([_record("b", 0)])
        assert lock.held  # the caller's lock is left to the caller
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        CaptionSidecarWriter(tmp_path / "bad.jsonl")
    assert not lock_path(tmp_path / "bad.jsonl").exists()  # released when opening fails


def _record(key: str, index: int, text: str = "") -> dict:
    return {
        "key": key, "index": index, "text": text or f"{key} {index}", "model": "m", "mode": "text",
        "prompt_hash": "h", "seed": index,
    }  # fmt: skip


def _lines(*records: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_repair_keeps_the_first_caption_of_each_and_a_backup(tmp_path):
    out = tmp_path / "caps.jsonl"
    twice = _lines(_record("a", 0), _record("a", 1), _record("a", 0, "later"), _record("b", 0), _record("a", 1, "x"))
    tail = b'{"key": "b", "ind'  # cut short by a kill
    out.write_bytes(twice + tail)
    with pytest.raises(ValueError, match=rf"a second caption for key 'a' index 0 .*--repair true --out {out}"):
        read_caption_records(out)
    report = repair_sidecar(out)
    assert (report.kept, report.dropped, report.dropped_ids) == (3, 2, [("a", 0), ("a", 1)])
    assert report.discarded_bytes == len(tail) and report.backup == tmp_path / "caps.jsonl.bak"
    assert report.backup.read_bytes() == twice + tail  # nothing is lost
    assert out.read_bytes() == _lines(_record("a", 0), _record("a", 1), _record("b", 0))
    assert "kept 3 captions, dropped 2 repeated captions (first: a index 0, a index 1)" in report.summary()
    assert [r["text"] for r in read_caption_records(out)] == ["a 0", "a 1", "b 0"]
    again = repair_sidecar(out)  # nothing left to repair: untouched
    assert again.backup is None and again.kept == 3 and "nothing to repair" in again.summary()
    out.write_bytes(twice)
    assert repair_sidecar(out).backup == tmp_path / "caps.jsonl.bak.1"  # an earlier backup is kept
    assert not list(tmp_path.glob("*.tmp")) and not lock_path(out).exists()


def test_repair_leaves_a_corrupt_sidecar_as_it_is(tmp_path):
    out = tmp_path / "caps.jsonl"
    data = _lines(_record("a", 0), _record("a", 0)) + b"{broken\n"
    out.write_bytes(data)
    with pytest.raises(ValueError, match="line 3 is not valid JSON"):
        repair_sidecar(out)
    assert out.read_bytes() == data and not (tmp_path / "caps.jsonl.bak").exists()
    with pytest.raises(FileNotFoundError):
        repair_sidecar(tmp_path / "none.jsonl")


def test_cli_repair_then_resume(demo_root, tmp_path, capsys):
    out = tmp_path / "caps.jsonl"
    assert main(_cli_args(demo_root, out)) == 0
    first = out.read_bytes()
    out.write_bytes(first + first)  # what two runs at once used to leave
    with pytest.raises(SystemExit):
        main(_cli_args(demo_root, out))
    assert "--repair true" in capsys.readouterr().err
    assert main(["--out", str(out), "--repair", "true"]) == 0
    assert "kept 4 captions, dropped 4 repeated captions" in capsys.readouterr().out
    assert out.read_bytes() == first
    assert main(_cli_args(demo_root, out)) == 0
    assert "0 new captions" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # a worker's --repair mends its part
        main(["--out", str(out), "--repair", "true", "--num_shards", "2", "--shard_index", "1"])
    assert exc.value.code == 2 and f"{part_sidecar_path(out, 1, 2)} does not exist" in capsys.readouterr().err
