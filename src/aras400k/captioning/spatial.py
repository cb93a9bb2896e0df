"""Where each class lies in a patch: layout codes and phrases from a class-index mask.

The template backend says *where* a class is ("cropland in the south-west") from the
first and second moments of its pixels on a subsampled mask (a few bincounts per
patch). North is the top row, as in north-up imagery.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from aras400k.classes import CLASS_NAMES, NUM_CLASSES

__all__ = ["ClassLayout", "class_layouts", "location_code", "location_phrases"]

_ADJECTIVE = {
    "north": "northern",
    "south": "southern",
    "east": "eastern",
    "west": "western",
    "north-east": "north-eastern",
    "north-west": "north-western",
    "south-east": "south-eastern",
    "south-west": "south-western",
}


@dataclass(frozen=True)
class ClassLayout:
    """Position and extent of one class in a mask.

    Attributes:
        name: Class name.
        share: Fraction of the labelled pixels.
        centroid: ``(row, column)`` of the class's pixels, each in ``0..1`` (0 = north / west).
        spread: ``(row, column)`` variances of its pixel positions (uniform: ``1/12``).
        location: Layout code from :func:`location_code`.
    """

    name: str
    share: float
    centroid: tuple[float, float]
    spread: tuple[float, float]
    location: str


@lru_cache(maxsize=16)
def _grids(height: int, width: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column positions (0..1) of the subsampled pixels, flattened."""
    ys = (np.arange(0, height, stride) + 0.5) / height
    xs = (np.arange(0, width, stride) + 0.5) / width
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return yy.ravel(), xx.ravel()


def _direction(cy: float, cx: float, low: float, high: float) -> str:
    vertical = "north" if cy < low else "south" if cy > high else ""
    horizontal = "west" if cx < low else "east" if cx > high else ""
    return "-".join(p for p in (vertical, horizontal) if p) or "centre"


def location_code(share: float, centroid: tuple[float, float], spread: tuple[float, float]) -> str:
    """Classify where a class lies from its share of the patch and ``(row, column)`` centre and variances.

    The centroid is in ``0..1``. Codes: ``"whole"``, ``"scattered"``, ``"band:ew"``, ``"band:ns"``,
    ``"edge:D"``, ``"half:D"`` (D a side: ``north``, ``south``, ``east``, ``west``),
    ``"at:D"`` or ``"towards:D"`` (D a side, a corner such as ``north-east``, or ``centre``).
    """
    cy, cx = centroid
    var_y, var_x = spread
    if share >= 0.85:
        return "whole"
    strips = ((var_y, var_x, cy, "ew", ("north", "south")), (var_x, var_y, cx, "ns", ("west", "east")))
    for across, along, centre, band, (low, high) in strips:  # stretched west-east, then north-south
        if across < 0.35 * along and along > 0.045:
            if 0.4 <= centre <= 0.6:
                return f"band:{band}"
            return f"{'half' if share >= 0.3 else 'edge'}:{low if centre < 0.4 else high}"
    if var_x + var_y < 0.05:  # compact
        return f"at:{_direction(cy, cx, 0.4, 0.6)}"
    if np.hypot(cy - 0.5, cx - 0.5) > 0.12:
        return f"towards:{_direction(cy, cx, 0.45, 0.55)}"
    return "scattered"


def location_phrases(code: str) -> tuple[str, ...]:
    """Phrasings of a :func:`location_code` code, e.g. ``("in the north-east", "in the north-eastern corner", ...)``.

    Raises:
        ValueError: On an unknown code.
    """
    kind, _, where = code.partition(":")
    adjective = _ADJECTIVE.get(where, where)
    if code == "whole":
        return ("across the whole patch", "throughout the scene", "over almost the entire image")
    if code == "scattered":
        return ("scattered across the patch", "in scattered patches", "spread throughout the scene")
    if code == "band:ew":
        return ("in an east-west band across the middle", "in a band crossing the centre from west to east")
    if code == "band:ns":
        return ("in a north-south band through the centre", "in a band running north to south through the middle")
    if kind == "edge" and where in _ADJECTIVE:
        return (f"along the {adjective} edge", f"in a strip along the {adjective} edge", f"on the {adjective} margin")
    if kind == "half" and where in _ADJECTIVE:
        return (f"across the {adjective} half", f"in the {adjective} part", f"over the {adjective} side")
    if kind == "at" and where == "centre":
        return ("in the centre", "in the middle of the patch", "at the centre")
    if kind == "at" and where in _ADJECTIVE:
        if "-" in where:
            return (f"in the {where}", f"in the {adjective} corner", f"in the {where} corner")
        return (f"in the {where}", f"in the {adjective} part", f"towards the {where}")
    if kind == "towards" and (where in _ADJECTIVE or where == "centre"):
        return (f"mostly towards the {where}", f"mainly in the {where}", f"concentrated in the {where}")
    raise ValueError(f"unknown layout code {code!r}")


def class_layouts(mask: np.ndarray, min_share: float = 0.01, max_side: int = 64) -> list[ClassLayout]:
    """Layouts of the classes covering at least ``min_share`` of an ``(H, W)`` mask, largest first.

    Values other than ``0..6`` (e.g. 255) are ignored; the mask is subsampled to about
    ``max_side`` pixels a side. Empty when nothing is labelled.

    Raises:
        ValueError: If ``mask`` is not two-dimensional.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    height, width = mask.shape
    stride = max(1, -(-max(height, width) // max_side))
    yy, xx = _grids(height, width, stride)
    values = mask[::stride, ::stride].ravel()
    valid = values < NUM_CLASSES
    if not valid.all():
        values, yy, xx = values[valid], yy[valid], xx[valid]
    values = values.astype(np.intp)
    counts = np.bincount(values, minlength=NUM_CLASSES).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return []
    present = np.maximum(counts, 1.0)
    cy = np.bincount(values, weights=yy, minlength=NUM_CLASSES) / present
    cx = np.bincount(values, weights=xx, minlength=NUM_CLASSES) / present
    var_y = np.bincount(values, weights=yy * yy, minlength=NUM_CLASSES) / present - cy * cy
    var_x = np.bincount(values, weights=xx * xx, minlength=NUM_CLASSES) / present - cx * cx
    layouts = []
    for index in np.argsort(-counts, kind="stable"):
        share = counts[index] / total
        if share < min_share or counts[index] == 0:
            break
        centroid = (float(cy[index]), float(cx[index]))
        spread = (max(float(var_y[index]), 0.0), max(float(var_x[index]), 0.0))
        layouts.append(
            ClassLayout(CLASS_NAMES[index], float(share), centroid, spread, location_code(share, centroid, spread))
        )
    return layouts
