"""Data layer: shard sets (local or remote), the demo set, importers, composition and DataModules.

The DataModules import Lightning and are loaded on first use, so that the data tools
(``aras-data``) start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from aras400k.data.composition import class_counts, composition, composition_from_counts, format_composition
from aras400k.data.remote import PipeError
from aras400k.data.shards import (
    ManifestError,
    Sample,
    SampleError,
    ShardList,
    ShardWriter,
    iter_samples,
    list_shards,
    read_manifest,
    shard_paths,
)

_LAZY = {
    "SegmentationDataModule": "aras400k.data.datamodules",
    "GANDataModule": "aras400k.data.datamodules",
    "ShardSource": "aras400k.data.datasets",
    "ShardDataset": "aras400k.data.datasets",
}

__all__ = [
    "GANDataModule",
    "ManifestError",
    "PipeError",
    "Sample",
    "SampleError",
    "SegmentationDataModule",
    "ShardDataset",
    "ShardList",
    "ShardSource",
    "ShardWriter",
    "class_counts",
    "composition",
    "composition_from_counts",
    "format_composition",
    "iter_samples",
    "list_shards",
    "read_manifest",
    "shard_paths",
]


def __getattr__(name: str) -> Any:
    """Import the Lightning-dependent parts on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
