import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from aras400k.data import ManifestError, Sample, ShardWriter, iter_samples, read_manifest
from aras400k.data.shards import SampleError, decode_sample, encode_png, iter_raw_samples
from tests.conftest import write_random_set


def _sample(key: str, size: int = 8, value: int = 0) -> Sample:
    return Sample(key, np.full((size, size, 3), 7, np.uint8), np.full((size, size), value, np.uint8))


def test_round_trip_schema_and_manifest(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    masks = rng.integers(0, 7, (5, 16, 16), dtype=np.uint8)
    masks[0, 0, 0] = 255
    with ShardWriter(tmp_path / "set", split="val", source="synth_cond", samples_per_shard=2) as writer:
        for i in range(5):
            captions = [{"text": "a river", "model": "template", "mode": "text"}] if i == 0 else None
            writer.write(Sample(f"k{i}", images[i], masks[i], meta={"parent": "N36E027_000_000"}, captions=captions))
    manifest = read_manifest(tmp_path / "set")
    assert manifest["num_samples"] == 5 and manifest["split"] == "val" and manifest["source"] == "synth_cond"
    assert [s["num_samples"] for s in manifest["shards"]] == [2, 2, 1]
    for shard in manifest["shards"]:
        assert hashlib.sha256((tmp_path / "set" / shard["name"]).read_bytes()).hexdigest() == shard["sha256"]
    expected_pixels = np.bincount(masks[masks != 255], minlength=7)
    assert [manifest["class_pixels"][n] for n in ("tree", "shrub", "grass", "crop", "built", "barren", "water")] == (
        expected_pixels.tolist()
    )
    samples = list(iter_samples(tmp_path / "set"))
    assert [s.key for s in samples] == [f"k{i}" for i in range(5)]
    for i, s in enumerate(samples):
        assert np.array_equal(s.image, images[i]) and np.array_equal(s.mask, masks[i])
        assert s.meta["source"] == "synth_cond" and s.meta["split"] == "val" and s.meta["parent"] == "N36E027_000_000"
        assert abs(sum(s.meta["composition"].values()) - 1) < 1e-4
    assert samples[0].captions == [{"text": "a river", "model": "template", "mode": "text"}]
    assert samples[1].captions is None
    assert not list((tmp_path / "set").glob("*.tmp"))


def test_members_follow_the_design_schema(tmp_path):
    write_random_set(tmp_path / "s", 1, per_shard=1)
    with tarfile.open(tmp_path / "s" / "train-000000.tar") as tar:
        assert sorted(tar.getnames()) == ["s0000.image.png", "s0000.mask.png", "s0000.meta.json"]


def test_unlabelled_sample_has_no_mask_member(tmp_path):
    with ShardWriter(tmp_path / "s", split="synth", source="synth_uncond") as writer:
        writer.write(Sample("g0", np.zeros((8, 8, 3), np.uint8)))
    (raw,) = iter_raw_samples(tmp_path / "s" / "synth-000000.tar")
    assert "mask.png" not in raw
    assert read_manifest(tmp_path / "s")["num_masks"] == 0


def test_identical_input_gives_identical_shards(tmp_path):
    for out in (tmp_path / "c", tmp_path / "d"):
        with ShardWriter(out, split="train") as writer:
            writer.write(_sample("x", value=3))
            writer.write(_sample("y", value=5))
    assert read_manifest(tmp_path / "c")["shards"] == read_manifest(tmp_path / "d")["shards"]


def test_writer_rejects_bad_input(tmp_path):
    with ShardWriter(tmp_path / "s", split="train") as writer:
        with pytest.raises(ValueError, match="letters, digits"):
            writer.write(_sample("bad.key"))
        writer.write(_sample("ok"))
        with pytest.raises(ValueError, match="written twice"):
            writer.write(_sample("ok"))
        with pytest.raises(ValueError, match="mask shape"):
            writer.write(Sample("m", np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4), np.uint8)))
        with pytest.raises(ValueError, match="outside 0-6"):
            writer.write(_sample("v", value=9))
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            writer.write(Sample("f", np.zeros((8, 8, 3), np.float32)))
    with pytest.raises(ValueError, match="source must be"):
        ShardWriter(tmp_path / "t", split="train", source="fake")


