"""Tests for the procedural demo scenes (aras400k.data.scenes)."""

from __future__ import annotations

import numpy as np
import pytest

from aras400k.classes import CLASS_NAMES, NUM_CLASSES
from aras400k.data.scenes import generate_scene

TREE, SHRUB, GRASS, CROP, BUILT, BARREN, WATER = range(NUM_CLASSES)


@pytest.fixture(scope="module")
def pooled() -> dict[str, np.ndarray]:
    """Pixel counts, per-scene presence and colour moments over 200 scenes of 32 px."""
    rng = np.random.default_rng(2024)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    present = np.zeros(NUM_CLASSES, dtype=np.int64)
    colour_sums = np.zeros((NUM_CLASSES, 3))
    colour_squares = np.zeros((NUM_CLASSES, 3))
    for _ in range(200):
        image, mask = generate_scene(rng, 32)
        scene_counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES)
        counts += scene_counts
        present += scene_counts > 0
        for k in range(NUM_CLASSES):
            pixels = image[mask == k].astype(np.float64)
            colour_sums[k] += pixels.sum(axis=0)
            colour_squares[k] += (pixels**2).sum(axis=0)
    n = np.maximum(counts, 1)[:, None]
    mean = colour_sums / n
    std = np.sqrt(np.maximum(colour_squares / n - mean**2, 0.0))
    return {"counts": counts, "present": present, "mean_rgb": mean, "std_rgb": std}


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shapes_dtypes_and_values(size: int) -> None:
    """Images are (size, size, 3) uint8 and masks (size, size) uint8 in 0..6."""
    rng = np.random.default_rng(size)
    for _ in range(3 if size == 256 else 10):
        image, mask = generate_scene(rng, size)
        assert image.shape == (size, size, 3)
        assert image.dtype == np.uint8
        assert mask.shape == (size, size)
        assert mask.dtype == np.uint8
        assert int(mask.max()) < NUM_CLASSES


def test_default_size_is_64() -> None:
    """The default scene is 64 px."""
    image, mask = generate_scene(np.random.default_rng(0))
    assert image.shape == (64, 64, 3)
    assert mask.shape == (64, 64)


def test_deterministic_given_seed() -> None:
    """The same seed gives identical scenes; another seed gives different ones."""
    a_image, a_mask = generate_scene(np.random.default_rng(7), 64)
    b_image, b_mask = generate_scene(np.random.default_rng(7), 64)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_image, c_mask = generate_scene(np.random.default_rng(8), 64)
    assert not np.array_equal(a_image, c_image)
    assert not np.array_equal(a_mask, c_mask)


def test_generator_advances() -> None:
    """Consecutive draws from one generator differ (the generator state advances)."""
    rng = np.random.default_rng(3)
    first, _ = generate_scene(rng, 32)
    second, _ = generate_scene(rng, 32)
    assert not np.array_equal(first, second)


def test_rejects_tiny_size() -> None:
    """Sizes below 8 px are refused."""
    with pytest.raises(ValueError, match="at least 8"):
        generate_scene(np.random.default_rng(0), 4)


def test_every_class_appears(pooled: dict[str, np.ndarray]) -> None:
    """Every class occurs, and each in at least a few percent of the scenes."""
    present = pooled["present"]
    for k, name in enumerate(CLASS_NAMES):
        assert present[k] >= 6, f"{name} appears in only {present[k]} of 200 scenes"


def test_class_shares_are_imbalanced(pooled: dict[str, np.ndarray]) -> None:
    """Tree, grass and crop dominate; shrub and barren are rare; water and built in between."""
    share = pooled["counts"] / pooled["counts"].sum()
    assert share[TREE] + share[GRASS] + share[CROP] > 0.5
    assert share[SHRUB] < 0.10
    assert share[BARREN] < 0.10
    for rare in (SHRUB, BARREN):
        for common in (TREE, GRASS, CROP):
            assert share[rare] < share[common]
    for moderate in (WATER, BUILT):
        assert 0.01 < share[moderate] < min(share[TREE], share[GRASS], share[CROP])


def test_scenes_vary() -> None:
    """Scenes differ in their dominant class: forests, farmland and open land all occur."""
    rng = np.random.default_rng(11)
    dominant = set()
    for _ in range(60):
        _, mask = generate_scene(rng, 32)
        dominant.add(int(np.bincount(mask.ravel(), minlength=NUM_CLASSES).argmax()))
    assert {TREE, GRASS, CROP} <= dominant


def test_class_colours_carry_the_labels(pooled: dict[str, np.ndarray]) -> None:
    """Per-class mean colours differ in the expected directions."""
    rgb = pooled["mean_rgb"]
    brightness = rgb.sum(axis=1)
    blue_share = rgb[:, 2] / brightness
    spread = rgb.max(axis=1) - rgb.min(axis=1)
    # Water is the bluest class and darker than everything but forest.
    assert blue_share.argmax() == WATER
    assert all(brightness[WATER] < brightness[k] for k in (SHRUB, GRASS, CROP, BUILT, BARREN))
    # Forest is the darkest vegetation and is green-dominant.
    assert brightness[TREE] < min(brightness[SHRUB], brightness[GRASS], brightness[CROP])
    assert rgb[TREE].argmax() == 1
    # Built-up is greyer (less saturated) than every vegetation class; barren is the brightest.
    assert all(spread[BUILT] < spread[k] for k in (TREE, SHRUB, GRASS, CROP))
    assert brightness.argmax() == BARREN
    # No two classes share a mean colour, except that crop parcels (green, ripe, ploughed,
    # fallow) average out near grass by design; crop is told apart by its varied tones.
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    apart = ~np.eye(NUM_CLASSES, dtype=bool)
    apart[GRASS, CROP] = apart[CROP, GRASS] = False
    assert distances[apart].min() > 12.0
    assert distances[GRASS, CROP] > 3.0
    assert pooled["std_rgb"][CROP].mean() > 1.2 * pooled["std_rgb"][GRASS].mean()


def test_images_are_textured() -> None:
    """Images are not flat per class: there is spatial variation within a class."""
    image, mask = generate_scene(np.random.default_rng(5), 64)
    values, counts = np.unique(mask, return_counts=True)
    biggest = values[counts.argmax()]
    pixels = image[mask == biggest].astype(np.float64)
    assert pixels.std(axis=0).mean() > 2.0
