"""Class composition: the share of each land-cover class in a mask or a dataset.

A sample's composition (class name -> fraction of the labelled pixels) is in its
``meta.json``; a dataset's is kept as pixel counts in the manifest, so sets merge exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from aras400k.classes import CLASS_NAMES, NUM_CLASSES

__all__ = [
    "class_counts",
    "class_counts_batch",
    "composition",
    "composition_from_counts",
    "format_composition",
]


# Masks counted together by class_counts_batch (bounds its comparison buffer to 4 MiB at 256 px).
_BATCH_MASKS = 64
# Boolean bytes summed per 64-bit word group: each byte lane then holds at most 128, so no carry.
_LANE_GROUP = 128
# Value that stands for "not a class" once masks are uint8 (never a class: at most 255 classes).
_NOT_A_CLASS = 255


def class_counts(mask: np.ndarray) -> np.ndarray:
    """``(NUM_CLASSES,)`` int64 pixel counts of each class in an integer mask (values outside ``0..6`` ignored)."""
    return class_counts_batch(np.asarray(mask)[None])[0]


def class_counts_batch(masks: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Count the pixels of each class in every mask of a batch, at once.

    One comparison per class over the batch, the booleans summed eight at a time as 64-bit
    words: about 5x faster than a per-mask loop (``benchmarks/bench_metrics.py``).

    Args:
        masks: ``(B, H, W)`` (or ``(B, N)``) integer masks; values outside ``0..num_classes - 1`` are not counted.
        num_classes: Number of classes (at most 255); row ``i`` of the int64 result counts ``masks[i]``.

    Raises:
        ValueError: If ``masks`` is not an integer array with a batch axis, or
            ``num_classes`` is not in ``1..255``.
    """
    masks = np.asarray(masks)
    if masks.ndim < 2 or not (np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool):
        raise ValueError(f"masks must be a (B, H, W) integer array, got {masks.dtype} of shape {masks.shape}")
    if not 1 <= num_classes <= _NOT_A_CLASS:
        raise ValueError(f"num_classes must be in 1..{_NOT_A_CLASS}, got {num_classes}")
    flat = _as_class_bytes(masks.reshape(masks.shape[0], -1), num_classes)
    counts = np.empty((flat.shape[0], num_classes), dtype=np.int64)
    for start in range(0, flat.shape[0], _BATCH_MASKS):
        block = flat[start : start + _BATCH_MASKS]
        equal = np.empty(block.shape, dtype=bool)
        for c in range(num_classes):
            np.equal(block, c, out=equal)
            groups = equal.view(np.uint64).reshape(block.shape[0], -1, _LANE_GROUP).sum(axis=2, dtype=np.uint64)
            counts[start : start + block.shape[0], c] = groups.view(np.uint8).reshape(block.shape[0], -1).sum(axis=1)
    return counts


def _as_class_bytes(flat: np.ndarray, num_classes: int) -> np.ndarray:
    """``(B, N)`` masks as contiguous uint8 with whole 64-bit word groups per row.

    Values that are not classes become 255 (256 must not wrap onto a class), and rows are
    padded with 255 to a multiple of ``8 * _LANE_GROUP`` bytes.
    """
    if flat.dtype != np.uint8:
        valid = (flat >= 0) & (flat < num_classes)
        flat = np.where(valid, flat, _NOT_A_CLASS).astype(np.uint8)
    row = 8 * _LANE_GROUP
    pad = -flat.shape[1] % row
    if pad:
        flat = np.pad(flat, ((0, 0), (0, pad)), constant_values=_NOT_A_CLASS)
    return np.ascontiguousarray(flat)


def composition_from_counts(counts: Iterable[float] | np.ndarray) -> dict[str, float]:
    """``NUM_CLASSES`` pixel counts (class order) as class name -> fraction (all zeros when nothing is labelled)."""
    counts = np.asarray(counts if isinstance(counts, np.ndarray) else list(counts), dtype=np.float64)
    total = counts.sum()
    shares = counts / total if total > 0 else np.zeros_like(counts)
    return {name: round(float(s), 6) for name, s in zip(CLASS_NAMES, shares, strict=True)}


def composition(mask: np.ndarray) -> dict[str, float]:
    """Composition of one mask (255 = ignore): class name -> fraction of its labelled pixels, for every class."""
    return composition_from_counts(class_counts(mask))


def format_composition(comp: Mapping[str, float], min_share: float = 0.0005, digits: int = 1) -> str:
    """Render a composition (class name -> fraction) the way the paper prompts its language models.

    Classes are ordered by share, those under ``min_share`` dropped, percentages given to
    ``digits`` places: ``"tree 41.2%, crop 30.5%"`` (empty if nothing is present).
    """
    items = sorted(((n, s) for n, s in comp.items() if s >= min_share), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {100 * share:.{digits}f}%" for name, share in items)
