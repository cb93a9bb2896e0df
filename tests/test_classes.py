import numpy as np
import pytest

from aras400k.classes import (
    CLASS_NAMES,
    CLASSES,
    DEFAULT_WORLDCOVER_REMAP,
    IGNORE_INDEX,
    PALETTE,
    UnknownColourError,
    colour_to_index,
    index_to_colour,
    worldcover_to_index,
)


def test_class_table_matches_design():
    assert CLASS_NAMES == ("tree", "shrub", "grass", "crop", "built", "barren", "water")
    assert [c.colour for c in CLASSES] == [
        (0, 100, 0),
        (255, 182, 193),
        (154, 205, 50),
        (255, 215, 0),
        (139, 69, 19),
        (211, 211, 211),
        (0, 0, 255),
    ]
    assert IGNORE_INDEX == 255


def test_default_remap_follows_published_data():
    assert DEFAULT_WORLDCOVER_REMAP[90] == CLASS_NAMES.index("grass")  # wetland -> grass
    assert DEFAULT_WORLDCOVER_REMAP[95] == CLASS_NAMES.index("tree")  # mangrove
    assert DEFAULT_WORLDCOVER_REMAP[100] == CLASS_NAMES.index("grass")  # moss
    assert DEFAULT_WORLDCOVER_REMAP[70] == CLASS_NAMES.index("barren")  # snow
    codes = np.array([[10, 20, 30, 40], [50, 60, 70, 80], [90, 95, 100, 0]], dtype=np.uint8)
    assert worldcover_to_index(codes).tolist() == [[0, 1, 2, 3], [4, 5, 5, 6], [2, 0, 2, 255]]


def test_custom_remap_and_bad_remap():
    custom = {**DEFAULT_WORLDCOVER_REMAP, 90: 0}  # the paper's text: wetland -> tree
    assert worldcover_to_index(np.array([90]), custom).tolist() == [0]
    with pytest.raises(ValueError, match="out of range"):
        worldcover_to_index(np.array([90]), {90: 9})


def test_colour_round_trip_every_class():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 7, (17, 23), dtype=np.uint8)
    mask[0, 0] = IGNORE_INDEX
    rgb = index_to_colour(mask, ignore_colour=tuple(PALETTE[0]))
    back = colour_to_index(rgb)
    expected = mask.copy()
    expected[0, 0] = 0
    assert np.array_equal(back, expected)


def test_unknown_colour_error_names_colour_count_and_file():
    rgb = index_to_colour(np.zeros((4, 4), dtype=np.uint8))
    rgb[0, :3] = (1, 2, 3)
    rgb[1, 0] = (9, 9, 9)
    with pytest.raises(UnknownColourError, match=r"\(1, 2, 3\) on 3 pixels in masks/a\.png \(and 1 other"):
        colour_to_index(rgb, source="masks/a.png")


def test_unknown_colour_can_map_to_ignore():
    rgb = index_to_colour(np.full((3, 3), 6, dtype=np.uint8))
    rgb[1, 1] = (7, 7, 7)
    out = colour_to_index(rgb, unknown="ignore")
    assert out[1, 1] == IGNORE_INDEX and (out[out != IGNORE_INDEX] == 6).all()


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        colour_to_index(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="outside"):
        index_to_colour(np.array([[7]]))
