import pytest
import torch

from aras400k.models.spade import UNetDiscriminator
from tests.models.spade.conftest import NUM_CLASSES, tiny_discriminator


@pytest.mark.parametrize(("conditioning", "channels"), [("unetgan", 1), ("oasis", NUM_CLASSES + 1)])
@pytest.mark.parametrize("size", [32, 64])
def test_heads_have_the_right_shapes(onehot, conditioning, channels, size):
    discriminator = tiny_discriminator(conditioning=conditioning)
    mask = torch.nn.functional.interpolate(onehot, size=size)
    out = discriminator(torch.randn(2, 3, size, size), mask)
    assert out.global_logits.shape == (2,)
    assert out.pixel_logits.shape == (2, channels, size, size)
    # three encoder and three decoder feature maps, down to size / 8 and back
    assert [f.shape[-1] for f in out.features] == [size // 2, size // 4, size // 8, size // 4, size // 2, size]


def test_unetgan_mode_sees_the_mask_and_oasis_mode_only_the_image(onehot):
    torch.manual_seed(0)
    image = torch.randn(2, 3, 32, 32)
    other = onehot.flip(-1)
    unetgan = tiny_discriminator(conditioning="unetgan", projection=False).eval()
    assert not torch.allclose(unetgan(image, onehot).pixel_logits, unetgan(image, other).pixel_logits)
    oasis = tiny_discriminator(conditioning="oasis", projection=False).eval()
    assert not oasis.needs_mask
    assert torch.equal(oasis(image).pixel_logits, oasis(image, other).pixel_logits)
    projected = tiny_discriminator(conditioning="oasis", projection=True).eval()
    a, b = projected(image, onehot), projected(image, other.roll(1, dims=1))
    assert torch.equal(a.pixel_logits, b.pixel_logits) and not torch.allclose(a.global_logits, b.global_logits)


def test_missing_mask_and_bad_sizes_are_reported(onehot):
    with pytest.raises(ValueError, match="needs the mask"):
        tiny_discriminator(conditioning="unetgan")(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        tiny_discriminator()(torch.randn(2, 3, 36, 36), torch.zeros(2, NUM_CLASSES, 36, 36))
    with pytest.raises(ValueError, match="mask must be"):
        tiny_discriminator()(torch.randn(2, 3, 32, 32), onehot[:, :3])
    with pytest.raises(ValueError, match="choose one of"):
        UNetDiscriminator(conditioning="patchgan")


def test_spectral_norm_everywhere_and_no_batch_norm():
    discriminator = tiny_discriminator(conditioning="unetgan")
    layers = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())


def test_gradients_reach_the_input(onehot):
    image = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = tiny_discriminator()(image, onehot)
    (out.global_logits.sum() + out.pixel_logits.sum()).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
