"""Spatially-adaptive normalisation (SPADE) and the one-hot mask it is conditioned on.

Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization", CVPR
2019, section 3: activations are normalised without learned affine parameters and then
modulated, per pixel, by a scale and a bias that a small convolutional network predicts
from the segmentation mask resized to the feature map.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aras400k.classes import IGNORE_INDEX
from aras400k.errors import check_choice

__all__ = ["SPADE", "ParamFreeNorm", "one_hot_mask"]

ParamFreeNorm = Literal["instance", "batch"]


def one_hot_mask(mask: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Turn a class-index mask into the one-hot conditioning map of the generator.

    Ignored pixels become the all-zero vector rather than a channel of their own: "no
    data" is not a land cover to paint, the N+1 loss gives such pixels zero weight, and
    the conditioning stays ``num_classes`` channels everywhere.

    Args:
        mask: ``(B, H, W)`` or ``(B, 1, H, W)`` integer class indices in
            ``[0, num_classes)``, or ``ignore_index``.
        num_classes: Number of classes ``N``.
        ignore_index: Mask value meaning "ignore".

    Returns:
        ``(B, N, H, W)`` float32 one-hot map (all zeros at ignored pixels).

    Raises:
        ValueError: If the mask has the wrong shape or dtype, or holds a value that is
            neither a class index nor ``ignore_index``.
    """
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, H, W) or (B, 1, H, W), got shape {tuple(mask.shape)}")
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise ValueError(f"mask must hold integer class indices, got dtype {mask.dtype}")
    mask = mask.long()
    ignored = mask == ignore_index
    bad = ~ignored & ((mask < 0) | (mask >= num_classes))
    if bad.any():
        values = torch.unique(mask[bad])[:5].tolist()
        raise ValueError(
            f"mask holds values {values} outside the classes 0..{num_classes - 1} and ignore index {ignore_index}"
        )
    onehot = F.one_hot(mask.masked_fill(ignored, 0), num_classes).permute(0, 3, 1, 2).float()
    return onehot.masked_fill(ignored.unsqueeze(1), 0.0)


class SPADE(nn.Module):
    """Spatially-adaptive (de)normalisation (Park et al. 2019, section 3, eq. 1).

    ``out = norm(x) * (1 + gamma(m)) + beta(m)``, with a parameter-free ``norm`` and
    ``gamma``, ``beta`` predicted per pixel from the conditioning map ``m`` (resized to
    ``x``) by a shared conv + ReLU and one conv each. The ``1 +`` keeps the layer close to
    plain normalisation at initialisation, as in the authors' code.

    Args:
        num_features: Channels of the activations being normalised.
        label_channels: Channels of the conditioning map (one-hot classes, plus the
            noise channels when 3D noise is used).
        hidden_channels: Width of the shared embedding (128 in the paper).
        kernel_size: Kernel size of the three convolutions (3 in the paper).
        norm: Parameter-free normalisation: ``instance`` or ``batch``.

    Raises:
        ValueError: On an unknown ``norm`` or an even ``kernel_size``.
    """

    def __init__(
        self,
        num_features: int,
        label_channels: int,
        hidden_channels: int = 128,
        kernel_size: int = 3,
        norm: ParamFreeNorm = "instance",
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the feature size, got {kernel_size}")
        norms: dict[str, type[nn.Module]] = {"instance": nn.InstanceNorm2d, "batch": nn.BatchNorm2d}
        check_choice("norm", norm, norms)
        self.param_free_norm = norms[norm](num_features, affine=False)
        padding = kernel_size // 2
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden_channels, kernel_size, padding=padding), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(hidden_channels, num_features, kernel_size, padding=padding)
        self.mlp_beta = nn.Conv2d(hidden_channels, num_features, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, C, h, w)`` activations and modulate them by a conditioning map of any size."""
        normalized = self.param_free_norm(x)
        if segmap.shape[-2:] != x.shape[-2:]:
            segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        embedding = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(embedding)) + self.mlp_beta(embedding)
