"""Callbacks that write figures, tables, scores and prediction files, with any logger or none.

- :mod:`~aras400k.callbacks.segmentation`: :class:`SegmentationReport` (confusion
  matrices, prediction grids, the test score table) and :func:`format_scores_table`.
- :mod:`~aras400k.callbacks.fid`: :class:`GeneratorFID`, a GAN's ``val_fid`` (and
  ``val_kid``) during training, for any module with ``fid_samples`` (:class:`FIDSampler`).
- :mod:`~aras400k.callbacks.samples`: :class:`SampleGrid`, the sample grids of a
  :class:`~aras400k.models.gan.GANModule` (which adds one itself).
- :class:`PredictionWriter` lives in :mod:`aras400k.prediction` and is re-exported here.

Every name loads its module (and Lightning) on first access, so ``import
aras400k.callbacks`` stays light (see docs/architecture.md, "Layers").
"""

from typing import TYPE_CHECKING

from aras400k._lazy import lazy_attributes

if TYPE_CHECKING:  # for type checkers and the API docs; loaded by __getattr__ at run time
    from aras400k.callbacks.fid import FIDSampler, GeneratorFID
    from aras400k.callbacks.samples import SampleGrid
    from aras400k.callbacks.segmentation import SegmentationReport, format_scores_table
    from aras400k.prediction import PredictionWriter

__all__ = ["FIDSampler", "GeneratorFID", "PredictionWriter", "SampleGrid", "SegmentationReport", "format_scores_table"]

_LAZY = {
    "FIDSampler": "aras400k.callbacks.fid",
    "GeneratorFID": "aras400k.callbacks.fid",
    "PredictionWriter": "aras400k.prediction",
    "SampleGrid": "aras400k.callbacks.samples",
    "SegmentationReport": "aras400k.callbacks.segmentation",
    "format_scores_table": "aras400k.callbacks.segmentation",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
