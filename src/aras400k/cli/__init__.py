"""Command-line entry points, one small module per command (see ``docs/architecture.md``).

What the light commands share (``docs/extending.md``, "Options from signatures"): the
parser that raises instead of exiting, one-line errors and the calls built from parsed options.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import tarfile
from argparse import ArgumentError
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from aras400k.locking import LockedError
from aras400k.threads import configure_threads

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = [
    "LOCKED_STATUS",
    "add_worker_arguments",
    "call_with",
    "command_main",
    "command_parser",
    "config_from",
    "fail",
    "import_class",
    "optional_argument",
    "parse_and_run",
    "run_command",
]

T = TypeVar("T")


class EntryPoint(Protocol):
    """A console entry point: ``main(args=None) -> exit status``."""

    def __call__(self, args: list[str] | None = None) -> int: ...


#: Errors that mean "bad input": reported in one line, exit status 2.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError)
#: Exit status when another run holds the output's lock (``EX_TEMPFAIL``: try again later).
LOCKED_STATUS = 75
#: Errors that mean "the data is damaged" (a truncated or corrupt tar shard): one line, exit status 1.
DATA_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError,)


def fail(program: str, message: str, status: int = 2) -> NoReturn:
    """Print ``PROGRAM: error: MESSAGE`` (what was wrong, what to do) in one line to stderr; exit ``status``."""
    print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)


def run_command(program: str, command: Callable[[], int | None]) -> int:
    """Run ``command``, return its exit status (``None``: 0); an input error exits 2 with a one-line message.

    An output locked by another run (:class:`~aras400k.locking.LockedError`) gives one line
    naming the holder and :data:`LOCKED_STATUS`; a damaged shard (:data:`DATA_ERRORS`),
    exit status 1, as ``aras-data verify`` does. Messages start with ``program``.
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
    """Parse ``args`` (default: ``sys.argv[1:]``) with ``parser``, then :func:`run_command` ``command(cfg)``.

    The parser is a jsonargparse one built to raise ``argparse.ArgumentError`` (``exit_on_error=False``).
    """
    try:
        cfg = parser.parse_args(args)
    except ArgumentError as err:
        fail(program, str(err))
    return run_command(program, lambda: command(cfg))


def add_worker_arguments(parser: Any, output: str) -> None:
    """Add ``--shard_index`` / ``--num_shards`` (this process's part of a run split over workers) to ``parser``.

    ``output`` says, for the help text, what each worker writes and how the parts are joined.
    """
    parser.add_argument(
        "--shard_index",
        type=int,
        default=0,
        help="this worker's part of a split run, 0..num_shards-1 (e.g. $SLURM_ARRAY_TASK_ID)",
    )
    parser.add_argument("--num_shards", type=int, default=1, help=f"workers the run is split over; {output}")


def import_class(path: str, base: type, option: str) -> type:
    """Import the class at ``path`` (``module.Class``, e.g. ``my_prompts.LocatedCaptioner``), ``base`` or a subclass.

    For options naming your subclass; ``option`` is the option's name, for messages.

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


def command_parser(
    program: str | None, description: str, *, config: bool = True, options_of: type | None = None
) -> ArgumentParser:
    """A jsonargparse parser of ``program`` (``None``: a subcommand) that raises ``argparse.ArgumentError``.

    ``description`` is the ``--help`` text; ``config`` adds ``--config FILE.yaml``; the fields of
    the dataclass ``options_of`` become options with its defaults and help (see :func:`config_from`).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=program, description=description, exit_on_error=False)
    if config:
        parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    if options_of is not None:
        parser.add_class_arguments(options_of, as_group=False)
    return parser


def command_main(
    program: str,
    build_parser: Callable[[], ArgumentParser],
    run: Callable[[Namespace], int | None],
    statuses: str = "0 on success, 2 on bad input (one line on stderr)",
) -> EntryPoint:
    """Console entry point ``main(args=None) -> int`` of ``program``: ``build_parser()``, then ``run(cfg)``.

    ``statuses`` lists the exit statuses, for the entry point's docstring.
    """

    def main(args: list[str] | None = None) -> int:
        return parse_and_run(program, build_parser(), args, run)

    main.__doc__ = (
        f"Run ``{program}``.\n\nArgs:\n    args: Command-line arguments (default: ``sys.argv[1:]``).\n\n"
        f"Returns:\n    The exit status: {statuses}.\n"
    )
    main.__module__ = getattr(run, "__module__", __name__)
    return main


def optional_argument(parser: ArgumentParser, dest: str, needed_when: str) -> None:
    """Make the required option ``dest`` (e.g. ``transformers.model_path``) default to ``None``.

    For a backend's required argument that only matters when that backend is chosen (the
    command checks it); ``needed_when`` says when it must be given, for the help text.

    Raises:
        KeyError: If the parser has no such option.
    """
    for action in parser._actions:
        if action.dest == dest:
            action.required = False
            action.default = None
            action.help = f"{action.help or ''} Needed {needed_when}.".strip()
            return
    raise KeyError(dest)


def call_with(
    function: Callable[..., T], *namespaces: Namespace, like: Callable[..., Any] | None = None, **given: Any
) -> T:
    """Call ``function`` with the parsed options named like its parameters.

    Args:
        function: A function or class.
        *namespaces: Parsed options; a parameter takes the value of the first one holding
            its name (a group's options, then the top level's).
        like: Take the parameter names from this signature instead (a base class whose
            options were added, when ``function`` is a user's subclass).
        **given: Explicit arguments (an option with another name or needing conversion);
            they win over options of the same name.

    Returns:
        What ``function`` returns.
    """
    options: dict[str, Any] = {}
    for name in inspect.signature(like or function).parameters:
        found = next((cfg for cfg in namespaces if name in cfg), None)
        if name not in given and found is not None:
            options[name] = found[name]
    return function(**options, **given)


def config_from(cls: type[T], parser: ArgumentParser, cfg: Namespace) -> T:
    """The dataclass ``cls`` (nested classes instantiated) from the options ``parser`` added for it into ``cfg``."""
    init = parser.instantiate(cfg)
    return cls(**{f.name: init[f.name] for f in fields(cls)})  # type: ignore[arg-type]
