"""aras400k: the ARAS400k paper's system as reusable PyTorch Lightning components.

Land-cover shards and DataModules, segmenters, GANs, captioning and metrics for
256x256 satellite patches with 7-class masks. See the README for the pipeline.
"""

from aras400k.classes import CLASS_NAMES, CLASSES, IGNORE_INDEX, NUM_CLASSES, LandCoverClass

__version__ = "0.1.0"

__all__ = ["CLASSES", "CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "LandCoverClass", "__version__"]
