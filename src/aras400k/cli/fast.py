"""Answers of ``aras`` / ``aras-fit`` that need no Lightning: cached ``--help``, plain argument errors.

Building the LightningCLI parser imports Lightning (and torch), seconds before anything
is printed, so the real parser's help texts (:func:`capture_help`) and option names
(:func:`record_options`) are kept in :func:`cache_dir` under :func:`environment_key`, and
the release's answers ship as :data:`SHIPPED` (``python -m aras400k.cli.fast`` rewrites
it). How they are used and keyed: ``docs/extending.md`` ("the help cache").
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_VARIABLE",
    "HELP_FORMS",
    "HELP_WIDTH",
    "SHIPPED",
    "SUBCOMMANDS",
    "answer",
    "cache_dir",
    "capture_help",
    "check_arguments",
    "environment_key",
    "help_path",
    "is_help_request",
    "make_shipped",
    "options_path",
    "parser_options",
    "record_options",
    "shipped_answers",
]

#: The LightningCLI subcommands of ``aras``.
SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: ``ARAS_CLI_CACHE=0`` turns the cached answers off (every call builds the real parser).
CACHE_VARIABLE = "ARAS_CLI_CACHE"
#: Distributions whose version changes what the parser prints.
_DISTRIBUTIONS = ("lightning", "jsonargparse", "torch", "docstring-parser", "torchmetrics")
#: Environment variables that change what the parser accepts or prints.
_ENV_PREFIXES = ("JSONARGPARSE_", "PL_", "LIGHTNING_")
_HELP = ("-h", "--help")
#: Columns of every help text (argparse reads ``COLUMNS``): cached and shipped texts fit any terminal.
HELP_WIDTH = 80
#: The answers shipped with the package (see the module docstring).
SHIPPED = Path(__file__).with_name("answers.json.gz")
#: The help requests whose texts are shipped: (program, arguments).
HELP_FORMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aras", ("--help",)),
    *(("aras", (name, "--help")) for name in SUBCOMMANDS),
    ("aras-fit", ("fit", "--help")),
)
#: A ``--config`` value taken for a file name (else it may be an inline YAML/JSON config).
_CONFIG_FILE = re.compile(r"^[\w./~+-]+\.(ya?ml|json|jsonnet)$")


def enabled() -> bool:
    """Whether cached answers are used (``ARAS_CLI_CACHE`` is not ``0``)."""
    return os.environ.get(CACHE_VARIABLE, "1").strip() not in ("0", "false", "no")


def cache_dir() -> Path:
    """The cache folder: ``$ARAS_CACHE_DIR``, ``$XDG_CACHE_HOME/aras400k/cli`` or ``~/.cache/aras400k/cli``."""
    if os.environ.get("ARAS_CACHE_DIR"):
        return Path(os.environ["ARAS_CACHE_DIR"]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root).expanduser() / "aras400k" / "cli"


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version(distribution)
    return "absent"


def _source_hash() -> str:
    """sha256 over the path and bytes of every ``.py`` file of the aras400k package."""
    import aras400k

    root = Path(aras400k.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@cache
def environment_key() -> str:
    """A hash (24 hex digits) of everything the parser's options and texts depend on (see the module docstring)."""
    import aras400k

    parts: dict[str, Any] = {
        "aras400k": aras400k.__version__,
        "python": [sys.version, sys.prefix],
        "sources": _source_hash(),
        "versions": {name: _version(name) for name in _DISTRIBUTIONS},
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _folder() -> Path:
    return cache_dir() / environment_key()


def help_path(args: list[str], prog: str | None = None) -> Path:
    """The file (it may not exist) caching the help text of the help request ``args`` (:func:`is_help_request`).

    ``prog`` is the program name the parser shows (default: ``basename(sys.argv[0])``, as argparse).
    """
    name = hashlib.sha256(json.dumps(_help_id(args, prog)).encode()).hexdigest()[:24]
    return _folder() / f"help-{name}.txt"


def _help_id(args: list[str], prog: str | None = None) -> list[str]:
    """``[program, *arguments]`` of a help request, ``-h`` written as ``--help`` (they print the same)."""
    prog = os.path.basename(sys.argv[0]) if prog is None else prog
    return [prog, *("--help" if a in _HELP else a for a in args)]


def options_path() -> Path:
    """Where the option names of the parser are cached."""
    return _folder() / "options.json"


def is_help_request(args: list[str]) -> bool:
    """Whether ``args`` is a plain help request: ``--help``, or a subcommand then ``--help`` (or ``-h``)."""
    return (len(args) == 1 and args[0] in _HELP) or (len(args) == 2 and args[0] in SUBCOMMANDS and args[1] in _HELP)


def _write(path: Path, text: str) -> None:
    """Write a cache file atomically, or nothing if it cannot be written."""
    from aras400k.files import write_atomic

    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, tmp_name=f"{path.name}.{os.getpid()}.tmp")


