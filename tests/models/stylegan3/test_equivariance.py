import math

import pytest
import torch
from torch import nn

from aras400k.models.stylegan3 import (
    SynthesisInput,
    apply_fractional_translation,
    apply_integer_translation,
    apply_pseudo_rotation,
    apply_rotation,
    compute_eq_r,
    compute_eq_t,
    compute_equivariance,
)

from .tiny import tiny_generator


class _FourierFeatures(nn.Module):
    """The input layer alone, as a generator: exactly equivariant in continuous space."""

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        return self.input(ws[:, 0])[:, :3]


class FourierOnlyGenerator(nn.Module):
    def __init__(self, resolution: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.z_dim, self.c_dim, self.img_resolution = 8, 0, resolution
        self.synthesis = _FourierFeatures()
        self.synthesis.input = SynthesisInput(8, 16, resolution, resolution, bandwidth=resolution / 4)

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return z.unsqueeze(1).repeat(1, 2, 1)


def test_metrics_of_an_exactly_equivariant_generator_are_high():
    psnrs = compute_equivariance(FourierOnlyGenerator(), num_samples=4, batch_size=2)
    # Integer shifts are exact; sub-pixel shifts and rotations are limited by the
    # interpolation filters of the metric itself.
    assert psnrs["eqt_int"] > 100
    assert psnrs["eqt_frac"] > 40
    assert psnrs["eqr"] > 40


def test_rotation_follows_the_input_transform_convention():
    # A rotation by the wrong angle would not match the transformed generator.
    g = FourierOnlyGenerator()
    with torch.no_grad():
        ws = g.mapping(torch.randn(2, 8))
        orig = g.synthesis(ws)
        g.synthesis.input.transform.copy_(torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        rotated = g.synthesis(ws)
    ref, mask = apply_rotation(orig, math.pi / 2)
    pseudo, pmask = apply_pseudo_rotation(rotated, math.pi / 2)
    m = mask * pmask
    assert m.sum() > 0
    assert ((ref - pseudo).square() * m).sum() / m.sum() < 1e-3
    wrong, _ = apply_rotation(orig, -math.pi / 2)
    assert ((wrong - pseudo).square() * m).sum() / m.sum() > 1e-2


def test_translation_helpers():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float64).reshape(2, 3, 8, 8)
    shifted, mask = apply_integer_translation(x, 2, -1)
    assert torch.equal(shifted[..., 0:7, 2:], x[..., 1:8, :6])
    assert mask[..., 7, :].sum() == 0 and mask[..., :, :2].sum() == 0 and mask.sum() == 2 * 3 * 7 * 6
    # A whole-pixel "fractional" shift is the integer shift where both are defined.
    frac, frac_mask = apply_fractional_translation(x, 2.0, -1.0)
    both = mask * frac_mask
    assert both.sum() > 0
    torch.testing.assert_close(frac * both, shifted * both)


def test_antialiasing_filters_make_stylegan3_t_more_translation_equivariant():
    # At 32 px the early layers run at 16 samples per unit, so a one-pixel shift of
    # the output is a half-sample shift there: without low-pass filters it aliases.
    filtered = tiny_generator("stylegan3-t", resolution=32)
    naive = tiny_generator("stylegan3-t", resolution=32, antialias=False)
    # The ablation changes only the resampling filters: the weights are identical.
    for (name, p), q in zip(filtered.named_parameters(), naive.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert naive.synthesis.L0_36_64.down_filter is None
    eqt_filtered = compute_eq_t(filtered, num_samples=4, batch_size=2)
    eqt_naive = compute_eq_t(naive, num_samples=4, batch_size=2)
    assert eqt_filtered > eqt_naive + 10, (eqt_filtered, eqt_naive)


def test_eq_r_on_stylegan3_r():
    r = tiny_generator("stylegan3-r", resolution=32)
    t = tiny_generator("stylegan3-t", resolution=32)
    eqr_r = compute_eq_r(r, num_samples=4, batch_size=2)
    eqr_t = compute_eq_r(t, num_samples=4, batch_size=2)
    assert math.isfinite(eqr_r) and eqr_r > 30
    assert eqr_r > eqr_t  # 1x1 convolutions and radial filters (config R) help rotations
    assert torch.equal(r.synthesis.input.transform, torch.eye(3))  # restored afterwards


def test_generators_without_fourier_input_are_refused():
    with pytest.raises(ValueError, match="Fourier input"):
        compute_eq_t(tiny_generator("stylegan2"), num_samples=2, batch_size=2)
    with pytest.raises(ValueError, match="unknown equivariance metrics"):
        compute_equivariance(FourierOnlyGenerator(), metrics=("eqx",))  # type: ignore[arg-type]
