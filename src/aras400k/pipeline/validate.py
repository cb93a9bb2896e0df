"""Dry run: write every stage's config and check it with its command's own parser.

Nothing is trained or written besides ``run_dir/configs``. LightningCLI configs are
checked with ``--print_config`` (which resolves every ``class_path`` and validates
its ``init_args``); the other commands' configs are parsed by their jsonargparse parsers.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Sequence
from typing import IO

from aras400k.pipeline.records import StageRecord
from aras400k.pipeline.stages import Command, Stage

__all__ = ["check_command", "validate_commands"]

#: The command modules (``aras400k.cli.<module>``) of the programs besides ``aras`` / ``aras-fit``.
CLI_MODULES = {
    "aras-data": "data",
    "aras-synth": "synth",
    "aras-caption": "caption",
    "aras-eval": "eval",
    "aras-ablate": "ablate",
    "aras-map": "map",
}


def check_command(command: Command) -> None:
    """Parse ``command`` without running it.

    Raises:
        ValueError: If its parser rejects the arguments (the parser's message is included).
    """
    from aras400k.cli.main import cli

    args = list(command.args)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if command.program in ("aras-fit", "aras"):
                full = ["fit", *args] if command.program == "aras-fit" else args
                try:
                    cli([*full, "--print_config"])
                except SystemExit as stop:
                    if stop.code not in (None, 0):
                        raise ValueError(f"exit status {stop.code}") from None
            else:
                importlib.import_module(f"aras400k.cli.{CLI_MODULES[command.program]}").build_parser().parse_args(args)
    except (SystemExit, ValueError, TypeError, KeyError) as err:
        detail = " ".join(sink.getvalue().split())[-600:]
        raise ValueError(f"`{command}` does not parse: {err} {detail}".strip()) from err


def validate_commands(stages: Sequence[Stage], stream: IO[str]) -> list[StageRecord]:
    """Write the ``stages``' configs, check every command, print the plan to ``stream``; a ``planned`` record each.

    Raises:
        ValueError: On the first command that does not parse.
    """
    records = []
    for number, stage in enumerate(stages, start=1):
        if stage.name in stage.config.skip:
            print(f"[{number}/{len(stages)}] {stage.name}: skipped by the config", file=stream)
            records.append(StageRecord(stage.name, "not run"))
            continue
        commands = stage.commands()
        for command in commands:
            if command.program == "aras" and "test" in command.args:
                continue  # the same config as the fit command, checked there
            check_command(command)
        print(f"[{number}/{len(stages)}] {stage.name}: {stage.summary}", file=stream)
        for command in commands:
            print(f"    {command}", file=stream)
        records.append(StageRecord(stage.name, "planned", commands=[str(c) for c in commands]))
    print(f"dry run: every command parses; configs in {stages[0].layout.configs}", file=stream)
    return records
