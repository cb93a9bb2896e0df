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


def _reference_ops():
    """The benchmark's reference: NVlabs' discriminator forward on its reference ops, with our weights."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_stylegan3.py"
    spec = importlib.util.spec_from_file_location("bench_stylegan3", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scores_and_gradients(forward, d, img0, create_graph=False):
    d.zero_grad(set_to_none=True)
    img = img0.clone().requires_grad_(True)
    scores = forward(img)
    (grad_img,) = torch.autograd.grad(torch.nn.functional.softplus(scores).sum(), img, create_graph=create_graph)
    # R1: the gradient of the image gradient's norm reaches every weight (double backward).
    grad_img.square().sum().backward() if create_graph else None
    return [scores, grad_img] + ([p.grad for p in d.parameters()] if create_graph else [])


@pytest.mark.parametrize("clamped", [False, True])
def test_scores_and_gradients_equal_the_official_reference_ops(clamped):
    reference = _reference_ops().reference_discriminator
    torch.manual_seed(1)
    d = build_discriminator(resolution=16, channel_base=256, channel_max=32)
    img0 = torch.randn(4, 3, 16, 16) * (400.0 if clamped else 1.0)
    if clamped:  # large inputs push activations past conv_clamp=256 in the first block
        first = d.b16.fromrgb
        with torch.no_grad():
            assert (first.weight.abs().max() * first.weight_gain * 400 * 3) > 256
    for create_graph in (False, True):
        ours = _scores_and_gradients(d, d, img0, create_graph)
        theirs = _scores_and_gradients(lambda img: reference(d, img), d, img0, create_graph)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_float32_scores_and_gradients_within_1e4_of_the_reference():
    reference = _reference_ops().reference_discriminator
    torch.manual_seed(2)
    d = build_discriminator(resolution=32, channel_base=512, channel_max=32)
    img0 = torch.randn(4, 3, 32, 32)
    grads = []
    for forward in (d, lambda img: reference(d, img)):
        d.zero_grad(set_to_none=True)
        img = img0.clone().requires_grad_(True)
        scores = forward(img)
        torch.nn.functional.softplus(scores).sum().backward()
        grads.append([scores.detach(), img.grad, *[p.grad.clone() for p in d.parameters()]])
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("gain", [-0.5, 0.0, 0.7])
def test_conv_layer_with_any_gain_equals_bias_act_of_the_convolution(gain):
    from aras400k.models.stylegan3 import Conv2dLayer
    from aras400k.models.stylegan3.layers import bias_act

    torch.manual_seed(3)
    layer = Conv2dLayer(4, 6, kernel_size=3, activation="lrelu", conv_clamp=0.5)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 8, 8)
    plain = torch.nn.functional.conv2d(x, layer.weight * layer.weight_gain, padding=1)
    # gain > 0 takes the folded path; gain <= 0 (where lrelu(g * z) != g * lrelu(z)) the plain one.
    expected = bias_act(plain, layer.bias, "lrelu", gain=gain, clamp=0.5 * gain)
    torch.testing.assert_close(layer(x, gain=gain), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kernel_size", "taps"),
    [(3, [1, 3, 3, 1]), (1, [1, 3, 3, 1]), (3, [1, 2, 1]), (1, [1, 2, 1]), (3, [1, 4, 6, 4, 1])],
)
def test_downsampling_conv_layer_equals_the_official_reference_ops(kernel_size, taps):
    """The one-conv2d blur (even filters, padded evenly) and the upfirdn2d fallback (odd filters)."""
    from aras400k.models.stylegan3 import Conv2dLayer

    ref_conv2d_layer = _reference_ops().ref_conv2d_layer
    torch.manual_seed(4)
    layer = Conv2dLayer(6, 5, kernel_size=kernel_size, activation="lrelu", down=2, resample_filter=taps, conv_clamp=8)
    torch.nn.init.normal_(layer.bias)
    x0 = torch.randn(2, 6, 12, 12).contiguous(memory_format=torch.channels_last)
    results = []
    for forward in (lambda x: layer(x, gain=0.5), lambda x: ref_conv2d_layer(layer, x, gain=0.5)):
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        out = forward(x)
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grad_x.square().sum().backward()
        results.append([out.detach(), grad_x.detach(), layer.weight.grad, layer.bias.grad])
    assert results[0][0].shape == (2, 5, 6, 6)
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_minibatch_std_official_path_gives_every_sample_its_groups_statistics():
    """Divisible batches take the official reshape: check every sample and statistics channel."""
    x = torch.randn(6, 6, 3, 3, dtype=torch.float64)
    out = MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert out.shape == (6, 8, 3, 3)
    for i in range(6):
        members = [i % 3, i % 3 + 3]  # sample i is in group i mod (N / group_size)
        for f, channels in enumerate((slice(0, 3), slice(3, 6))):
            expected = (x[members, channels].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(out[i, 6 + f], expected.expand(3, 3))
    torch.testing.assert_close(out[:, :6], x)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(
    ("activation", "clamp", "with_residual", "with_bias"),
    [
        ("linear", None, True, False),
        ("linear", None, True, True),
        ("lrelu", 0.3, True, True),
        ("lrelu", None, False, True),
    ],
)
def test_pointwise_conv2d_equals_conv2d_bias_act_and_residual(layout, activation, clamp, with_residual, with_bias):
    """The 1x1 matrix-product path (fused residual or not), values and first and second derivatives."""
    from aras400k.models.stylegan3.layers import LRELU_GAIN, bias_act, pointwise_conv2d

    torch.manual_seed(5)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x0 = torch.randn(2, 5, 6, 7, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(4, 5, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if with_bias else None
    r0 = torch.randn(2, 4, 6, 7, dtype=torch.float64) if with_residual else None

    def plain(x, r):  # pointwise_conv2d's leaky ReLU has no gain (callers fold it into w and b)
        gain = 1 / LRELU_GAIN if activation == "lrelu" else 1.0
        y = bias_act(torch.nn.functional.conv2d(x, w), b, activation, gain=gain, clamp=clamp)
        return y if r is None else y + r

    def ours(x, r):
        return pointwise_conv2d(x, w, b, r, activation, clamp)

    results = []
    for forward in (ours, plain):
        x = x0.clone().requires_grad_(True)
        r = None if r0 is None else r0.clone().requires_grad_(True)
        out = forward(x, r)
        if forward is ours:
            assert out.is_contiguous(memory_format=torch.channels_last)
        inputs = [x, w] + ([b] if b is not None else []) + ([r] if r is not None else [])
        grads = torch.autograd.grad((out * out.detach().sin()).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in grads), [x, w], allow_unused=True)
        results.append([out, *grads, *[torch.zeros(()) if g is None else g for g in second]])
    for i, (a, e) in enumerate(zip(*results, strict=True)):
        torch.testing.assert_close(a, e, msg=lambda m, i=i: f"result {i}: {m}")


def test_pointwise_conv2d_names_bad_shapes():
    from aras400k.models.stylegan3.layers import pointwise_conv2d

    with pytest.raises(ValueError, match="1x1 weights"):
        pointwise_conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="residual"):
        pointwise_conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 1, 1), residual=torch.randn(1, 2, 2, 2))


def test_channels_last_weights_load_and_export_official_tensors():
    """3x3 weights are stored channels-last; contiguous state dicts load into them and export unchanged values."""
    from aras400k.models.stylegan3 import export_official_state_dict

    torch.manual_seed(6)
    d = build_discriminator(resolution=16, channel_base=256, channel_max=32)
    assert d.b16.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    assert d.b16.fromrgb.weight.is_contiguous()  # 1x1: plain layout
    other = build_discriminator(resolution=16, channel_base=256, channel_max=32)
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    d.load_state_dict(state)
    assert d.b16.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    for name, value in export_official_state_dict(d).items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)
    img = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(d(img), other(img), rtol=0, atol=0)


def test_blur_follows_a_changed_filter_and_dtype():
    """The cached depthwise blur weights are rebuilt when the filter or the dtype changes."""
    reference = _reference_ops().reference_discriminator
    torch.manual_seed(7)
    d = build_discriminator(resolution=16, channel_base=256, channel_max=32)
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(d(img), reference(d, img), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for module in d.modules():
            if hasattr(module, "resample_filter"):
                module.resample_filter.copy_(
                    torch.outer(torch.tensor([1.0, 2.0, 4.0, 1.0]), torch.tensor([1.0, 1.0, 3.0, 3.0])) / 64
                )
    torch.testing.assert_close(d(img), reference(d, img), rtol=1e-4, atol=1e-4)
    d64 = d.double()
    # A float64 network blurs with float64 weights (the epilogue returns float32, as the official one).
    torch.testing.assert_close(d64(img.double()).double(), reference(d64, img.double()), rtol=1e-5, atol=1e-5)


def test_only_the_resnet_architecture_is_accepted():
    with pytest.raises(ValueError, match="only the 'resnet' discriminator architecture"):
        Discriminator(c_dim=0, img_resolution=16, img_channels=3, architecture="skip")  # type: ignore[arg-type]


def test_fully_connected_lrelu_equals_bias_act_of_the_product():
    from aras400k.models.stylegan3 import FullyConnectedLayer
    from aras400k.models.stylegan3.layers import bias_act

    torch.manual_seed(8)
    layer = FullyConnectedLayer(6, 5, activation="lrelu", lr_multiplier=0.5, bias_init=0.3)
    x = torch.randn(3, 6)
    expected = bias_act(x @ (layer.weight * layer.weight_gain).t(), layer.bias * layer.bias_gain, "lrelu")
    torch.testing.assert_close(layer(x), expected)
