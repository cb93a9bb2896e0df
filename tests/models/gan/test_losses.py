"""Adversarial losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from aras400k.models.gan import (
    ADVERSARIAL_LOSSES,
    discriminator_hinge_loss,
    discriminator_logistic_loss,
    generator_hinge_loss,
    generator_logistic_loss,
    get_adversarial_loss,
)


def test_logistic_losses_at_zero_logits_are_log2():
    zeros = torch.zeros(4)
    assert generator_logistic_loss(zeros).item() == pytest.approx(math.log(2))
    assert discriminator_logistic_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))


def test_logistic_losses_hand_values():
    real = torch.tensor([1.0, -2.0])
    fake = torch.tensor([0.5, 3.0])

    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    expected_d = (softplus(0.5) + softplus(3.0)) / 2 + (softplus(-1.0) + softplus(2.0)) / 2
    expected_g = (softplus(-0.5) + softplus(-3.0)) / 2
    assert discriminator_logistic_loss(real, fake).item() == pytest.approx(expected_d)
    assert generator_logistic_loss(fake).item() == pytest.approx(expected_g)


def test_hinge_losses_hand_values():
    real = torch.tensor([2.0, 0.0])
    fake = torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, 1] -> 0.5; relu(1 + fake) = [0, 1.5] -> 0.75.
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(1.25)
    assert generator_hinge_loss(fake).item() == pytest.approx(0.75)


def test_losses_accept_per_pixel_logits_and_backpropagate():
    real = torch.randn(2, 1, 4, 4, requires_grad=True)
    fake = torch.randn(2, 1, 4, 4, requires_grad=True)
    loss = discriminator_hinge_loss(real, fake) + generator_logistic_loss(fake)
    loss.backward()
    assert loss.ndim == 0
    assert real.grad is not None and fake.grad is not None


def test_get_adversarial_loss():
    assert set(ADVERSARIAL_LOSSES) == {"logistic", "hinge"}
    assert get_adversarial_loss("hinge") == (generator_hinge_loss, discriminator_hinge_loss)
    assert get_adversarial_loss("logistic") == (generator_logistic_loss, discriminator_logistic_loss)
    with pytest.raises(ValueError, match="hinge"):
        get_adversarial_loss("wasserstein")
