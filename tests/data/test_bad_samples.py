"""Decompression bombs and samples of the wrong size are bad samples, not crashes (issue #12, item 4)."""

import io
import json
import shutil
import struct
import subprocess
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from aras400k.data import ShardDataset, iter_samples
from aras400k.data.merge import merge_shard_sets
from aras400k.data.shards import (
    MAX_IMAGE_PIXELS,
    Sample,
    SampleError,
    ShardWriter,
    decode_image,
    decode_mask,
    decode_sample,
    encode_png,
    iter_raw_samples,
    read_image_size,
    read_manifest,
)
from aras400k.data.verify import verify_shards
from tests.conftest import write_random_set


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int, palette: bool = True) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (palette or grey, 8 bit); its first rows are zeros."""
    colour_type = 3 if palette else 0
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
    plte = _chunk(b"PLTE", bytes(3 * 256)) if palette else b""
    rows = zlib.compress(bytes((1 + width) * 64), 9)
    return b"\x89PNG\r\n\x1a\n" + header + plte + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _replace_members(shard: Path, replacements: dict[str, bytes]) -> None:
    """Rewrite a tar with some members' bytes replaced (the manifest is left as it was)."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for info, content in members:
            content = replacements.get(info.name, content)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


@pytest.fixture
def no_full_decode(monkeypatch):
    """Record the size of every image Pillow decodes (``load``)."""
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decoded


@pytest.mark.parametrize("side", [30000, 12000])
def test_decoders_refuse_huge_pictures_from_the_header(side, no_full_decode):
    data = bomb_png(side, side)
    assert len(data) < 10_000
    with pytest.raises(SampleError, match=f"{side}x{side}"):
        decode_image(data)
    with pytest.raises(SampleError, match=f"{side}x{side}"):
        decode_mask(bomb_png(side, side, palette=False))
    with pytest.raises(SampleError, match=f"{side}x{side}"):
        read_image_size(data)
    assert no_full_decode == []


