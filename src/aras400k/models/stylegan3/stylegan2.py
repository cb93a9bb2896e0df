"""The StyleGAN2 synthesis network (Karras et al. 2020), the StyleGAN3 paper's ``stylegan2`` config.

A learned 4x4 constant is refined by blocks that double the resolution: each block
has an upsampling modulated convolution (``conv0``) and a modulated convolution
(``conv1``), both with per-pixel noise inputs scaled by a learned ``noise_strength``,
and a ToRGB layer whose output is added to the upsampled image of the previous block
(the "skip" architecture, StyleGAN2 Sec. 4.1). Names and arguments follow the official
code (``b4.const``, ``b8.conv0.noise_const``, ``b8.torgb.affine.weight``, ...): only its
default ``architecture="skip"`` is implemented (others raise ``ValueError``),
``conv_clamp`` clamps activations to ``[-conv_clamp, conv_clamp]`` (``None``: off),
and the fp16 arguments are accepted and ignored. The ``noise_mode`` of a forward pass
is ``"random"`` (fresh noise), ``"const"`` (the stored ``noise_const``) or ``"none"``;
``fused_modconv`` picks the fused form of :func:`modulated_conv2d`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from aras400k.models.stylegan3.filters import setup_filter, upfirdn2d
from aras400k.models.stylegan3.layers import Activation, FullyConnectedLayer, bias_act, modulated_conv2d

__all__ = ["StyleGAN2SynthesisLayer", "StyleGAN2SynthesisNetwork", "SynthesisBlock", "ToRGBLayer"]

NoiseMode = Literal["random", "const", "none"]
FusedModconv = bool | Literal["inference_only"]


class StyleGAN2SynthesisLayer(nn.Module):
    """Modulated convolution with noise input and leaky ReLU (StyleGAN2 Fig. 2d).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        w_dim: Intermediate latent dimensionality.
        resolution: Output resolution.
        kernel_size: Convolution kernel size.
        up: Upsampling factor (1 or 2).
        use_noise: Add per-pixel noise scaled by the learned ``noise_strength``.
        activation: ``"lrelu"`` or ``"linear"``.
        resample_filter: 1-D taps of the upsampling blur.
    """

    resample_filter: Tensor
    noise_const: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: Activation = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation: Activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "random", fused_modconv: bool = True, gain: float = 1.0
    ) -> Tensor:
        """Map ``x`` ``[N, in_channels, resolution / up, ...]`` with ``w`` ``[N, w_dim]`` to ``[N, out_channels, ...]``.

        ``gain`` is an extra activation gain.

        Raises:
            ValueError: For an unknown ``noise_mode``.
        """
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"unknown noise_mode {noise_mode!r}; choose 'random', 'const' or 'none'")
        x = modulated_conv2d(
            x,
            self.weight,
            self.affine(w),
            padding=self.padding,
            up=self.up,
            resample_filter=self.resample_filter,
            fused=fused_modconv,
        )
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, gain=gain, clamp=clamp)

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation.

    Args:
        in_channels: Input channels.
        out_channels: Image channels.
        w_dim: Intermediate latent dimensionality.
        kernel_size: Convolution kernel size.
    """

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor, fused_modconv: bool = True) -> Tensor:
        """Map features ``x`` to an image with the style of ``w``."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


class SynthesisBlock(nn.Module):
    """One resolution of the StyleGAN2 generator, skip architecture.

    Args:
        in_channels: Input channels, 0 for the first block (which owns the constant).
        out_channels: Output channels.
        w_dim: Intermediate latent dimensionality.
        resolution: Resolution of this block.
        img_channels: Image channels.
        is_last: Whether this is the last block.
        resample_filter: 1-D taps of the up-sampling blur.
        fused_modconv_default: Default of ``fused_modconv``: ``True``, ``False``, or
            ``"inference_only"`` (in eval mode only, as the official ``stylegan2`` trains).
        use_noise: Noise inputs in the convolutions.

    Raises:
        ValueError: For an architecture other than ``"skip"``.
    """

    resample_filter: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: Literal["skip"] = "skip",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = 256,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        fused_modconv_default: FusedModconv = True,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"only the 'skip' generator architecture is implemented, got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

        layer = functools.partial(
            StyleGAN2SynthesisLayer, w_dim=w_dim, resolution=resolution, use_noise=use_noise, conv_clamp=conv_clamp
        )
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = layer(in_channels, out_channels, up=2, resample_filter=resample_filter)
        self.conv1 = layer(out_channels, out_channels)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise_mode: NoiseMode = "random",
        fused_modconv: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the block on the previous block's features ``x`` and image ``img`` (``None`` for the first block).

        ``ws`` ``[N, num_conv + num_torgb, w_dim]`` are the block's latents; ``fused_modconv``
        overrides ``fused_modconv_default``. Returns the block's features and the
        accumulated image.
        """
        if fused_modconv is None:
            fused = self.fused_modconv_default
            fused_modconv = (not self.training) if fused == "inference_only" else bool(fused)
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            assert x is not None
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)

        if img is not None:
            img = upfirdn2d(img, self.resample_filter, up=2, padding=(2, 1, 2, 1), gain=4)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
        img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        """Summarise the block."""
        return f"resolution={self.resolution}, architecture={self.architecture}"


class StyleGAN2SynthesisNetwork(nn.Module):
    """The StyleGAN2 synthesis network: blocks ``b4 ... b{img_resolution}``.

    ``architecture``, ``resample_filter``, ``conv_clamp``, ``fused_modconv_default``
    and ``use_noise`` are passed to every :class:`SynthesisBlock`.

    Args:
        w_dim: Intermediate latent dimensionality.
        img_resolution: Output resolution (a power of two, at least 4).
        img_channels: Image channels.
        channel_base: Overall channel multiplier: ``channels(res) = min(channel_base
            // res, channel_max)``.
        channel_max: Maximum channels per block.

    Raises:
        ValueError: If ``img_resolution`` is not a power of two >= 4.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        architecture: Literal["skip"] = "skip",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = 256,
        fp16_channels_last: bool = False,
        fused_modconv_default: FusedModconv = True,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        # Each block's ToRGB shares its w with the next block's first convolution,
        # so num_ws counts the convolutions plus the final ToRGB.
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                architecture=architecture,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                fused_modconv_default=fused_modconv_default,
                use_noise=use_noise,
            )
            self.num_ws += block.num_conv + (block.num_torgb if block.is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(
        self, ws: Tensor, noise_mode: NoiseMode = "random", update_emas: bool = False, fused_modconv: bool | None = None
    ) -> Tensor:
        """Synthesise images ``[N, img_channels, img_resolution, img_resolution]``.

        Args:
            ws: Latents ``[N, num_ws, w_dim]``.
            noise_mode: See the module docstring.
            update_emas: Unused (the interface of the StyleGAN3 network).
            fused_modconv: Override the blocks' ``fused_modconv_default``.

        Raises:
            ValueError: If ``ws`` has the wrong shape.
        """
        del update_emas
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        assert img is not None
        return img

    def extra_repr(self) -> str:
        """Summarise the network."""
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}"
        )
