"""What a pipeline run did to each stage (kept apart so the runner, the index and the checks share it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aras400k.pipeline.stages import RunLayout

__all__ = ["PipelineError", "PipelineResult", "StageRecord", "duration", "read_record"]


class PipelineError(RuntimeError):
    """A stage's command failed; the message names the stage, the command and its log."""


@dataclass
class StageRecord:
    """What happened to one stage in this run.

    Attributes:
        name: Stage name.
        status: ``ran``, ``skipped`` (finished earlier), ``not run`` (``--only`` / ``skip``) or ``planned`` (dry run).
        seconds: Wall time of this run's commands (or the recorded time of a skipped stage).
        commands: The command lines.
    """

    name: str
    status: str
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)


@dataclass
class PipelineResult:
    """The stages' records and the index file."""

    stages: list[StageRecord]
    index: Path | None


def read_record(layout: RunLayout, name: str) -> dict[str, Any] | None:
    """The completion record ``run_dir/.pipeline/<name>.json`` of a finished stage (``None``: none or unreadable)."""
    try:
        record: dict[str, Any] = json.loads((layout.state / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return record


def duration(seconds: float, minutes_unit: str = "m", seconds_unit: str = "s") -> str:
    """``1m05s`` or ``3.2s`` (``1 min 05 s`` with units ``" min "`` and ``" s"``)."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}{minutes_unit}{rest:02d}{seconds_unit}" if minutes else f"{seconds:.1f}{seconds_unit}"
