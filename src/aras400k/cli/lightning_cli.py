"""The LightningCLI behind ``aras`` and ``aras-fit`` (:class:`ArasCLI`); it imports Lightning.

:mod:`aras400k.cli.main` holds the entry points, which import this module only when an
invocation needs the real parser (see :mod:`aras400k.cli.fast`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from aras400k.budget import summarize_fit
from aras400k.checkpoints import CheckpointError, checkpoint_errors, install_safe_checkpoint_io, is_url
from aras400k.cli.fast import record_options
from aras400k.errors import ConfigError, is_disk_full
from aras400k.threads import configure_threads, usable_cores

__all__ = ["ArasCLI", "build_cli", "input_error"]

#: ``--ckpt_path`` values Lightning resolves itself (not files).
_SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


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

    - Checkpoints load through :class:`aras400k.checkpoints.SafeCheckpointIO` (``docs/safety.md``).
    - A class that refuses its arguments (a negative batch size, an unknown encoder)
      raises :class:`~aras400k.errors.ConfigError` with that class's own message.
    - A ``--ckpt_path`` that does not exist is refused before anything runs.
    - Evaluating without ``--ckpt_path`` warns that the model is untrained.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Add ``--threads`` (torch's intra-op threads, see :mod:`aras400k.threads`) and ``--predictions.*``.

        ``--predictions.*`` configures the :class:`~aras400k.prediction.PredictionWriter`, a
        callback of every subcommand that writes only in ``predict`` (see ``docs/segmentation.md``).
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
        """Parse as Lightning does, without its warning about passing ``args`` (the console scripts do).

        The option names are recorded first for the fast argument check of the next run
        (:func:`aras400k.cli.fast.record_options`).
        """
        record_options(parser)
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
        """Build the Trainer (``kwargs`` as Lightning's) and make it load checkpoints safely."""
        trainer = super().instantiate_trainer(**kwargs)
        install_safe_checkpoint_io(trainer)
        return trainer

    def _check_ckpt_path(self) -> None:
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt is None or str(ckpt) in _SPECIAL_CKPT_PATHS or is_url(str(ckpt)):
            return
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"--ckpt_path {ckpt} does not exist (give a .ckpt file, 'last' or 'best')")

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

    def _before_evaluation(self) -> None:
        """Check ``--ckpt_path``; warn if none is given (the model would be untrained)."""
        self._check_ckpt_path()
        if self.config[self.subcommand].get("ckpt_path") is None:
            warnings.warn(
                f"'aras {self.subcommand}' without --ckpt_path evaluates an untrained model "
                "(random weights); pass --ckpt_path runs/.../checkpoints/*.ckpt",
                UserWarning,
                stacklevel=1,
            )

    before_validate = before_test = before_predict = _before_evaluation


def build_cli(args: list[str], **parser_kwargs: Any) -> ArasCLI:
    """Build and run the ``aras`` LightningCLI on ``args`` (see :func:`aras400k.cli.main.cli`); return the CLI object.

    ``parser_kwargs`` go to the parsers (``exit_on_error=False`` makes argument errors raise
    ``argparse.ArgumentError``).
    """
    return ArasCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs=parser_kwargs or None,
        args=args,
    )


def input_error(err: BaseException) -> str | None:
    """The one-line message of an error that means bad input (``None`` for a bug: show the traceback)."""
    from argparse import ArgumentError

    from aras400k.classes import UnknownColourError
    from aras400k.data.shards import ManifestError, SampleError

    if isinstance(err, (ArgumentError, ConfigError, CheckpointError, ManifestError, SampleError, UnknownColourError)):
        return _message(err)
    if isinstance(err, FileNotFoundError):
        return _message(err) if err.filename is None else f"{err.filename} does not exist"
    if is_disk_full(err):
        assert isinstance(err, OSError)
        where = f" while writing {err.filename}" if err.filename else ""
        return f"{err.strerror or 'no space left on device'}{where}; free some space and rerun"
    return None