def test_pillow_bomb_error_and_warning_are_sample_errors(monkeypatch):
    """A JPEG (size known only to Pillow) over Pillow's own limit, with warnings as errors too."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buffer, format="JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # 1600 px: over twice the limit, an error
    with pytest.raises(SampleError, match="readable picture"):
        decode_image(buffer.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over the limit: a warning, here an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SampleError, match="readable picture"):
            decode_image(buffer.getvalue())


def test_decoders_check_the_expected_size_before_decoding(no_full_decode):
    image = encode_png(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(SampleError, match="16x16 but the set's size is 32x32"):
        decode_image(image, (32, 32))
    with pytest.raises(SampleError, match="16x16 but image is 16x8"):
        decode_mask(encode_png(np.zeros((16, 16), np.uint8)), (8, 16))
    assert no_full_decode == []
    assert decode_image(image, (16, 16)).shape == (16, 16, 3)


def test_only_png_and_jpeg_decoders_are_tried():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="BMP")
    with pytest.raises(SampleError, match="readable picture"):
        decode_image(buffer.getvalue())
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="TIFF")
    with pytest.raises(SampleError, match="readable PNG"):
        decode_mask(buffer.getvalue())


@pytest.fixture
def bomb_set(tmp_path):
    """A 4-sample 16 px set whose sample s0001 has a 30000x30000 image.png of a few kB."""
    root = write_random_set(tmp_path / "set", 4, size=16)
    _replace_members(root / "train-000000.tar", {"s0001.image.png": bomb_png(30000, 30000)})
    return root


def test_verify_reports_a_decompression_bomb(bomb_set, no_full_decode):
    report = verify_shards(bomb_set, progress=False)
    problems = dict(report.problems)
    assert "30000x30000" in problems["train-000000.tar:s0001"]
    assert report.num_samples == 3
    assert (30000, 30000) not in no_full_decode


def test_training_skips_a_decompression_bomb(bomb_set):
    dataset = ShardDataset([bomb_set])
    with pytest.warns(RuntimeWarning, match="s0001.*30000x30000"):
        keys = [key for batch in DataLoader(dataset, batch_size=2) for key in batch["key"]]
    assert keys == ["s0000", "s0002", "s0003"]
    assert dataset.skipped == 1


@pytest.fixture(params=["recorded", "old manifest"])
def odd_size_set(tmp_path, request):
    """A 64 px set whose sample s0002 is 128 px; with or without ``image_size`` in the manifest."""
    root = write_random_set(tmp_path / "set", 5, size=64)
    rng = np.random.default_rng(0)
    big = {
        "s0002.image.png": encode_png(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)),
        "s0002.mask.png": encode_png(rng.integers(0, 7, (128, 128), dtype=np.uint8)),
    }
    _replace_members(root / "train-000000.tar", big)
    manifest = json.loads((root / "manifest.json").read_text())
    if request.param == "old manifest":
        manifest.pop("image_size", None)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_verify_reports_a_sample_of_another_size(odd_size_set):
    problems = dict(verify_shards(odd_size_set, progress=False).problems)
    assert problems["train-000000.tar:s0002"] == "image is 128x128 but the set's size is 64x64"


def test_training_skips_a_sample_of_another_size_by_key(odd_size_set):
    dataset = ShardDataset([odd_size_set])
    with pytest.warns(RuntimeWarning, match="sample s0002: image is 128x128"):
        batches = list(DataLoader(dataset, batch_size=4))
    assert [key for batch in batches for key in batch["key"]] == ["s0000", "s0001", "s0003", "s0004"]
    assert batches[0]["image"].shape == (4, 3, 64, 64)
    assert dataset.skipped == 1


def test_iter_samples_refuses_a_sample_of_another_size(odd_size_set):
    with pytest.raises(SampleError, match="sample s0002: image is 128x128"):
        list(iter_samples(odd_size_set))


def test_writer_records_the_image_size(tmp_path):
    root = write_random_set(tmp_path / "set", 2, size=16)
    assert read_manifest(root)["image_size"] == [16, 16]
    with ShardWriter(tmp_path / "rect", split="train") as writer:
        writer.write(Sample(key="a", image=np.zeros((8, 24, 3), np.uint8)))
    assert read_manifest(tmp_path / "rect")["image_size"] == [8, 24]
    with ShardWriter(tmp_path / "empty", split="train") as writer:
        pass
    assert "image_size" not in read_manifest(tmp_path / "empty")


def test_a_set_of_mixed_sizes_says_so_and_trains_on_the_first_size(tmp_path):
    with ShardWriter(tmp_path / "mixed", split="train", extra={"image_size": [1, 1]}) as writer:
        for key, side in [("a", 16), ("b", 32), ("c", 16)]:
            writer.write(
                Sample(key=key, image=np.zeros((side, side, 3), np.uint8), mask=np.zeros((side, side), np.uint8))
            )
    assert read_manifest(tmp_path / "mixed")["image_size"] is None
    report = verify_shards(tmp_path / "mixed", progress=False)
    assert report.ok and "differ in size" in report.summary()
    assert [s.key for s in iter_samples(tmp_path / "mixed")] == ["a", "b", "c"]
    dataset = ShardDataset([tmp_path / "mixed"])
    with pytest.warns(RuntimeWarning, match="sample b: image is 32x32 but the set's size is 16x16"):
        assert [item["key"] for item in dataset] == ["a", "c"]


def test_writer_refuses_images_over_the_pixel_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("aras400k.data.shards.MAX_IMAGE_PIXELS", 100)
    with ShardWriter(tmp_path / "set", split="train") as writer, pytest.raises(ValueError, match="more than 100"):
        writer.write(Sample(key="a", image=np.zeros((16, 16, 3), np.uint8)))
    assert MAX_IMAGE_PIXELS == 4096 * 4096


def test_manifest_image_size_is_checked_and_merged(tmp_path):
    a = write_random_set(tmp_path / "a", 2, size=16, prefix="a")
    b = write_random_set(tmp_path / "b", 2, size=16, prefix="b")
    merge_shard_sets([a, b], tmp_path / "ab")
    assert read_manifest(tmp_path / "ab")["image_size"] == [16, 16]
    c = write_random_set(tmp_path / "c", 2, size=32, prefix="c")
    merge_shard_sets([a, c], tmp_path / "ac")
    assert read_manifest(tmp_path / "ac")["image_size"] is None
    with pytest.raises(ValueError, match="different sizes"):
        ShardDataset([a, c])
    manifest = json.loads((a / "manifest.json").read_text())
    for bad in ([16], [0, 16], "16x16", [16, 16.5], [100000, 100000]):
        (a / "manifest.json").write_text(json.dumps({**manifest, "image_size": bad}))
        assert not verify_shards(a, progress=False).ok


def test_decode_sample_size_applies_to_the_mask_too():
    image, mask = encode_png(np.zeros((16, 16, 3), np.uint8)), encode_png(np.zeros((32, 32), np.uint8))
    raw = {"__key__": "k", "image.png": image, "meta.json": b"{}", "mask.png": mask}
    with pytest.raises(SampleError, match="sample k: mask is 32x32 but image is 16x16"):
        decode_sample(raw, size=(16, 16))


def test_oversized_tar_member_makes_the_shard_unreadable_not_memory(tmp_path, monkeypatch):
    root = write_random_set(tmp_path / "set", 2, size=16)
    monkeypatch.setattr("aras400k.data.shards.MAX_MEMBER_BYTES", 64)
    problems = dict(verify_shards(root, progress=False).problems)
    assert "over the 64 limit" in problems["train-000000.tar"]


def test_captioning_skips_a_decompression_bomb(bomb_set, tmp_path, capsys):
    from aras400k.cli.caption import main as caption_main

    out, shards = tmp_path / "caps.jsonl", tmp_path / "captioned"
    args = ["--input", str(bomb_set), "--out", str(out), "--mode", "vision", "--progress", "false"]
    with pytest.warns(UserWarning, match="s0001"):
        assert caption_main([*args, "--shards_out", str(shards)]) == 0
    capsys.readouterr()
    assert read_manifest(shards)["num_samples"] == 3


def test_composition_counts_survive_a_bomb_without_a_mask(tmp_path):
    from aras400k.metrics.composition import _raw_counts

    meta = json.dumps({"composition": {"tree": 1.0}}).encode()
    with pytest.raises(SampleError, match="30000x30000"):
        _raw_counts({"__key__": "k", "image.png": bomb_png(30000, 30000), "meta.json": meta})


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse member")
def test_sparse_tar_member_bomb_is_refused_unread(tmp_path):
    """A 10 kB tar whose sparse member expands to 2 GiB is an unreadable shard, never read into memory."""
    work = tmp_path / "work"
    work.mkdir()
    with open(work / "k.image.png", "wb") as fh:
        fh.truncate(2**31)
    (work / "k.meta.json").write_text("{}")
    shard = tmp_path / "bomb.tar"
    done = subprocess.run(["tar", "-S", "-cf", str(shard), "k.image.png", "k.meta.json"], cwd=work, check=False)
    if done.returncode != 0 or shard.stat().st_size > 1 << 20:
        pytest.skip("this tar does not write sparse members")
    with pytest.raises(tarfile.ReadError, match="over the"):
        list(iter_raw_samples(shard))
