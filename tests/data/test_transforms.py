import pytest
import torch

from aras400k.data.transforms import JointAugmentation, Normalize


def test_geometry_is_applied_jointly_and_exactly():
    torch.manual_seed(0)
    mask = torch.randint(0, 7, (8, 16, 16), dtype=torch.uint8)
    mask[:, 0, 0] = 255
    image = (mask.float() / 255)[:, None].repeat(1, 3, 1, 1)
    aug = JointAugmentation(brightness=0, contrast=0, hflip=0.5, vflip=0.5, rotate90=0.9)
    changed = False
    for _ in range(4):
        out_image, out_mask = aug(image, mask)
        assert out_mask.dtype == torch.uint8
        assert torch.allclose(out_image[:, 0] * 255, out_mask.float(), atol=1e-3)
        for i in range(8):  # same multiset of labels: flips/rotations only move pixels
            assert torch.equal(out_mask[i].flatten().sort().values, mask[i].flatten().sort().values)
        changed |= not torch.equal(out_mask, mask)
    assert changed


def test_colour_jitter_touches_image_only():
    mask = torch.randint(0, 7, (4, 8, 8))
    image = torch.rand(4, 3, 8, 8)
    out_image, out_mask = JointAugmentation(hflip=0, vflip=0, rotate90=0, brightness=0.5, contrast=0.5, colour_p=1)(
        image, mask
    )
    assert torch.equal(out_mask, mask) and not torch.allclose(out_image, image)
    assert out_image.min() >= 0 and out_image.max() <= 1


def test_normalize_round_trip_and_errors():
    norm = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(norm(x), x * 2 - 1)
    assert torch.allclose(norm.denormalize(norm(x)), x, atol=1e-6)
    with pytest.raises(ValueError, match="same length"):
        Normalize((0.5,), (0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))


def test_normalize_in_place_gives_the_same_bits():
    norm = Normalize()
    x = torch.rand(2, 3, 5, 5)
    expected = norm(x)
    y = x.clone()
    out = norm(y, inplace=True)
    assert out is y and torch.equal(out, expected)
