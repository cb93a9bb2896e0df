"""``aras`` (LightningCLI: fit / validate / test / predict) and ``aras-fit`` (= ``aras fit``).

Any LightningModule and LightningDataModule can be named in the config
(``class_path`` + ``init_args``), so the same entry point trains the segmenters and the
GANs, and user subclasses::

    aras-fit --config configs/seg_unet.yaml
    aras test --config configs/seg_unet.yaml --ckpt_path runs/seg_unet/checkpoints/best.ckpt

This module does not import Lightning: ``--help`` and plain argument errors are answered
from a cache of the real parser's output (:mod:`aras400k.cli.fast`); everything else
builds :class:`~aras400k.cli.lightning_cli.ArasCLI`.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from aras400k._lazy import lazy_attributes
from aras400k.cli import fail
from aras400k.cli.fast import SUBCOMMANDS, answer, capture_help

if TYPE_CHECKING:
    from aras400k.cli.lightning_cli import ArasCLI

__all__ = ["ArasCLI", "cli", "fit_main", "main", "run_cli"]

#: Setting this environment variable to 1 shows the traceback of an input error.
DEBUG_VARIABLE = "ARAS_DEBUG"


def cli(args: list[str] | None = None) -> ArasCLI:
    """Build and run the ``aras`` LightningCLI; return it (holding ``trainer``, ``model`` and ``datamodule``).

    ``args``, e.g. ``["fit", "--config", "configs/seg_unet.yaml"]`` (default: ``sys.argv[1:]``),
    make the CLI testable in-process.
    """
    from aras400k.cli.lightning_cli import build_cli

    return build_cli(sys.argv[1:] if args is None else args)


def run_cli(program: str, args: list[str]) -> None:
    """Run the CLI; input errors become ``PROGRAM: error: MESSAGE`` on one line and exit status 2.

    ``--help`` and plain argument errors are answered from the cache when it can
    (:mod:`aras400k.cli.fast`). Set ``ARAS_DEBUG=1`` to see the traceback of an input
    error instead. ``program`` starts the messages; ``args`` start with the subcommand.
    """
    status = answer(program, args)
    if status is not None:
        raise SystemExit(status)
    from aras400k.cli.lightning_cli import build_cli, input_error

    raising: dict[str, Any] = {"exit_on_error": False} | {name: {"exit_on_error": False} for name in SUBCOMMANDS}
    try:
        with capture_help(args):
            build_cli(args, **raising)
    except Exception as err:
        message = input_error(err)
        if message is None or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        fail(program, message)


def main(args: list[str] | None = None) -> None:
    """Console entry point of ``aras`` (see :func:`cli`) on ``args`` (default: ``sys.argv[1:]``)."""
    run_cli("aras", sys.argv[1:] if args is None else args)


def fit_main(args: list[str] | None = None) -> None:
    """Console entry point of ``aras-fit``, i.e. ``aras fit ARGS`` (default: ``sys.argv[1:]``)."""
    run_cli("aras-fit", ["fit", *(sys.argv[1:] if args is None else args)])


__getattr__, __dir__ = lazy_attributes(__name__, {"ArasCLI": "aras400k.cli.lightning_cli"}, __all__)
