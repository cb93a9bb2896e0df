"""LightningModules: the six segmenters (GANs follow in their own modules)."""

from aras400k.models.segmentation import ARCHITECTURES, LOSSES, SegmentationTask, load_encoder_weights

__all__ = ["ARCHITECTURES", "LOSSES", "SegmentationTask", "load_encoder_weights"]
