"""LightningModules: the six segmenters (the GANs are in ``models.stylegan3`` and ``models.spade``).

:class:`SegmentationTask` and :func:`load_encoder_weights` import torch, Lightning and
segmentation-models-pytorch and are loaded on first access; the architecture and loss
names (:mod:`aras400k.models.choices`) are not.
"""

from typing import TYPE_CHECKING

from aras400k._lazy import lazy_attributes
from aras400k.models.choices import ARCHITECTURES, LOSSES

if TYPE_CHECKING:  # for type checkers and the API docs; loaded by __getattr__ at run time
    from aras400k.models.segmentation import SegmentationTask, load_encoder_weights

__all__ = ["ARCHITECTURES", "LOSSES", "SegmentationTask", "load_encoder_weights"]

_LAZY = {
    "SegmentationTask": "aras400k.models.segmentation",
    "load_encoder_weights": "aras400k.models.segmentation",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
