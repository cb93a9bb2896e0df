"""Adversarial losses shared by the GANs, as plain functions of discriminator logits.

Two families:

- **Non-saturating logistic** (Goodfellow et al., 2014; the StyleGAN2 / StyleGAN2-ADA
  default, ``training/loss.py`` of NVlabs' code): the generator minimises
  ``softplus(-D(G(z))) = -log sigmoid(D(G(z)))`` and the discriminator minimises
  ``softplus(D(G(z))) + softplus(-D(x))``.
- **Hinge** (Lim & Ye, 2017; used by SPADE, Park et al., CVPR 2019): the discriminator
  minimises ``relu(1 - D(x)) + relu(1 + D(G(z)))`` and the generator ``-D(G(z))``.

Every function averages over all elements of the logits, so per-image logits
``(B,)``/``(B, 1)`` and per-pixel logits ``(B, 1, H, W)`` (a U-Net discriminator's
decoder head) work alike. Real and fake terms are averaged separately and summed, as in
the official code (the real and fake batches may differ in size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

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
    """Non-saturating generator loss ``mean(softplus(-D(G(z))))``.

    Args:
        fake_logits: Discriminator logits of generated images, any shape.

    Returns:
        The scalar loss.
    """
    return F.softplus(-fake_logits).mean()


def discriminator_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss ``mean(softplus(D(G(z)))) + mean(softplus(-D(x)))``.

    Args:
        real_logits: Discriminator logits of real images, any shape.
        fake_logits: Discriminator logits of generated images, any shape.

    Returns:
        The scalar loss.
    """
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss ``-mean(D(G(z)))``.

    Args:
        fake_logits: Discriminator logits of generated images, any shape.

    Returns:
        The scalar loss.
    """
    return -fake_logits.mean()


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``.

    Args:
        real_logits: Discriminator logits of real images, any shape.
        fake_logits: Discriminator logits of generated images, any shape.

    Returns:
        The scalar loss.
    """
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
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown adversarial loss {name!r}; choose one of {list(ADVERSARIAL_LOSSES)}") from None
