import inspect

import pytest
import torch

from aras400k.models.spade import SPADEGenerator, SPADEResnetBlock, one_hot_mask, reparameterize
from tests.models.spade.conftest import NUM_CLASSES, block_mask, tiny_generator


@pytest.mark.parametrize(("size", "start"), [(32, 4), (32, 8), (32, 16), (64, 4), (64, 16)])
def test_output_shape_and_range_for_several_start_sizes(size, start):
    generator = tiny_generator(SPADEGenerator.upsamplings_for(size, start))
    mask = one_hot_mask(block_mask(size), NUM_CLASSES)
    image = generator(mask)
    assert image.shape == (2, 3, size, size)
    assert image.min() >= -1 and image.max() <= 1
    assert torch.isfinite(image).all()


def test_upsamplings_for_and_size_checks():
    assert SPADEGenerator.upsamplings_for(256, 8) == 5
    with pytest.raises(ValueError, match="power of two"):
        SPADEGenerator.upsamplings_for(96, 8)
    generator = tiny_generator(3)
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*num_upsamplings = 8"):
        generator(one_hot_mask(block_mask(36), NUM_CLASSES))
    with pytest.raises(ValueError, match="one-hot"):
        generator(torch.zeros(2, 3, 32, 32))


def test_spade_modulates_every_scale_including_the_full_resolution(onehot):
    generator = tiny_generator(3)
    seen = []
    hooks = [
        block.norm_0.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape[-2:])))
        for block in generator.blocks
    ]
    generator(onehot)
    for hook in hooks:
        hook.remove()
    assert seen == [(4, 4), (8, 8), (16, 16), (32, 32)]  # the last block's SPADE runs at full resolution
    assert all(isinstance(block, SPADEResnetBlock) for block in generator.blocks)


def test_learned_shortcut_only_when_the_width_changes():
    assert SPADEResnetBlock(16, 8, 7, hidden_channels=8).learned_shortcut
    block = SPADEResnetBlock(8, 8, 7, hidden_channels=8)
    assert not block.learned_shortcut and not hasattr(block, "conv_s")
    spectral = SPADEResnetBlock(8, 8, 7, hidden_channels=8, spectral=True)
    assert hasattr(spectral.conv_0, "parametrizations")


def test_changing_the_mask_changes_the_image(onehot):
    generator = tiny_generator(noise="none").eval()
    other = one_hot_mask(block_mask(32).flip(-1), NUM_CLASSES)
    assert not torch.allclose(generator(onehot), generator(other))


def test_without_noise_the_same_mask_gives_the_same_image(onehot):
    generator = tiny_generator(noise="none").eval()
    assert generator.sample_noise(onehot) is None
    assert torch.equal(generator(onehot), generator(onehot))


@pytest.mark.parametrize("noise", ["global", "per_class"])
def test_noise_seed_changes_the_image_and_the_same_seed_repeats_it(onehot, noise):
    generator = tiny_generator(noise=noise).eval()
    a = generator(onehot, generator=torch.Generator().manual_seed(1))
    b = generator(onehot, generator=torch.Generator().manual_seed(2))
    again = generator(onehot, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, again)
    assert (a - b).abs().mean() > 1e-4


def test_per_class_noise_is_constant_inside_each_class_region(onehot):
    generator = tiny_generator(noise="per_class")
    z = generator.sample_noise(onehot, torch.Generator().manual_seed(0))
    assert z.shape == (2, NUM_CLASSES, 8)
    noise = generator.noise_map(onehot, z)
    assert noise.shape == (2, 8, 32, 32)
    for b in range(2):
        for cls, (rows, cols) in {0: (slice(0, 16), slice(0, 16)), 6: (slice(16, 32), slice(16, 32))}.items():
            region = noise[b, :, rows, cols].flatten(1)
            assert torch.allclose(region, z[b, cls][:, None].expand_as(region))
    assert not torch.allclose(noise[0, :, 0, 0], noise[0, :, 31, 31])  # different classes, different noise


def test_global_noise_is_constant_over_the_image(onehot):
    generator = tiny_generator(noise="global")
    z = generator.sample_noise(onehot)
    noise = generator.noise_map(onehot, z)
    assert torch.equal(noise, z[:, :, None, None].expand_as(noise))
    with pytest.raises(ValueError, match="global noise must be"):
        generator(onehot, z=torch.zeros(2, 3))


def test_ignored_pixels_get_zero_per_class_noise():
    generator = tiny_generator(noise="per_class")
    mask = block_mask(32)
    mask[:, :4, :4] = 255
    onehot = one_hot_mask(mask, NUM_CLASSES)
    noise = generator.noise_map(onehot, generator.sample_noise(onehot))
    assert noise[:, :, :4, :4].abs().sum() == 0


def test_image_encoder_gives_the_style_vector(onehot):
    generator = tiny_generator(use_encoder=True, encoder_downsamplings=3)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    mu, logvar = generator.encode(images)
    assert mu.shape == logvar.shape == (2, 8)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert generator(onehot, z).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="too small"):
        generator.encode(torch.zeros(1, 3, 4, 4))


def test_reparameterize_is_mu_plus_scaled_noise():
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.log(torch.tensor([[4.0, 0.25]]))
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(3))
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(3))
    assert torch.allclose(z, mu + eps * torch.tensor([[2.0, 0.5]]))


def test_invalid_generator_options_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        tiny_generator(noise="spatial")
    with pytest.raises(ValueError, match="use_encoder needs noise='global'"):
        tiny_generator(noise="per_class", use_encoder=True)
    with pytest.raises(RuntimeError, match="use_encoder=True"):
        tiny_generator().encode(torch.zeros(1, 3, 32, 32))


def test_batch_norm_option(onehot):
    generator = tiny_generator(norm="batch")
    assert generator(onehot).shape == (2, 3, 32, 32)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in generator.modules())


def test_default_widths_follow_oasis():
    defaults = {k: v.default for k, v in inspect.signature(SPADEGenerator).parameters.items()}
    assert (defaults["base_channels"], defaults["max_channels"], defaults["num_upsamplings"]) == (64, 1024, 5)
    assert (defaults["spade_hidden"], defaults["spade_kernel_size"], defaults["z_dim"]) == (128, 3, 64)
    assert defaults["norm"] == "instance" and defaults["spectral"] is True
    # the same width rule at 1/32 scale: OASIS's 16-16-8-4-2-1 x base pattern
    assert tiny_generator(5, base_channels=2, max_channels=32).channels == [32, 32, 16, 8, 4, 2]
