import math

import numpy as np
import pytest
import scipy.signal
import torch

from aras400k.models.stylegan3 import (
    design_lowpass_filter,
    filtered_lrelu,
    filtered_lrelu_reference,
    setup_filter,
    upfirdn2d,
)


def _response(taps: np.ndarray, fs: float, n: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(n, 1 / fs), np.abs(np.fft.rfft(taps, n))


@pytest.mark.parametrize(("numtaps", "cutoff", "half_width", "fs"), [(12, 8, 8, 64), (12, 2, 6, 32), (24, 8, 8, 64)])
def test_kaiser_lowpass_passes_dc_and_stops_the_stopband(numtaps, cutoff, half_width, fs):
    taps = design_lowpass_filter(numtaps, cutoff, 2 * half_width, fs).numpy()
    freqs, gain = _response(taps, fs)
    assert gain[0] == pytest.approx(1.0, abs=1e-6)
    assert gain[freqs <= max(cutoff - half_width, 0.5)].min() > 0.98
    # Kaiser's formula predicts the attenuation; allow 6 dB of slack, and every
    # design used here stays below -40 dB from the stopband edge f_c + f_h on.
    predicted = scipy.signal.kaiser_atten(numtaps, 2 * half_width / (fs / 2))
    stop_db = 20 * np.log10(gain[freqs >= cutoff + half_width].max())
    assert stop_db < -(predicted - 6)
    assert stop_db < -40


def test_radial_lowpass_is_round_and_stops_beyond_the_stopband_radius():
    numtaps, cutoff, half_width, fs = 12, 8, 8, 64
    taps = design_lowpass_filter(numtaps, cutoff, 2 * half_width, fs, radial=True).numpy()
    assert taps.shape == (12, 12)
    np.testing.assert_allclose(taps, taps.T, atol=1e-7)
    response = np.abs(np.fft.fft2(taps, (256, 256)))
    freqs = np.fft.fftfreq(256, 1 / fs)
    radius = np.hypot(*np.meshgrid(freqs, freqs))
    assert response[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert response[radius <= 0.5].min() > 0.99
    assert 20 * np.log10(response[radius >= cutoff + half_width].max()) < -35


def test_single_tap_means_no_filter():
    assert design_lowpass_filter(1, 2, 1, 16) is None
    with pytest.raises(ValueError, match="numtaps"):
        design_lowpass_filter(0, 2, 1, 16)


def _asymmetric(taps):
    # Real filters are symmetric; a skew checks that filters are not flipped wrongly.
    return None if taps is None else taps.double() + torch.linspace(0, 0.05, taps.numel()).reshape(taps.shape)


@pytest.mark.parametrize(
    ("up", "down", "up_taps", "down_taps", "padding", "radial"),
    [
        (2, 2, 12, 12, (9, 8, 9, 8), False),  # the usual StyleGAN3 layer
        (4, 2, 24, 12, (-6, -9, -6, -9), False),  # up 4, cropping
        (2, 2, 12, 12, (-11, -12, -11, -12), False),  # crop of the margin
        (2, 2, 12, 12, (3, 1, 2, 0), True),  # radial downsampling filter (config R)
        (2, 1, 12, 1, (5, 6, 7, 4), False),  # upsampling only
        (1, 2, 1, 12, (0, 1, 2, 3), False),  # downsampling only
        (1, 1, 1, 1, (0, 0, 0, 0), False),  # the ToRGB case: bias + clamp
    ],
)
def test_filtered_lrelu_equals_the_naive_sequence(up, down, up_taps, down_taps, padding, radial):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 30, 26, dtype=torch.float64) * 3
    bias = torch.randn(5, dtype=torch.float64)
    fs = 32 * up
    fu = _asymmetric(design_lowpass_filter(up_taps, 6, 8, fs))
    fd = _asymmetric(design_lowpass_filter(down_taps, 6, 8, fs, radial=radial))
    kwargs = dict(fu=fu, fd=fd, b=bias, up=up, down=down, padding=padding, gain=math.sqrt(2), slope=0.2, clamp=4.0)
    fast = filtered_lrelu(x, **kwargs)
    naive = filtered_lrelu_reference(x, **kwargs)
    assert fast.shape == naive.shape
    torch.testing.assert_close(fast, naive, rtol=0, atol=1e-12)


def test_filtered_lrelu_gradients_equal_the_naive_sequence():
    torch.manual_seed(1)
    fu = design_lowpass_filter(12, 4, 6, 32)
    fd = design_lowpass_filter(12, 4, 6, 32, radial=True)
    grads = []
    for fn in (filtered_lrelu, filtered_lrelu_reference):
        x = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        x.requires_grad_(True)
        b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        out = fn(x, fu.double(), fd.double(), b, up=2, down=2, padding=(9, 8, 9, 8), clamp=1.0)
        (out * torch.arange(out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        grads.append((x.grad, b.grad))
    torch.testing.assert_close(grads[0], grads[1])


def test_filtered_lrelu_leaves_its_input_alone():
    x = torch.randn(1, 2, 8, 8)
    before = x.clone()
    with torch.no_grad():
        filtered_lrelu(x, clamp=0.1)
    assert torch.equal(x, before)


@pytest.mark.parametrize(("up", "down", "padding"), [(2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (3, 2, (0, 4, 1, 2))])
def test_upfirdn2d_with_a_full_2d_filter(up, down, padding):
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double() + torch.rand(4, 4, dtype=torch.float64) * 0.1
    fast = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=up**2)
    naive = filtered_lrelu_reference(x, f, None, None, up, down, padding, gain=1, slope=1)
    torch.testing.assert_close(fast, naive)


def test_setup_filter_matches_the_stylegan2_layout():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.sum().item() == pytest.approx(1.0)
    assert setup_filter(torch.ones(8)).shape == (8,)


@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2)])
@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (3, 2, 1, 4), (-1, 2, 2, -1)])
def test_upfirdn2d_gradient_is_the_adjoint(up, down, separable, padding):
    """The hand-written backward (the adjoint upfirdn2d) equals autograd through the forward ops."""
    from aras400k.models.stylegan3.filters import _upfirdn2d

    g = torch.Generator().manual_seed(up * 10 + down)
    f = torch.randn(5, generator=g, dtype=torch.float64)
    if not separable:
        f = torch.randn(5, 4, generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.5)
    expected = _upfirdn2d(x, f, up, down, padding, 1.5)  # differentiated op by op by autograd
    torch.testing.assert_close(y, expected)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(y, x, dy)
    (grad_expected,) = torch.autograd.grad(expected, x, dy)
    torch.testing.assert_close(grad, grad_expected)


