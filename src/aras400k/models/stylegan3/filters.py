"""Low-pass filter design, resampling and the filtered leaky ReLU, in pure PyTorch.

StyleGAN3 treats every feature map as the samples of a band-limited continuous signal
(Karras et al. 2021, Sec. 2). Changing the sampling rate therefore needs proper
interpolation and decimation filters, and a pointwise nonlinearity, which creates
frequencies beyond the band limit, must run at a temporarily higher sampling rate and
be low-pass filtered before it is sampled down again (Sec. 2.1, "filtered
nonlinearity"). This module holds

* :func:`design_lowpass_filter`: Kaiser-windowed sinc filters (separable) and the
  radially symmetric jinc-based filters of the rotation-equivariant config (Sec. 3.2);
* :func:`upfirdn2d`: upsample by zero insertion, pad, FIR-filter and downsample, as
  ``scipy.signal.upfirdn`` does in 1-D;
* :func:`filtered_lrelu`: bias, upsampling, leaky ReLU with gain and clamp,
  downsampling; :func:`filtered_lrelu_reference` computes it naively, the baseline of
  the tests and the benchmark.

Filters follow the NVlabs conventions so stored filters load as they are: a 1-D tensor
is a separable filter applied along both axes, a 2-D tensor a full filter, ``None``
the identity; filters are applied as true convolutions (flipped), and ``padding`` is
``(x_before, x_after, y_before, y_after)`` with respect to the upsampled image,
negative values cropping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "design_lowpass_filter",
    "filtered_lrelu",
    "filtered_lrelu_reference",
    "parse_padding",
    "setup_filter",
    "upfirdn2d",
]

Padding = int | Sequence[int]


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> Tensor | None:
    """Design a windowed low-pass filter.

    The separable filter is a Kaiser-windowed sinc (``scipy.signal.firwin``, ``beta``
    from the transition band ``width`` by Kaiser's formula). The radial filter of
    StyleGAN3-R's downsampling (Sec. 3.2) is the 2-D analogue: the ideal disc low-pass,
    a jinc ``J1(2 pi f_c r) / (pi r)``, times a separable Kaiser window of the same
    ``beta``, normalised to unit DC gain.

    Args:
        numtaps: Filter length; 1 means no filtering.
        cutoff: Cutoff frequency ``f_c`` (same unit as ``fs``).
        width: Width of the transition band, twice the half-width ``f_h``.
        fs: Sampling rate the filter runs at.
        radial: Return a radially symmetric 2-D filter instead of a separable one.

    Returns:
        A float32 tensor of shape ``[numtaps]`` (separable) or ``[numtaps, numtaps]``
        (radial) whose taps sum to one, or ``None`` for ``numtaps == 1``.

    Raises:
        ValueError: If ``numtaps`` is smaller than one.
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)

    # Sample positions in units of the continuous signal, centred on the filter.
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        jinc = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    jinc[r == 0] = cutoff  # the limit of J1(2 pi f r) / (pi r) as r -> 0 (odd numtaps)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps = jinc * np.outer(window, window)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


