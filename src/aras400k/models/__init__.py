"""LightningModules: the six segmenters (the GANs are in ``models.stylegan3`` and ``models.spade``)."""

from aras400k.models.segmentation import ARCHITECTURES, LOSSES, SegmentationTask, load_encoder_weights

__all__ = ["ARCHITECTURES", "LOSSES", "SegmentationTask", "load_encoder_weights"]