def test_existing_set_needs_overwrite(tmp_path):
    write_random_set(tmp_path / "s", 2)
    with pytest.raises(FileExistsError, match="overwrite"):
        ShardWriter(tmp_path / "s", split="train")
    write_random_set(tmp_path / "s2", 9)
    with ShardWriter(tmp_path / "s2", split="train", overwrite=True) as writer:
        writer.write(_sample("only"))
    assert [s.key for s in iter_samples(tmp_path / "s2")] == ["only"]
    assert len(list((tmp_path / "s2").glob("*.tar"))) == 1


def test_exception_leaves_no_manifest_and_no_partial_tar(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "s", split="train", samples_per_shard=2) as writer:
        for i in range(3):
            writer.write(_sample(f"k{i}"))
        raise RuntimeError("killed")
    assert not (tmp_path / "s" / "manifest.json").exists()
    assert not list((tmp_path / "s").glob("*.tmp"))
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path / "s")


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not a folder"):
        read_manifest(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        read_manifest(tmp_path / "x")
    (tmp_path / "x" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ManifestError, match="not an aras400k-shards manifest"):
        read_manifest(tmp_path / "x")


def test_decode_sample_errors_name_the_key():
    good = {"__key__": "k", "image.png": encode_png(np.zeros((4, 4, 3), np.uint8)), "meta.json": b"{}"}
    assert decode_sample(good).mask is None
    with pytest.raises(SampleError, match="sample k: member image.png is missing"):
        decode_sample({k: v for k, v in good.items() if k != "image.png"})
    with pytest.raises(SampleError, match="sample k: image is not a readable picture"):
        decode_sample({**good, "image.png": b"garbage"})
    with pytest.raises(SampleError, match="values \\[9\\]"):
        decode_sample({**good, "mask.png": encode_png(np.full((4, 4), 9, np.uint8))})
    with pytest.raises(SampleError, match="mask is 2x2 but image is 4x4"):
        decode_sample({**good, "mask.png": encode_png(np.zeros((2, 2), np.uint8))})
    with pytest.raises(SampleError, match="one-channel"):
        decode_sample({**good, "mask.png": encode_png(np.zeros((4, 4, 3), np.uint8))})
    with pytest.raises(SampleError, match="meta.json is not valid JSON"):
        decode_sample({**good, "meta.json": b"{"})


def test_pre_encoded_members_are_written_verbatim(tmp_path):
    image = np.full((8, 8, 3), 5, np.uint8)
    mask = np.full((8, 8), 2, np.uint8)
    image_png, mask_png = encode_png(image, compress_level=0), encode_png(mask, compress_level=0)
    with ShardWriter(tmp_path / "s", split="train") as writer:
        writer.write(Sample("k", image, mask, image_png=image_png, mask_png=mask_png, raw_members={"extra.bin": b"x"}))
        with pytest.raises(ValueError, match="mask_png needs the decoded mask"):
            writer.write(Sample("m", image, None, mask_png=mask_png))
    (raw,) = iter_raw_samples(tmp_path / "s" / "train-000000.tar")
    assert raw["image.png"] == image_png and raw["mask.png"] == mask_png and raw["extra.bin"] == b"x"
    assert read_manifest(tmp_path / "s")["class_pixels"]["grass"] == 64


def test_masks_are_encoded_run_length_small_and_lossless():
    blocks = np.random.default_rng(0).integers(0, 7, size=(16, 16), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((16, 16), np.uint8))
    mask[::37, ::11] = 255
    data = encode_png(mask)
    default = io.BytesIO()
    Image.fromarray(mask).save(default, format="PNG", compress_level=6)
    assert len(data) < len(default.getvalue())
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), mask)
    assert encode_png(mask) == data  # deterministic


def test_new_shards_have_no_pax_headers(tmp_path):
    with ShardWriter(tmp_path, split="train") as writer:
        writer.write(Sample("a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), captions=[]))
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a.captions.json", "a.image.png", "a.mask.png", "a.meta.json"]
    assert all(not m.pax_headers and m.mtime == 0 for m in members)
    data = (tmp_path / "train-000000.tar").read_bytes()
    assert b"PaxHeader" not in data
