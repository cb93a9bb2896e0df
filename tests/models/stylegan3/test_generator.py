import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aras400k.models.stylegan3 import (
    CONFIGS,
    Generator,
    SynthesisNetwork,
    build_generator,
    layer_schedule,
    modulated_conv2d,
    setup_filter,
)
from aras400k.models.stylegan3.filters import upfirdn2d

from .tiny import Z_DIM, tiny_generator


def test_images_have_the_right_shape_and_range(generator):
    z = torch.randn(3, Z_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = generator(z)
    assert img.shape == (3, 3, 16, 16)
    assert img.dtype == torch.float32
    assert torch.isfinite(img).all()
    # Freshly initialised networks already give roughly unit-range, non-constant images.
    assert 0.01 < img.std().item() < 3
    assert img.abs().max().item() < 10


def test_every_layer_is_used_in_training(generator):
    generator.train()  # the stylegan2 config trains with unfused modulated convolutions
    try:
        img = generator(torch.randn(2, Z_DIM))
        img.square().mean().backward()
    finally:
        generator.eval()
    missing = [name for name, p in generator.named_parameters() if p.grad is None]
    # A fresh StyleGAN2 has noise strengths of 0, whose gradients still exist.
    assert missing == []
    generator.zero_grad(set_to_none=True)


def test_stylegan3_names_match_the_official_checkpoints():
    g = tiny_generator("stylegan3-t")
    state = g.state_dict()
    first = g.synthesis.layer_names[0]
    assert first == "L0_36_64"  # L{index}_{size}_{channels}
    for key in [
        "mapping.fc0.weight",
        "mapping.fc1.bias",
        "mapping.w_avg",
        "synthesis.input.affine.weight",
        "synthesis.input.weight",
        "synthesis.input.freqs",
        "synthesis.input.phases",
        "synthesis.input.transform",
        "synthesis.L0_36_64.affine.weight",
        "synthesis.L0_36_64.weight",
        "synthesis.L0_36_64.bias",
        "synthesis.L0_36_64.magnitude_ema",
        "synthesis.L0_36_64.up_filter",
        "synthesis.L0_36_64.down_filter",
        "synthesis.L14_16_3.weight",
    ]:
        assert key in state, key
    assert "mapping.fc2.weight" not in state  # depth 2 for StyleGAN3
    assert state["synthesis.L0_36_64.weight"].shape[-1] == 3
    assert state["synthesis.L0_36_64.up_filter"].shape == (12,)


def test_stylegan3_r_uses_1x1_convs_radial_filters_and_double_width():
    t, r = tiny_generator("stylegan3-t"), tiny_generator("stylegan3-r")
    layer = r.synthesis.L0_36_64
    assert layer.weight.shape[-2:] == (1, 1)
    assert layer.down_filter.ndim == 2  # radially symmetric, not separable
    critical = getattr(r.synthesis, r.synthesis.layer_names[-2])
    assert critical.down_filter.ndim == 1  # critically sampled layers stay separable
    # Same channel_base given to the factory: R has twice the width of T.
    big_t = build_generator("stylegan3-t", resolution=16, channel_base=128, channel_max=32, z_dim=8, w_dim=8)
    assert r.synthesis.L0_36_64.out_channels == 2 * big_t.synthesis.L0_36_32.out_channels
    assert t.synthesis.L0_36_64.weight.shape[-1] == 3


def test_stylegan2_names_match_the_official_checkpoints():
    g = tiny_generator("stylegan2")
    state = g.state_dict()
    for key in [
        "mapping.fc7.weight",  # depth 8 for StyleGAN2
        "mapping.w_avg",
        "synthesis.b4.const",
        "synthesis.b4.conv1.weight",
        "synthesis.b4.conv1.noise_const",
        "synthesis.b4.conv1.noise_strength",
        "synthesis.b4.torgb.affine.weight",
        "synthesis.b8.conv0.weight",
        "synthesis.b8.conv0.resample_filter",
        "synthesis.b16.conv1.affine.bias",
        "synthesis.b16.torgb.weight",
        "synthesis.b16.resample_filter",
    ]:
        assert key in state, key
    assert "synthesis.b4.conv0.weight" not in state
    assert g.num_ws == 6  # b4: 1 conv, b8 and b16: 2 convs each, plus the last ToRGB


def test_official_schedule_names_at_1024():
    net = SynthesisNetwork(w_dim=8, img_resolution=1024, img_channels=3)
    assert net.layer_names[0] == "L0_36_512"
    assert net.layer_names[-2:] == ["L13_1024_32", "L14_1024_3"]
    schedule = layer_schedule(1024, 3)
    assert schedule.cutoffs[0] == 2 and schedule.cutoffs[-1] == 512
    assert schedule.cutoffs[-3] == pytest.approx(512)  # the last num_critical layers are at f_c = s / 2
    np.testing.assert_allclose(schedule.sampling_rates[-3:], 1024)


def test_generator_accepts_official_init_kwargs():
    init_kwargs = {
        "z_dim": 16,
        "c_dim": 4,
        "w_dim": 16,
        "img_resolution": 16,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "channel_base": 256,
        "channel_max": 32,
        "magnitude_ema_beta": 0.5 ** (32 / 20000),
        "conv_kernel": 1,
        "use_radial_filters": True,
        "num_fp16_res": 4,
        "conv_clamp": None,
    }
    g = Generator(**init_kwargs)
    c = F.one_hot(torch.tensor([0, 3]), 4).float()
    with torch.no_grad():
        assert g(torch.randn(2, 16), c).shape == (2, 3, 16, 16)
    assert "mapping.embed.weight" in g.state_dict()
    with pytest.raises(TypeError):
        Generator(**init_kwargs, not_an_argument=1)
    # StyleGAN2-ADA checkpoints nest the synthesis arguments.
    ada_kwargs = {
        "z_dim": 8,
        "c_dim": 0,
        "w_dim": 8,
        "img_resolution": 16,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 8},
        "synthesis_kwargs": {"channel_base": 128, "channel_max": 16, "num_fp16_res": 4, "conv_clamp": 256},
    }
    g2 = Generator(**ada_kwargs, architecture="stylegan2")
    assert g2.synthesis.b4.const.shape == (16, 4, 4)


