"""Deterministic train/val/test assignment by a seeded hash of the sample key.

A patch keeps its split when tiles are added or processed in another order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["SPLIT_NAMES", "split_for_key"]

#: Split names in the order of the ``ratios`` arguments.
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")


def split_for_key(key: str, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> str:
    """Assign a sample key (``N36E027_003_011``) to ``train``, ``val`` or ``test``, in shares ``ratios``.

    ``seed`` changes the assignment as a whole.

    Raises:
        ValueError: If ``ratios`` are not three non-negative numbers summing to 1.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three non-negative shares summing to 1, got {tuple(ratios)}")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < ratios[0]:
        return SPLIT_NAMES[0]
    if u < ratios[0] + ratios[1]:
        return SPLIT_NAMES[1]
    return SPLIT_NAMES[2]
