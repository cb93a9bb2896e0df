"""Adaptive discriminator augmentation (ADA) and joint image + mask augmentation.

:class:`AdaptiveAugment` follows "Training Generative Adversarial Networks with Limited
Data" (Karras et al., NeurIPS 2020; StyleGAN2-ADA): every image the discriminator sees,
real or generated, goes through the same differentiable pipeline, and each transform is
applied to a sample with probability ``p`` (times the transform's multiplier, 1 for the
ones the chosen ``pipe`` enables). In pipeline order (paper App. B):

1. *Pixel blitting* (``blit``): x-flip, rotation by a multiple of 90 degrees, integer
   translation by up to 1/8 of the image (reflected borders), as exact pixel moves.
2. *General geometric* (``geom``): isotropic scaling (log2 std 0.2), arbitrary rotation
   (split into a pre- and a post-rotation each with probability
   ``1 - sqrt(1 - p)``, so that "any rotation" happens with probability ``p``),
   anisotropic scaling (log2 std 0.2) and fractional translation (std 1/8 of the image).
   The transforms are composed into one matrix and executed once: reflect-pad, upsample
   2x with the orthogonal ``sym6`` wavelet low-pass filter, resample bilinearly (kornia
   ``warp_affine``), downsample with the same filter — as in the paper, this keeps the
   resampling from leaking aliasing into the augmented images.
3. *Colour* (``color``): brightness (std 0.2), contrast (log2 std 0.5), luma flip,
   hue rotation around the luma axis (up to a full turn) and saturation (log2 std 1),
   composed into one 4x4 affine colour matrix per image. They assume images in
   ``[-1, 1]`` (the StyleGAN/SPADE convention: contrast and luma flip act around 0).

``p`` is adjusted during training toward a target value of ``r_t = E[sign(D(real))]``
(0.6): every ``interval`` (4) iterations, ``p += sign(r_t - target) * batch * interval /
(ada_kimg * 1000)``, so ``p`` can move from 0 to 1 in ``ada_kimg`` (500) thousand images.
The numbers are those of NVlabs' ``training/augment.py``, ``training/training_loop.py``
and ``train.py`` (``--aug=ada --target=0.6 --augpipe=bgc``).

For the mask-conditioned GAN, :class:`JointFlipRot90` applies the same flip and
90-degree rotation to images and masks, moving pixels (exact for masks, any value
range; :class:`aras400k.data.transforms.JointAugmentation` clamps images to ``[0, 1]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import axis_angle_to_rotation_matrix
from kornia.geometry.transform import warp_affine
from torch import nn

from aras400k.errors import check_at_least, check_choice, check_positive, check_within

__all__ = ["AUGMENT_PIPES", "AdaptiveAugment", "AugmentParams", "AugmentPipe", "JointFlipRot90"]

AugmentPipe = Literal["blit", "geom", "color", "bgc"]
#: Pipelines accepted by :class:`AdaptiveAugment` (the official ``--augpipe`` names).
AUGMENT_PIPES: tuple[str, ...] = get_args(AugmentPipe)

_BLIT = ("xflip", "rotate90", "xint")
_GEOM = ("scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_PIPE_OPS: dict[str, tuple[str, ...]] = {"blit": _BLIT, "geom": _GEOM, "color": _COLOR, "bgc": _BLIT + _GEOM + _COLOR}

# Symlet-6 low-pass filter (orthonormal: unit norm, orthogonal to its even shifts, sum
# sqrt(2)), the filter ADA uses for its 2x up/down-sampling around geometric transforms.
_SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)
_TAPS = len(_SYM6)
# Filter offset that centres its support on the output sample (taps t = 0..11 land at
# upsampled offsets t - 5), and the margin in original pixels the filter needs.
_PHASE = 5
_FILTER_PAD = _TAPS // 4
# sym6 is not symmetric: its centre of mass (DC group delay) sits at tap 5.098, so an
# upsampled pixel n holds the signal at original coordinate (n - _DELAY) / 2 (instead of
# the (n - 0.5) / 2 of a symmetric filter). Using it in the warp keeps rotations centred.
_DELAY = sum(t * h for t, h in enumerate(_SYM6)) / sum(_SYM6) - _PHASE

# Luma axis of RGB in homogeneous coordinates.
_LUMA = (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3), 0.0)


@dataclass
class AugmentParams:
    """One random draw of the ADA pipeline for a batch (``None``: transform disabled).

    Attributes:
        xflip: ``(B,)`` bool, mirror left-right.
        rot90: ``(B,)`` long in ``0..3``, counter-clockwise quarter turns.
        shift: ``(B, 2)`` long integer translation ``(dx, dy)`` in pixels.
        geom: ``(B, 3, 3)`` inverse geometric transform (output to input pixel, centred).
        color: ``(B, 4, 4)`` affine colour transform acting on ``(r, g, b, 1)``.
    """

    xflip: torch.Tensor | None = None
    rot90: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    geom: torch.Tensor | None = None
    color: torch.Tensor | None = None

    def repeat(self, groups: int) -> AugmentParams:
        """The draw tiled ``groups`` times (batch ``groups * B``): sample ``i`` of every group gets one transform."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return AugmentParams(**{k: None if v is None else torch.cat([v] * groups) for k, v in values.items()})