def test_truncation_psi_zero_gives_the_average_image(generator):
    mapping = generator.mapping
    mapping.w_avg.copy_(torch.randn_like(mapping.w_avg))
    z = torch.randn(3, Z_DIM)
    with torch.no_grad():
        ws = mapping(z, truncation_psi=0)
        torch.testing.assert_close(ws, mapping.w_avg.expand_as(ws))
        images = generator(z, truncation_psi=0, noise_mode="const")
        average = generator.synthesis(mapping.w_avg.expand(1, generator.num_ws, -1), noise_mode="const")
    torch.testing.assert_close(images, average.expand_as(images), rtol=1e-4, atol=1e-5)
    mapping.w_avg.zero_()


def test_truncation_cutoff_only_touches_the_first_ws():
    g = tiny_generator("stylegan3-t")
    g.mapping.w_avg.fill_(1.0)
    z = torch.randn(2, Z_DIM)
    full, cut = g.mapping(z), g.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], 1 + 0.5 * (full[:, :3] - 1))
    torch.testing.assert_close(cut[:, 3:], full[:, 3:])


def test_update_emas_tracks_w_avg_and_input_magnitudes():
    g = tiny_generator("stylegan3-t").train()
    layer = g.synthesis.L0_36_64
    g(torch.randn(4, Z_DIM), update_emas=True)
    assert g.mapping.w_avg.abs().sum() > 0
    assert layer.magnitude_ema.item() != 1.0
    before = g.mapping.w_avg.clone()
    g(torch.randn(4, Z_DIM))
    assert torch.equal(g.mapping.w_avg, before)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_the_same_seed_gives_the_same_image(cfg):
    images = []
    for _ in range(2):
        g = tiny_generator(cfg, seed=7)
        z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            images.append(g(z, noise_mode="const"))
    assert torch.equal(images[0], images[1])
    with torch.no_grad():
        other = g(torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(4)), noise_mode="const")
    assert not torch.allclose(images[1], other)


def test_unknown_config_is_named():
    with pytest.raises(ValueError, match="choose one of stylegan3-t, stylegan3-r, stylegan2"):
        build_generator("stylegan4")  # type: ignore[arg-type]


def test_batch_size_sets_the_magnitude_ema_half_life():
    g = build_generator("stylegan3-t", resolution=16, channel_base=64, channel_max=8, z_dim=8, w_dim=8, batch_size=32)
    assert g.synthesis.L0_36_8.magnitude_ema_beta == pytest.approx(0.5 ** (32 / 20000))


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modulated_convolution_agree(up):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    kwargs = dict(padding=1, up=up, resample_filter=f, input_gain=torch.tensor(0.7, dtype=torch.float64))
    torch.testing.assert_close(
        modulated_conv2d(x, weight, styles, fused=True, **kwargs),
        modulated_conv2d(x, weight, styles, fused=False, **kwargs),
    )


def test_upsampling_convolution_is_zero_stuffing_blur_and_convolution():
    # StyleGAN2's conv0: stuff zeros, pad, blur with [1, 3, 3, 1] (gain 4), then a true
    # convolution with the modulated weights; computed here the slow way.
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    styles = torch.ones(2, 4, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    fast = modulated_conv2d(x, weight, styles, demodulate=False, padding=1, up=2, resample_filter=f)
    blurred = upfirdn2d(x, f, up=2, padding=(1 + 2, 1 + 1, 1 + 2, 1 + 1), gain=4)
    slow = F.conv2d(blurred, weight.flip(2, 3))
    assert fast.shape == (2, 6, 10, 10)
    torch.testing.assert_close(fast, slow)
