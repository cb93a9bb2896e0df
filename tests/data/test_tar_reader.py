"""The lean tar reader of local shards gives what tarfile gives: samples, skipped members, errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

import aras400k.data.shards as shards
from aras400k.data.shards import Sample, ShardReadError, ShardWriter, iter_raw_samples
from tests.conftest import write_random_set


def _with_tarfile(path: Path, **kwargs) -> list[dict]:
    """The samples as the tarfile reader alone gives them."""
    with tarfile.open(path, mode="r:") as tar:
        return list(shards._group_members(tar, str(path), **kwargs))


_LEAN_SAMPLES = shards._lean_samples  # the real one, whatever a test patches


def _lean(path: Path, members=None) -> list[dict]:
    """The samples as the lean reader alone gives them (raises _NotLean where it hands over)."""
    return list(_LEAN_SAMPLES(str(path), None if members is None else frozenset(members)))


def _refuse(path, members):
    """A lean reader that hands every shard to tarfile: iter_raw_samples as it was."""
    raise shards._NotLean
    yield  # a generator, like the real one


def _outcome(read):
    """What a reader yields before it stops, and the error it stops with (type and message)."""
    got = []
    try:
        for raw in read():
            got.append(raw)
    except (tarfile.TarError, EOFError) as err:
        return got, (type(err).__name__, str(err))
    return got, None


@pytest.fixture
def no_lean(monkeypatch):
    """iter_raw_samples as it was: every local shard read by tarfile."""
    monkeypatch.setattr(shards, "_lean_samples", _refuse)


@pytest.fixture
def shard(tmp_path) -> Path:
    """One shard as the writer makes it: masks, captions, an unknown member, and one unlabelled sample."""
    rng = np.random.default_rng(3)
    with ShardWriter(tmp_path / "set", split="train", samples_per_shard=10) as writer:
        for i in range(6):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            mask = rng.integers(0, 7, (16, 16), dtype=np.uint8) if i != 3 else None
            captions = [{"text": f"a field {i}", "model": "m", "mode": "vision"}] if i % 2 else None
            raw = {"extra.bin": bytes(range(i * 40))} if i == 4 else {}
            writer.write(Sample(f"k{i:03d}", image, mask, captions=captions, raw_members=raw))
    return tmp_path / "set" / "train-000000.tar"


def test_lean_reader_equals_tarfile_on_our_shards(shard):
    expected = _with_tarfile(shard)
    assert [raw["__key__"] for raw in expected] == [f"k{i:03d}" for i in range(6)]
    assert _lean(shard) == expected  # no hand-over: the writer's tars are plain ustar
    assert list(iter_raw_samples(shard)) == expected
    assert "extra.bin" in expected[4] and "captions.json" in expected[1] and "mask.png" not in expected[3]


def test_unwanted_members_are_skipped_unread(shard, monkeypatch):
    wanted = {"image.png", "meta.json"}
    full = _with_tarfile(shard)
    trimmed = [{k: v for k, v in raw.items() if k.startswith("__") or k in wanted} for raw in full]
    assert _lean(shard, wanted) == trimmed
    assert list(iter_raw_samples(shard, members=wanted)) == trimmed
    assert _with_tarfile(shard, members=frozenset(wanted)) == trimmed
    # A member too large to read is no error when it is not wanted.
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 300)
    assert [raw["__key__"] for raw in iter_raw_samples(shard, members={"meta.json"})] == [r["__key__"] for r in full]


def _write_tar(path: Path, members: list[tuple[str, bytes]], **options) -> Path:
    with tarfile.open(path, "w", **options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _members(count: int = 3, long: bool = False) -> list[tuple[str, bytes]]:
    folder = ("d" * 120 + "/") if long else ""
    out = []
    for i in range(count):
        for member in ("image.png", "meta.json"):
            out.append((f"{folder}s{i}.{member}", bytes([i]) * (100 + 300 * i) + member.encode()))
    return out


def test_pax_headers_are_read_without_tarfile(tmp_path):
    """Older shards carry a pax header per member (a float mtime); long and non-ASCII names use pax too."""
    with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [*_members(3, long=True), ("s9.méta.json", b"{}"), ("s9.image.png", b"x" * 700)]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # a float mtime: a pax header before every member
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "pax.tar"
    assert path.read_bytes().count(b"PaxHeader") == 8
    expected = _with_tarfile(path)
    assert [raw["__key__"] for raw in expected] == ["s0", "s1", "s2", "s9"] and "méta.json" in expected[3]
    assert _lean(path) == expected
    assert list(iter_raw_samples(path)) == expected


@pytest.mark.parametrize("dialect", ["gnu_longname", "directory", "global_pax"])
def test_other_dialects_are_handed_to_tarfile(tmp_path, dialect):
    path = tmp_path / "other.tar"
    if dialect == "gnu_longname":
        _write_tar(path, _members(3, long=True), format=tarfile.GNU_FORMAT)
    elif dialect == "directory":
        with tarfile.open(path, "w") as tar:
            for name, data in _members(2):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            folder = tarfile.TarInfo("folder")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            info = tarfile.TarInfo("folder/s7.meta.json")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    else:
        _write_tar(path, _members(3), format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"})
    expected = _with_tarfile(path)
    assert len(expected) >= 3
    with pytest.raises(shards._NotLean):
        _lean(path)
    assert list(iter_raw_samples(path)) == expected
    # Handed over half-way, tarfile goes on after the samples already yielded.
    assert list(iter_raw_samples(path, members={"meta.json"})) == _with_tarfile(path, members=frozenset({"meta.json"}))


def _damaged_copies(shard: Path, tmp_path: Path):
    """The shard cut at many lengths and with single bytes changed in and around its headers."""
    data = shard.read_bytes()
    boundaries = range(512, len(data), 512)
    cuts = sorted({*range(0, len(data), 97), *boundaries, *(n - 1 for n in boundaries), *(n + 1 for n in boundaries)})
    for n in cuts:
        if 0 <= n < len(data):
            yield f"cut{n}", data[:n]
    headers = [offset for offset in range(0, len(data), 512) if data[offset + 257 : offset + 262] == b"ustar"]
    for offset in headers[:6]:
        for field in (0, 5, 100, 110, 124, 130, 140, 150, 156, 257, 300, 330, 345, 500):
            changed = bytearray(data)
            changed[offset + field] ^= 0x41
            yield f"flip{offset}+{field}", bytes(changed)


def test_damaged_shards_give_the_same_samples_and_errors(shard, tmp_path, monkeypatch):
    """Truncated or altered tars: the same samples, then the same one-line error (or end), as tarfile alone."""
    damaged = tmp_path / "damaged.tar"
    outcomes = []
    for name, data in _damaged_copies(shard, tmp_path):
        damaged.write_bytes(data)
        lean = _outcome(lambda: iter_raw_samples(damaged))
        with monkeypatch.context() as patch:
            patch.setattr(shards, "_lean_samples", _refuse)
            reference = _outcome(lambda: iter_raw_samples(damaged))
        assert lean == reference, name
        outcomes.append(reference[1])
    assert any(err is not None and "truncated or corrupt" in err[1] for err in outcomes)  # errors were met
    assert any(err is None for err in outcomes)  # and silent ends too (tarfile stops at a bad header)


def test_an_oversized_member_is_the_same_error(shard, monkeypatch):
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 300)
    lean = _outcome(lambda: iter_raw_samples(shard))
    monkeypatch.setattr(shards, "_lean_samples", _refuse)
    assert lean == _outcome(lambda: iter_raw_samples(shard))
    assert lean[1][0] == "ShardReadError" and "over the 300 limit" in lean[1][1]


def test_a_truncated_shard_names_the_last_sample(shard, tmp_path):
    data = shard.read_bytes()
    cut = tmp_path / "cut.tar"
    header = data.index(b"k003.image.png")  # cut inside the data of sample k003's image
    cut.write_bytes(data[: header + 512 + 10])
    with pytest.raises(ShardReadError, match=r"cut\.tar: tar file is truncated or corrupt after sample k002 "):
        list(iter_raw_samples(cut))


def test_a_stream_honours_members_too(shard):
    """The tarfile stream reader (URLs, pipes, digests) skips unwanted members as well."""
    import hashlib

    digest = hashlib.sha256()
    got = list(iter_raw_samples(shard, digest=digest, members={"meta.json"}))
    assert digest.hexdigest() == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert got == _with_tarfile(shard, members=frozenset({"meta.json"}))


def test_random_sets_read_the_same(tmp_path, no_lean):
    root = write_random_set(tmp_path / "r", 9, per_shard=4)
    reference = [raw for path in sorted(root.glob("*.tar")) for raw in iter_raw_samples(path)]
    lean = [raw for path in sorted(root.glob("*.tar")) for raw in _lean(path)]
    assert lean == reference and len(reference) == 9
