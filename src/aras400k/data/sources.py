"""Shard sources and how a run's samples are cut into parts, importable without torch.

:class:`ShardSource` names one shard set a dataset reads; :func:`partition_range` is
the one rule that splits a count of items over loader workers, ranks or the workers of
a split command (``docs/scaling.md``). Configs use both before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ShardSource", "partition_range"]


@dataclass
class ShardSource:
    """One shard set used as a source of samples.

    Attributes:
        path: Shard set folder (holding ``manifest.json``), local or a URL such as
            ``http://host/train/``, or a shard list without a manifest such as
            ``data/train-{000000..000009}.tar`` or ``pipe:cat ...`` (see :mod:`aras400k.data.remote`).
        num_samples: Use only the first this many samples (manifest order); ``None`` for
            all. Needs a manifest.
        weight: Mixing weight; give it to every source or to none (see :class:`aras400k.data.datasets.ShardDataset`).
    """

    path: str
    num_samples: int | None = None
    weight: float | None = None

    @classmethod
    def coerce(cls, source: ShardSource | str | Path | dict[str, Any]) -> ShardSource:
        """A source as configs give it: a source, a path, or a dict of its fields."""
        if isinstance(source, ShardSource):
            return source
        return cls(**source) if isinstance(source, dict) else cls(path=str(source))


def partition_range(total: int, part: int, parts: int) -> tuple[int, int]:
    """The half-open range ``(start, stop)`` of zero-based part ``part`` of ``total`` items cut into ``parts``.

    Ranges differ in length by at most one and cover ``0..total`` exactly once.
    """
    return (part * total) // parts, ((part + 1) * total) // parts
