"""The StyleGAN3 synthesis network (Karras et al. 2021, "Alias-Free Generative Adversarial Networks").

The network starts from Fourier features (:class:`SynthesisInput`), then each
:class:`SynthesisLayer` runs a modulated convolution and a *filtered* leaky ReLU whose
filters are designed from the layer's cutoff, stopband and sampling rate, as
scheduled by :func:`layer_schedule` (Sec. 3.1). Config R (Sec. 3.2) uses 1x1
convolutions and radially symmetric downsampling filters.

Module, parameter and buffer names follow the official implementation
(``input.affine``, ``L3_52_512.up_filter``, ``magnitude_ema``, ...) so official weights
load without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from aras400k.models.stylegan3.filters import design_lowpass_filter, filtered_lrelu
from aras400k.models.stylegan3.layers import FullyConnectedLayer, modulated_conv2d

__all__ = ["LayerSchedule", "SynthesisInput", "SynthesisLayer", "SynthesisNetwork", "layer_schedule"]


@dataclass(frozen=True)
class LayerSchedule:
    """Per-layer specification of a StyleGAN3 synthesis network.

    Entry ``i`` describes the output of layer ``L{i}`` (entry ``num_layers``: ToRGB),
    entry 0 also the Fourier-feature input. Frequencies are in cycles per image
    height, so the output image has sampling rate ``img_resolution``.

    Attributes:
        cutoffs: Cutoff frequencies ``f_c``.
        stopbands: Minimum stopband frequencies ``f_t``.
        sampling_rates: Sampling rates ``s``.
        half_widths: Transition band half-widths ``f_h``.
        sizes: Spatial sizes in pixels, the margin included.
        channels: Feature channels.
    """

    cutoffs: np.ndarray
    stopbands: np.ndarray
    sampling_rates: np.ndarray
    half_widths: np.ndarray
    sizes: np.ndarray
    channels: np.ndarray


def layer_schedule(
    img_resolution: int,
    img_channels: int,
    channel_base: int = 32768,
    channel_max: int = 512,
    num_layers: int = 14,
    num_critical: int = 2,
    first_cutoff: float = 2,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
) -> LayerSchedule:
    """Compute the layer specification of Sec. 3.1 ("flexible layer specifications").

    Cutoff ``f_c`` and minimum stopband ``f_t`` grow geometrically from the first
    layer's values to ``f_c[N] = img_resolution / 2`` and ``f_t[N] = f_c[N] *
    last_stopband_rel``, reached ``num_critical`` (critically sampled) layers before the end::

        e_i  = min(i / (N - num_critical), 1)
        f_c[i] = f_c[0] * (f_c[N] / f_c[0]) ** e_i,   f_t[i] likewise.

    The sampling rate is the smallest power of two at least ``2 f_t`` (capped at the
    output resolution), the transition half-width ``f_h = max(f_t, s / 2) - f_c``, each
    map carries a ``margin_size`` border (none in the last two, which are at the output
    size), and the width is ``channel_base / 2 / f_c`` capped at ``channel_max``
    (the ToRGB layer has ``img_channels``).

    Args:
        img_resolution: Output resolution.
        img_channels: Output channels.
        channel_base: Overall channel multiplier.
        channel_max: Maximum channels per layer.
        num_layers: Number of layers, excluding the input and ToRGB.
        num_critical: Number of critically sampled layers at the end.
        first_cutoff: Cutoff of the first layer, ``f_c[0]``.
        first_stopband: Minimum stopband of the first layer, ``f_t[0]``.
        last_stopband_rel: Minimum stopband of the last layer relative to its cutoff.
        margin_size: Extra pixels kept on every side of the intermediate maps.

    Returns:
        The schedule (see :class:`LayerSchedule`).

    Raises:
        ValueError: If ``num_layers`` does not exceed ``num_critical``.
    """
    if num_layers <= num_critical:
        raise ValueError(f"num_layers ({num_layers}) must exceed num_critical ({num_critical})")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return LayerSchedule(cutoffs, stopbands, sampling_rates, half_widths, sizes, channels)


class SynthesisInput(nn.Module):
    """Fourier-feature input with a learned rotation and translation (Sec. 3.1).

    ``channels`` sinusoids with random frequencies inside a disc of radius
    ``bandwidth`` and random phases are evaluated on the sampling grid, then mixed by
    a learned matrix. The affine layer predicts a rotation ``(r_c, r_s)`` and
    translation ``(t_x, t_y)`` of the coordinates from ``w``; the ``transform`` buffer
    (identity by default) is applied on top: the equivariance metrics move the image so.

    Args:
        w_dim: Intermediate latent dimensionality.
        channels: Number of Fourier features.
        size: Output size in pixels (int, or ``[width, height]``).
        sampling_rate: Output sampling rate.
        bandwidth: Maximum frequency of the features.
    """

    transform: Tensor
    freqs: Tensor
    phases: Tensor

    def __init__(
        self, w_dim: int, channels: int, size: int | tuple[int, int], sampling_rate: float, bandwidth: float
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5

        self.weight = nn.Parameter(torch.randn([channels, channels]))
        # Starts at the identity transform: r_c = 1, r_s = t_x = t_y = 0.
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        # Inverse transform of the output image: output(p) = features(transform @ p).
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: Tensor) -> Tensor:
        """Evaluate the features for the latents ``w`` ``[N, w_dim]`` -> ``[N, C, H, W]``."""
        n = w.shape[0]
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # unit-length rotation (r_c, r_s)
        eye = torch.eye(3, device=w.device, dtype=w.dtype).expand(n, 3, 3)
        rotation = eye.clone()
        rotation[:, 0, 0], rotation[:, 0, 1] = t[:, 0], -t[:, 1]
        rotation[:, 1, 0], rotation[:, 1, 1] = t[:, 1], t[:, 0]
        translation = eye.clone()
        translation[:, 0, 2], translation[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotation @ translation @ self.transform.to(w.dtype).unsqueeze(0)

        # sin(2 pi (f . (A p + b) + phi)) = sin(2 pi ((A^T f) . p + f . b + phi)).
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [N, C, 2]
        # A user transform may push frequencies past the band limit: fade them out
        # linearly between the bandwidth and the Nyquist frequency.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        # Pixel centres in continuous coordinates, the image centred on the origin.
        width, height = int(self.size[0]), int(self.size[1])
        xs = (torch.arange(width, device=w.device, dtype=w.dtype) + 0.5 - width / 2) / self.sampling_rate
        ys = (torch.arange(height, device=w.device, dtype=w.dtype) + 0.5 - height / 2) / self.sampling_rate
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)

        x = torch.einsum("hwk,nck->nhwc", grid, freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()  # learned mixing
        return x.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


class SynthesisLayer(nn.Module):
    """One StyleGAN3 layer: modulated convolution + filtered leaky ReLU (Sec. 2.1, 3.1).

    The input is normalised by the running RMS of its magnitude (``magnitude_ema``,
    updated with ``update_emas=True``), convolved with per-sample modulated and
    demodulated weights, then passed through :func:`filtered_lrelu`: upsampled to
    ``lrelu_upsampling`` times the larger of the input and output rates with a
    Kaiser low-pass at the input cutoff, biased, activated (gain ``sqrt(2)``, clamp),
    and low-pass filtered at the output cutoff while sampled down to the output rate.
    Non-critically sampled layers of config R use a radial downsampling filter. The
    ToRGB layer (``is_torgb``) is a plain modulated 1x1 convolution without
    demodulation or nonlinearity.

    ``antialias=False`` is the aliasing ablation: nearest-neighbour upsampling and
    plain decimation instead of the designed filters, everything else unchanged.

    The ``in_*`` / ``out_*`` arguments are the channels, size in pixels (int or
    ``[width, height]``), sampling rate ``s``, cutoff ``f_c`` and transition half-width
    ``f_h`` of the input and of the output.

    Args:
        w_dim: Intermediate latent dimensionality.
        is_torgb: Whether this is the final ToRGB layer.
        is_critically_sampled: Whether the output is critically sampled (``f_c = s / 2``).
        use_fp16: Ignored (official compatibility): computes in the input's dtype.
        conv_kernel: Convolution kernel size (1 for config R); ToRGB uses 1.
        filter_size: Filter taps per lower-rate sample when resampling.
        lrelu_upsampling: Oversampling of the nonlinearity.
        use_radial_filters: Radially symmetric downsampling filters (config R).
        conv_clamp: Clamp activations to ``[-conv_clamp, conv_clamp]``; ``None`` disables.
        magnitude_ema_beta: Decay of the input magnitude EMA.
        antialias: Use the designed low-pass filters (``False``: the ablation).
    """

    magnitude_ema: Tensor
    up_filter: Tensor | None
    down_filter: Tensor | None

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        use_fp16: bool,
        in_channels: int,
        out_channels: int,
        in_size: int | tuple[int, int],
        out_size: int | tuple[int, int],
        in_sampling_rate: float,
        out_sampling_rate: float,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.antialias = antialias

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = _integer_ratio(self.tmp_sampling_rate, in_sampling_rate, "upsampling")
        self.down_factor = _integer_ratio(self.tmp_sampling_rate, out_sampling_rate, "downsampling")
        self.down_radial = use_radial_filters and not is_critically_sampled
        if antialias:
            self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
            self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
            up_filter = design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate)
            down_filter = design_lowpass_filter(
                self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial
            )
        else:
            # Ablation: a box of `up` taps is nearest-neighbour upsampling, no filter
            # before decimation is plain striding.
            self.up_taps = self.up_factor
            self.down_taps = 1
            up_filter = torch.full([self.up_factor], 1 / self.up_factor) if self.up_factor > 1 else None
            down_filter = None
        self.register_buffer("up_filter", up_filter)
        self.register_buffer("down_filter", down_filter)

        # Padding of the upsampled signal that leaves exactly the output samples, split so
        # that samples sit at pixel centres (Appendix C.3, symmetric sample positions).
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random", update_emas: bool = False) -> Tensor:
        """Map ``x`` ``[N, in_channels, H, W]`` with latents ``w`` to ``[N, out_channels, H', W']``.

        ``noise_mode`` is unused (no noise inputs in StyleGAN3); ``update_emas`` updates
        the input magnitude EMA (training only).
        """
        del noise_mode
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        # A "full" convolution (padding k - 1); the filter padding crops it back.
        pad = self.conv_kernel - 1
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb, padding=pad, input_gain=input_gain)
        return filtered_lrelu(
            x,
            fu=self.up_filter,
            fd=self.down_filter,
            b=self.bias,
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=1 if self.is_torgb else math.sqrt(2),
            slope=1 if self.is_torgb else 0.2,
            clamp=self.conv_clamp,
        )

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return (
            f"is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, "
            f"in_sampling_rate={self.in_sampling_rate:g}, out_sampling_rate={self.out_sampling_rate:g}, "
            f"in_cutoff={self.in_cutoff:g}, out_cutoff={self.out_cutoff:g}, "
            f"in_half_width={self.in_half_width:g}, out_half_width={self.out_half_width:g}, "
            f"in_size={list(self.in_size)}, out_size={list(self.out_size)}, "
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, antialias={self.antialias}"
        )


def _integer_ratio(rate: float, base: float, what: str) -> int:
    """``rate / base`` as an exact integer, or a ValueError naming the rates."""
    factor = int(np.rint(rate / base))
    if base * factor != rate:
        raise ValueError(f"{what} from sampling rate {base:g} to {rate:g} is not by an integer factor")
    return factor


class SynthesisNetwork(nn.Module):
    """StyleGAN3 synthesis network: Fourier input, ``num_layers`` layers and ToRGB.

    Layers are named ``L{index}_{size}_{channels}`` as in the official code. The
    margin is cropped by the padding of the last layers, and the output is scaled by
    ``output_scale``. ``channel_base``, ``channel_max``, ``num_layers``,
    ``num_critical``, ``first_cutoff``, ``first_stopband``, ``last_stopband_rel`` and
    ``margin_size`` are the arguments of :func:`layer_schedule`; ``filter_size``,
    ``lrelu_upsampling``, ``use_radial_filters``, ``conv_clamp``,
    ``magnitude_ema_beta`` and ``antialias`` those of every :class:`SynthesisLayer`.

    Args:
        w_dim: Intermediate latent dimensionality.
        img_resolution: Output resolution.
        img_channels: Output channels.
        output_scale: Scale of the output image.
        num_fp16_res: Ignored (official compatibility; sets the layers' ``use_fp16``).
        conv_kernel: Convolution kernel size (3; 1 for config R).
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        num_fp16_res: int = 4,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res
        self.schedule = layer_schedule(
            img_resolution,
            img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            num_layers=num_layers,
            num_critical=num_critical,
            first_cutoff=first_cutoff,
            first_stopband=first_stopband,
            last_stopband_rel=last_stopband_rel,
            margin_size=margin_size,
        )
        s = self.schedule
        self.input = SynthesisInput(
            w_dim=w_dim,
            channels=int(s.channels[0]),
            size=int(s.sizes[0]),
            sampling_rate=float(s.sampling_rates[0]),
            bandwidth=float(s.cutoffs[0]),
        )
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim,
                is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(s.sampling_rates[idx] * 2**num_fp16_res > img_resolution),
                in_channels=int(s.channels[prev]),
                out_channels=int(s.channels[idx]),
                in_size=int(s.sizes[prev]),
                out_size=int(s.sizes[idx]),
                in_sampling_rate=int(s.sampling_rates[prev]),
                out_sampling_rate=int(s.sampling_rates[idx]),
                in_cutoff=float(s.cutoffs[prev]),
                out_cutoff=float(s.cutoffs[idx]),
                in_half_width=float(s.half_widths[prev]),
                out_half_width=float(s.half_widths[idx]),
                conv_kernel=conv_kernel,
                filter_size=filter_size,
                lrelu_upsampling=lrelu_upsampling,
                use_radial_filters=use_radial_filters,
                conv_clamp=conv_clamp,
                magnitude_ema_beta=magnitude_ema_beta,
                antialias=antialias,
            )
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws: Tensor, noise_mode: str = "random", update_emas: bool = False) -> Tensor:
        """Synthesise images ``[N, img_channels, img_resolution, img_resolution]`` from ``ws`` ``[N, num_ws, w_dim]``.

        ``noise_mode`` is unused (the interface of the StyleGAN2 network); ``update_emas``
        updates the magnitude EMAs (training only).

        Raises:
            ValueError: If ``ws`` has the wrong shape.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws_list = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws_list[0])
        for name, w in zip(self.layer_names, ws_list[1:], strict=True):
            x = getattr(self, name)(x, w, noise_mode=noise_mode, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        """Summarise the network."""
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}, num_layers={self.num_layers}, "
            f"num_critical={self.num_critical}, margin_size={self.margin_size}"
        )