def test_upfirdn2d_second_order_gradients():
    """R1 and path-length regularisation differentiate gradients: gradgradcheck in float64."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d(t, f, up=2, down=2, padding=(2, 1, 2, 1)).square(), (x,))
    learned = f.clone().requires_grad_(True)  # a filter with gradients takes the op-by-op path
    upfirdn2d(x, learned, padding=(1, 2, 1, 2)).sum().backward()
    assert learned.grad is not None


@pytest.mark.parametrize("up", [2, 3, 4])
@pytest.mark.parametrize(
    "padding",
    [
        (0, 0, 0, 0),
        (9, 8, 9, 8),  # the StyleGAN3 layer: exactly the transposed convolution's full output
        (14, 13, 3, 1),  # zero padding beyond the full convolution
        (-3, -2, 2, -4),  # crops
        (5, -1, -2, 7),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_upfirdn2d_separable_upsampling_equals_the_naive_sequence(up, padding, channels_last):
    """Upsampling by a transposed convolution, cropped and padded, equals zero insertion + filter."""
    g = torch.Generator().manual_seed(up)
    f = torch.randn(4 * up - 1, generator=g, dtype=torch.float64)  # odd, asymmetric
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    fast = upfirdn2d(x, f, up=up, down=2, padding=padding, gain=up**2)
    naive = filtered_lrelu_reference(x, f, None, None, up, 2, padding, gain=1, slope=1)
    assert fast.shape == naive.shape
    torch.testing.assert_close(fast, naive, rtol=0, atol=1e-12)
    dy = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad(out, x, dy)[0] for out in (fast, naive)]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("clamp", [None, 50.0, 1.0])  # never, rarely (not here) and often exceeded
@pytest.mark.parametrize("radial", [False, True])
def test_filtered_lrelu_float32_gradients_and_second_order_equal_the_naive_sequence(clamp, radial):
    """The in-place activation under autograd, the gain folded into the filter and the skipped clamp."""
    fu = design_lowpass_filter(12, 4, 6, 32)
    fd = design_lowpass_filter(12, 4, 6, 32, radial=radial)
    x0 = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(3)) * 2
    bias = torch.randn(4, generator=torch.Generator().manual_seed(4))
    results = []
    for fn in (filtered_lrelu, filtered_lrelu_reference):
        x, b = x0.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        out = fn(x, fu, fd, b, up=2, down=2, padding=(9, 8, 9, 8), clamp=clamp)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (grad_x,) = torch.autograd.grad((out.square() * weights).sum(), x, create_graph=True)
        grad_x.sum().backward()  # second order (as R1 differentiates the image gradient)
        assert b.grad is not None and b.grad.abs().max() > 0
        assert torch.equal(x.detach(), x0)  # the input is never overwritten
        results.append([out.detach(), grad_x.detach(), b.grad])
    for ours, naive in zip(*results, strict=True):
        torch.testing.assert_close(ours, naive, rtol=1e-4, atol=1e-4)


def test_exceeds_clamp_reads_any_layout():
    from aras400k.models.stylegan3.filters import exceeds_clamp

    x = torch.zeros(2, 3, 4, 5)
    x[1, 2, 3, 4] = -2.5
    for t in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, ::2]):
        assert exceeds_clamp(t, 2.0) == (t.min().item() < -2.0)
        assert not exceeds_clamp(t, 2.5)
    assert exceeds_clamp(torch.tensor([float("nan")]), 1.0)  # clamping NaN keeps NaN: no harm
    assert not exceeds_clamp(torch.empty(0), 1.0)
