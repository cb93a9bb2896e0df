"""``aras`` (LightningCLI: fit / validate / test / predict) and ``aras-fit`` (= ``aras fit``).

Any LightningModule and LightningDataModule can be named in the config
(``class_path`` + ``init_args``), so the same entry point trains the segmenters and the
GANs, and user subclasses::

    aras-fit --config configs/seg_unet.yaml
    aras test --config configs/seg_unet.yaml --ckpt_path runs/seg_unet/checkpoints/best.ckpt
"""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

__all__ = ["ArasCLI", "cli", "fit_main", "main"]


class ArasCLI(LightningCLI):
    """LightningCLI with aras400k's checks: warn when evaluating a model that was never trained."""

    def _warn_untrained(self) -> None:
        if self.config[self.subcommand].get("ckpt_path") is None:
            warnings.warn(
                f"'aras {self.subcommand}' without --ckpt_path evaluates an untrained model "
                "(random weights); pass --ckpt_path runs/.../checkpoints/*.ckpt",
                UserWarning,
                stacklevel=2,
            )

    def before_validate(self) -> None:
        """Warn if no checkpoint is given."""
        self._warn_untrained()

    def before_test(self) -> None:
        """Warn if no checkpoint is given."""
        self._warn_untrained()

    def before_predict(self) -> None:
        """Warn if no checkpoint is given."""
        self._warn_untrained()


def cli(args: list[str] | None = None) -> ArasCLI:
    """Build and run the ``aras`` LightningCLI.

    Args:
        args: Command-line arguments, e.g. ``["fit", "--config", "configs/seg_unet.yaml"]``
            (default: ``sys.argv[1:]``). Passing them makes the CLI testable in-process.

    Returns:
        The CLI object (holding ``trainer``, ``model`` and ``datamodule``).
    """
    return ArasCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """Console entry point of ``aras`` (see :func:`cli`).

    Args:
        args: Command-line arguments (default: ``sys.argv[1:]``).
    """
    cli(args)


def fit_main(args: list[str] | None = None) -> None:
    """Console entry point of ``aras-fit``, i.e. ``aras fit ARGS``.

    Args:
        args: Arguments after ``fit`` (default: ``sys.argv[1:]``).
    """
    cli(["fit", *(sys.argv[1:] if args is None else args)])
