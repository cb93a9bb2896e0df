"""``GANModule``: what the two GAN LightningModules (StyleGAN3, SPADEGAN) share.

A subclass builds ``generator``, ``discriminator``, ``ema`` (an
:class:`~aras400k.models.gan.ExponentialMovingAverage`) and ``guard`` (a
:class:`~aras400k.models.gan.NonFiniteGuard`), writes ``training_step`` from the pieces
below, and fills in :meth:`GANModule.fid_samples` and :meth:`GANModule.draw_sample_grid`.
The base holds:

- ``iterations``, a buffer counting training iterations (Lightning's ``global_step``
  counts optimiser steps), so checkpoints carry it and a resumed run continues it;
- manual optimisation with :meth:`_optimise` (the NaN/inf-guarded step) and
  :meth:`update_ema` (called once per iteration before the counter moves);
- :meth:`sampler`, the EMA (or trained) generator in eval mode;
- sample grids, written by the :class:`~aras400k.callbacks.SampleGrid` the module adds
  itself (every ``sample_every_n_steps`` iterations and after every validation) to
  ``<log dir>/samples/`` as :attr:`train_grid_name` and :attr:`val_grid_name`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from torch import nn

from aras400k.callbacks.samples import SampleGrid
from aras400k.checkpoints import SafeLoadingMixin
from aras400k.models.gan.ema import ExponentialMovingAverage
from aras400k.models.gan.regularizers import NonFiniteGuard, guarded_step

__all__ = ["GANModule"]


class GANModule(SafeLoadingMixin, LightningModule):  # type: ignore[misc]  # Lightning types load_from_checkpoint as a private descriptor
    """Base of the GAN LightningModules: iteration counter, guarded steps, EMA, FID samples, sample grids.

    Subclasses call ``super().__init__()`` first, then
    :func:`aras400k.checkpoints.save_hyperparameters` (``self.save_hyperparameters()`` would
    keep the calling frames alive until a garbage collection); a
    hyper-parameter ``sample_every_n_steps`` sets the grids' interval (absent or 0: only
    after validation).
    """

    iterations: torch.Tensor
    generator: nn.Module
    discriminator: nn.Module
    ema: ExponentialMovingAverage
    guard: NonFiniteGuard

    #: File stem of the grid written during training (``str.format`` fields: ``iterations``, ``epoch``).
    train_grid_name = "train_it{iterations:07d}"
    #: File stem of the grid written after every validation.
    val_grid_name = "val_it{iterations:07d}"

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))
        #: Path of the last sample grid written (``None`` before the first, and on ranks other than 0).
        self.last_grid_path: Path | None = None

    # -- what a subclass provides --------------------------------------------------------

    def fid_samples(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Generated images for a validation batch, for :class:`~aras400k.callbacks.GeneratorFID`.

        Args:
            batch: A validation batch.
            batch_idx: Index of the batch; seeds the samples, so FID changes only with the generator.

        Returns:
            ``(B, 3, H, W)`` EMA samples in ``[-1, 1]``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement fid_samples")  # abstract hook

    def draw_sample_grid(self, path: Path, batch: Mapping[str, Any] | None) -> bool:
        """Draw the sample grid into the PNG file ``path`` (its folder may not exist yet).

        Args:
            path: Destination file.
            batch: The first batch of the last validation (before any, a training batch);
                ``None`` when none was seen.

        Returns:
            Whether a file was written.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement draw_sample_grid")  # abstract hook

    # -- training ------------------------------------------------------------------------

    def _optimise(self, loss: torch.Tensor, net: nn.Module, optimizer: Any, name: str) -> bool:
        """:func:`~aras400k.models.gan.guarded_step` of ``net``'s optimiser; whether it stepped."""
        return guarded_step(loss, net.parameters(), optimizer, self.guard, name, self.manual_backward)

    def update_ema(self, batch_size: int) -> float:
        """Move the EMA generator toward the trained one and return the decay used.

        Call once per iteration, before ``iterations += 1``, with the iteration's total batch size.
        """
        return self.ema.update(self.generator, int(self.iterations), batch_size)

    @contextlib.contextmanager
    def sampler(self, use_ema: bool = True) -> Iterator[nn.Module]:
        """Yield the EMA generator (or with ``use_ema=False`` the trained one) in eval mode, then its mode back."""
        net = self.ema.shadow if use_ema else self.generator
        was_training = net.training
        net.eval()
        try:
            yield net
        finally:
            net.train(was_training)

    # -- sample grids ----------------------------------------------------------------------

    def sample_dir(self) -> Path:
        """Folder of the sample grids: ``<log dir or default_root_dir>/samples``."""
        trainer = self.trainer
        return Path(trainer.log_dir or trainer.default_root_dir) / "samples"

    def write_sample_grid(self, name: str, batch: Mapping[str, Any] | None = None) -> Path | None:
        """Write ``<sample_dir>/<name>.png`` with :meth:`draw_sample_grid` (on rank 0 only).

        Returns:
            The path written, or ``None`` (another rank, or nothing to draw).
        """
        if self.global_rank != 0:
            return None
        path = self.sample_dir() / f"{name}.png"
        if not self.draw_sample_grid(path, batch):
            return None
        self.last_grid_path = path
        return path

    def configure_callbacks(self) -> list[Callback]:
        """Add a :class:`~aras400k.callbacks.SampleGrid` (``sample_every_n_steps``) unless the trainer has one."""
        if any(isinstance(callback, SampleGrid) for callback in getattr(self.trainer, "callbacks", [])):
            return []
        return [SampleGrid(every_n_steps=int(self.hparams.get("sample_every_n_steps", 0)))]

    # -- hooks -----------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Silence Lightning's "modules in eval mode" warning when only the EMA copy is in eval mode (by design)."""
        others = [name for name, module in self.named_modules() if not module.training and not name.startswith("ema.")]
        if self.training and not others:
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read checkpoints from before ``iterations`` was a buffer (``{"spade_gan": {"iterations": N}}``)."""
        state = checkpoint.get("state_dict")
        if isinstance(state, dict) and "iterations" not in state:
            old = checkpoint.pop("spade_gan", {}).get("iterations", 0)
            state["iterations"] = torch.tensor(int(old), dtype=torch.long)
