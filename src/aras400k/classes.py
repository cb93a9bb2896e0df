"""The seven ARAS400k land-cover classes, the WorldCover remap and colour <-> index lookups.

The class table is a fixed contract of the project (see ``docs/architecture.md`` and
``docs/data.md``): every mask in every shard stores these indices, and index
:data:`IGNORE_INDEX` (255) means "ignore".

Colour conversion is a table lookup on packed 24-bit colours, never a loop over classes,
so converting a 256x256 release mask costs about as much as one ``np.unique``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "DEFAULT_WORLDCOVER_REMAP",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "PALETTE",
    "WORLDCOVER_NODATA",
    "LandCoverClass",
    "UnknownColourError",
    "colour_table",
    "colour_to_index",
    "index_to_colour",
    "worldcover_lookup",
    "worldcover_to_index",
]


@dataclass(frozen=True)
class LandCoverClass:
    """One row of the class table.

    Attributes:
        index: The value stored in index masks.
        name: Short lowercase name used in metrics, compositions and captions.
        worldcover: ESA WorldCover 2021 codes that map to this class by default.
        colour: RGB colour of this class in the published ARAS400k colour masks.
    """

    index: int
    name: str
    worldcover: tuple[int, ...]
    colour: tuple[int, int, int]


#: The class table. WorldCover 90 (wetland) goes to grass, as in the published data
#: (the paper's text says tree cover); pass a different remap to change it.
CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass(0, "tree", (10, 95), (0, 100, 0)),
    LandCoverClass(1, "shrub", (20,), (255, 182, 193)),
    LandCoverClass(2, "grass", (30, 90, 100), (154, 205, 50)),
    LandCoverClass(3, "crop", (40,), (255, 215, 0)),
    LandCoverClass(4, "built", (50,), (139, 69, 19)),
    LandCoverClass(5, "barren", (60, 70), (211, 211, 211)),
    LandCoverClass(6, "water", (80,), (0, 0, 255)),
)

#: Class names in index order.
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
#: Number of land-cover classes.
NUM_CLASSES: int = len(CLASSES)
#: Mask value that losses and metrics ignore.
IGNORE_INDEX: int = 255
#: WorldCover's "no data" code.
WORLDCOVER_NODATA: int = 0
#: Default WorldCover code -> class index remap (the published dataset's).
DEFAULT_WORLDCOVER_REMAP: dict[int, int] = {code: c.index for c in CLASSES for code in c.worldcover}
#: ``(NUM_CLASSES, 3)`` uint8 array of release colours in index order.
PALETTE: np.ndarray = np.array([c.colour for c in CLASSES], dtype=np.uint8)


class UnknownColourError(ValueError):
    """A colour mask holds a colour that is not in the class table."""


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(..., 3)`` uint8 colours into ``(...)`` uint32 values ``0xRRGGBB``."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_PACKED_PALETTE = _pack(PALETTE)
_PALETTE_ORDER = np.argsort(_PACKED_PALETTE)
_SORTED_PACKED = _PACKED_PALETTE[_PALETTE_ORDER]


def colour_to_index(
    rgb: np.ndarray,
    unknown: Literal["error", "ignore"] = "error",
    source: str | Path | None = None,
) -> np.ndarray:
    """Convert an ``(H, W, 3)`` uint8 mask in the release colours to ``(H, W)`` uint8 class indices.

    Args:
        rgb: The colour mask.
        unknown: A colour outside the class table raises (``"error"``) or becomes
            :data:`IGNORE_INDEX` (``"ignore"``).
        source: File the mask came from, named in the error message.

    Raises:
        ValueError: If ``rgb`` is not ``(H, W, 3)``.
        UnknownColourError: If ``unknown="error"`` and a colour is not in the table; the
            message names the colour, its pixel count and ``source``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        where = f" in {source}" if source is not None else ""
        raise ValueError(f"expected an (H, W, 3) colour mask{where}, got shape {rgb.shape}")
    packed = _pack(rgb)
    pos = np.searchsorted(_SORTED_PACKED, packed)
    pos_clipped = np.minimum(pos, len(_SORTED_PACKED) - 1)
    known = _SORTED_PACKED[pos_clipped] == packed
    index = _PALETTE_ORDER[pos_clipped].astype(np.uint8)
    if known.all():
        return index
    if unknown == "ignore":
        index[~known] = IGNORE_INDEX
        return index
    values, counts = np.unique(packed[~known], return_counts=True)
    worst = int(np.argmax(counts))
    colour = (int(values[worst]) >> 16, (int(values[worst]) >> 8) & 255, int(values[worst]) & 255)
    where = f" in {source}" if source is not None else ""
    more = f" (and {len(values) - 1} other unknown colours)" if len(values) > 1 else ""
    raise UnknownColourError(
        f"unknown mask colour {colour} on {int(counts[worst])} pixels{where}{more}; "
        f"known colours are {[c.colour for c in CLASSES]}; map them to ignore (255) to keep the file"
    )


def index_to_colour(mask: np.ndarray, ignore_colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Convert an ``(H, W)`` class-index mask to an ``(H, W, 3)`` uint8 mask in the release colours.

    Args:
        mask: Class indices ``0..6`` or 255.
        ignore_colour: Colour for :data:`IGNORE_INDEX` pixels.

    Raises:
        ValueError: If the mask holds a value that is neither a class nor 255.
    """
    mask = np.asarray(mask)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    lut[IGNORE_INDEX] = ignore_colour
    bad = (mask >= NUM_CLASSES) & (mask != IGNORE_INDEX)
    if bad.any():
        raise ValueError(
            f"mask holds values {sorted(np.unique(mask[bad]).tolist())} outside 0..{NUM_CLASSES - 1} and 255"
        )
    return lut[mask.astype(np.uint8)]


def colour_table() -> dict[int, tuple[int, int, int, int]]:
    """The release colours as a GeoTIFF colour table (RGBA), with transparent black for :data:`IGNORE_INDEX`."""
    table = {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(PALETTE)}
    table[IGNORE_INDEX] = (0, 0, 0, 0)
    return table


def worldcover_lookup(remap: Mapping[int, int] | None = None) -> np.ndarray:
    """Build a ``(256,)`` uint8 lookup table from WorldCover codes to class indices.

    ``remap`` maps code -> class index (``None``: :data:`DEFAULT_WORLDCOVER_REMAP`); codes
    not in it (and code 0, no data) map to :data:`IGNORE_INDEX`.

    Raises:
        ValueError: If a code or an index is out of range.
    """
    remap = DEFAULT_WORLDCOVER_REMAP if remap is None else remap
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for code, index in remap.items():
        if not 0 < int(code) < 256:
            raise ValueError(f"WorldCover code {code} is out of range 1..255")
        if not 0 <= int(index) < NUM_CLASSES:
            raise ValueError(f"class index {index} for WorldCover code {code} is out of range 0..{NUM_CLASSES - 1}")
        lut[int(code)] = int(index)
    return lut


def worldcover_to_index(codes: np.ndarray, remap: Mapping[int, int] | None = None) -> np.ndarray:
    """Map a WorldCover code raster to uint8 class indices (unknown codes and no-data -> 255).

    ``remap`` is as for :func:`worldcover_lookup`.
    """
    return worldcover_lookup(remap)[np.asarray(codes).astype(np.uint8)]
