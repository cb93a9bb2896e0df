"""Command-line entry points, one small module per command (see ``docs/architecture.md``)."""

from __future__ import annotations

import importlib
import sys
import tarfile
from argparse import ArgumentError
from collections.abc import Callable
from typing import Any, NoReturn

from aras400k.locking import LockedError
from aras400k.threads import configure_threads

__all__ = ["LOCKED_STATUS", "add_worker_arguments", "fail", "import_class", "parse_and_run", "run_command"]

#: Errors that mean "bad input": reported in one line, exit status 2.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError)
#: Exit status when another run holds the output's lock (``EX_TEMPFAIL``: try again later).
LOCKED_STATUS = 75
#: Errors that mean "the data is damaged" (a truncated or corrupt tar shard): one line, exit status 1.
DATA_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError,)


def fail(program: str, message: str, status: int = 2) -> NoReturn:
    """Print ``PROGRAM: error: MESSAGE`` on one line to stderr and exit.

    Args:
        program: Command name.
        message: What was wrong and what to do.
        status: Exit status.
    """
    print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)


def run_command(program: str, command: Callable[[], int | None]) -> int:
    """Run a command body, turning input errors into a one-line message and exit status 2.

    An output in use by another run (:class:`~aras400k.locking.LockedError`) also gives
    one line, naming the holder, with exit status :data:`LOCKED_STATUS`.
    A damaged shard (:data:`DATA_ERRORS`) is reported the same way with exit status 1,
    as ``aras-data verify`` does for any problem it finds.

    Args:
        program: Command name used in the message.
        command: The work; returns an exit status (``None`` means 0).

    Returns:
        The exit status.
    """
    try:
        configure_threads()
        return command() or 0
    except LockedError as err:
        fail(program, str(err), status=LOCKED_STATUS)
    except DATA_ERRORS as err:
        fail(program, str(err), status=1)
    except INPUT_ERRORS as err:
        fail(program, str(err))
    except KeyboardInterrupt:
        fail(program, "interrupted", status=130)


def parse_and_run(program: str, parser: Any, args: list[str] | None, command: Callable[[Any], int | None]) -> int:
    """Parse arguments with a parser that raises (``exit_on_error=False``), then run the command.

    Parser errors and input errors both become one line on stderr and exit status 2.

    Args:
        program: Command name used in messages.
        parser: A jsonargparse parser built to raise ``argparse.ArgumentError``.
        args: Command-line arguments (default: ``sys.argv[1:]``).
        command: The work, given the parsed config; returns an exit status.

    Returns:
        The exit status.
    """
    try:
        cfg = parser.parse_args(args)
    except ArgumentError as err:
        fail(program, str(err))
    return run_command(program, lambda: command(cfg))


def add_worker_arguments(parser: Any, output: str) -> None:
    """Add ``--shard_index`` / ``--num_shards``: this process's part of a run split over workers.

    Args:
        parser: A jsonargparse parser.
        output: What each worker writes and how the parts are joined (for the help text).
    """
    parser.add_argument(
        "--shard_index",
        type=int,
        default=0,
        help="this worker's part of a split run, 0..num_shards-1 (e.g. $SLURM_ARRAY_TASK_ID)",
    )
    parser.add_argument("--num_shards", type=int, default=1, help=f"workers the run is split over; {output}")


def import_class(path: str, base: type, option: str) -> type:
    """Import a class named ``module.Class`` that must subclass ``base`` (for options naming your subclass).

    Args:
        path: Dotted path, e.g. ``my_prompts.LocatedCaptioner``; its module must be importable.
        base: The class it must be or subclass.
        option: The option's name, for messages.

    Returns:
        The class.

    Raises:
        ValueError: If the path cannot be imported or names something else.
    """
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{option} must be module.Class, got {path!r}")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {option} {path!r} ({err}); is its module on PYTHONPATH?") from err
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{option} {path!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    return found
