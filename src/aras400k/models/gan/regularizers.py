"""Regularisers and training-schedule helpers shared by the GANs.

- :func:`r1_penalty`: the R1 gradient penalty (Mescheder et al., ICML 2018), applied
  every 16 D steps in StyleGAN2 (Karras et al., CVPR 2020, Sec. 3.1 "lazy
  regularization"), with Adam corrected by :func:`lazy_optimizer_params`.
- :class:`PathLengthRegularizer`: StyleGAN2's path-length regularisation (Sec. 3.2).
- :func:`style_mixing`: StyleGAN's mixing regularisation (probability 0.9).
- :func:`blur_sigma` and :func:`blur_images`: StyleGAN3's blur of every image the
  discriminator sees, fading out early in training (Karras et al., NeurIPS 2021, App. D).
- :class:`NonFiniteGuard` and :func:`guarded_step`: skip and count NaN/inf optimiser steps.

The numbers follow NVlabs' ``stylegan3/training/loss.py``, ``training_loop.py`` and
``train.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

import torch
from kornia.filters import filter2d_separable
from torch import nn

from aras400k.errors import check_at_least, check_choice

__all__ = [
    "LazyOptimizerParams",
    "NonFiniteGuard",
    "PathLengthRegularizer",
    "blur_images",
    "blur_sigma",
    "guarded_step",
    "lazy_optimizer_params",
    "r1_penalty",
    "style_mixing",
    "stylegan_blur_fade_kimg",
]


# --------------------------------------------------------------------------- R1


def r1_penalty(
    real_logits: torch.Tensor, real_images: torch.Tensor, reduction: Literal["mean", "none"] = "mean"
) -> torch.Tensor:
    """R1 penalty ``||grad_x D(x)||^2`` on real images (Mescheder et al., 2018).

    The gradient is taken of ``real_logits.sum()`` (per-pixel logits too) with
    ``create_graph=True``, so the penalty back-propagates into the discriminator.
    StyleGAN's loss is ``r1_penalty * (gamma / 2)``, times the interval when lazy.

    Args:
        real_logits: Discriminator output for ``real_images``, any shape.
        real_images: ``(B, ...)`` real images the logits were computed from; must require
            gradients (``real.detach().requires_grad_(True)`` before calling D).
        reduction: ``"mean"`` over the batch, or ``"none"`` for a ``(B,)`` tensor.

    Raises:
        ValueError: If ``real_images`` does not require gradients or ``reduction`` is unknown.
    """
    if not real_images.requires_grad:
        raise ValueError(
            "real_images must require gradients for the R1 penalty; call "
            "`real = real.detach().requires_grad_(True)` before running the discriminator"
        )
    check_choice("reduction", reduction, ("mean", "none"))
    (grads,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_images, create_graph=True)
    penalty = grads.square().flatten(1).sum(1)
    return penalty.mean() if reduction == "mean" else penalty


class LazyOptimizerParams(NamedTuple):
    """Adam hyper-parameters corrected for lazy regularisation."""

    lr: float
    betas: tuple[float, float]


def lazy_optimizer_params(lr: float, betas: tuple[float, float], interval: int | None) -> LazyOptimizerParams:
    """Correct Adam's learning rate and betas when a regulariser runs every ``interval`` steps.

    The optimiser then takes ``interval + 1`` steps per ``interval`` iterations, so
    StyleGAN2 (Sec. 3.1) scales ``lr`` by ``mb_ratio = interval / (interval + 1)`` and
    raises each beta to the power ``mb_ratio``, keeping the time constants per iteration.

    Args:
        lr: The nominal learning rate.
        betas: The nominal Adam betas.
        interval: Regularisation interval (16 for R1 on D, 4 for path length on G), or
            ``None`` when the regulariser is not lazy (values returned unchanged).

    Raises:
        ValueError: If ``interval`` is smaller than 1.
    """
    if interval is None:
        return LazyOptimizerParams(lr, (betas[0], betas[1]))
    if interval < 1:
        raise ValueError(f"interval must be >= 1 or None, got {interval}")
    mb_ratio = interval / (interval + 1)
    return LazyOptimizerParams(lr * mb_ratio, (betas[0] ** mb_ratio, betas[1] ** mb_ratio))


# ------------------------------------------------------------------ path length


class PathLengthRegularizer(nn.Module):
    """StyleGAN2 path-length regularisation (Karras et al., CVPR 2020, Sec. 3.2).

    For images ``g(w)`` and a random image-space direction ``y`` (unit variance per
    pixel, scaled by ``1 / sqrt(H * W)``), the path length is ``||J_w^T y||`` averaged over
    the ``num_ws`` style vectors; the penalty ``weight * mean((||J_w^T y|| - a)^2)`` pulls
    it toward its running mean ``a``. The official ``--cfg=stylegan2`` uses weight 2 every
    4 generator steps on half the batch (both the caller's choice).

    Args:
        decay: Update rate of the running mean of path lengths.
        weight: Multiplier of the penalty.

    Raises:
        ValueError: If ``decay`` is outside ``(0, 1]`` or ``weight`` is negative.
    """

    pl_mean: torch.Tensor

    def __init__(self, decay: float = 0.01, weight: float = 2.0) -> None:
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        check_at_least("weight", weight, 0)
        self.decay = decay
        self.weight = weight
        self.register_buffer("pl_mean", torch.zeros(()))

    def path_lengths(
        self, images: torch.Tensor, ws: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(B,)`` path lengths ``||J_w^T y||`` (with a graph, for back-propagation).

        Args:
            images: ``(B, C, H, W)`` generator output computed from ``ws``.
            ws: ``(B, num_ws, w_dim)`` or ``(B, w_dim)`` latents that require gradients.
            generator: Random generator for the projection direction ``y``.

        Raises:
            ValueError: If ``ws`` does not require gradients.
        """
        if not ws.requires_grad:
            raise ValueError("ws must be part of the autograd graph of images (it does not require gradients)")
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        noise = noise / math.sqrt(images.shape[2] * images.shape[3])
        (grads,) = torch.autograd.grad(outputs=(images * noise).sum(), inputs=ws, create_graph=True)
        lengths_sq = grads.square().sum(-1)
        if lengths_sq.ndim > 1:
            lengths_sq = lengths_sq.mean(1)  # Average over the num_ws style vectors.
        return lengths_sq.sqrt()

    def forward(self, images: torch.Tensor, ws: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss ``weight * mean((lengths - pl_mean)^2)``, updating the mean (arguments: :meth:`path_lengths`)."""
        lengths = self.path_lengths(images, ws, generator)
        # As in the official code the penalty uses the freshly updated mean, with its
        # (small) gradient through the current batch; the stored mean is detached.
        pl_mean = self.pl_mean.lerp(lengths.mean(), self.decay)
        self.pl_mean.copy_(pl_mean.detach())
        return (lengths - pl_mean).square().mean() * self.weight


def style_mixing(
    ws: torch.Tensor, ws_mix: torch.Tensor, prob: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """StyleGAN mixing regularisation: swap the styles after a random layer.

    With probability ``prob`` (0.9 in StyleGAN2) one cutoff is drawn uniformly from
    ``[1, num_ws)`` for the whole batch; the styles from it on come from ``ws_mix``.

    Args:
        ws: ``(B, num_ws, w_dim)`` styles.
        ws_mix: Styles of the same shape from independent latents.
        prob: Probability of mixing this batch.
        generator: Random generator for the draw (a CPU generator needs CPU tensors).

    Returns:
        A new tensor, or ``ws`` itself when this batch is not mixed.

    Raises:
        ValueError: If the shapes differ or ``ws`` is not 3-D.
    """
    if ws.shape != ws_mix.shape or ws.ndim != 3:
        raise ValueError(f"ws and ws_mix must both be (B, num_ws, w_dim), got {tuple(ws.shape)} and {ws_mix.shape}")
    num_ws = ws.shape[1]
    if num_ws < 2 or torch.rand((), generator=generator).item() >= prob:
        return ws
    cutoff = int(torch.randint(1, num_ws, (), generator=generator).item())
    layer = torch.arange(num_ws, device=ws.device).view(1, -1, 1)
    return torch.where(layer < cutoff, ws, ws_mix)


# ------------------------------------------------------------------------ blur


def stylegan_blur_fade_kimg(batch_size: int, fade_kimg: float = 200.0) -> float:
    """The official fade length in kimg: ``fade_kimg`` (at batch 32) times ``batch_size / 32`` (StyleGAN3)."""
    return batch_size * fade_kimg / 32


def blur_sigma(images_seen: float, fade_kimg: float = 200.0, sigma: float = 10.0) -> float:
    """Blur strength of the images shown to the discriminator (StyleGAN3 App. D).

    Decreases linearly from ``sigma`` to 0 over ``fade_kimg`` thousand images (see
    :func:`stylegan_blur_fade_kimg`).

    Args:
        images_seen: Real images shown so far.
        fade_kimg: Fade length in thousands of images; ``0`` disables the blur.
        sigma: Initial blur strength in pixels.
    """
    if fade_kimg <= 0:
        return 0.0
    return max(1.0 - images_seen / (fade_kimg * 1e3), 0.0) * sigma


def blur_images(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Differentiable separable blur with StyleGAN3's kernel ``2 ** -(x / sigma)^2``.

    Radius ``floor(3 * sigma)`` as in the official loss (``sigma`` is the kernel's half
    width at half maximum, not a Gaussian std), cut to ``min(H, W) - 1`` on small images.
    Borders are reflected (the official code pads with zeros).

    Args:
        images: ``(B, C, H, W)`` images.
        sigma: Blur strength in pixels; values giving a radius below 1 return the input.
    """
    radius = min(math.floor(sigma * 3), min(images.shape[-2:]) - 1)
    if radius <= 0:
        return images
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = x.div(sigma).square().neg().exp2()
    kernel = (kernel / kernel.sum())[None]
    return filter2d_separable(images, kernel, kernel, border_type="reflect")


# ------------------------------------------------------------------ NaN guard


class NonFiniteGuard(nn.Module):
    """Flag and count optimiser steps whose loss or gradients are NaN/inf.

    For manual optimisation in Lightning (see :func:`guarded_step`): after
    ``manual_backward`` ask :meth:`check` whether the step is safe; on ``False`` skip
    ``optimizer.step()``. Counts are kept per name (``"G"``, ``"D"``, ...) and saved in the
    owner's checkpoint. Optionally raises after too many consecutive skips, since a run
    that only skips is not training.

    Args:
        max_consecutive: Raise after this many skips in a row (any name); ``None``
            never raises.

    Raises:
        ValueError: If ``max_consecutive`` is smaller than 1.
    """

    def __init__(self, max_consecutive: int | None = None) -> None:
        super().__init__()
        if max_consecutive is not None and max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1 or None, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.counts: dict[str, int] = {}
        self.consecutive = 0

    @property
    def num_skipped(self) -> int:
        """Total number of skipped steps over all names."""
        return sum(self.counts.values())

    @staticmethod
    def all_finite(*tensors: torch.Tensor | None) -> bool:
        """Whether every given tensor (``None`` ignored) is free of NaN and inf, with one device sync."""
        flags = [torch.isfinite(t).all() for t in tensors if t is not None]
        return bool(torch.stack(flags).all().item()) if flags else True

    @classmethod
    def grads_finite(cls, parameters: Iterable[torch.Tensor]) -> bool:
        """Whether all existing ``.grad`` tensors of ``parameters`` are finite."""
        return cls.all_finite(*(p.grad for p in parameters))

    def check(
        self,
        loss: torch.Tensor | None = None,
        parameters: Iterable[torch.Tensor] | None = None,
        name: str = "step",
    ) -> bool:
        """Whether the optimiser may step: the loss (any shape) and gradients, when given, are finite.

        Anything non-finite counts a skip under ``name`` (e.g. ``"G"`` or ``"D"``).

        Raises:
            RuntimeError: If the number of consecutive skips exceeds ``max_consecutive``.
        """
        ok = self.all_finite(loss) and (parameters is None or self.grads_finite(parameters))
        if ok:
            self.consecutive = 0
            return True
        self.counts[name] = self.counts.get(name, 0) + 1
        self.consecutive += 1
        if self.max_consecutive is not None and self.consecutive > self.max_consecutive:
            raise RuntimeError(
                f"{self.consecutive} consecutive optimiser steps had NaN/inf losses or gradients "
                f"(skips so far: {self.counts}); lower the learning rate or check the inputs"
            )
        return False

    def get_extra_state(self) -> dict[str, Any]:
        """State saved in checkpoints: the skip counts."""
        return {"counts": dict(self.counts), "consecutive": self.consecutive}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the skip counts that :meth:`get_extra_state` saved."""
        self.counts = {str(k): int(v) for k, v in state.get("counts", {}).items()}
        self.consecutive = int(state.get("consecutive", 0))


def guarded_step(
    loss: torch.Tensor,
    parameters: Iterable[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    guard: NonFiniteGuard,
    name: str,
    backward: Callable[[torch.Tensor], None],
) -> bool:
    """Backward and step one optimiser unless the loss or a gradient is NaN/inf.

    The manual-optimisation step both GAN modules share: gradients are cleared,
    ``backward(loss)`` runs, the guard checks loss and gradients (counting a skip under
    ``name``), the optimiser steps only when all is finite, and gradients are cleared
    again so a skipped step leaves nothing behind.

    Args:
        loss: Scalar loss.
        parameters: Parameters whose gradients are checked (those ``optimizer`` updates).
        optimizer: The optimiser to step.
        guard: Counts skipped steps under ``name`` (e.g. ``"G"``, ``"D"``).
        name: Phase name for the skip count.
        backward: Function that back-propagates ``loss`` (``LightningModule.manual_backward``).

    Returns:
        Whether the optimiser stepped.
    """
    optimizer.zero_grad(set_to_none=True)
    backward(loss)
    stepped = guard.check(loss.detach(), parameters, name=name)
    if stepped:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped
