"""The release's pictures: images as RGB, masks as class indices.

A mask is a colour mask in the release colours (RGB or palette PNG) or a one-channel
index mask; what the class table lacks is a problem, or 255 with ``unknown="ignore"``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from aras400k.classes import IGNORE_INDEX, NUM_CLASSES, UnknownColourError, colour_to_index
from aras400k.data.release.problems import UNKNOWN_COLOUR, UNREADABLE, Problem
from aras400k.data.shards import MAX_IMAGE_PIXELS

__all__: list[str] = []

_T = TypeVar("_T")

#: Image modes converted to RGB without loss of meaning.
_IMAGE_MODES = ("RGB", "RGBA", "L", "P")
#: One-channel mask modes read as class indices.
_INDEX_MODES = ("L", "LA", "I", "I;16", "I;16B", "I;16L")


def _decode(path: Path, what: str, read: Callable[[Image.Image], _T]) -> tuple[str, _T]:
    """The picture's mode and what ``read`` takes from it once decoded (refused over ``MAX_IMAGE_PIXELS``)."""
    try:
        with path.open("rb") as fh, Image.open(fh) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                detail = f"{what} is {img.width}x{img.height} px, more than {MAX_IMAGE_PIXELS} pixels"
                raise Problem(UNREADABLE, detail, path)
            img.load()
            return img.mode, read(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise Problem(UNREADABLE, f"not a readable {what} ({err})", path) from err


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        Problem: If the file is not a readable picture or has an unsupported mode.
    """
    mode, rgb = _decode(path, "image", lambda img: np.asarray(img.convert("RGB")) if img.mode in _IMAGE_MODES else None)
    if rgb is None:
        raise Problem(UNREADABLE, f"unsupported image mode {mode}; expected an RGB picture", path)
    return rgb


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: IHDR bit depth and colour type of the PNGs copied verbatim: 8-bit truecolour (RGB).
_VERBATIM_IHDR = (8, 2)


def verbatim_png(path: Path) -> bytes | None:
    """The file's bytes if it is an 8-bit RGB PNG, which a shard may hold as its ``image.png`` unchanged.

    Call it after :func:`read_image` has decoded (so checked) the file; the header alone
    decides here. ``None`` for any other picture.
    """
    data = path.read_bytes()
    if len(data) < 29 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return data if (data[24], data[25]) == _VERBATIM_IHDR else None


def read_mask(path: Path, unknown: Literal["error", "ignore"]) -> np.ndarray:
    """Read a colour mask (RGB or palette) or a one-channel index mask as class indices.

    Raises:
        Problem: If the file is unreadable, has an unsupported mode, or holds unknown
            colours or values while ``unknown="error"``.
    """
    mode, (pixels, palette) = _decode(
        path, "mask", lambda img: (np.asarray(img), img.getpalette() if img.mode == "P" else None)
    )
    if mode in ("RGB", "RGBA"):
        return _colours_to_index(pixels[..., :3], path, unknown)
    if mode == "P":
        return _palette_to_index(pixels, palette or [], path, unknown)
    if mode in _INDEX_MODES:
        return _check_indices(pixels[..., 0] if mode == "LA" else pixels, path, unknown)
    raise Problem(
        UNREADABLE, f"unsupported mask mode {mode}; expected an RGB colour mask or a one-channel index mask", path
    )


def _colours_to_index(rgb: np.ndarray, path: Path, unknown: Literal["error", "ignore"]) -> np.ndarray:
    """Convert release colours to indices; an unknown colour is a problem while ``unknown="error"``."""
    try:
        return colour_to_index(rgb, unknown=unknown, source=path)
    except UnknownColourError as err:
        detail = str(err).removeprefix(f"{UNKNOWN_COLOUR} ")
        raise Problem(UNKNOWN_COLOUR, f"{detail} with --unknown-colours ignore", path) from err


def _palette_to_index(
    values: np.ndarray, palette: list[int], path: Path, unknown: Literal["error", "ignore"]
) -> np.ndarray:
    """Read a palette PNG as a colour mask if it uses release colours, else as indices."""
    table = np.zeros((256, 3), dtype=np.uint8)
    entries = np.asarray(palette[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    table[: len(entries)] = entries
    used = table[np.unique(values)]
    release = colour_to_index(used[None], unknown="ignore") != IGNORE_INDEX
    if release.any():
        return _colours_to_index(table[values], path, unknown)
    return _check_indices(values, path, unknown)


def _check_indices(values: np.ndarray, path: Path, unknown: Literal["error", "ignore"]) -> np.ndarray:
    """Check a one-channel mask holds only class indices and 255 (else a problem while ``unknown="error"``)."""
    values = np.asarray(values)
    valid = (values >= 0) & ((values < NUM_CLASSES) | (values == IGNORE_INDEX))
    if valid.all():
        return values.astype(np.uint8)
    if unknown == "ignore":
        return np.where(valid, values, IGNORE_INDEX).astype(np.uint8)
    bad = np.unique(values[~valid])
    listed = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    raise Problem(
        UNKNOWN_COLOUR,
        f"one-channel mask holds values {listed} on {int((~valid).sum())} pixels, neither classes "
        f"0-{NUM_CLASSES - 1} nor {IGNORE_INDEX}; map them to ignore ({IGNORE_INDEX}) with --unknown-colours ignore",
        path,
    )
