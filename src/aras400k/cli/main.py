"""``aras`` (LightningCLI: fit / validate / test / predict) and ``aras-fit`` (= ``aras fit``).

Any LightningModule and LightningDataModule can be named in the config
(``class_path`` + ``init_args``), so the same entry point trains the segmenters and the
GANs, and user subclasses::

    aras-fit --config configs/seg_unet.yaml
    aras test --config configs/seg_unet.yaml --ckpt_path runs/seg_unet/checkpoints/best.ckpt
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from aras400k.budget import summarize_fit
from aras400k.checkpoints import CheckpointError, checkpoint_errors, install_safe_checkpoint_io, is_url
from aras400k.cli import fail
from aras400k.errors import ConfigError, is_disk_full
from aras400k.threads import configure_threads, usable_cores

__all__ = ["ArasCLI", "cli", "fit_main", "main"]

#: ``--ckpt_path`` values Lightning resolves itself (not files).
_SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")

#: Setting this environment variable to 1 shows the traceback of an input error.
DEBUG_VARIABLE = "ARAS_DEBUG"


def _innermost(err: BaseException) -> BaseException:
    """The first error of a chain (``raise ... from ...`` and implicit contexts)."""
    seen = {id(err)}
    while (inner := err.__cause__ or err.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        err = inner
    return err


def _message(err: BaseException) -> str:
    """One line from an exception (``KeyError`` messages without their quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


class ArasCLI(LightningCLI):
    """LightningCLI with aras400k's checks.

    - Checkpoints load through :class:`aras400k.checkpoints.SafeCheckpointIO` (tensors
      and plain values only, for local paths, URLs and resumed runs alike).
    - A class that refuses its arguments (a negative batch size, an unknown encoder)
      raises :class:`~aras400k.errors.ConfigError` with that class's own message.
    - A ``--ckpt_path`` that does not exist is refused before anything runs.
    - Evaluating without ``--ckpt_path`` warns that the model is untrained.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Add ``--threads`` (torch's intra-op threads, see :mod:`aras400k.threads`) and ``--predictions.*``.

        ``--predictions.*`` configures the :class:`~aras400k.prediction.PredictionWriter`, a
        callback of every subcommand that writes only in ``predict`` (files under
        ``<trainer.default_root_dir>/predictions`` by default; see ``docs/segmentation.md``).

        Args:
            parser: The subcommand's parser.
        """
        from aras400k.prediction import PredictionWriter

        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="torch intra-op threads (default: ARAS_THREADS or OMP_NUM_THREADS if set, else the usable "
            "cores less one per loader worker)",
        )

    def before_instantiate_classes(self) -> None:
        """Size torch's thread pool to the machine before anything is built."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        data = config.get("data")
        init_args = data.get("init_args") if data is not None and hasattr(data, "get") else None
        workers = init_args.get("num_workers", 0) if init_args is not None and hasattr(init_args, "get") else 0
        count = configure_threads(config.get("threads"), loader_workers=int(workers or 0))
        rank_zero_info(
            f"aras: {count} torch thread{'s' if count > 1 else ''} ({usable_cores()} usable cores, "
            f"{workers or 0} loader worker{'s' if workers != 1 else ''})"
        )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse as Lightning does, without its warning about passing ``args`` (the console scripts do)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the hyperparameters of a local ``--ckpt_path`` here (tensors-only); refusals in one line."""
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        with checkpoint_errors(str(ckpt)):
            super()._parse_ckpt_path()

    def instantiate_classes(self) -> None:
        """Build the model, data and trainer; an argument a class refuses becomes a :class:`ConfigError`."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
            raise ConfigError(_message(_innermost(err))) from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the Trainer and make it load checkpoints safely.

        Args:
            **kwargs: As Lightning's.

        Returns:
            The Trainer.
        """
        trainer = super().instantiate_trainer(**kwargs)
        install_safe_checkpoint_io(trainer)
        return trainer

    def _check_ckpt_path(self) -> None:
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt is None or str(ckpt) in _SPECIAL_CKPT_PATHS or is_url(str(ckpt)):
            return
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist (give a .ckpt file, 'last' or 'best')")

    def _warn_untrained(self) -> None:
        if self.config[self.subcommand].get("ckpt_path") is None:
            warnings.warn(
                f"'aras {self.subcommand}' without --ckpt_path evaluates an untrained model "
                "(random weights); pass --ckpt_path runs/.../checkpoints/*.ckpt",
                UserWarning,
                stacklevel=2,
            )

    def before_fit(self) -> None:
        """Check ``--ckpt_path`` (resume) before training."""
        self._check_ckpt_path()

    def after_fit(self) -> None:
        """Say whether the run did its work: ``training_summary.json`` and a warning line per problem."""
        import torch

        summary = summarize_fit(self.trainer, self.model, threads=torch.get_num_threads())
        if not self.trainer.is_global_zero:
            return
        path = summary.write(self.trainer.default_root_dir)
        for warning in summary.warnings:
            print(f"aras-fit: warning: {warning} (see {path})", file=sys.stderr, flush=True)

    def before_validate(self) -> None:
        """Check ``--ckpt_path``; warn if none is given."""
        self._check_ckpt_path()
        self._warn_untrained()

    def before_test(self) -> None:
        """Check ``--ckpt_path``; warn if none is given."""
        self._check_ckpt_path()
        self._warn_untrained()

    def before_predict(self) -> None:
        """Check ``--ckpt_path``; warn if none is given."""
        self._check_ckpt_path()
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


def _input_error(err: BaseException) -> str | None:
    """The one-line message of an error that means bad input (``None`` for a bug: show the traceback)."""
    from aras400k.classes import UnknownColourError
    from aras400k.data.shards import ManifestError, SampleError

    if isinstance(err, (ConfigError, CheckpointError, ManifestError, SampleError, UnknownColourError)):
        return _message(err)
    if isinstance(err, FileNotFoundError):
        return _message(err) if err.filename is None else f"{err.filename} does not exist"
    if is_disk_full(err):
        assert isinstance(err, OSError)
        where = f" while writing {err.filename}" if err.filename else ""
        return f"{err.strerror or 'no space left on device'}{where}; free some space and rerun"
    return None


def run_cli(program: str, args: list[str]) -> None:
    """Run the CLI; input errors become ``PROGRAM: error: MESSAGE`` on one line and exit status 2.

    Set ``ARAS_DEBUG=1`` to see the traceback instead.

    Args:
        program: Command name for messages.
        args: Command-line arguments.
    """
    try:
        cli(args)
    except Exception as err:
        message = _input_error(err)
        if message is None or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        fail(program, message)


def main(args: list[str] | None = None) -> None:
    """Console entry point of ``aras`` (see :func:`cli`).

    Args:
        args: Command-line arguments (default: ``sys.argv[1:]``).
    """
    run_cli("aras", sys.argv[1:] if args is None else args)


def fit_main(args: list[str] | None = None) -> None:
    """Console entry point of ``aras-fit``, i.e. ``aras fit ARGS``.

    Args:
        args: Arguments after ``fit`` (default: ``sys.argv[1:]``).
    """
    run_cli("aras-fit", ["fit", *(sys.argv[1:] if args is None else args)])
