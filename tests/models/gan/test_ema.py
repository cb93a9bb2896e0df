"""ExponentialMovingAverage: StyleGAN half-life math, constant decay, buffers, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aras400k.models.gan import ExponentialMovingAverage, stylegan_ema_kimg


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_beta_matches_hand_computation():
    ema = ExponentialMovingAverage(_model(), ema_kimg=10.0, ema_rampup=0.05)
    # 1000 steps of 32 images: the ramp-up caps the half-life at 0.05 * 32000 = 1600 images.
    assert ema.beta(1000, 32) == pytest.approx(0.5 ** (32 / 1600))
    # Late in training the half-life is ema_kimg * 1000 = 10000 images.
    assert ema.beta(100_000, 32) == pytest.approx(0.5 ** (32 / 10_000))
    # The first update copies the weights (half-life 0 -> beta 0).
    assert ema.beta(0, 32) == 0.0
    no_rampup = ExponentialMovingAverage(_model(), ema_kimg=10.0, ema_rampup=None)
    assert no_rampup.beta(0, 32) == pytest.approx(0.5 ** (32 / 10_000))
    constant = ExponentialMovingAverage(_model(), decay=0.999)
    assert constant.beta(0, 32) == constant.beta(10**6, 1) == 0.999


def test_stylegan_ema_kimg():
    assert stylegan_ema_kimg(32) == pytest.approx(10.0)
    assert stylegan_ema_kimg(64) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        stylegan_ema_kimg(0)


def test_half_life_in_images():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    # Half-life 64 images at batch 8: the gap to the model halves every 8 updates.
    ema = ExponentialMovingAverage(model, ema_kimg=0.064, ema_rampup=None)
    nn.init.ones_(model.weight)
    for step in range(8):
        ema.update(model, step, batch_size=8)
    assert ema.shadow.weight.item() == pytest.approx(0.5, abs=1e-6)
    for step in range(8, 16):
        ema.update(model, step, batch_size=8)
    assert ema.shadow.weight.item() == pytest.approx(0.75, abs=1e-6)


def test_shadow_follows_model_and_copies_buffers():
    model = _model()
    ema = ExponentialMovingAverage(model, decay=0.9)
    old = {k: v.clone() for k, v in ema.shadow.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(8, 3))  # Changes BatchNorm running statistics.
    beta = ema.update(model, step=5, batch_size=8)
    assert beta == 0.9
    for name, param in model.named_parameters():
        expected = 0.9 * old[name] + 0.1 * param.detach()
        torch.testing.assert_close(dict(ema.shadow.named_parameters())[name], expected)
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(dict(ema.shadow.named_buffers())[name], buffer)
    assert int(ema.num_updates) == 1
    # The model is only read.
    assert all(p.requires_grad for p in model.parameters())


def test_shadow_is_frozen_eval_and_callable():
    model = _model()
    ema = ExponentialMovingAverage(model)
    wrapper = nn.ModuleDict({"ema": ema})
    wrapper.train()
    assert not ema.shadow.training
    assert not any(p.requires_grad for p in ema.shadow.parameters())
    x = torch.randn(2, 3)
    torch.testing.assert_close(ema(x), model.eval()(x))


def test_state_dict_round_trip():
    model = _model()
    ema = ExponentialMovingAverage(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.mul_(3)
    ema.update(model, 0, 4)
    restored = ExponentialMovingAverage(_model(), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    for a, b in zip(ema.state_dict().values(), restored.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert "shadow.0.weight" in ema.state_dict()


def test_spectral_norm_module_is_supported():
    model = nn.utils.parametrizations.spectral_norm(nn.Conv2d(2, 2, 3))
    ema = ExponentialMovingAverage(model, decay=0.5)
    ema.update(model, 0, 2)
    assert ema(torch.randn(1, 2, 5, 5)).shape == (1, 2, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"decay": 1.0}, "decay"), ({"ema_kimg": 0.0}, "ema_kimg"), ({"ema_rampup": 0.0}, "ema_rampup")],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExponentialMovingAverage(_model(), **kwargs)


def test_constant_decay_warmup_follows_the_generator_early():
    ema = ExponentialMovingAverage(_model(), decay=0.999, warmup=True)
    assert ema.beta(0, 4) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema.beta(90, 4) == pytest.approx(91 / 100)
    assert ema.beta(10**6, 4) == 0.999  # capped by the decay
    assert ExponentialMovingAverage(_model(), decay=0.999).beta(0, 4) == 0.999


def test_no_ema_kimg_means_the_official_half_life_of_the_batch():
    official = ExponentialMovingAverage(_model(), ema_kimg=None, ema_rampup=None)
    for batch in (8, 64):
        fixed = ExponentialMovingAverage(_model(), ema_kimg=stylegan_ema_kimg(batch), ema_rampup=None)
        assert official.beta(100, batch) == pytest.approx(fixed.beta(100, batch))