def setup_filter(taps: Sequence[float] | Tensor, separable: bool | None = None) -> Tensor:
    """Turn a list of 1-D taps into a normalised FIR filter tensor, as StyleGAN2 stores ``resample_filter``.

    Args:
        taps: 1-D (or already 2-D) filter taps.
        separable: Force the separable (``True``) or full (``False``) layout; ``None``
            makes filters of fewer than 8 taps (the ``[1, 3, 3, 1]`` blur) a 2-D outer product.

    Returns:
        A float32 filter normalised to unit sum.

    Raises:
        ValueError: If the taps are not 1-D or 2-D.
    """
    f = torch.atleast_1d(torch.as_tensor(taps, dtype=torch.float32))
    if f.ndim not in (1, 2):
        raise ValueError(f"filter taps must be 1-D or 2-D, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    return f / f.sum()


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Normalise a padding spec (one int, ``(x, y)`` or ``(x0, x1, y0, y1)``) to ``(x0, x1, y0, y1)``.

    Raises:
        ValueError: If ``padding`` has another length.
    """
    if isinstance(padding, int | np.integer):
        return (int(padding),) * 4
    values = [int(p) for p in padding]
    if len(values) == 2:
        return values[0], values[0], values[1], values[1]
    if len(values) == 4:
        return values[0], values[1], values[2], values[3]
    raise ValueError(f"padding must be an int or have 2 or 4 values, got {padding!r}")


def upfirdn2d(
    x: Tensor,
    f: Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = 1.0,
) -> Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images, channel by channel.

    The result equals: insert ``up - 1`` zeros after every pixel, pad (or crop) by
    ``padding``, convolve with ``f`` keeping only outputs whose footprint lies inside
    the padded image, keep every ``down``-th pixel, multiply by ``gain``. No zero is
    multiplied (transposed convolutions upsample, strided ones downsample), and a
    separable filter runs along each axis in turn.

    Args:
        x: Images ``[N, C, H, W]``.
        f: Separable ``[K]`` or full ``[Kh, Kw]`` filter, or ``None`` (identity).
        up: Integer upsampling factor.
        down: Integer downsampling factor.
        padding: Padding of the upsampled image, see :func:`parse_padding`.
        gain: Overall gain (use ``up**2`` to keep the signal level when upsampling).

    Returns:
        The resampled images ``[N, C, H', W']``.

    Raises:
        ValueError: If the factors are not positive or the filter is not 1-D/2-D.
    """
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    pads = parse_padding(padding)
    if f is None:
        f = x.new_ones([1])
    f = f.to(dtype=x.dtype, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    if f.requires_grad:  # a learned filter: let autograd differentiate the computation itself
        return _upfirdn2d(x, f, up, down, pads, gain)
    return _UpFirDn2d.apply(x, f, up, down, pads, gain)


class _UpFirDn2d(torch.autograd.Function):
    """:func:`upfirdn2d` whose gradient is its adjoint, itself an ``upfirdn2d``.

    The operation is linear in ``x``: upsample by zero insertion, pad, convolve, keep
    every ``down``-th sample. Its adjoint reverses each step: zero-insert by
    ``down``, convolve with the flipped filter, crop, keep every ``up``-th sample.
    Along one axis, with ``L`` inputs, ``K`` taps, ``L_out`` outputs and padding
    ``(p0, p1)``, that is ``upfirdn`` with ``up`` and ``down`` swapped and padding
    ``(K - 1 - p0, L * up + p0 - L_out * down)``: one call, several times faster on CPU
    than autograd's walk back through the forward, and differentiable again (R1, path
    length).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        f: Tensor,
        up: int,
        down: int,
        pads: tuple[int, int, int, int],
        gain: float,
    ) -> Tensor:
        y = _upfirdn2d(x, f, up, down, pads, gain)
        ctx.save_for_backward(f)
        ctx.up, ctx.down, ctx.gain = up, down, gain  # type: ignore[attr-defined]
        px0, _, py0, _ = pads
        ctx.adjoint_pads = (  # type: ignore[attr-defined]
            f.shape[-1] - 1 - px0,
            x.shape[3] * up + px0 - y.shape[3] * down,
            f.shape[0] - 1 - py0,
            x.shape[2] * up + py0 - y.shape[2] * down,
        )
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (f,) = ctx.saved_tensors  # type: ignore[attr-defined]
        dx = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            flipped = f.flip(list(range(f.ndim)))
            up, down, gain = ctx.down, ctx.up, ctx.gain  # type: ignore[attr-defined]
            dx = _UpFirDn2d.apply(dy, flipped, up, down, ctx.adjoint_pads, gain)  # type: ignore[attr-defined]
        return dx, None, None, None, None, None


def _upfirdn2d(x: Tensor, f: Tensor, up: int, down: int, pads: tuple[int, int, int, int], gain: float) -> Tensor:
    """The computation of :func:`upfirdn2d` (checked arguments, filter on ``x``'s device)."""
    px0, px1, py0, py1 = pads
    if f.ndim == 1:
        # Depthwise convolutions along y are slower than along x: run them on the
        # smaller tensor (first when upsampling, last when downsampling).
        axes = [(px0, px1, 3), (py0, py1, 2)]
        for p0, p1, dim in reversed(axes) if up > 1 else axes:
            x = _upfirdn_axis(x, f, up, down, p0, p1, math.sqrt(gain), dim)
        return x
    return _upfirdn_full(x, f * gain, up, down, (px0, px1, py0, py1))


def _depthwise(
    x: Tensor, kernel: Tensor, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0
) -> Tensor:
    """Correlate every channel of ``x`` with the same 2-D ``kernel`` (on CPU ~10x faster than channels in the batch)."""
    c = x.shape[1]
    weight = kernel[None, None].expand(c, 1, *kernel.shape).contiguous()
    return F.conv2d(x, weight, stride=stride, padding=padding, groups=c)


def _upfirdn_axis(x: Tensor, f: Tensor, up: int, down: int, p0: int, p1: int, gain: float, dim: int) -> Tensor:
    """:func:`upfirdn2d` with a 1-D filter along one spatial axis (``dim`` 2 or 3)."""
    k = f.shape[0]
    if k == 1 and up == 1 and down == 1 and p0 == 0 and p1 == 0 and gain == 1.0:
        return x

    def along(taps: Tensor) -> Tensor:  # 1-D taps -> [1, T] (along x) or [T, 1] (along y)
        return taps[None, :] if dim == 3 else taps[:, None]

    def pad_axis(t: Tensor, before: int, after: int) -> Tensor:  # negative values crop
        return F.pad(t, [before, after] if dim == 3 else [0, 0, before, after])

    f = f * gain
    if up == 1:
        stride = (1, down) if dim == 3 else (down, 1)
        if p0 or p1:
            x = pad_axis(x, p0, p1)
        return _depthwise(x, along(f.flip(0)), stride=stride)

    # Upsampling: a depthwise transposed convolution with stride ``up`` is the full
    # convolution of the zero-stuffed signal (length (L - 1) * up + k) without the zeros;
    # output i is its sample i + k - 1 - p0. On CPU several times faster than polyphase
    # filters interleaved by strided copies.
    length = x.shape[dim]
    full = (length - 1) * up + k
    out_len = length * up + p0 + p1 - k + 1
    start = k - 1 - p0
    crop = max(0, min(start, full - start - out_len))  # cropped by the convolution itself
    c = x.shape[1]
    weight = along(f)[None, None].expand(c, 1, *along(f).shape).contiguous()
    stride = (1, up) if dim == 3 else (up, 1)
    y = F.conv_transpose2d(x, weight, stride=stride, padding=(0, crop) if dim == 3 else (crop, 0), groups=c)
    before = crop - start
    after = start - crop + out_len - y.shape[dim]
    if before or after:
        y = pad_axis(y, before, after)
    if down > 1:
        y = y[:, :, :, ::down] if dim == 3 else y[:, :, ::down, :]
    return y


def _upfirdn_full(x: Tensor, f: Tensor, up: int, down: int, pads: tuple[int, int, int, int]) -> Tensor:
    """:func:`upfirdn2d` with a non-separable 2-D filter (already scaled by the gain)."""
    px0, px1, py0, py1 = pads
    kh, kw = f.shape
    _, c, h, w = x.shape
    if up == 1:
        if px0 == px1 >= 0 and py0 == py1 >= 0:  # the convolution pads: no padded copy of x
            return _depthwise(x, f.flip(0, 1), stride=down, padding=(py0, px0))
        return _depthwise(F.pad(x, [px0, px1, py0, py1]), f.flip(0, 1), stride=down)
    # As in _upfirdn_axis: a transposed convolution, cropped/padded to the window.
    weight = f[None, None].expand(c, 1, kh, kw).contiguous()
    y = F.conv_transpose2d(x, weight, stride=up, groups=c)
    out_h, out_w = h * up + py0 + py1 - kh + 1, w * up + px0 + px1 - kw + 1
    sx, sy = kw - 1 - px0, kh - 1 - py0
    y = F.pad(y, [-sx, sx + out_w - y.shape[3], -sy, sy + out_h - y.shape[2]])
    return y[:, :, ::down, ::down] if down > 1 else y


def filtered_lrelu(
    x: Tensor,
    fu: Tensor | None = None,
    fd: Tensor | None = None,
    b: Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> Tensor:
    """Filtered leaky ReLU: the alias-suppressing nonlinearity of StyleGAN3 (Sec. 2.1).

    For each channel: add the bias ``b``; upsample by ``up`` with ``fu`` (as
    :func:`upfirdn2d` with ``padding``, at gain ``up**2``); apply ``leaky_relu(., slope) *
    gain`` and clamp; low-pass filter with ``fd`` and keep every ``down``-th sample.

    Args:
        x: Input ``[N, C, H, W]``.
        fu: Upsampling filter (``[K]``, ``[K, K]`` or ``None``).
        fd: Downsampling filter (``[K]``, ``[K, K]`` or ``None``).
        b: Per-channel bias ``[C]`` added before upsampling, or ``None``.
        up: Upsampling factor.
        down: Downsampling factor.
        padding: Padding of the upsampled image, see :func:`parse_padding`.
        gain: Scale applied after the leaky ReLU.
        slope: Negative slope of the leaky ReLU (1 makes it linear).
        clamp: Clamp the activations to ``[-clamp, clamp]``; ``None`` disables.

    Returns:
        ``[N, C, H', W']`` with ``W' = (W * up + px0 + px1 - (Ku - 1) - (Kd - 1) +
        down - 1) // down`` and likewise ``H'``.
    """
    y = x if b is None else x + b.to(x.dtype).reshape(1, -1, 1, 1)
    # Depthwise 1-D convolutions run several times faster on channels-last tensors; a
    # radial (2-D) filter does not gain, and converting back costs more, so it stays NCHW.
    if all(f is None or f.ndim == 1 for f in (fu, fd)):
        y = y.contiguous(memory_format=torch.channels_last)
    # A positive gain commutes with the leaky ReLU (lrelu(g z) = g lrelu(z)): it rides on
    # the upsampling filter's taps, saving a pass over the large upsampled tensor.
    fold = gain > 0
    y = upfirdn2d(y, fu, up=up, padding=padding, gain=up**2 * gain if fold else up**2)
    # In place on our own intermediate (upfirdn2d's backward does not need it); never on
    # ``x`` nor on a view (autograd forbids in-place changes of a custom Function's views).
    inplace = (
        not y._is_view()
        and y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        and not (y.is_leaf and y.requires_grad)
    )
    y = lrelu_gain_clamp(y, slope, 1.0 if fold else gain, clamp, inplace)
    return upfirdn2d(y, fd, down=down).contiguous()


def lrelu_gain_clamp(x: Tensor, slope: float, gain: float, clamp: float | None, inplace: bool) -> Tensor:
    """``clamp(leaky_relu(x, slope) * gain, -clamp, clamp)``, in place if ``inplace`` and autograd allow.

    The clamp runs only if a value exceeds it (:func:`exceeds_clamp`, one ``aminmax``
    pass): otherwise it is the identity, gradient included, and its passes are saved;
    under ``torch.compile`` it always runs (no data-dependent branch). In place, the
    leaky ReLU keeps only its output for the backward, so under autograd the gain and
    the clamp then run out of place.
    """
    if slope != 1:
        x = F.leaky_relu_(x, slope) if inplace else F.leaky_relu(x, slope)
    recorded = torch.is_grad_enabled() and x.requires_grad
    if gain != 1:
        x = x.mul_(gain) if inplace and not recorded else x * gain
    if clamp is not None and (torch.compiler.is_compiling() or exceeds_clamp(x, clamp)):
        x = x.clamp_(-clamp, clamp) if inplace and not recorded else x.clamp(-clamp, clamp)
    return x


def exceeds_clamp(x: Tensor, clamp: float) -> bool:
    """Whether any value of ``x`` lies outside ``[-clamp, clamp]`` or is NaN (one ``aminmax`` pass).

    ``aminmax`` copies a tensor that is not contiguous in the default layout, so a
    channels-last ``x`` is read through its contiguous ``[N, H, W, C]`` view instead.
    """
    if x.numel() == 0:
        return False
    x = x.detach()
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        x = x.permute(0, 2, 3, 1)
    low, high = torch.aminmax(x)
    return not (low.item() >= -clamp and high.item() <= clamp)


def filtered_lrelu_reference(
    x: Tensor,
    fu: Tensor | None = None,
    fd: Tensor | None = None,
    b: Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> Tensor:
    """Naive, unfused :func:`filtered_lrelu` (same arguments and result), the baseline for tests and benchmarks.

    Upsamples by explicit zero insertion, convolves with the full 2-D filter (the
    outer product of a separable one), applies the activation, convolves with the
    full 2-D downsampling filter at every position and then drops all but every
    ``down``-th output.
    """
    n, c, h, w = x.shape
    px0, px1, py0, py1 = parse_padding(padding)

    def full_2d(f: Tensor | None) -> Tensor:
        if f is None:
            return x.new_ones([1, 1])
        f = f.to(x)
        return torch.outer(f, f) if f.ndim == 1 else f

    def conv_each_channel(t: Tensor, f2d: Tensor) -> Tensor:
        weight = f2d.flip(0, 1)[None, None].repeat(c, 1, 1, 1)
        return F.conv2d(t, weight, groups=c)

    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    stuffed = x.new_zeros([n, c, h * up, w * up])
    stuffed[:, :, ::up, ::up] = x
    stuffed = F.pad(stuffed, [px0, px1, py0, py1])
    y = conv_each_channel(stuffed, full_2d(fu) * up**2)
    y = F.leaky_relu(y, slope) * gain
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    y = conv_each_channel(y, full_2d(fd))
    return y[:, :, ::down, ::down]
