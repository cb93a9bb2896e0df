"""Decoding PNGs straight into our arrays gives Pillow's pixels, bit for bit, in every PNG flavour."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import aras400k.data.shards as shards
from aras400k.classes import IGNORE_INDEX, NUM_CLASSES
from aras400k.data import ShardDataset
from aras400k.data.datasets import EpochDataLoader
from aras400k.data.shards import SampleError, decode_image, decode_mask, decode_sample, encode_png
from tests.conftest import write_random_set


def _png(array: np.ndarray, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _pillow_rgb(data: bytes) -> np.ndarray:
    """What decode_image always returned: Pillow's RGB pixels through np.array."""
    with Image.open(io.BytesIO(data)) as img:
        return np.array(img.convert("RGB") if img.mode != "RGB" else img)


RNG = np.random.default_rng(5)
RGB = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "data",
    [
        _png(RGB),
        _png(RGB, optimize=True),
        encode_png(RGB, compress_level=0),
        _png(np.dstack([RGB, RGB[..., :1]])),  # RGBA: converted
        _png(RGB[..., 0]),  # grey: converted
        _png(RGB.astype(np.uint16)[..., 0] * 200),  # 16-bit grey: converted
    ],
    ids=["rgb", "optimised", "stored", "rgba", "grey", "grey16"],
)
def test_decode_image_gives_pillows_pixels(data):
    expected = _pillow_rgb(data)
    image = decode_image(data)
    assert image.flags.c_contiguous and image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)
    planar = decode_image(data, channels_first=True)
    assert planar.shape == (3, *expected.shape[:2]) and planar.flags.c_contiguous
    np.testing.assert_array_equal(planar, expected.transpose(2, 0, 1))


def test_palette_pngs():
    palette = Image.fromarray(RGB).quantize(16)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), _pillow_rgb(buffer.getvalue()))
    mask = RNG.integers(0, 7, (29, 31), dtype=np.uint8)
    pal_mask = Image.fromarray(mask, "L").convert("P")
    buffer = io.BytesIO()
    pal_mask.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_mask(buffer.getvalue()), np.array(Image.open(io.BytesIO(buffer.getvalue()))))


def test_decode_mask_direct_and_its_checks():
    mask = RNG.integers(0, 7, (29, 31), dtype=np.uint8)
    mask[3:5] = 255
    out = decode_mask(encode_png(mask))
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, mask)
    mask[0, 0] = 9
    with pytest.raises(SampleError, match=r"mask holds values \[9\]"):
        decode_mask(encode_png(mask))
    with pytest.raises(SampleError, match="mask is 31x29 but image is 8x8"):
        decode_mask(encode_png(mask), (8, 8))


def test_a_pillow_that_replaces_the_memory_still_decodes(monkeypatch):
    """Older Pillows allocate their own memory in load(); the mask is then read the usual way."""
    real = ImageFile.ImageFile.load_prepare

    def fresh_memory(self):
        self.im = Image.core.new(self.mode, self.size)
        real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", fresh_memory)
    mask = RNG.integers(0, 7, (29, 31), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(mask))) as img:
        assert shards._decode_direct(img) is None
    np.testing.assert_array_equal(decode_mask(encode_png(mask)), mask)
    np.testing.assert_array_equal(decode_image(_png(RGB), channels_first=True), RGB.transpose(2, 0, 1))


def _refuse(*args, **kwargs):
    raise TypeError("this Pillow's map_buffer takes other arguments")


@pytest.mark.parametrize("internals", ["missing", "different"])
def test_a_pillow_without_the_internals_decodes_the_plain_way(monkeypatch, internals):
    """``Image.core.map_buffer`` is Pillow's internal: without it, or unlike ours, the pixels are the same."""
    mask = RNG.integers(0, 7, (29, 31), dtype=np.uint8)
    mask_png, image_png = encode_png(mask), _png(RGB)  # Image.fromarray uses map_buffer too
    if internals == "missing":
        monkeypatch.setattr(shards, "_PILLOW_BUFFERS", False)
    else:
        monkeypatch.setattr(Image.core, "map_buffer", _refuse)
    np.testing.assert_array_equal(decode_mask(mask_png), mask)
    planar = decode_image(image_png, channels_first=True)
    assert planar.flags.c_contiguous
    np.testing.assert_array_equal(planar, RGB.transpose(2, 0, 1))


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_pngs_are_the_same_sample_errors(damage):
    data = bytearray(_png(RGB))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    with pytest.raises(SampleError, match="sample k: image is not a readable picture"):
        decode_sample({"__key__": "k", "image.png": bytes(data), "meta.json": b"{}"})


def test_channels_first_sample():
    mask = RNG.integers(0, 7, (37, 53), dtype=np.uint8)
    raw = {"__key__": "k", "image.png": _png(RGB), "mask.png": encode_png(mask), "meta.json": b"{}"}
    sample = decode_sample(raw, channels_first=True, size=(37, 53))
    np.testing.assert_array_equal(sample.image, RGB.transpose(2, 0, 1))
    np.testing.assert_array_equal(sample.mask, mask)
    raw["mask.png"] = encode_png(mask[:, :50])
    with pytest.raises(SampleError, match="mask is 50x37 but image is 53x37"):
        decode_sample(raw, channels_first=True)


def test_dataset_batches_hold_pillows_pixels(tmp_path):
    """Items and batches (made in a worker, in reused memory) hold the pixels Pillow decodes from the shards."""
    root = write_random_set(tmp_path / "a", 10, per_shard=4)
    expected = {}
    for path in sorted(root.glob("*.tar")):
        for raw in shards.iter_raw_samples(path):
            expected[raw["__key__"]] = (
                _pillow_rgb(raw["image.png"]).transpose(2, 0, 1),
                np.array(Image.open(io.BytesIO(raw["mask.png"]))),
            )
    items = list(ShardDataset([root]))
    for item in items:
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
        assert item["image"].is_contiguous() and item["mask"].is_contiguous()
        np.testing.assert_array_equal(item["image"].numpy(), expected[item["key"]][0])
        np.testing.assert_array_equal(item["mask"].numpy(), expected[item["key"]][1])
    loader = EpochDataLoader(ShardDataset([root]), batch_size=4, num_workers=1, reuse_batch_memory=True)
    batches = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for b in loader]
    for batch in batches:
        for index, key in enumerate(batch["key"]):
            np.testing.assert_array_equal(batch["image"][index].numpy(), expected[key][0])
            np.testing.assert_array_equal(batch["mask"][index].numpy(), expected[key][1])
    assert sorted(k for b in batches for k in b["key"]) == sorted(expected)


def test_mask_value_check_allows_exactly_the_classes_and_ignore():
    for value in range(256):
        mask = np.zeros((4, 4), np.uint8)
        mask[1, 2] = value
        assert shards._has_bad_values(mask) is not (value < NUM_CLASSES or value == IGNORE_INDEX), value
    assert shards._has_bad_values(np.zeros((0, 3), np.uint8)) is False
