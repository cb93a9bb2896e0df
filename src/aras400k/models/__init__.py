"""LightningModules: the six segmenters, StyleGAN3 / StyleGAN2 and the SPADE GAN, and their ``GANModule`` base.

The modules import torch and Lightning, so they load on first access; the architecture
and loss names (:mod:`aras400k.models.choices`) do not. Their building blocks live in
``models.segmentation``, ``models.gan``, ``models.stylegan3`` and ``models.spade``.
"""

from typing import TYPE_CHECKING

from aras400k._lazy import lazy_attributes
from aras400k.models.choices import ARCHITECTURES, LOSSES

if TYPE_CHECKING:  # for type checkers and the API docs; loaded by __getattr__ at run time
    from aras400k.models.gan.module import GANModule
    from aras400k.models.segmentation import SegmentationTask, load_encoder_weights
    from aras400k.models.spade.module import SPADEGAN
    from aras400k.models.stylegan3.module import StyleGAN3

__all__ = ["ARCHITECTURES", "LOSSES", "SPADEGAN", "GANModule", "SegmentationTask", "StyleGAN3", "load_encoder_weights"]

_LAZY = {
    "GANModule": "aras400k.models.gan.module",
    "SPADEGAN": "aras400k.models.spade.module",
    "SegmentationTask": "aras400k.models.segmentation",
    "StyleGAN3": "aras400k.models.stylegan3.module",
    "load_encoder_weights": "aras400k.models.segmentation",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
