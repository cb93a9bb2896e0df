"""Exponential moving average (EMA) of a network's weights, for sampling.

Both GANs sample from an EMA copy of their generator (Karras et al., "Progressive
Growing of GANs", 2018; StyleGAN2/3, OASIS). Two ways to pick the decay ``beta`` of
``shadow <- beta * shadow + (1 - beta) * w``:

- **Half-life in images** (StyleGAN2-ADA / StyleGAN3 ``training_loop.py``): the average
  forgets half of its weight every ``ema_kimg`` thousand images:
  ``beta = 0.5 ** (batch_size / (ema_kimg * 1000))``. A ramp-up shortens the half-life
  to ``ema_rampup * cur_nimg`` early on, so the random initialisation fades fast. The
  official ``train.py`` uses ``ema_kimg = batch * 10 / 32`` (:func:`stylegan_ema_kimg`,
  ``ema_kimg=None``) and ramp-up ``0.05``.
- **Constant decay** (e.g. ``0.999`` per step) for SPADE-style generators, optionally
  warmed up as ``min(decay, (1 + t) / (10 + t))`` at step ``t`` for the same reason.

Buffers (running statistics, the mapping network's tracked average ``w``, spectral-norm
vectors) are copied, not averaged, as in the official code.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from aras400k.errors import check_positive

__all__ = ["ExponentialMovingAverage", "stylegan_ema_kimg"]


def stylegan_ema_kimg(batch_size: int) -> float:
    """The official StyleGAN3 EMA half-life in kimg, ``batch_size * 10 / 32`` (``ValueError`` unless positive)."""
    check_positive("batch_size", batch_size)
    return batch_size * 10 / 32


class ExponentialMovingAverage(nn.Module):
    """A deep-copied shadow of a module whose parameters follow an EMA of the original.

    The shadow moves with ``.to()`` and is saved in the owner's ``state_dict`` under
    ``<attr>.shadow.*``; it needs no gradients and stays in eval mode even when the owner
    trains. Call it like the original module (``ema(z)``) to sample.

    Args:
        model: The module to average (deep-copied once; later it is only read).
        ema_kimg: Half-life of the average in thousands of images (StyleGAN mode);
            ``None``: the official ``batch_size * 10 / 32`` of each update.
        ema_rampup: Ramp-up coefficient: the half-life is at most ``ema_rampup`` times the
            images seen so far. ``None`` disables the ramp-up.
        decay: Constant per-update decay (e.g. ``0.999``). When given, ``ema_kimg`` and
            ``ema_rampup`` are ignored.
        warmup: With ``decay``: use ``min(decay, (1 + t) / (10 + t))`` at step ``t``.

    Raises:
        ValueError: If ``decay`` is outside ``[0, 1)``, ``ema_kimg`` is not positive or
            ``ema_rampup`` is not positive.
    """

    num_updates: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        ema_kimg: float | None = 10.0,
        ema_rampup: float | None = 0.05,
        decay: float | None = None,
        warmup: bool = False,
    ) -> None:
        super().__init__()
        if decay is not None and not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        for name, value in (("ema_kimg", ema_kimg), ("ema_rampup", ema_rampup)):
            if value is not None:
                check_positive(name, value)
        self.ema_kimg = None if ema_kimg is None else float(ema_kimg)
        self.ema_rampup = ema_rampup
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> ExponentialMovingAverage:
        """Set the training flag of this wrapper (returned); the shadow itself stays in eval mode."""
        self.training = mode
        self.shadow.eval()
        return self

    def beta(self, step: int, batch_size: int) -> float:
        """The decay :meth:`update` uses after ``step`` iterations of ``batch_size`` images.

        ``decay`` in constant mode (with the warm-up when on), otherwise
        ``0.5 ** (batch_size / max(ema_nimg, 1e-8))`` with
        ``ema_nimg = min(ema_kimg * 1000, step * batch_size * ema_rampup)``.
        """
        if self.decay is not None:
            return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        ema_kimg = self.ema_kimg if self.ema_kimg is not None else stylegan_ema_kimg(batch_size)
        ema_nimg = ema_kimg * 1000
        if self.ema_rampup is not None:
            ema_nimg = min(ema_nimg, step * batch_size * self.ema_rampup)
        return 0.5 ** (batch_size / max(ema_nimg, 1e-8))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, batch_size: int) -> float:
        """Move the shadow's parameters toward ``model``'s and copy its buffers.

        Args:
            model: The trained module (same architecture as the shadow).
            step: Training iterations completed before this update; with a ramp-up the
                first update (``step=0``) copies the weights outright, as in StyleGAN.
            batch_size: Total batch size of one iteration.

        Returns:
            The decay used.

        Raises:
            KeyError: If ``model`` lacks a parameter or buffer of the shadow.
        """
        beta = self.beta(step, batch_size)
        params = dict(model.named_parameters())
        for name, shadow_param in self.shadow.named_parameters():
            # lerp(p, shadow, beta) = beta * shadow + (1 - beta) * p.
            shadow_param.copy_(params[name].detach().lerp(shadow_param, beta))
        buffers = dict(model.named_buffers())
        for name, shadow_buffer in self.shadow.named_buffers():
            shadow_buffer.copy_(buffers[name])
        self.num_updates += 1
        return beta

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Copy the averaged parameters and buffers into ``model`` (of the shadow's architecture), e.g. for export."""
        model.load_state_dict(self.shadow.state_dict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the shadow module with the wrapped module's arguments."""
        return self.shadow(*args, **kwargs)
