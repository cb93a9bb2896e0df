"""Per-class pixel counts: the batched word-lane counter against a per-class loop."""

import numpy as np
import pytest

from aras400k.classes import NUM_CLASSES
from aras400k.data.composition import class_counts, class_counts_batch


def _loop(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.array([(np.asarray(mask) == c).sum() for c in range(num_classes)], dtype=np.int64)


@pytest.mark.parametrize("shape", [(9, 64, 64), (3, 5, 7), (70, 17, 33), (2, 1, 1)])
def test_batch_counts_equal_the_per_class_loop(shape):
    rng = np.random.default_rng(sum(shape))
    masks = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 100, 254, 255], size=shape).astype(np.uint8)
    counts = class_counts_batch(masks)
    assert counts.dtype == np.int64 and counts.shape == (shape[0], NUM_CLASSES)
    np.testing.assert_array_equal(counts, np.stack([_loop(m) for m in masks]))
    np.testing.assert_array_equal(class_counts(masks[0]), _loop(masks[0]))


def test_a_full_single_class_mask_does_not_overflow_a_lane():
    masks = np.zeros((2, 256, 256), dtype=np.uint8)
    masks[1] = 6
    np.testing.assert_array_equal(class_counts_batch(masks)[:, [0, 6]], [[65536, 0], [0, 65536]])


def test_wide_integer_masks_ignore_values_outside_the_classes():
    # 256 and 262 must not wrap onto classes 0 and 6; -1 is not class 255.
    mask = np.array([[0, 256, 6, 262, -1, 3]], dtype=np.int64)
    np.testing.assert_array_equal(class_counts(mask), [1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(class_counts_batch(mask[None], num_classes=4), [[1, 0, 0, 1]])


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="integer array"):
        class_counts_batch(np.zeros((2, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="num_classes"):
        class_counts_batch(np.zeros((2, 4, 4), dtype=np.uint8), num_classes=256)
