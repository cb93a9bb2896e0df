"""Tiny networks and masks shared by the SPADE / U-Net GAN tests (8-16 channels, 32-64 px)."""

from __future__ import annotations

import pytest
import torch

from aras400k.models.spade import SPADEGenerator, UNetDiscriminator, one_hot_mask

NUM_CLASSES = 7


def tiny_generator(num_upsamplings: int = 3, **kwargs) -> SPADEGenerator:
    """A generator with 8-16 channels (about 80k parameters)."""
    options = {"base_channels": 8, "max_channels": 16, "z_dim": 8, "spade_hidden": 16} | kwargs
    return SPADEGenerator(NUM_CLASSES, num_upsamplings=num_upsamplings, **options)


def tiny_discriminator(**kwargs) -> UNetDiscriminator:
    """A U-Net discriminator with 8-16 channels and 3 levels."""
    options = {"num_downsamplings": 3, "base_channels": 8, "max_channels": 16} | kwargs
    return UNetDiscriminator(NUM_CLASSES, **options)


def block_mask(size: int = 32, batch: int = 2) -> torch.Tensor:
    """Index masks with four class quadrants (classes 0, 2, 4, 6)."""
    mask = torch.zeros(batch, size, size, dtype=torch.long)
    half = size // 2
    mask[:, :half, half:] = 2
    mask[:, half:, :half] = 4
    mask[:, half:, half:] = 6
    return mask


@pytest.fixture
def onehot() -> torch.Tensor:
    """``(2, 7, 32, 32)`` one-hot quadrant masks."""
    return one_hot_mask(block_mask(32), NUM_CLASSES)
