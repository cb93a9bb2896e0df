"""Class composition: the share of each land-cover class in a mask or a dataset.

The composition of a sample is stored in its ``meta.json`` (class name -> fraction of
the labelled pixels, absent classes included as 0.0). A dataset's composition is the
pixel-weighted sum over its samples, kept as pixel counts in the manifest so that
shard sets can be merged exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from aras400k.classes import CLASS_NAMES, NUM_CLASSES

__all__ = [
    "class_counts",
    "composition",
    "composition_from_counts",
    "format_composition",
]


def class_counts(mask: np.ndarray) -> np.ndarray:
    """Count the pixels of each class in a mask (ignored pixels are not counted).

    Args:
        mask: Integer mask of class indices; values outside ``0..6`` are ignored.

    Returns:
        ``(NUM_CLASSES,)`` int64 array of pixel counts.
    """
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    return counts[:NUM_CLASSES].astype(np.int64)


def composition_from_counts(counts: Iterable[float] | np.ndarray) -> dict[str, float]:
    """Turn per-class pixel counts into fractions keyed by class name.

    Args:
        counts: ``NUM_CLASSES`` counts in class-index order.

    Returns:
        Class name -> fraction (summing to 1, or all zeros when nothing is labelled).
    """
    counts = np.asarray(list(counts) if not isinstance(counts, np.ndarray) else counts, dtype=np.float64)
    total = counts.sum()
    shares = counts / total if total > 0 else np.zeros_like(counts)
    return {name: round(float(s), 6) for name, s in zip(CLASS_NAMES, shares, strict=True)}


def composition(mask: np.ndarray) -> dict[str, float]:
    """Composition of one mask: class name -> fraction of its labelled pixels.

    Args:
        mask: Integer mask of class indices (255 = ignore).

    Returns:
        Class name -> fraction, every class present as a key.
    """
    return composition_from_counts(class_counts(mask))


def format_composition(comp: Mapping[str, float], min_share: float = 0.0005, digits: int = 1) -> str:
    """Render a composition the way the paper prompts its language models.

    Classes are ordered by share, absent ones dropped: ``"tree 41.2%, crop 30.5%"``.

    Args:
        comp: Class name -> fraction.
        min_share: Shares below this are treated as absent.
        digits: Decimal places of the percentages.

    Returns:
        The rendered string (empty if nothing is present).
    """
    items = sorted(((n, s) for n, s in comp.items() if s >= min_share), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {100 * share:.{digits}f}%" for name, share in items)
