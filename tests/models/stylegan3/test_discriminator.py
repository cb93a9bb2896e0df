import pytest
import torch

from aras400k.models.stylegan3 import Discriminator, MinibatchStdLayer, build_discriminator


@pytest.fixture(scope="module")
def discriminator():
    torch.manual_seed(0)
    return build_discriminator(resolution=16, channel_base=256, channel_max=64)


@pytest.mark.parametrize("batch", [1, 2, 4, 5, 6])
def test_scores_have_shape_batch_by_one(discriminator, batch):
    scores = discriminator(torch.randn(batch, 3, 16, 16))
    assert scores.shape == (batch, 1)
    assert torch.isfinite(scores).all()


def test_names_match_the_official_checkpoints(discriminator):
    state = discriminator.state_dict()
    for key in [
        "b16.fromrgb.weight",
        "b16.conv0.weight",
        "b16.conv1.bias",
        "b16.skip.weight",
        "b16.conv1.resample_filter",
        "b8.conv0.weight",
        "b8.skip.weight",
        "b4.conv.weight",
        "b4.fc.weight",
        "b4.out.weight",
        "b4.out.bias",
    ]:
        assert key in state, key
    assert "b8.fromrgb.weight" not in state  # only the first block reads the image
    assert "b16.skip.bias" not in state
    assert state["b4.conv.weight"].shape == (64, 65, 3, 3)  # + 1 minibatch-stddev channel
    assert state["b4.fc.weight"].shape == (64, 64 * 4 * 4)


def _group_std(x):
    return x.std(dim=0, unbiased=False).mean()


def test_minibatch_std_uses_official_groups_for_divisible_batches():
    x = torch.randn(8, 6, 4, 4, dtype=torch.float64)
    out = MinibatchStdLayer(group_size=4)(x)
    assert out.shape == (8, 7, 4, 4)
    # Sample i is in group i mod (N / group_size): here {0, 2, 4, 6} and {1, 3, 5, 7}.
    for members in ([0, 2, 4, 6], [1, 3, 5, 7]):
        expected = (x[members].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for i in members:
            assert torch.allclose(out[i, -1], expected.expand(4, 4))
    torch.testing.assert_close(out[:, :6], x)


@pytest.mark.parametrize(("batch", "groups"), [(6, [[0, 2, 4], [1, 3, 5]]), (5, [[0, 2, 4], [1, 3]]), (3, [[0, 1, 2]])])
def test_minibatch_std_handles_batches_not_divisible_by_the_group_size(batch, groups):
    x = torch.randn(batch, 4, 2, 2, dtype=torch.float64)
    out = MinibatchStdLayer(group_size=4)(x)
    assert out.shape == (batch, 5, 2, 2)
    for members in groups:
        expected = (x[members].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for i in members:
            assert torch.allclose(out[i, -1], expected.expand(2, 2))


def test_minibatch_std_with_several_channels():
    x = torch.randn(4, 6, 2, 2, dtype=torch.float64)
    out = MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert out.shape == (4, 8, 2, 2)
    expected = (x[[0, 2], :3].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(out[0, 6], expected.expand(2, 2))


def test_conditional_discriminator_and_freeze_layers():
    d = Discriminator(
        c_dim=3, img_resolution=16, img_channels=3, channel_base=128, channel_max=16, block_kwargs={"freeze_layers": 2}
    )
    c = torch.eye(3)[[0, 2]]
    assert d(torch.randn(2, 3, 16, 16), c).shape == (2, 1)
    assert not d.b16.fromrgb.weight.requires_grad and not d.b16.conv0.weight.requires_grad
    assert d.b16.conv1.weight.requires_grad
    assert "mapping.embed.weight" in d.state_dict()


def test_invalid_resolution_is_named():
    with pytest.raises(ValueError, match="power of two"):
        build_discriminator(resolution=24)
