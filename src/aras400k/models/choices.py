"""The segmenters' architecture and loss names, importable without torch or smp.

Configs that commands parse before any model is built (``aras-ablate``'s ``archs`` and
``loss``) take their choices from here; :class:`aras400k.models.SegmentationTask`
checks against the same tuples.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ARCHITECTURES", "LOSSES", "Architecture", "LossName"]

Architecture = Literal["unet", "unetplusplus", "pan", "deeplabv3plus", "segformer", "fpn"]
LossName = Literal["dice", "ce", "dice+ce", "focal"]
#: The six architectures of the paper's Table 3.
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)
#: Available training losses.
LOSSES: tuple[str, ...] = get_args(LossName)