# ------------------------------------------------------------ matrix helpers


def _matrix(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """Stack per-sample entries (tensors shaped like ``like``, or floats) into ``(*like.shape, R, C)``."""
    entries = [e if isinstance(e, torch.Tensor) else torch.full_like(like, e) for row in rows for e in row]
    return torch.stack(entries, dim=-1).reshape(*like.shape, len(rows), len(rows[0]))


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    cos, sin = theta.cos(), theta.sin()
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], theta)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """``(B, 4, 4)`` rotation of RGB by ``theta`` around the luma axis (a hue rotation)."""
    axis = torch.tensor(_LUMA[:3], device=theta.device, dtype=theta.dtype)
    rotation = axis_angle_to_rotation_matrix(axis * theta[:, None])  # Rodrigues' formula.
    out = torch.eye(4, device=theta.device, dtype=theta.dtype).repeat(theta.shape[0], 1, 1)
    out[:, :3, :3] = rotation
    return out


# ------------------------------------------------------------ pixel blitting


def _flip(x: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples where ``flag`` is set."""
    return torch.where(flag.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)


def _rot90(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate sample ``i`` by ``k[i]`` quarter turns (square images only)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"90-degree rotations need square images, got {x.shape[-2]}x{x.shape[-1]}")
    out = x
    for turns in (1, 2, 3):
        selected = (k == turns).view(-1, *([1] * (x.ndim - 1)))
        out = torch.where(selected, x.rot90(turns, dims=(-2, -1)), out)
    return out


def _reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Fold indices into ``[0, size)`` by mirroring at the borders (``"reflect"`` padding)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _translate_int(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift sample ``i`` by ``shift[i] = (dx, dy)`` pixels, reflecting at the borders."""
    b, c, h, w = x.shape
    rows = _reflect_index(torch.arange(h, device=x.device)[None] - shift[:, 1:2], h)
    cols = _reflect_index(torch.arange(w, device=x.device)[None] - shift[:, 0:1], w)
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


# ------------------------------------------------- filtered resampling (geom)


def _filter(x: torch.Tensor, gain: float) -> torch.Tensor:
    """``(C, 1, 1, taps)`` depthwise weight of the sym6 filter times ``gain``."""
    taps = torch.tensor(_SYM6, device=x.device, dtype=x.dtype) * gain
    return taps.view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Zero-insertion 2x upsampling and sym6 filtering (DC gain 1), rows then columns.

    ``y[n] = sqrt(2) * sum_k x[k] h[n - 2k + 5]``: a transposed convolution with stride 2.
    """
    weight = _filter(x, math.sqrt(2))
    c = x.shape[1]
    x = F.conv_transpose2d(x, weight, stride=(1, 2), padding=(0, _PHASE), groups=c)
    return F.conv_transpose2d(x, weight.transpose(2, 3), stride=(2, 1), padding=(_PHASE, 0), groups=c)


def _downsample2x(x: torch.Tensor) -> torch.Tensor:
    """sym6 filtering and 2x decimation, the adjoint of :func:`_upsample2x`.

    ``y[k] = sum_n x[n] h[n - 2k + 5] / sqrt(2)``; for the orthonormal filter,
    ``_downsample2x(_upsample2x(x)) == x`` away from the borders.
    """
    weight = _filter(x, 1 / math.sqrt(2))
    c = x.shape[1]
    x = F.pad(x, [_PHASE, _TAPS - 1 - _PHASE, _PHASE, _TAPS - 1 - _PHASE])
    x = F.conv2d(x, weight, stride=(1, 2), groups=c)
    return F.conv2d(x, weight.transpose(2, 3), stride=(2, 1), groups=c)


def _reflect_margins(g_inv: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Padding ``(left, right, top, bottom)`` that covers where the output corners sample from."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = g_inv.new_tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1.0, 1.0, 1.0, 1.0]])
    points = (g_inv @ corners)[:, :2]  # (B, xy, corner)
    low = (-points).amax(dim=(0, 2)) - g_inv.new_tensor([cx, cy])
    high = points.amax(dim=(0, 2)) - g_inv.new_tensor([cx, cy])
    limit = g_inv.new_tensor([width - 1, height - 1])
    # Extra room for the resampling filter; reflect padding must stay below the image size.
    left, top = (low + 2 * _FILTER_PAD).clamp_min(0).minimum(limit).ceil().long().tolist()
    right, bottom = (high + 2 * _FILTER_PAD).clamp_min(0).minimum(limit).ceil().long().tolist()
    return left, right, top, bottom


def _warp(x: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """Apply the inverse transforms ``g_inv`` (centred pixel units) with filtered resampling."""
    _, _, h, w = x.shape
    left, right, top, bottom = _reflect_margins(g_inv, h, w)
    padded = F.pad(x, [left, right, top, bottom], mode="reflect")
    upsampled = _upsample2x(padded)
    q = _FILTER_PAD
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Output pixel n of the upsampled, q-pixel-bordered output sits at the centred
    # coordinate (n - delay) / 2 - q - c; an input coordinate u sits at upsampled pixel
    # 2 (u + c + pad) + delay of the padded input. Composed in float64, as kornia
    # inverts the matrix again.
    out_to_centred = x.new_tensor(
        [[0.5, 0, -_DELAY / 2 - q - cx], [0, 0.5, -_DELAY / 2 - q - cy], [0, 0, 1]], dtype=torch.float64
    )
    centred_to_in = x.new_tensor(
        [[2, 0, 2 * (cx + left) + _DELAY], [0, 2, 2 * (cy + top) + _DELAY], [0, 0, 1]], dtype=torch.float64
    )
    dst_to_src = centred_to_in @ g_inv.double() @ out_to_centred
    src_to_dst = torch.linalg.inv(dst_to_src)[:, :2].to(x.dtype)
    size = (2 * (h + 2 * q), 2 * (w + 2 * q))
    warped = warp_affine(upsampled, src_to_dst, size, mode="bilinear", padding_mode="reflection", align_corners=True)
    return _downsample2x(warped)[..., q : q + h, q : q + w]


def _apply_color(x: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Apply per-sample ``(B, 4, 4)`` affine colour matrices to RGB (or grey) images."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    color = color.to(x.dtype)
    if c == 3:
        out = color[:, :3, :3] @ flat + color[:, :3, 3:]
    elif c == 1:  # Grey: the average effect over R, G and B.
        mean = color[:, :3, :].mean(dim=1, keepdim=True)
        out = flat * mean[:, :, :3].sum(dim=2, keepdim=True) + mean[:, :, 3:]
    else:
        raise ValueError(f"colour augmentation needs 1 or 3 channels, got {c}; use pipe='blit' or 'geom'")
    return out.reshape(b, c, h, w)


# ------------------------------------------------------------------ the module


class AdaptiveAugment(nn.Module):
    """ADA: differentiable augmentation of discriminator inputs with an adaptive ``p``.

    Use one instance for real and generated images. In a training step::

        logits_real = D(ada(real))
        ada.accumulate(logits_real)   # the overfitting heuristic r_t = E[sign(D(real))]
        ...
        ada.adjust(batch_size)        # once per iteration; acts every `interval` calls

    Args:
        pipe: Which transforms to use: ``"blit"``, ``"geom"``, ``"color"`` or all three,
            ``"bgc"`` (the official default).
        target: Target value of ``r_t``; ``None`` keeps ``p`` fixed.
        interval: Adjust ``p`` every this many iterations (calls of :meth:`adjust`).
        ada_kimg: Adjustment speed: thousands of images for ``p`` to move by 1.
        initial_p: Starting probability.
        fixed_p: Constant probability (disables the adaptation); overrides ``initial_p``.
        xint_max: Integer translation range, relative to the image size.
        scale_std: Log2 standard deviation of isotropic scaling.
        rotate_max: Range of arbitrary rotation, 1 = full circle.
        aniso_std: Log2 standard deviation of anisotropic scaling.
        xfrac_std: Standard deviation of fractional translation, relative to the image size.
        brightness_std: Standard deviation of the brightness offset.
        contrast_std: Log2 standard deviation of contrast.
        hue_max: Range of hue rotation, 1 = full circle.
        saturation_std: Log2 standard deviation of saturation.

    Raises:
        ValueError: If ``pipe`` is unknown or a probability, interval or speed is out of range.
    """

    p: torch.Tensor
    sign_sum: torch.Tensor
    sign_count: torch.Tensor
    rt: torch.Tensor
    num_steps: torch.Tensor

    def __init__(
        self,
        pipe: AugmentPipe = "bgc",
        target: float | None = 0.6,
        interval: int = 4,
        ada_kimg: float = 500.0,
        initial_p: float = 0.0,
        fixed_p: float | None = None,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ) -> None:
        super().__init__()
        check_choice("augmentation pipe", pipe, _PIPE_OPS)
        for name, value in (("target", target), ("initial_p", initial_p), ("fixed_p", fixed_p)):
            if value is not None:
                check_within(name, value)
        check_at_least("interval", interval, 1)
        check_positive("ada_kimg", ada_kimg)
        self.pipe = pipe
        self.target = target
        self.interval = interval
        self.ada_kimg = ada_kimg
        self.fixed_p = fixed_p
        # Probability multiplier of each transform: 1 if the pipe enables it, else 0.
        self.strength = {op: float(op in _PIPE_OPS[pipe]) for op in _BLIT + _GEOM + _COLOR}
        self.xint_max = xint_max
        self.scale_std = scale_std
        self.rotate_max = rotate_max
        self.aniso_std = aniso_std
        self.xfrac_std = xfrac_std
        self.brightness_std = brightness_std
        self.contrast_std = contrast_std
        self.hue_max = hue_max
        self.saturation_std = saturation_std
        start = fixed_p if fixed_p is not None else initial_p
        self.register_buffer("p", torch.tensor(float(start)))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("rt", torch.zeros(()))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    @property
    def adaptive(self) -> bool:
        """Whether :meth:`adjust` changes ``p`` (a target is set and ``p`` is not fixed)."""
        return self.fixed_p is None and self.target is not None

    # ---------------------------------------------------------------- sampling

    def _draw(
        self, kind: str, scale: float, shape: tuple[int, ...], prob: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One transform's parameters, kept for samples drawn with probability ``prob`` and the identity elsewhere.

        ``kind``: ``coin`` ``floor(U * scale)``, ``uniform`` ``(2U - 1) * scale``, ``angle`` the
        same times pi, ``normal`` ``N * scale``, ``lognormal`` ``2 ** (N * scale)`` (identity 1).
        """
        if kind in ("coin", "uniform", "angle"):
            u = torch.rand(shape, device=prob.device, generator=generator)
            if kind == "coin":
                value = torch.floor(u * scale)
            else:
                value = (u * 2 - 1) * (math.pi if kind == "angle" else 1) * scale
        else:
            value = torch.randn(shape, device=prob.device, generator=generator) * scale
            value = torch.exp2(value) if kind == "lognormal" else value
        keep = torch.rand((shape[0],) + (1,) * (len(shape) - 1), device=prob.device, generator=generator) < prob
        return torch.where(keep, value, torch.full_like(value, 1 if kind == "lognormal" else 0))

    def _sample_blit(
        self, n: int, height: int, width: int, p: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        s, out = self.strength, {}
        if s["xflip"] > 0:
            out["xflip"] = self._draw("coin", 2, (n,), s["xflip"] * p, generator).bool()
        if s["rotate90"] > 0:
            out["rot90"] = self._draw("coin", 4, (n,), s["rotate90"] * p, generator).long()
        if s["xint"] > 0:
            t = self._draw("uniform", self.xint_max, (n, 2), s["xint"] * p, generator)
            out["shift"] = torch.round(t * torch.tensor([width, height], device=p.device, dtype=t.dtype)).long()
        return out

    def _sample_geom(
        self, n: int, height: int, width: int, p: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        s = self.strength
        if not any(s[op] > 0 for op in _GEOM):
            return None
        g_inv = torch.eye(3, device=p.device).repeat(n, 1, 1)
        if s["scale"] > 0:
            scale = self._draw("lognormal", self.scale_std, (n,), s["scale"] * p, generator)
            g_inv = g_inv @ _scale2d(1 / scale, 1 / scale)
        # P(pre or post rotation) = rotate * p with two independent draws.
        p_rot = 1 - torch.sqrt((1 - s["rotate"] * p).clamp(0, 1))
        if s["rotate"] > 0:
            g_inv = g_inv @ _rotate2d(self._draw("angle", self.rotate_max, (n,), p_rot, generator))
        if s["aniso"] > 0:
            aniso = self._draw("lognormal", self.aniso_std, (n,), s["aniso"] * p, generator)
            g_inv = g_inv @ _scale2d(1 / aniso, aniso)
        if s["rotate"] > 0:
            g_inv = g_inv @ _rotate2d(self._draw("angle", self.rotate_max, (n,), p_rot, generator))
        if s["xfrac"] > 0:
            t = self._draw("normal", self.xfrac_std, (n, 2), s["xfrac"] * p, generator)
            g_inv = g_inv @ _translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return g_inv

    def _sample_color(self, n: int, p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        s, dev = self.strength, p.device
        if not any(s[op] > 0 for op in _COLOR):
            return None
        luma = torch.tensor(_LUMA, device=dev)
        luma_outer = torch.outer(luma, luma)
        eye = torch.eye(4, device=dev)
        color = eye.repeat(n, 1, 1)
        if s["brightness"] > 0:
            b = self._draw("normal", self.brightness_std, (n,), s["brightness"] * p, generator)
            color = _translate3d(b) @ color
        if s["contrast"] > 0:
            color = _scale3d(self._draw("lognormal", self.contrast_std, (n,), s["contrast"] * p, generator)) @ color
        if s["lumaflip"] > 0:
            flip = self._draw("coin", 2, (n,), s["lumaflip"] * p, generator)
            color = (eye - 2 * luma_outer * flip.view(-1, 1, 1)) @ color  # Householder reflection.
        if s["hue"] > 0:
            theta = self._draw("angle", self.hue_max, (n,), s["hue"] * p, generator)
            color = _rotate_about_luma(theta) @ color
        if s["saturation"] > 0:
            sat = self._draw("lognormal", self.saturation_std, (n,), s["saturation"] * p, generator).view(-1, 1, 1)
            # Keep the luma component, scale the chroma plane by `sat`.
            saturate = luma_outer + (eye - luma_outer) * sat
            saturate[:, 3, 3] = 1
            color = saturate @ color
        return color

    def sample_params(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> AugmentParams:
        """Draw the transforms of one batch at the current ``p``, for :meth:`transform`.

        Args:
            batch_size: Number of samples to draw for.
            height: Image height in pixels (translations are relative to the size).
            width: Image width in pixels.
            device: Device of the draw; defaults to the device of ``p``.
            generator: Random generator (on ``device``) for reproducible draws.

        Returns:
            The draw.
        """
        p = self.p.to(device) if device is not None else self.p
        blit = self._sample_blit(batch_size, height, width, p, generator)
        geom = self._sample_geom(batch_size, height, width, p, generator)
        color = self._sample_color(batch_size, p, generator)
        return AugmentParams(**blit, geom=geom, color=color)

    # --------------------------------------------------------------- applying

    def transform(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply a draw for batch size ``B`` (blitting, geometric, colour) to ``(B, C, H, W)`` images in ``[-1, 1]``.

        Gradients flow through; the result has the images' shape and dtype.

        Raises:
            ValueError: If the images are not 4-D, or rotations meet non-square images.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        steps = ((params.xflip, _flip), (params.rot90, _rot90), (params.shift, _translate_int),
                 (params.geom, _warp), (params.color, _apply_color))  # fmt: skip
        for value, apply in steps:
            if value is not None:
                images = apply(images, value)
        return images

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None, groups: int = 1) -> torch.Tensor:
        """Augment a batch with a fresh draw at the current ``p``.

        Args:
            images: ``(B, C, H, W)`` images in ``[-1, 1]``.
            generator: Random generator (on the images' device) for a reproducible draw.
            groups: Equal chunks of the batch that share one draw (see :meth:`AugmentParams.repeat`).

        Returns:
            The augmented images; the input itself when ``p == 0``.

        Raises:
            ValueError: If the batch does not split into ``groups`` equal chunks.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        batch, _, height, width = images.shape
        if groups < 1 or batch % groups != 0:
            raise ValueError(f"batch size {batch} does not split into groups={groups} equal chunks")
        if float(self.p) <= 0.0:
            return images
        params = self.sample_params(batch // groups, height, width, images.device, generator)
        return self.transform(images, params.repeat(groups))

    # ------------------------------------------------------------- adaptation

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of discriminator logits (any shape) on (augmented) real images to ``r_t``."""
        signs = real_logits.detach().sign().to(self.sign_sum.dtype)
        self.sign_sum += signs.sum()
        self.sign_count += signs.numel()

    @torch.no_grad()
    def adjust(self, batch_size: int) -> torch.Tensor:
        """Count one training iteration; every ``interval`` of them, move ``p`` toward the target.

        The update of the module docstring, clamped to ``[0, 1]``, with ``r_t`` the mean
        sign accumulated since the last adjustment. Runs without a host-device synchronisation.

        Args:
            batch_size: Total batch size of one iteration.

        Returns:
            The (possibly updated) ``p`` buffer.
        """
        self.num_steps += 1
        if not self.adaptive:
            return self.p
        assert self.target is not None  # For type checkers; implied by `adaptive`.
        due = (self.num_steps % self.interval == 0) & (self.sign_count > 0)
        rt = (self.sign_sum / self.sign_count.clamp_min(1)).to(self.p.dtype)
        step = torch.sign(rt - self.target) * (batch_size * self.interval) / (self.ada_kimg * 1000)
        self.p.copy_(torch.where(due, (self.p + step).clamp(0, 1), self.p))
        self.rt.copy_(torch.where(due, rt, self.rt))
        self.sign_sum.copy_(torch.where(due, torch.zeros_like(self.sign_sum), self.sign_sum))
        self.sign_count.copy_(torch.where(due, torch.zeros_like(self.sign_count), self.sign_count))
        return self.p

    def extra_repr(self) -> str:
        """The configuration shown by ``print(module)``."""
        return f"pipe={self.pipe!r}, target={self.target}, interval={self.interval}, ada_kimg={self.ada_kimg}"


class JointFlipRot90(nn.Module):
    """Random flip and 90-degree rotation applied identically to images and masks.

    Draws, per sample, a left-right flip with probability ``p_flip`` and a rotation by
    ``k`` quarter turns (``k`` uniform in ``0..3``) with probability ``p_rot90``: the
    dihedral group of the square, which leaves land-cover statistics unchanged.

    Args:
        p_flip: Probability of a left-right flip.
        p_rot90: Probability of drawing a rotation.

    Raises:
        ValueError: If a probability is outside ``[0, 1]``.
    """

    def __init__(self, p_flip: float = 0.5, p_rot90: float = 0.5) -> None:
        super().__init__()
        check_within("p_flip", p_flip)
        check_within("p_rot90", p_rot90)
        self.p_flip = p_flip
        self.p_rot90 = p_rot90

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch of image/mask pairs.

        Args:
            image: ``(B, C, H, W)`` images.
            mask: ``(B, H, W)`` class indices or ``(B, K, H, W)`` one-hot / soft masks.
            generator: Random generator (on the images' device).

        Raises:
            ValueError: If the batch or spatial sizes differ, or rotations meet non-square images.
        """
        if image.ndim != 4 or mask.ndim not in (3, 4):
            raise ValueError(f"expected (B, C, H, W) images and (B, [K,] H, W) masks, got {image.shape}, {mask.shape}")
        if image.shape[0] != mask.shape[0] or image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} do not match")
        n, dev = image.shape[0], image.device
        flip = torch.rand(n, device=dev, generator=generator) < self.p_flip
        turns = torch.randint(0, 4, (n,), device=dev, generator=generator)
        turns = torch.where(torch.rand(n, device=dev, generator=generator) < self.p_rot90, turns, 0)
        image, mask = _flip(image, flip), _flip(mask, flip)
        if self.p_rot90 > 0:
            image, mask = _rot90(image, turns), _rot90(mask, turns)
        return image, mask
