"""Atomic writes and disk-full errors that name the file being written."""

from __future__ import annotations

import errno
import hashlib
import os

import numpy as np
import pytest

from aras400k.captioning.sidecar import CaptionSidecarWriter
from aras400k.cli.data import main as data_main
from aras400k.data.shards import Sample, ShardWriter
from aras400k.files import naming_path, sha256_file, write_atomic, write_json_atomic


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullDisk:
    """A shard file on a full disk: every write fails as the OS would fail it (no file name)."""

    write = staticmethod(_disk_full)

    def close(self) -> None:
        pass


def _shards_on_a_full_disk(monkeypatch) -> None:
    """Make every shard ShardWriter opens a file on a full disk."""
    opened = ShardWriter._open_next

    def open_full(self) -> None:
        opened(self)
        self._file.close()
        self._file = _FullDisk()

    monkeypatch.setattr(ShardWriter, "_open_next", open_full)


def test_write_atomic_replaces_whole_files(tmp_path):
    path = write_atomic(tmp_path / "a.txt", "first")
    write_json_atomic(path, {"x": 1})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_atomic_write_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "report.md", "old")
    monkeypatch.setattr(os, "replace", _disk_full)
    with pytest.raises(OSError) as exc:
        write_atomic(path, "new")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)
    assert path.read_text() == "old" and not (tmp_path / "report.md.tmp").exists()


def test_naming_path_leaves_other_errors_alone(tmp_path):
    with pytest.raises(PermissionError), naming_path(tmp_path / "x"):
        raise PermissionError(errno.EACCES, "denied")
    with pytest.raises(OSError) as exc, naming_path(tmp_path / "x"):
        raise OSError(errno.ENOSPC, "full", "/already/named")
    assert exc.value.filename == "/already/named"


def test_shard_writer_disk_full_names_the_shard(tmp_path, monkeypatch):
    _shards_on_a_full_disk(monkeypatch)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(OSError) as exc, ShardWriter(tmp_path / "set", split="train", source="real") as writer:
        writer.write(Sample(key="k0", image=image))
    assert exc.value.filename == str(tmp_path / "set" / "train-000000.tar.tmp")


def test_aras_data_disk_full_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    _shards_on_a_full_disk(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        data_main(["demo", "--out", str(tmp_path / "demo"), "--image_size", "32",
                   "--train", "2", "--val", "1", "--test", "1"])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("aras-data: error:")
    assert "No space left on device" in err and "train-000000.tar.tmp" in err


def test_caption_sidecar_disk_full_names_the_sidecar(tmp_path, monkeypatch):
    writer = CaptionSidecarWriter(tmp_path / "captions.jsonl")
    monkeypatch.setattr(writer._fh, "write", _disk_full)
    record = {"key": "k0", "index": 0, "text": "a field", "model": "m", "mode": "text", "prompt_hash": "h", "seed": 0}
    with pytest.raises(OSError) as exc:
        writer.write([record])
    assert exc.value.filename == str(tmp_path / "captions.jsonl")
    monkeypatch.undo()
    writer.close()


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    from aras400k.files import atomic_path

    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(path, "figure.tmp.png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]
    with atomic_path(path, "figure.tmp.png") as tmp:
        assert tmp.name == "figure.tmp.png" and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"  # not before the block ends
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]
