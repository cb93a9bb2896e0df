"""Data layer: shard sets (local or remote), the demo set, importers, composition and DataModules.

The DataModules and :class:`ShardDataset` import torch and Lightning and are loaded on
first access (``aras400k.data.SegmentationDataModule``), so that the data tools
(``aras-data``) and the commands' ``--help`` start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aras400k._lazy import lazy_attributes
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
from aras400k.data.sources import ShardSource

if TYPE_CHECKING:  # for type checkers and the API docs; loaded by __getattr__ at run time
    from aras400k.data.datamodules import GANDataModule, SegmentationDataModule
    from aras400k.data.datasets import ShardDataset

_LAZY = {
    "SegmentationDataModule": "aras400k.data.datamodules",
    "GANDataModule": "aras400k.data.datamodules",
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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
