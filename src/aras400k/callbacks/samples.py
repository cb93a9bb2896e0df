"""``SampleGrid``: a GAN's sample grids as PNG files, during training and after every validation.

Every :class:`~aras400k.models.gan.GANModule` adds one itself (every
``sample_every_n_steps`` iterations of its hyper-parameters); list one in
``trainer.callbacks`` to choose another interval. The module draws the grid
(:meth:`~aras400k.models.gan.GANModule.draw_sample_grid`) and names it
(``train_grid_name``, ``val_grid_name``); the callback decides when, and keeps the first
validation batch for modules that sample from data (SPADE's masks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from lightning.pytorch import Callback, LightningModule, Trainer

from aras400k.errors import check_at_least

if TYPE_CHECKING:
    from aras400k.models.gan.module import GANModule

__all__ = ["SampleGrid"]


class SampleGrid(Callback):
    """Write the module's sample grid every ``every_n_steps`` training iterations and after every validation.

    Files go to ``<log dir>/samples/<name>.png``. The grid's data is the first batch of
    the last validation (sanity check included), before any the first grid's training batch.

    Args:
        every_n_steps: Training iterations between grids (0: only after validation).

    Raises:
        ValueError: If ``every_n_steps`` is negative.
    """

    def __init__(self, every_n_steps: int = 500) -> None:
        super().__init__()
        check_at_least("every_n_steps", every_n_steps, 0)
        self.every_n_steps = every_n_steps
        self.batch: Mapping[str, Any] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check that the module is a GAN module.

        Raises:
            TypeError: If the module is not a :class:`~aras400k.models.gan.GANModule`.
        """
        from aras400k.models.gan.module import GANModule

        if not isinstance(pl_module, GANModule):
            raise TypeError(f"SampleGrid needs a GANModule (StyleGAN3, SPADEGAN); got {type(pl_module).__name__}")

    def _write(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        gan = cast("GANModule", pl_module)  # checked in setup
        pattern = gan.train_grid_name if stage == "train" else gan.val_grid_name
        gan.write_sample_grid(pattern.format(iterations=int(gan.iterations), epoch=trainer.current_epoch), self.batch)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Keep the first validation batch."""
        if batch_idx == 0 and dataloader_idx == 0:
            self.batch = batch

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Write the training grid when the module's ``iterations`` reaches a multiple of ``every_n_steps``."""
        iterations = int(cast("GANModule", pl_module).iterations)
        if self.every_n_steps > 0 and iterations % self.every_n_steps == 0:
            if self.batch is None:
                self.batch = batch
            self._write(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the validation grid (not after the sanity check)."""
        if not trainer.sanity_checking:
            self._write(trainer, pl_module, "val")
