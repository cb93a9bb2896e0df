"""Equivariance metrics EQ-T and EQ-R of the StyleGAN3 paper (Karras et al. 2021, Sec. 3 and Appendix E).

A generator is equivariant to a transformation if transforming its input Fourier
features (the ``transform`` buffer of ``synthesis.input``) transforms its output the
same way. The metrics compare an image generated from transformed input coordinates
with the transformed reference image: the PSNR over the pixels both define, in dB,
for images in ``[-1, 1]`` (a dynamic range of 2):

* **EQ-T** (integer): translation by whole pixels, up to ``translate_max`` of the
  image size; the reference is an exact shift.
* **EQ-T frac** (sub-pixel): any translation; the reference is interpolated with a
  Lanczos-windowed sinc (``a = 3``).
* **EQ-R**: rotation by an angle up to ``rotate_max * pi``. Both images are limited to
  the intersection of the pixel grid's square band and its rotated copy: the
  reference by the interpolating low-pass of the rotation, the generated image by
  the same low-pass without rotation ("pseudo-rotation").

The filters here are designed directly: the impulse response of the polygonal pass
band is integrated numerically over frequency and tapered by a radial Lanczos window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aras400k.models.stylegan3.filters import upfirdn2d

__all__ = [
    "EquivarianceMetric",
    "apply_fractional_translation",
    "apply_integer_translation",
    "apply_pseudo_rotation",
    "apply_rotation",
    "compute_eq_r",
    "compute_eq_t",
    "compute_equivariance",
    "psnr",
]

EquivarianceMetric = Literal["eqt_int", "eqt_frac", "eqr"]


class FourierGenerator(Protocol):
    """What the metrics need from a generator (StyleGAN3's :class:`Generator` fits)."""

    z_dim: int
    c_dim: int
    mapping: nn.Module
    synthesis: nn.Module


def psnr(squared_error_sum: float, count: float, dynamic_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB of ``count`` summed squared errors (``inf`` for none).

    Args:
        squared_error_sum: Sum of squared differences.
        count: Number of values summed.
        dynamic_range: Peak-to-peak range of the signal (2 for ``[-1, 1]``).
    """
    mse = squared_error_sum / max(count, 1)
    if mse <= 0:
        return math.inf
    return 20 * math.log10(dynamic_range) - 10 * math.log10(mse)


def rotation_matrix(angle: float) -> Tensor:
    """3x3 homogeneous matrix of a rotation by ``angle`` radians in (x, y) coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def translation_matrix(tx: float, ty: float) -> Tensor:
    """3x3 homogeneous matrix of a translation by ``(tx, ty)``."""
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def apply_integer_translation(x: Tensor, tx: int, ty: int) -> tuple[Tensor, Tensor]:
    """Shift images by whole pixels: ``out[..., i, j] = x[..., i - ty, j - tx]``.

    Args:
        x: Images ``[N, C, H, W]``.
        tx: Shift along x (width) in pixels.
        ty: Shift along y (height) in pixels.

    Returns:
        The shifted images and a mask (1 where the output is defined).
    """
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    mask = torch.zeros_like(x)
    if abs(tx) < w and abs(ty) < h:
        target = (..., slice(max(ty, 0), h - max(-ty, 0)), slice(max(tx, 0), w - max(-tx, 0)))
        out[target] = x[..., max(-ty, 0) : h - max(ty, 0), max(-tx, 0) : w - max(tx, 0)]
        mask[target] = 1
    return out, mask


def _lanczos_taps(shift: float, a: int) -> tuple[int, Tensor]:
    """First offset ``m0`` and normalised Lanczos-``a`` taps ``L(m - shift)`` for ``m = m0 .. m0 + 2a - 1``."""
    m0 = math.floor(shift) - a + 1
    d = torch.arange(m0, m0 + 2 * a, dtype=torch.float64) - shift
    weights = torch.sinc(d) * torch.sinc(d / a)
    return m0, weights / weights.sum()


def apply_fractional_translation(x: Tensor, tx: float, ty: float, a: int = 3) -> tuple[Tensor, Tensor]:
    """Shift images by a sub-pixel amount with Lanczos-``a`` interpolation.

    Args:
        x: Images ``[N, C, H, W]``.
        tx: Shift along x in pixels.
        ty: Shift along y in pixels.
        a: Lanczos window radius in pixels.

    Returns:
        The shifted images and a mask of the pixels whose interpolation support lies
        inside the input.
    """
    h, w = x.shape[-2:]
    out = x
    valid = []
    for dim, shift, size in ((3, tx, w), (2, ty, h)):
        m0, taps = _lanczos_taps(shift, a)
        m1 = m0 + 2 * a - 1
        # out[p] = sum_m x[p - m] taps[m - m0]: a correlation with the reversed taps
        # over x padded by m1 before and -m0 after.
        pads = [m1, -m0] if dim == 3 else [0, 0, m1, -m0]
        shape = (1, 2 * a) if dim == 3 else (2 * a, 1)
        c = out.shape[1]
        kernel = taps.flip(0).to(x).reshape(1, 1, *shape).expand(c, 1, *shape).contiguous()
        out = F.conv2d(F.pad(out, pads), kernel, groups=c)
        valid.append((max(m1, 0), min(size + m0, size)))  # p - m inside [0, size) for every tap
    mask = torch.zeros_like(x)
    (x0, x1), (y0, y1) = valid
    if x0 < x1 and y0 < y1:
        mask[..., y0:y1, x0:x1] = 1
    return out, mask


def _bandlimit_filter(matrix: Tensor, up: int, a: int, quadrature: int = 64) -> Tensor:
    """FIR low-pass (``[2 a up + 1]^2``, upsampling by ``up``) passing the square band and its ``matrix`` image.

    The pass band ``P = {f : |f|_inf <= 1/2 and |matrix^-1 f|_inf <= 1/2}`` (cycles
    per pixel) is integrated numerically, ``h(x) = integral_P cos(2 pi f . x) df``,
    at taps spaced ``1 / up`` pixel out to ``a`` pixels, tapered by the radial Lanczos
    window ``sinc(r / a)``, and normalised so every upsampling phase sums to one.
    """
    grid = (torch.arange(quadrature, dtype=torch.float64) + 0.5) / quadrature - 0.5
    fy, fx = torch.meshgrid(grid, grid, indexing="ij")
    freqs = torch.stack([fx.flatten(), fy.flatten()], dim=1)  # [Q, 2] as (x, y)
    inverse = torch.linalg.inv(matrix[:2, :2].to(torch.float64))
    inside = (freqs @ inverse.t()).abs().amax(dim=1) <= 0.5
    freqs = freqs[inside]

    offsets = torch.arange(-a * up, a * up + 1, dtype=torch.float64) / up
    ty, tx = torch.meshgrid(offsets, offsets, indexing="ij")
    taps = torch.stack([tx.flatten(), ty.flatten()], dim=1)  # [T, 2]
    h = torch.cos(2 * math.pi * taps @ freqs.t()).sum(dim=1) / quadrature**2
    h = h.reshape(len(offsets), len(offsets))
    radius = torch.sqrt(tx**2 + ty**2)
    h = h * torch.where(radius < a, torch.sinc(radius / a), torch.zeros_like(radius))

    # Zero-stuffed upsampling reads every up-th tap: make each phase sum to one.
    phase = torch.arange(-a * up, a * up + 1) % up
    for py in range(up):
        for px in range(up):
            sel = (phase[:, None] == py) & (phase[None, :] == px)
            h[sel] = h[sel] / h[sel].sum()
    return h.to(torch.float32)


def apply_rotation(x: Tensor, angle: float, a: int = 3, up: int = 4) -> tuple[Tensor, Tensor]:
    """Rotate band-limited images: ``out(p) = x(R(angle) p)`` about the image centre.

    The input is upsampled by ``up`` with an interpolation filter that also removes
    the frequencies outside the rotated square band, then resampled bicubically at the
    rotated positions.

    Args:
        x: Images ``[N, C, H, W]``.
        angle: Rotation angle in radians (of the sampling positions).
        a: Filter radius in input pixels.
        up: Oversampling factor before the bicubic resampling.

    Returns:
        The rotated images and a mask of the pixels whose filter support lies inside
        the input.
    """
    n, _, h, w = x.shape
    matrix = rotation_matrix(angle)
    # Input frequency nu appears at output frequency R^T nu: keep nu in S and R S.
    f = _bandlimit_filter(matrix, up=up, a=a).to(x)
    fine = upfirdn2d(x, f, up=up, padding=a * up, gain=1.0)  # sample m at position m / up
    # Output pixel centres, centred on the image, rotated into input pixel indices.
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device) + 0.5 - h / 2,
        torch.arange(w, dtype=x.dtype, device=x.device) + 0.5 - w / 2,
        indexing="ij",
    )
    rot = matrix[:2, :2].to(x)
    src_x = rot[0, 0] * xs + rot[0, 1] * ys + w / 2 - 0.5
    src_y = rot[1, 0] * xs + rot[1, 1] * ys + h / 2 - 0.5
    # Normalise fine-grid indices (src * up) for align_corners=True.
    gx = src_x * up / (w * up - 1) * 2 - 1
    gy = src_y * up / (h * up - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(n, h, w, 2)
    out = F.grid_sample(fine, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
    margin = a + 1
    inside = (src_x >= margin) & (src_x <= w - 1 - margin) & (src_y >= margin) & (src_y <= h - 1 - margin)
    return out, inside.to(x.dtype).expand_as(out).clone()


def apply_pseudo_rotation(x: Tensor, angle: float, a: int = 3) -> tuple[Tensor, Tensor]:
    """Band-limit images as :func:`apply_rotation` does (the square band and its ``R(angle)^T`` copy), unrotated.

    Args:
        x: Images ``[N, C, H, W]``.
        angle: The rotation angle of :func:`apply_rotation`.
        a: Filter radius in pixels.

    Returns:
        The filtered images and a mask of the pixels at least ``a`` from the border.
    """
    f = _bandlimit_filter(rotation_matrix(angle).t(), up=1, a=a).to(x)
    out = upfirdn2d(x, f, padding=a)
    mask = torch.zeros_like(out)
    mask[..., a:-a, a:-a] = 1
    return out, mask


@contextmanager
def _input_transform(generator: FourierGenerator) -> Iterator[Tensor]:
    """Yield the ``synthesis.input.transform`` buffer, restoring it afterwards."""
    transform = getattr(getattr(getattr(generator, "synthesis", None), "input", None), "transform", None)
    if not isinstance(transform, Tensor) or transform.shape != (3, 3):
        raise ValueError(
            "equivariance metrics need a generator with Fourier input features: "
            "generator.synthesis.input.transform must be a 3x3 buffer (StyleGAN3 configs, not stylegan2)"
        )
    saved = transform.clone()
    try:
        yield transform
    finally:
        transform.copy_(saved)


@torch.no_grad()
def compute_equivariance(
    generator: FourierGenerator,
    metrics: Iterable[EquivarianceMetric] = ("eqt_int", "eqt_frac", "eqr"),
    num_samples: int = 64,
    batch_size: int = 8,
    translate_max: float = 0.125,
    rotate_max: float = 1.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """EQ-T (integer and sub-pixel) and EQ-R PSNRs of a generator, in dB (see the module docstring).

    A conditional model gets random one-hot labels. Squared errors are summed over all
    samples before taking the PSNR, as in the paper.

    Args:
        generator: A generator with ``mapping``, ``synthesis`` and a Fourier
            ``synthesis.input`` with a ``transform`` buffer (StyleGAN3 T/R).
        metrics: Any of ``"eqt_int"``, ``"eqt_frac"``, ``"eqr"``.
        num_samples: Number of latents.
        batch_size: Latents per batch.
        translate_max: Largest translation, as a fraction of the image size.
        rotate_max: Largest rotation, as a fraction of pi.
        seed: Seed of latents and transformations.
        device: Device to run on (default: the generator's).

    Returns:
        ``{metric: psnr_db}`` for the requested metrics.

    Raises:
        ValueError: For an unknown metric or a generator without Fourier input.
    """
    metrics = tuple(metrics)
    unknown = set(metrics) - {"eqt_int", "eqt_frac", "eqr"}
    if unknown or not metrics:
        raise ValueError(f"unknown equivariance metrics {sorted(unknown)}; choose from eqt_int, eqt_frac, eqr")
    if device is None:
        device = next(iter(generator.synthesis.parameters())).device  # type: ignore[union-attr]
    rng = torch.Generator().manual_seed(seed)
    sums = {name: [0.0, 0.0] for name in metrics}
    resolution = None

    with _input_transform(generator) as transform:
        identity = torch.eye(3, device=transform.device)
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            z = torch.randn([n, generator.z_dim], generator=rng).to(device)
            c = None
            if generator.c_dim > 0:
                labels = torch.randint(generator.c_dim, [n], generator=rng)
                c = F.one_hot(labels, generator.c_dim).to(device=device, dtype=torch.float32)
            ws = generator.mapping(z, c)
            transform.copy_(identity)
            orig = generator.synthesis(ws, noise_mode="const")
            resolution = orig.shape[-1]

            for name in metrics:
                if name == "eqr":
                    angle = float((torch.rand([], generator=rng) * 2 - 1) * (rotate_max * math.pi))
                    transform.copy_(rotation_matrix(angle))
                    img = generator.synthesis(ws, noise_mode="const")
                    ref, ref_mask = apply_rotation(orig, angle)
                    img, img_mask = apply_pseudo_rotation(img, angle)
                    mask = ref_mask * img_mask
                else:
                    t = ((torch.rand([2], generator=rng) * 2 - 1) * translate_max).double()
                    if name == "eqt_int":
                        t = (t * resolution).round() / resolution
                    # The input transform maps output to input coordinates: moving
                    # the image content by +t means sampling the features at p - t.
                    transform.copy_(translation_matrix(-float(t[0]), -float(t[1])))
                    img = generator.synthesis(ws, noise_mode="const")
                    shift = t * resolution
                    if name == "eqt_int":
                        ref, mask = apply_integer_translation(orig, int(shift[0].round()), int(shift[1].round()))
                    else:
                        ref, mask = apply_fractional_translation(orig, float(shift[0]), float(shift[1]))
                sums[name][0] += float(((ref - img).square() * mask).double().sum())
                sums[name][1] += float(mask.double().sum())
    return {name: psnr(err, count) for name, (err, count) in sums.items()}


def compute_eq_t(
    generator: FourierGenerator,
    fractional: bool = False,
    num_samples: int = 64,
    batch_size: int = 8,
    translate_max: float = 0.125,
    seed: int = 0,
) -> float:
    """EQ-T of a generator in dB: :func:`compute_equivariance` of one metric, with its arguments.

    ``fractional`` picks sub-pixel translations (EQ-T frac) instead of whole pixels.
    """
    name: EquivarianceMetric = "eqt_frac" if fractional else "eqt_int"
    return compute_equivariance(
        generator, (name,), num_samples=num_samples, batch_size=batch_size, translate_max=translate_max, seed=seed
    )[name]


def compute_eq_r(
    generator: FourierGenerator,
    num_samples: int = 64,
    batch_size: int = 8,
    rotate_max: float = 1.0,
    seed: int = 0,
) -> float:
    """EQ-R of a generator in dB: :func:`compute_equivariance` of one metric, with its arguments."""
    return compute_equivariance(
        generator, ("eqr",), num_samples=num_samples, batch_size=batch_size, rotate_max=rotate_max, seed=seed
    )["eqr"]
