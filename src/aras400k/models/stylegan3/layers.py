"""Building blocks shared by the StyleGAN2/3 generators and the discriminator.

All layers use the *equalised learning rate* of ProGAN/StyleGAN: parameters are stored
with unit-variance initialisation and scaled by ``1 / sqrt(fan_in)`` (times a
learning-rate multiplier) every time they are used, so that Adam's per-parameter
step size acts the same on every layer. The stored tensors therefore match the
official NVlabs checkpoints one to one.

Where a leaky ReLU's gain ``g > 0`` can be folded into the weights and the bias
(``lrelu(g z) = g lrelu(z)``), the layers do so, add the bias inside the product and
activate in place (:func:`activate_`): the result equals the official ``bias_act`` of
the plain product up to float rounding, without temporaries (``docs/stylegan3.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aras400k.models.stylegan3.filters import lrelu_gain_clamp, setup_filter, upfirdn2d

__all__ = ["Conv2dLayer", "FullyConnectedLayer", "activate_", "bias_act", "modulated_conv2d", "pointwise_conv2d"]

Activation = Literal["linear", "lrelu"]

#: Gain that keeps the signal magnitude after a leaky ReLU with slope 0.2 (He et al.).
LRELU_GAIN = math.sqrt(2)


def bias_act(
    x: Tensor,
    b: Tensor | None = None,
    activation: Activation = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
) -> Tensor:
    """Add a per-channel bias, apply the activation, scale and clamp.

    Args:
        x: Activations ``[N, C, ...]``.
        b: Bias ``[C]``, or ``None``.
        activation: ``"linear"`` or ``"lrelu"`` (slope 0.2, default gain ``sqrt(2)``).
        gain: Extra gain on top of the activation's default gain.
        clamp: Clamp the result to ``[-clamp, clamp]``; ``None`` disables.

    Returns:
        The transformed activations.

    Raises:
        ValueError: For an unknown activation.
    """
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = gain * LRELU_GAIN
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r}; choose 'linear' or 'lrelu'")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``, without a dispatch when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


def activate_(x: Tensor, activation: Activation = "linear", clamp: float | None = None) -> Tensor:
    """Activate (leaky ReLU with slope 0.2, no gain) and clamp a fresh tensor, in place where autograd allows.

    See :func:`~aras400k.models.stylegan3.filters.lrelu_gain_clamp`: the leaky ReLU's
    backward needs only its output, which the next layer keeps anyway.

    Args:
        x: A tensor no other operation needs unchanged (a convolution's output).
        activation: ``"linear"`` or ``"lrelu"``.
        clamp: Clamp to ``[-clamp, clamp]``; ``None`` disables.

    Returns:
        The activated tensor.

    Raises:
        ValueError: For an unknown activation.
    """
    if activation not in ("linear", "lrelu"):
        raise ValueError(f"unknown activation {activation!r}; choose 'linear' or 'lrelu'")
    return lrelu_gain_clamp(x, 0.2 if activation == "lrelu" else 1.0, 1.0, clamp, inplace=True)


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate.

    Args:
        in_features: Input features.
        out_features: Output features.
        activation: ``"linear"`` or ``"lrelu"``.
        bias: Learn an additive bias.
        lr_multiplier: Learning-rate multiplier (0.01 in the mapping network).
        weight_init: Standard deviation of the effective initial weights.
        bias_init: Initial value of the effective bias (scalar or one per output).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: Activation = "linear",
        bias: bool = True,
        lr_multiplier: float = 1.0,
        weight_init: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation: Activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            self.bias: nn.Parameter | None = nn.Parameter(torch.from_numpy(init / lr_multiplier))
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to ``x`` ``[N, in_features]`` (gain folded, bias in ``addmm``)."""
        gain = LRELU_GAIN if self.activation == "lrelu" else 1.0
        w = _as_dtype(self.weight, x.dtype) * (self.weight_gain * gain)
        if self.bias is None:
            return activate_(x.matmul(w.t()), self.activation)
        b = _as_dtype(self.bias, x.dtype) * (self.bias_gain * gain)
        return activate_(torch.addmm(b.unsqueeze(0), x, w.t()), self.activation)

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate and optional FIR-filtered (blurred, strided) downsampling.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        bias: Learn an additive bias.
        activation: ``"linear"`` or ``"lrelu"``.
        down: Integer downsampling factor.
        resample_filter: 1-D taps of the downsampling blur (binomial by default).
        conv_clamp: Clamp the output to ``[-conv_clamp, conv_clamp]``; ``None`` disables.
    """

    resample_filter: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Activation = "linear",
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation: Activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        # Channels-last weights (same values and shape): the CPU convolutions of channels-last
        # activations then reorder neither weights nor gradients (docs/stylegan3.md).
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last) if kernel_size > 1 else weight)
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self._blur_weight: tuple[tuple[object, ...], Tensor] | None = None

    def forward(self, x: Tensor, gain: float = 1.0, residual: Tensor | None = None) -> Tensor:
        """Convolve ``x``, then add the bias, activate and clamp (scaled by ``gain``).

        For ``gain > 0`` the gain is folded (see the module docstring); a 1x1 kernel is
        one matrix product (:func:`pointwise_conv2d`).

        Args:
            x: Input ``[N, in_channels, H, W]``.
            gain: Extra gain of the output (and of the clamp).
            residual: A tensor of the output's shape added after the activation and
                clamp (inside the matrix product of a linear, unclamped 1x1 layer).

        Returns:
            ``[N, out_channels, H / down, W / down]``.
        """
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        if gain <= 0:
            x = bias_act(self._convolve(x, self.weight * self.weight_gain), self.bias, self.activation, gain, clamp)
            return x if residual is None else x + residual
        act_gain = gain * (LRELU_GAIN if self.activation == "lrelu" else 1.0)
        w = _as_dtype(self.weight, x.dtype) * (self.weight_gain * act_gain)
        b = None if self.bias is None else _as_dtype(self.bias, x.dtype) * act_gain
        if w.shape[-1] == 1:
            return pointwise_conv2d(self._blur(x), w, b, residual, self.activation, clamp)
        x = activate_(self._convolve(x, w, b), self.activation, clamp)
        return x if residual is None else x + residual

    def _blur(self, x: Tensor) -> Tensor:
        """Low-pass ``x`` ahead of the stride-``down`` convolution (identity for ``down == 1``).

        Output pixel ``i`` of the strided convolution sees the input around ``down * i +
        (down - 1) / 2``; a 1x1 convolution needs only every ``down``-th blurred pixel, so
        the blur itself is strided then. A 2-D filter with even padding (the ``[1, 3, 3,
        1]`` blur) is one self-padding depthwise ``conv2d``, whose autograd backward is
        about twice as fast on CPU as the adjoint ``upfirdn2d``, which pads and crops.
        """
        if self.down == 1:
            return x
        f = self.resample_filter
        fw = f.shape[-1]
        p0 = self.padding + (fw - self.down + 1) // 2
        p1 = self.padding + (fw - self.down) // 2
        stride = self.down if self.weight.shape[-1] == 1 else 1
        if f.ndim == 2 and p0 == p1 and not f.requires_grad:
            return F.conv2d(x, self._depthwise_blur(x), stride=stride, padding=p0, groups=x.shape[1])
        return upfirdn2d(x, f, down=stride, padding=(p0, p1, p0, p1))

    def _depthwise_blur(self, x: Tensor) -> Tensor:
        """The flipped ``resample_filter`` as depthwise ``conv2d`` weights for ``x``, cached.

        Rebuilt when the filter (storage or version), dtype, device or channel count
        changes; under ``torch.compile`` built in the graph.
        """
        f, c = self.resample_filter, x.shape[1]
        if torch.compiler.is_compiling():
            return f.to(x.dtype).flip(0, 1)[None, None].expand(c, 1, *f.shape).contiguous()
        key = (f.data_ptr(), f._version, f.device, x.dtype, x.device, c)
        if self._blur_weight is None or self._blur_weight[0] != key:
            weight = f.detach().to(x.device, x.dtype).flip(0, 1)[None, None].expand(c, 1, *f.shape).contiguous()
            self._blur_weight = (key, weight)
        return self._blur_weight[1]

    def _convolve(self, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        """The (blurred, strided) convolution with weights ``w`` and bias ``b``."""
        w = _as_dtype(w, x.dtype)
        x = self._blur(x)
        if w.shape[-1] == 1:
            return pointwise_conv2d(x, w, b)
        if self.down > 1:
            return F.conv2d(x, w, b, stride=self.down)
        return F.conv2d(x, w, b, padding=self.padding)

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"activation={self.activation}, down={self.down}"
        )


def pointwise_conv2d(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    residual: Tensor | None = None,
    activation: Activation = "linear",
    clamp: float | None = None,
) -> Tensor:
    """A 1x1 convolution with bias, activation, clamp and residual, as one batched matrix product.

    ``x`` is read as ``N`` matrices ``[H * W, C]``, a view in either layout (no layout
    copy), multiplied by ``w`` with ``b`` riding on the ``baddbmm``; :func:`activate_`
    acts in place on the fresh product, then ``residual`` is added (inside the
    ``baddbmm`` when linear and unclamped: the discriminator's ``skip``). Equals
    ``bias_act(F.conv2d(x, w), b, activation, clamp=clamp) + residual`` up to float
    rounding. The backward is matrix products, where a CPU convolution backward takes
    the slow im2col path for 1x1 kernels (``docs/stylegan3.md``). Differentiable twice.

    Args:
        x: Input ``[N, C, H, W]``.
        w: Weights ``[O, C, 1, 1]``.
        b: Bias ``[O]``, or ``None``.
        residual: Tensor ``[N, O, H, W]`` added to the result, or ``None``.
        activation: ``"linear"`` or ``"lrelu"``.
        clamp: Clamp (before the residual) to ``[-clamp, clamp]``; ``None`` disables.

    Returns:
        ``[N, O, H, W]``, channels-last: a permuted view of the product (for autograd's
        in-place rules too).

    Raises:
        ValueError: If ``w`` is not a 1x1 kernel over ``x``'s channels, or
            ``residual`` does not have the output's shape.
    """
    n, c, h, width = x.shape
    o = w.shape[0]
    if w.shape[1:] != (c, 1, 1):
        raise ValueError(f"expected 1x1 weights [O, {c}, 1, 1] for {c} input channels, got {tuple(w.shape)}")
    if residual is not None and residual.shape != (n, o, h, width):
        raise ValueError(f"residual must have the output's shape {(n, o, h, width)}, got {tuple(residual.shape)}")
    if x.is_contiguous():
        rows = x.view(n, c, h * width).transpose(1, 2)
    else:  # channels-last (a view), or any other layout (copied)
        rows = x.permute(0, 2, 3, 1).reshape(n, h * width, c)
    weight = w.reshape(o, c).t().expand(n, c, o)
    fused = residual is not None and activation == "linear" and clamp is None
    if fused:
        assert residual is not None
        acc = residual.permute(0, 2, 3, 1).reshape(n, h * width, o)
        out = torch.baddbmm(acc if b is None else acc + b, rows, weight)
    else:
        out = torch.bmm(rows, weight) if b is None else torch.baddbmm(b.reshape(1, 1, o), rows, weight)
        out = activate_(out, activation, clamp)  # the product is fresh: in place is safe
    out = out.view(n, h, width, o).permute(0, 3, 1, 2)
    return out if residual is None or fused else out + residual


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    padding: int = 0,
    up: int = 1,
    resample_filter: Tensor | None = None,
    input_gain: Tensor | None = None,
    fused: bool = True,
) -> Tensor:
    """Modulated convolution of StyleGAN2 (Karras et al. 2020, Sec. 2.2), used by both generators.

    Each sample's weights are scaled per input channel by its style, ``w'_ijk = s_i
    w_ijk``, and with ``demodulate`` renormalised per output channel, ``w''_ijk = w'_ijk
    / sqrt(sum_ik w'_ijk^2 + eps)`` (StyleGAN2, Eq. 1 and 3).

    Args:
        x: Input ``[N, I, H, W]``.
        weight: Shared weights ``[O, I, k, k]`` (already scaled as wanted).
        styles: Per-sample styles ``[N, I]``.
        demodulate: Apply weight demodulation.
        padding: Zero padding of the convolution (of the upsampled image when ``up > 1``).
        up: Upsampling factor: a stride-``up`` transposed convolution, then the blur.
        resample_filter: Low-pass filter used when ``up > 1``.
        input_gain: Factor on the input channels (scalar, ``[I]`` or ``[N, I]``) after
            demodulation; StyleGAN3 passes ``1 / sqrt(magnitude EMA)``.
        fused: One grouped convolution with per-sample weights (``True``) or a shared
            one between two per-channel scalings (faster for training, same result).

    Returns:
        Output ``[N, O, H', W']``.
    """
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if demodulate:
        # Pre-normalise weights and styles: the demodulation below cancels their
        # scale, and this keeps reduced-precision arithmetic in range.
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(1, keepdim=True).rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # [N, O]
    if input_gain is not None:
        input_gain = input_gain.expand(n, in_channels)
    in_scale = styles if input_gain is None else styles * input_gain

    if not fused:
        x = x * in_scale.to(x.dtype).reshape(n, -1, 1, 1)
        shared = weight.transpose(0, 1) if up > 1 else weight  # transposed conv: [I, O, k, k]
        x = _conv_resample(x, shared.to(x.dtype), padding, up, resample_filter, groups=1)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return x

    if dcoefs is not None:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.reshape(n, 1, -1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    if up > 1:
        # conv_transpose2d wants [in, out / groups, k, k] weights.
        w = w.transpose(1, 2).reshape(n * in_channels, out_channels, kh, kw)
    else:
        w = w.reshape(n * out_channels, in_channels, kh, kw)
    x = _conv_resample(x, w.to(x.dtype), padding, up, resample_filter, groups=n)
    return x.reshape(n, -1, *x.shape[2:])


def _conv_resample(x: Tensor, w: Tensor, padding: int, up: int, resample_filter: Tensor | None, groups: int) -> Tensor:
    """Convolution, or for ``up > 1`` (``w`` then ``[I, O / groups, k, k]``) a transposed one and a FIR blur.

    With ``up > 1`` the result equals zero-stuffing by ``up``, a true convolution with
    ``w`` and low-pass filtering, aligned as in StyleGAN2.
    """
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if resample_filter is None:
        raise ValueError("upsampling needs a resample_filter")
    k = w.shape[-1]
    fw = resample_filter.shape[-1]
    # Padding of the zero-stuffed image that centres the blurred result.
    p0 = padding + (fw + up - 1) // 2 - (k - 1)
    p1 = padding + (fw - up) // 2 - (k - up)
    pt = max(min(-p0, -p1), 0)  # part of it done by the transposed convolution
    x = F.conv_transpose2d(x, w, stride=up, padding=pt, groups=groups)
    return upfirdn2d(x, resample_filter, padding=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up**2)
