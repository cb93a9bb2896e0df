"""Adversarial losses shared by the GANs, as plain functions of discriminator logits.

Two families:

- **Non-saturating logistic** (Goodfellow et al., 2014; the StyleGAN2 / StyleGAN2-ADA
  default, ``training/loss.py`` of NVlabs' code): the generator minimises
  ``softplus(-D(G(z))) = -log sigmoid(D(G(z)))`` and the discriminator minimises
  ``softplus(D(G(z))) + softplus(-D(x))``.
- **Hinge** (Lim & Ye, 2017; used by SPADE, Park et al., CVPR 2019): the discriminator
  minimises ``relu(1 - D(x)) + relu(1 + D(G(z)))`` and the generator ``-D(G(z))``.

Every function takes logits of any shape and returns a scalar: it averages over all
elements, so per-image logits ``(B,)``/``(B, 1)`` and per-pixel logits ``(B, 1, H, W)``
(a U-Net discriminator's decoder head) work alike. Real and fake terms are averaged
separately and summed, as in the official code (the batches may differ in size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from aras400k.errors import check_choice

__all__ = [
    "ADVERSARIAL_LOSSES",
    "AdversarialLossName",
    "discriminator_hinge_loss",
    "discriminator_logistic_loss",
    "generator_hinge_loss",
    "generator_logistic_loss",
    "get_adversarial_loss",
]

AdversarialLossName = Literal["logistic", "hinge"]
#: Names accepted by :func:`get_adversarial_loss`.
ADVERSARIAL_LOSSES: tuple[str, ...] = get_args(AdversarialLossName)

GeneratorLoss = Callable[[torch.Tensor], torch.Tensor]
DiscriminatorLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def generator_logistic_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean(softplus(-D(G(z))))`` of the generated images' logits."""
    return F.softplus(-fake_logits).mean()


def discriminator_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss ``mean(softplus(D(G(z)))) + mean(softplus(-D(x)))``."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss ``-mean(D(G(z)))`` of the generated images' logits."""
    return -fake_logits.mean()


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


_LOSSES: dict[str, tuple[GeneratorLoss, DiscriminatorLoss]] = {
    "logistic": (generator_logistic_loss, discriminator_logistic_loss),
    "hinge": (generator_hinge_loss, discriminator_hinge_loss),
}


def get_adversarial_loss(name: str) -> tuple[GeneratorLoss, DiscriminatorLoss]:
    """Look up a generator/discriminator loss pair by name.

    Args:
        name: ``"logistic"`` (non-saturating, StyleGAN) or ``"hinge"`` (SPADE).

    Returns:
        ``(generator_loss(fake_logits), discriminator_loss(real_logits, fake_logits))``.

    Raises:
        ValueError: If ``name`` is not one of :data:`ADVERSARIAL_LOSSES`.
    """
    check_choice("adversarial loss", name, ADVERSARIAL_LOSSES)
    return _LOSSES[name]
