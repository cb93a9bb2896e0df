"""Batch augmentation and normalisation on the device, applied jointly to image and mask.

The DataModules call these in ``on_after_batch_transfer``, so augmentation runs on the
GPU when there is one and the loader workers only decode PNGs.
"""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

__all__ = ["JointAugmentation", "Normalize"]


class JointAugmentation(nn.Module):
    """Random flips, 90-degree rotations and brightness/contrast jitter.

    Geometric transforms move whole pixels of the image and its mask alike (exact);
    colour jitter touches the image only.

    Args:
        hflip: Probability of a horizontal flip.
        vflip: Probability of a vertical flip.
        rotate90: Probability of a rotation by 90, 180 or 270 degrees.
        brightness: Brightness jitter amplitude (0 disables).
        contrast: Contrast jitter amplitude (0 disables).
        colour_p: Probability of applying the colour jitter.
    """

    def __init__(
        self,
        hflip: float = 0.5,
        vflip: float = 0.5,
        rotate90: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        colour_p: float = 0.5,
    ) -> None:
        super().__init__()
        steps: list[Any] = []
        if hflip > 0:
            steps.append(K.RandomHorizontalFlip(p=hflip))
        if vflip > 0:
            steps.append(K.RandomVerticalFlip(p=vflip))
        if rotate90 > 0:
            steps.append(K.RandomRotation90(times=(1, 3), resample="nearest", p=rotate90))
        if (brightness > 0 or contrast > 0) and colour_p > 0:
            steps.append(K.ColorJitter(brightness=brightness, contrast=contrast, p=colour_p))
        self.steps = K.AugmentationSequential(*steps, data_keys=["input", "mask"]) if steps else None

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment ``(B, C, H, W)`` floats in ``[0, 1]`` and ``(B, H, W)`` integer masks (or ``None``), dtypes kept."""
        if self.steps is None:
            return image, mask
        if mask is None:  # kornia's mask key wants a tensor: a dummy one
            return self.steps(image, torch.zeros_like(image[:, :1]))[0].clamp(0, 1), None
        out_image, out_mask = self.steps(image, mask[:, None].to(image.dtype))
        return out_image.clamp(0, 1), out_mask[:, 0].round().to(mask.dtype)


class Normalize(nn.Module):
    """Scale uint8 images to ``[0, 1]`` and normalise each channel: ``(x - mean) / std``, both in ``[0, 1]`` units."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: tuple[float, ...] = (0.485, 0.456, 0.406), std: tuple[float, ...] = (0.229, 0.224, 0.225)
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Normalise a ``(B, C, H, W)`` float batch already scaled to ``[0, 1]``.

        ``inplace`` overwrites and returns ``image``, a tensor the caller owns: the same values
        without allocating two more batches (most of the cost on a CPU; ``docs/data.md``).
        """
        if inplace:
            return image.sub_(self.mean).div_(self.std)
        return (image - self.mean) / self.std

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`forward`, returning ``[0, 1]`` images (clamped)."""
        return (image * self.std + self.mean).clamp(0, 1)
