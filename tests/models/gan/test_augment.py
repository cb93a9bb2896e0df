"""ADA (AdaptiveAugment) and the joint image + mask flip/rotation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aras400k.models.gan import AUGMENT_PIPES, AdaptiveAugment, AugmentParams, JointFlipRot90


def _images(n: int = 4, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=generator) * 2 - 1


def _smooth(size: int = 32) -> torch.Tensor:
    coarse = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------- adaptation


def test_p_rises_when_discriminator_is_overconfident_on_reals():
    # ada_kimg 0.1: one adjustment (batch 8, interval 4) moves p by 8 * 4 / 100 = 0.32.
    ada = AdaptiveAugment(interval=4, ada_kimg=0.1)
    for _ in range(3):
        ada.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5 ... and then
        ada.adjust(batch_size=8)
        assert float(ada.p) == 0.0  # Not yet due.
    ada.accumulate(torch.ones(4) * 5)  # ... mean sign over the interval = (3 * 0.5 + 1) / 4 > 0.6.
    ada.adjust(batch_size=8)
    assert float(ada.p) == pytest.approx(0.32)
    assert float(ada.rt) == pytest.approx(0.625)


def test_p_falls_when_discriminator_is_not_overconfident_and_stays_in_unit_interval():
    ada = AdaptiveAugment(interval=1, ada_kimg=0.1, initial_p=0.5)
    ada.accumulate(-torch.ones(8))
    ada.adjust(batch_size=8)  # 8 / 100 = 0.08 per call
    assert float(ada.p) == pytest.approx(0.42)
    for _ in range(20):
        ada.accumulate(-torch.ones(8))
        ada.adjust(batch_size=8)
    assert float(ada.p) == 0.0
    for _ in range(20):
        ada.accumulate(torch.ones(8))
        ada.adjust(batch_size=8)
    assert float(ada.p) == 1.0


def test_adjust_without_statistics_or_with_fixed_p_keeps_p():
    ada = AdaptiveAugment(interval=1, ada_kimg=0.1, initial_p=0.3)
    ada.adjust(batch_size=8)
    assert float(ada.p) == pytest.approx(0.3)
    fixed = AdaptiveAugment(fixed_p=0.2, interval=1, ada_kimg=0.1)
    assert not fixed.adaptive
    fixed.accumulate(torch.ones(8))
    fixed.adjust(batch_size=8)
    assert float(fixed.p) == pytest.approx(0.2)


def test_official_adjustment_speed():
    # Defaults: batch 32, interval 4, ada_kimg 500 -> 32 * 4 / 500000 per adjustment.
    ada = AdaptiveAugment()
    for _ in range(4):
        ada.accumulate(torch.ones(32))
        ada.adjust(batch_size=32)
    assert float(ada.p) == pytest.approx(32 * 4 / 500_000)


def test_state_dict_keeps_p_and_statistics():
    ada = AdaptiveAugment(fixed_p=None, initial_p=0.25)
    ada.accumulate(torch.ones(3))
    restored = AdaptiveAugment()
    restored.load_state_dict(ada.state_dict())
    assert float(restored.p) == pytest.approx(0.25)
    assert float(restored.sign_count) == 3


# -------------------------------------------------------------- augmentation


def test_p_zero_is_identity():
    x = _images()
    ada = AdaptiveAugment(pipe="bgc")
    assert ada(x) is x
    # Drawing at p = 0 gives identity transforms; applying them reproduces the input.
    params = ada.sample_params(4, 32, 32, generator=_gen())
    torch.testing.assert_close(ada.transform(x, params), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("pipe", AUGMENT_PIPES)
def test_p_one_changes_images_and_keeps_shape(pipe):
    x = _images()
    ada = AdaptiveAugment(pipe=pipe, fixed_p=1.0)
    y = ada(x, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert (y - x).abs().flatten(1).amax(1).min() > 1e-3  # Every sample changed.


def test_grey_images_are_supported():
    x = _images(c=1)
    y = AdaptiveAugment(fixed_p=1.0)(x, generator=_gen())
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_augmentation_is_differentiable():
    x = _images().requires_grad_(True)
    y = AdaptiveAugment(fixed_p=1.0)(x, generator=_gen(2))
    y.square().sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_blit_moves_pixels_exactly():
    x = _images()
    y = AdaptiveAugment(pipe="blit", fixed_p=1.0)(x, generator=_gen(4))
    # Flips, quarter turns and reflected integer shifts only copy pixel values.
    values = set(x.flatten().tolist())
    assert set(y.flatten().tolist()) <= values


def test_same_draw_for_real_and_fake_halves():
    real, fake = _images(seed=1), _images(seed=2)
    ada = AdaptiveAugment(fixed_p=1.0)
    both = ada(torch.cat([real, real]), generator=_gen(5), groups=2)
    torch.testing.assert_close(both[:4], both[4:])
    # One draw applied to two tensors equals the grouped call with the same seed.
    mixed = ada(torch.cat([real, fake]), generator=_gen(6), groups=2)
    params = ada.sample_params(4, 32, 32, generator=_gen(6))
    torch.testing.assert_close(mixed[:4], ada.transform(real, params))
    torch.testing.assert_close(mixed[4:], ada.transform(fake, params))
    # Without groups the samples get independent draws.
    independent = ada(torch.cat([real, real]), generator=_gen(5))
    assert not torch.allclose(independent[:4], independent[4:])
    with pytest.raises(ValueError, match="groups"):
        ada(torch.cat([real, fake[:3]]), groups=2)


def test_seeded_draws_are_reproducible():
    x = _images()
    ada = AdaptiveAugment(fixed_p=0.7)
    torch.testing.assert_close(ada(x, generator=_gen(9)), ada(x, generator=_gen(9)))


def test_geometric_quarter_turn_matches_pixel_rotation():
    # The filtered resampling of a rotation by 90 degrees is close to torch.rot90 on a
    # smooth image, and the identity and integer translations are exact.
    x = _smooth()
    ada = AdaptiveAugment(pipe="geom")
    cos, sin = math.cos(math.pi / 2), math.sin(math.pi / 2)
    quarter = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]]])
    rotated = ada.transform(x, AugmentParams(geom=quarter))
    assert (rotated - x.rot90(1, dims=(-2, -1))).abs().max() < 0.03 * x.abs().max()
    torch.testing.assert_close(ada.transform(x, AugmentParams(geom=torch.eye(3)[None])), x, atol=1e-4, rtol=0)
    shift = torch.tensor([[[1.0, 0.0, -3.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]])
    expected = ada.transform(x, AugmentParams(shift=torch.tensor([[3, -2]])))
    torch.testing.assert_close(ada.transform(x, AugmentParams(geom=shift)), expected, atol=1e-4, rtol=0)


def test_colour_matrix_is_applied():
    x = _images()
    brighter = torch.eye(4).repeat(4, 1, 1)
    brighter[:, :3, 3] = 0.5
    torch.testing.assert_close(AdaptiveAugment().transform(x, AugmentParams(color=brighter)), x + 0.5)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="bgc"):
        AdaptiveAugment(pipe="bgcfnc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        AdaptiveAugment(target=1.5)
    with pytest.raises(ValueError, match="square"):
        AdaptiveAugment(pipe="blit", fixed_p=1.0)(torch.zeros(2, 3, 8, 16))
    with pytest.raises(ValueError, match="channels"):
        AdaptiveAugment(pipe="color", fixed_p=1.0)(torch.zeros(2, 4, 8, 8))


# --------------------------------------------------------- joint image + mask


def test_joint_flip_rot90_keeps_image_and_mask_aligned():
    generator = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 7, (8, 16, 16), generator=generator)
    image = torch.cat([mask[:, None].float() / 3 - 1, torch.rand(8, 2, 16, 16, generator=generator)], dim=1)
    out_image, out_mask = JointFlipRot90(p_flip=1.0, p_rot90=1.0)(image, mask, generator=_gen(1))
    assert out_mask.dtype == mask.dtype and out_mask.shape == mask.shape
    torch.testing.assert_close(out_image[:, 0], out_mask.float() / 3 - 1)
    # Each output is one of the eight dihedral transforms of its input.
    for i in range(8):
        candidates = [m.rot90(k, dims=(-2, -1)) for m in (mask[i], mask[i].flip(-1)) for k in range(4)]
        assert any(torch.equal(out_mask[i], c) for c in candidates)


def test_joint_flip_rot90_one_hot_masks_and_identity():
    image = _images(n=2, size=8)
    one_hot = F.one_hot(torch.randint(0, 3, (2, 8, 8)), 3).permute(0, 3, 1, 2).float()
    same_image, same_mask = JointFlipRot90(p_flip=0.0, p_rot90=0.0)(image, one_hot)
    assert torch.equal(same_image, image) and torch.equal(same_mask, one_hot)
    _, mask = JointFlipRot90(p_flip=1.0, p_rot90=1.0)(image, one_hot, generator=_gen())
    torch.testing.assert_close(mask.sum(1), torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="do not match"):
        JointFlipRot90()(image, one_hot[:, :, :4])


def test_module_apply_still_recurses():
    # `nn.Module.apply(fn)` (used for weight initialisation) must keep working on owners.
    owner = torch.nn.ModuleDict({"ada": AdaptiveAugment(), "joint": JointFlipRot90()})
    seen = []
    owner.apply(lambda module: seen.append(type(module).__name__))
    assert "AdaptiveAugment" in seen
