"""The helpers that the shortening pass (issue #16) folded duplicated code into."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aras400k.checkpoints import load_prefixed_weights
from aras400k.classes import IGNORE_INDEX, PALETTE, colour_table
from aras400k.synthesis.jobs import batches_by, input_shard_size, locate_shard, refuse_in_place, to_uint8_images


def test_batches_by_cuts_at_the_size_and_at_every_change_of_key_keeping_order() -> None:
    items = [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "a")]
    batches = list(batches_by(items, 2, key=lambda item: item[1]))
    assert [[n for n, _ in batch] for batch in batches] == [[1, 2], [3], [4], [5]]
    assert list(batches_by([], 3, key=lambda item: item)) == []


def test_input_shard_size_follows_the_first_shard_times_the_factor() -> None:
    assert input_shard_size({"shards": [{"num_samples": 7}, {"num_samples": 2}]}) == 7
    assert input_shard_size({"shards": [{"num_samples": 7}]}, per_sample=3) == 21
    assert input_shard_size({"shards": [{"num_samples": 0}]}) == 1
    assert input_shard_size({"shards": []}) == 1000


def test_to_uint8_images_rounds_and_clamps_the_generator_range() -> None:
    images = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    pixels = to_uint8_images(images)
    assert pixels.shape == (1, 1, 5, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_refuse_in_place_and_locate_shard_fail_in_one_line(tmp_path: Path) -> None:
    refuse_in_place(tmp_path / "in", tmp_path / "out")
    refuse_in_place("s3://bucket/set", tmp_path)  # a remote input is never the local output
    with pytest.raises(ValueError, match="never edited in place"):
        refuse_in_place(tmp_path, tmp_path)
    (tmp_path / "train-000000.tar").write_bytes(b"")
    assert locate_shard(tmp_path, "train-000000.tar") == tmp_path / "train-000000.tar"
    with pytest.raises(FileNotFoundError, match="listed in the manifest is missing"):
        locate_shard(tmp_path, "train-000001.tar")


def test_colour_table_is_the_palette_with_transparent_no_data() -> None:
    table = colour_table()
    assert table[IGNORE_INDEX] == (0, 0, 0, 0)
    assert [table[i][:3] for i in range(len(PALETTE))] == [tuple(int(v) for v in c) for c in PALETTE]
    assert all(table[i][3] == 255 for i in range(len(PALETTE)))


def test_load_prefixed_weights_takes_only_the_prefix_and_names_the_file() -> None:
    module = torch.nn.Linear(2, 2)
    state = {
        "ema.shadow.weight": torch.ones(2, 2),
        "ema.shadow.bias": torch.zeros(2),
        "generator.weight": torch.zeros(2, 2),
    }
    load_prefixed_weights(module, state, "ema.shadow.", "ckpt.ckpt")
    assert torch.equal(module.weight, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"ckpt\.ckpt: the generator weights of X do not fit Linear"):
        load_prefixed_weights(module, state, "generator.", "ckpt.ckpt", " of X")
