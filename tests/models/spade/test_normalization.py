import pytest
import torch

from aras400k.models.spade import SPADE, one_hot_mask


def test_one_hot_mask_gives_all_zero_vectors_at_ignored_pixels():
    mask = torch.tensor([[[0, 1], [255, 2]]], dtype=torch.uint8)
    onehot = one_hot_mask(mask, 3)
    assert onehot.shape == (1, 3, 2, 2) and onehot.dtype == torch.float32
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0]
    assert onehot[0, :, 0, 1].tolist() == [0, 1, 0]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0]  # ignored
    assert onehot[0, :, 1, 1].tolist() == [0, 0, 1]
    assert torch.equal(one_hot_mask(mask[:, None], 3), onehot)  # (B, 1, H, W) accepted


def test_one_hot_mask_rejects_unknown_values_and_float_masks():
    with pytest.raises(ValueError, match=r"values \[7\] outside the classes 0..6"):
        one_hot_mask(torch.tensor([[[0, 7]]]), 7)
    with pytest.raises(ValueError, match="integer class indices"):
        one_hot_mask(torch.zeros(1, 2, 2), 7)
    with pytest.raises(ValueError, match="must be"):
        one_hot_mask(torch.zeros(2, 2, dtype=torch.long), 7)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_spade_modulates_by_the_mask_resized_to_the_features(norm):
    torch.manual_seed(0)
    spade = SPADE(num_features=4, label_channels=3, hidden_channels=8, norm=norm)
    x = torch.randn(2, 4, 8, 8)
    a = one_hot_mask(torch.zeros(2, 32, 32, dtype=torch.long), 3)
    b = one_hot_mask(torch.full((2, 32, 32), 2, dtype=torch.long), 3)
    out_a, out_b = spade(x, a), spade(x, b)
    assert out_a.shape == x.shape
    assert not torch.allclose(out_a, out_b)


def test_spade_is_plain_normalisation_when_gamma_and_beta_are_zero():
    spade = SPADE(4, 3, hidden_channels=8)
    for conv in (spade.mlp_gamma, spade.mlp_beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 8, 8) * 3 + 1
    out = spade(x, torch.rand(2, 3, 8, 8))
    assert torch.allclose(out, torch.nn.functional.instance_norm(x), atol=1e-5)


def test_spade_rejects_unknown_norm_and_even_kernels():
    with pytest.raises(ValueError, match="choose one of"):
        SPADE(4, 3, norm="layer")
    with pytest.raises(ValueError, match="odd"):
        SPADE(4, 3, kernel_size=4)
