"""R1, lazy-regularisation correction, path length, style mixing, blur and the NaN guard."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aras400k.models.gan import (
    NonFiniteGuard,
    PathLengthRegularizer,
    blur_images,
    blur_sigma,
    lazy_optimizer_params,
    r1_penalty,
    style_mixing,
    stylegan_blur_fade_kimg,
)

# ------------------------------------------------------------------------ R1


def test_r1_of_linear_discriminator_is_squared_weight_norm():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    real = torch.randn(5, 3, 4, 4).requires_grad_(True)
    logits = (real * w).flatten(1).sum(1)  # D(x) = sum(w * x): grad_x D = w for every sample.
    expected = w.square().sum()
    per_sample = r1_penalty(logits, real, reduction="none")
    torch.testing.assert_close(per_sample, expected.expand(5))
    torch.testing.assert_close(r1_penalty((real * w).flatten(1).sum(1), real), expected)


def test_r1_backpropagates_into_the_discriminator():
    disc = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    real = torch.randn(2, 3, 2, 2).requires_grad_(True)
    r1_penalty(disc(real), real).backward()
    weight = disc[1].weight
    # d/dw ||w||^2 = 2 w (the gradient of the linear D is its weight).
    torch.testing.assert_close(weight.grad, 2 * weight.detach())


def test_r1_requires_input_gradients():
    real = torch.randn(2, 3, 2, 2)
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty(real.sum((1, 2, 3)), real)


def test_lazy_optimizer_params():
    lr, betas = lazy_optimizer_params(0.002, (0.0, 0.99), interval=16)
    assert lr == pytest.approx(0.002 * 16 / 17)
    assert betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    params = lazy_optimizer_params(0.0025, (0.0, 0.99), interval=4)
    assert params.lr == pytest.approx(0.0025 * 0.8)
    assert params.betas[1] == pytest.approx(0.99**0.8)
    assert lazy_optimizer_params(0.001, (0.5, 0.9), None) == (0.001, (0.5, 0.9))
    with pytest.raises(ValueError):
        lazy_optimizer_params(0.001, (0.5, 0.9), 0)


# ---------------------------------------------------------------- path length


def _toy_generator(ws: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.tanh(ws.mean(1) @ weight).view(-1, 3, 4, 4)


def test_path_length_penalty_is_finite_and_updates_running_mean():
    torch.manual_seed(0)
    weight = (torch.randn(8, 48) * 0.3).requires_grad_(True)
    ws = torch.randn(4, 3, 8).requires_grad_(True)
    reg = PathLengthRegularizer()
    assert float(reg.pl_mean) == 0.0
    images = _toy_generator(ws, weight)
    lengths = reg.path_lengths(images, ws, generator=torch.Generator().manual_seed(1))
    loss = reg(images, ws, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and loss.ndim == 0
    # First update: 0 lerp mean(lengths) with decay 0.01; penalty weight 2.
    lengths = lengths.detach()
    expected_mean = 0.01 * lengths.mean()
    assert float(reg.pl_mean) == pytest.approx(float(expected_mean), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(2 * (lengths - expected_mean).square().mean()), rel=1e-5)
    loss.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad).all()
    reg(_toy_generator(ws, weight), ws)
    assert float(reg.pl_mean) > float(expected_mean)
    assert "pl_mean" in reg.state_dict()


def test_path_length_of_linear_map_with_2d_ws():
    # images = ws @ A: J^T y = A y, so the length is ||A y|| for the drawn direction y.
    a = torch.randn(6, 16)
    ws = torch.randn(2, 6).requires_grad_(True)
    images = (ws @ a).view(2, 1, 4, 4)
    lengths = PathLengthRegularizer().path_lengths(images, ws, generator=torch.Generator().manual_seed(0))
    y = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) / 4
    torch.testing.assert_close(lengths, (y.flatten(1) @ a.T).norm(dim=1))


# --------------------------------------------------------------- style mixing


def test_style_mixing():
    ws, other = torch.zeros(2, 6, 3), torch.ones(2, 6, 3)
    assert style_mixing(ws, other, prob=0.0) is ws
    mixed = style_mixing(ws, other, prob=1.0, generator=torch.Generator().manual_seed(0))
    layers = mixed[0, :, 0]
    cutoff = int((layers == 0).sum())
    assert 1 <= cutoff < 6
    assert torch.equal(layers, (torch.arange(6) >= cutoff).float())
    assert torch.equal(mixed[0], mixed[1])  # One cutoff for the batch.
    with pytest.raises(ValueError):
        style_mixing(ws, other[:, :3])


# ----------------------------------------------------------------------- blur


def test_blur_sigma_schedule():
    assert blur_sigma(0) == 10.0
    assert blur_sigma(100_000) == pytest.approx(5.0)
    assert blur_sigma(200_000) == 0.0
    assert blur_sigma(10**7) == 0.0
    assert blur_sigma(50_000, fade_kimg=0) == 0.0
    assert stylegan_blur_fade_kimg(32) == pytest.approx(200.0)
    assert stylegan_blur_fade_kimg(64) == pytest.approx(400.0)


def test_blur_images():
    images = torch.randn(2, 3, 16, 16, requires_grad=True)
    assert blur_images(images, 0.0) is images
    blurred = blur_images(images, 10.0)  # Radius cut to the 16-pixel image.
    assert blurred.shape == images.shape
    assert blurred.std() < images.std()
    blurred.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    constant = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(blur_images(constant, 1.5), constant)


def test_blur_kernel_is_stylegan_shape():
    # An impulse blurred with sigma 1 reproduces the 1-D kernel 2 ** -(x / sigma)^2, normalised.
    impulse = torch.zeros(1, 1, 1, 15)
    impulse[..., 7] = 1.0
    row = blur_images(impulse.expand(1, 1, 15, 15).contiguous(), 1.0)[0, 0, 7, 4:11]
    kernel = torch.tensor([2.0 ** -(x**2) for x in range(-3, 4)])
    torch.testing.assert_close(row, kernel / kernel.sum())


# ------------------------------------------------------------------ NaN guard


def test_non_finite_guard_flags_and_counts():
    guard = NonFiniteGuard()
    layer = nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    assert guard.check(torch.tensor(1.0), layer.parameters(), name="D")
    assert guard.num_skipped == 0
    assert not guard.check(torch.tensor(math.nan), name="D")
    assert not guard.check(torch.tensor([1.0, math.inf]), name="G")
    assert layer.weight.grad is not None
    layer.weight.grad[0, 0] = math.inf
    assert not guard.check(torch.tensor(0.5), layer.parameters(), name="D")
    assert guard.counts == {"D": 2, "G": 1}
    assert guard.num_skipped == 3
    assert NonFiniteGuard.all_finite(None, torch.zeros(2))


def test_non_finite_guard_raises_after_consecutive_skips_and_round_trips():
    guard = NonFiniteGuard(max_consecutive=2)
    bad = torch.tensor(math.nan)
    assert not guard.check(bad)
    assert guard.check(torch.tensor(0.0))  # A good step resets the streak.
    assert not guard.check(bad)
    assert not guard.check(bad)
    with pytest.raises(RuntimeError, match="consecutive"):
        guard.check(bad)
    restored = NonFiniteGuard()
    restored.load_state_dict(guard.state_dict())
    assert restored.counts == {"step": 4}
    with pytest.raises(ValueError):
        NonFiniteGuard(max_consecutive=0)