def _read(path: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text(encoding="utf-8")
    return None


class _Tee:
    """A text stream that writes through to ``stream`` and keeps a copy."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _help_width() -> Iterator[None]:
    """Format help :data:`HELP_WIDTH` columns wide (argparse sizes it from ``COLUMNS``)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


@contextlib.contextmanager
def capture_help(args: list[str]) -> Iterator[None]:
    """Around the real parser parsing ``args``: format a plain help request :data:`HELP_WIDTH` wide and store it.

    Stdout is passed through (and copied) while the parser runs.
    """
    if not is_help_request(args):
        yield
        return
    tee = _Tee(sys.stdout)
    try:
        with _help_width(), contextlib.redirect_stdout(tee):
            yield
    except SystemExit as stop:
        if stop.code in (0, None) and enabled():
            _write(help_path(args), "".join(tee.parts))
        raise


def parser_options(parser: Any) -> dict[str, Any]:
    """Sorted option names of the LightningCLI ``parser``: ``{"root": [...], "subcommands": {name: [...]}}``."""
    import argparse

    found: dict[str, Any] = {"root": [], "subcommands": {}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found["subcommands"][name] = sorted(o for a in sub._actions for o in a.option_strings)
        else:
            found["root"].extend(action.option_strings)
    found["root"].sort()
    return found


def record_options(parser: Any) -> None:
    """Store :func:`parser_options` of the LightningCLI ``parser`` (before parsing), once per cache key."""
    if not enabled():
        return
    path = options_path()
    if not path.exists():
        _write(path, json.dumps(parser_options(parser), indent=1))


def _known(name: str, options: set[str]) -> bool | None:
    """``True`` if the parser takes ``name``, ``False`` if it cannot, ``None`` if unsure."""
    name = name.rstrip("+")
    if name in options:
        return True
    parts = name.split(".")
    if any(".".join(parts[:i]) in options for i in range(1, len(parts))):
        return None  # under a known option: a class's init_args, a dict's key, ... the parser decides
    if any(option.startswith(name) for option in options):
        return None  # an abbreviation
    return False


def check_arguments(args: list[str], options: dict[str, Any]) -> str | None:
    """The one-line error the real parser would surely report for ``args`` (starting with the subcommand).

    ``options`` are the recorded option names (:func:`record_options`); ``None`` when the
    arguments may be valid or the check is unsure.
    """
    if any(a in _HELP or a.startswith("--print_config") or a == "--" for a in args):
        return None
    if not args:
        return f'expected "subcommand" to be one of {{{",".join(SUBCOMMANDS)}}}, but it was not provided.'
    command, rest = args[0], args[1:]
    if command.startswith("-"):
        return None  # root options before the subcommand: the real parser decides
    if command not in options["subcommands"]:
        listed = ", ".join(repr(name) for name in SUBCOMMANDS)
        return f"argument subcommand: invalid choice: {command!r} (choose from {listed})"
    known = set(options["subcommands"][command])
    for i, token in enumerate(rest):
        name, has_value, value = token.partition("=")
        if name in ("-c", "--config"):
            value = value if has_value else (rest[i + 1] if i + 1 < len(rest) else "")
            if _CONFIG_FILE.match(value) and not Path(value).expanduser().exists():
                return f"Parser key \"config\": File does not exist: '{value}'"
    unknown: list[str] = []
    taking = False
    for token in rest:
        if token.startswith("--"):
            verdict = _known(token.partition("=")[0], known)
            if verdict is None:
                return None
            taking = not verdict
            if taking:
                unknown.append(token)
        elif taking:
            unknown.append(token)  # a value of an unknown option: argparse lists it too
    return f"unrecognized arguments: {' '.join(unknown)}" if unknown else None


def answer(program: str, args: list[str]) -> int | None:
    """Answer ``args`` (starting with the subcommand) from the cache if it can: print the help, or refuse in one line.

    Returns 0 after the help; an error exits with status 2 through :func:`aras400k.cli.fail`
    (``program``: ``aras`` or ``aras-fit``); ``None`` when the real parser must run.
    """
    if not enabled():
        return None
    if is_help_request(args):
        text = _read(help_path(args))
        if text is None and (shipped := shipped_answers()) is not None:
            text = shipped["help"].get("\0".join(_help_id(args)))
        if text is None:
            return None
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    recorded = _read(options_path())
    if recorded is not None:
        try:
            options = json.loads(recorded)
        except ValueError:
            return None
    elif (shipped := shipped_answers()) is not None:
        options = shipped["options"]
    else:
        return None
    message = check_arguments(args, options)
    if message is None:
        return None
    from aras400k.cli import fail

    fail(program, message)


def _file_hashes(names: list[str]) -> dict[str, str]:
    """sha256 of each named file of the aras400k package (``"absent"`` for a missing one)."""
    root = Path(__file__).resolve().parents[1]
    hashes = dict.fromkeys(names, "absent")
    for name in names:
        with contextlib.suppress(OSError):
            hashes[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()
    return hashes


def _shipped_key(files: list[str]) -> dict[str, Any]:
    """What the shipped answers depend on, as found in this installation."""
    import aras400k

    return {
        "aras400k": aras400k.__version__,
        "python": list(sys.version_info[:2]),
        "versions": {name: _version(name) for name in _DISTRIBUTIONS},
        "files": _file_hashes(files),
    }


def shipped_answers(path: Path | None = None) -> dict[str, Any] | None:
    """The shipped answers in ``path`` (default: :data:`SHIPPED`) if they were made for this installation.

    They are ``{"key": ..., "help": {program and arguments joined by NUL: text}, "options": ...}``;
    ``None`` when the file is unreadable, its key differs, or a variable of ``_ENV_PREFIXES`` is set.
    """
    if any(name.startswith(_ENV_PREFIXES) for name in os.environ):
        return None
    try:
        data = json.loads(gzip.decompress((path or SHIPPED).read_bytes()))
        current = _shipped_key(list(data["key"]["files"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return data if data["key"] == current else None


def make_shipped() -> dict[str, Any]:
    """The answers to ship (as :func:`shipped_answers` returns them) of every :data:`HELP_FORMS` request.

    Call it in a fresh process (``python -m aras400k.cli.fast``): the key lists the aras400k
    modules imported by then, those the parser's output can depend on.
    """
    import io
    import tempfile

    from aras400k.cli.lightning_cli import build_cli

    texts: dict[str, str] = {}
    options: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ARAS_CACHE_DIR"] = tmp  # the parser records its options here
        for prog, args in HELP_FORMS:
            sys.argv[0] = prog
            out = io.StringIO()
            with contextlib.suppress(SystemExit), _help_width(), contextlib.redirect_stdout(out):
                build_cli(list(args))
            texts["\0".join(_help_id(list(args), prog))] = out.getvalue()
        options = json.loads(options_path().read_text())
    root = Path(__file__).resolve().parents[1]
    files = sorted(
        Path(str(module.__file__)).resolve().relative_to(root).as_posix()
        for name, module in list(sys.modules.items())
        if (name == "aras400k" or name.startswith("aras400k.")) and getattr(module, "__file__", None)
    )
    return {"key": _shipped_key(files), "help": texts, "options": options}


if __name__ == "__main__":  # python -m aras400k.cli.fast: rewrite the shipped answers
    answers = make_shipped()
    SHIPPED.write_bytes(gzip.compress(json.dumps(answers, indent=1, sort_keys=True).encode(), mtime=0))
    print(f"{SHIPPED}: {len(answers['help'])} help texts, {len(answers['key']['files'])} modules in the key")
