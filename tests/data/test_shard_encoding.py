"""Samples encoded apart from the writer (in any process): the same shard bytes as ``ShardWriter.write``."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from aras400k.data import Sample, ShardWriter, iter_samples, read_manifest
from aras400k.data.shards import EncodedSample, encode_png, encode_sample


def _samples() -> list[Sample]:
    """Samples with every kind of member: masks, captions, raw members, a long key, an unlabelled one."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(5):
        image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
        mask = rng.integers(0, 7, (16, 24), dtype=np.uint8)
        mask[0, :3] = 255
        out.append(Sample(f"k{i}", image, mask, meta={"tile": "N36E027", "i": i}))
    out[1].captions = [{"text": "a river by a field", "model": "template", "mode": "text"}]
    out[2].raw_members = {"extra.bin": bytes(range(200)) * 7}
    out[3].key = "long_" + "x" * 120  # a member name over 100 characters: tar needs a pax header for it
    out[4].mask = None
    out[4].meta["composition"] = {"tree": 0.25, "water": 0.75}
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_shards_are_the_tars_webdataset_writes(tmp_path):
    """Hand-written tars equal ``webdataset.TarWriter(mtime=0, encoder=False)``'s, end padding included."""
    samples = _samples()
    with ShardWriter(tmp_path / "set", split="train", samples_per_shard=10) as writer:
        for sample in samples:
            writer.write(sample)
    shard = tmp_path / "set" / "train-000000.tar"
    grouped: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for info in tar:
            key, name = info.name.split(".", 1)
            grouped.setdefault(key, {"__key__": key})[name] = tar.extractfile(info).read()  # type: ignore[union-attr]
    assert list(grouped) == [s.key for s in samples]
    assert sorted(grouped["k2"]) == ["__key__", "extra.bin", "image.png", "mask.png", "meta.json"]
    stream = io.BytesIO()
    reference = wds.TarWriter(stream, mtime=0, encoder=False)
    for obj in grouped.values():
        reference.write(obj)
    reference.close()
    assert shard.read_bytes() == stream.getvalue()


def test_encoded_elsewhere_writes_the_same_bytes_and_manifest(tmp_path):
    samples = _samples()
    with ShardWriter(tmp_path / "direct", split="train", samples_per_shard=2) as writer:
        for sample in samples:
            writer.write(sample)
    # Encoded as a worker would, then pickled across: the writer only appends.
    shipped = [pickle.loads(pickle.dumps(encode_sample(s, "train", "real", 6))) for s in samples]
    with ShardWriter(tmp_path / "shipped", split="train", samples_per_shard=2) as writer:
        for encoded in shipped:
            writer.write_encoded(encoded)
    assert _files(tmp_path / "direct") == _files(tmp_path / "shipped")
    manifest = read_manifest(tmp_path / "shipped")
    assert manifest["num_samples"] == 5 and manifest["num_masks"] == 4 and manifest["image_size"] == [16, 24]
    for shard in manifest["shards"]:
        data = (tmp_path / "shipped" / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert len(data) % 10240 == 0
    masks = [s.mask for s in samples if s.mask is not None]
    counts = np.bincount(np.concatenate([m[m != 255] for m in masks]), minlength=7)
    counts[0] += 24 * 16 // 4  # the unlabelled sample's composition, weighted by its pixels
    counts[6] += 24 * 16 * 3 // 4
    assert list(manifest["class_pixels"].values()) == counts.tolist()
    read = {s.key: s for s in iter_samples(tmp_path / "shipped")}
    assert read["k1"].captions == samples[1].captions
    np.testing.assert_array_equal(read["k0"].mask, samples[0].mask)


def test_an_encoded_sample_carries_bytes_not_arrays():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png = encode_png(image)
    encoded = encode_sample(Sample("a", image, np.zeros((64, 64), np.uint8), image_png=png), "train")
    assert isinstance(encoded, EncodedSample) and png in encoded.tar
    assert len(pickle.dumps(encoded)) < len(png) + 4096  # the decoded image (12 KiB) is not in it


def test_write_encoded_checks_split_source_and_keys(tmp_path):
    sample = _samples()[0]
    with ShardWriter(tmp_path / "s", split="train", source="real") as writer:
        with pytest.raises(ValueError, match="encoded for split 'val' and source 'real'"):
            writer.write_encoded(encode_sample(sample, "val", "real"))
        with pytest.raises(ValueError, match="source 'synth_cond'"):
            writer.write_encoded(encode_sample(sample, "train", "synth_cond"))
        writer.write_encoded(writer.encode(sample))
        with pytest.raises(ValueError, match="written twice"):
            writer.write_encoded(writer.encode(sample))
    with pytest.raises(ValueError, match="source must be one of"):
        encode_sample(sample, "train", "fake")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="may hold only letters"):
        encode_sample(Sample("a/b", sample.image), "train")
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_encoded(writer.encode(_samples()[1]))


def test_abort_leaves_no_partial_shard(tmp_path):
    writer = ShardWriter(tmp_path / "s", split="train", samples_per_shard=3)
    for sample in _samples()[:4]:
        writer.write(sample)
    writer.abort()
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["train-000000.tar"]
