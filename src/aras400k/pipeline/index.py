"""``index.md`` of a pipeline run: every table, figure and checkpoint, one line each.

Rewritten after every stage, so an interrupted run's index shows what exists so far.
Links are relative to the run folder; a figure is also shown inline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aras400k.files import write_atomic
from aras400k.pipeline.records import StageRecord, duration, read_record

if TYPE_CHECKING:
    from aras400k.pipeline.stages import RunLayout, Stage

__all__ = ["write_index"]


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def write_index(layout: RunLayout, stages: Sequence[Stage], records: Sequence[StageRecord]) -> Path:
    """Write ``run_dir/index.md`` of all ``stages`` (in order) and return its path.

    ``records`` says what this invocation did to each stage so far.
    """
    root = layout.run_dir
    status = {r.name: r.status for r in records}
    lines = [
        f"# Pipeline run `{root}`",
        "",
        "Every stage's output, with one line on what it is. Each stage ran one of the library's",
        "commands on the config in [`configs/`](configs); rerun a stage by hand with the command",
        "shown, or with `aras-pipeline --config ... --only STAGE`. Full command output is in",
        "[`logs/`](logs).",
        "",
        "| stage | what | wall time | state | command |",
        "|---|---|---:|---|---|",
    ]
    total = 0.0
    for stage in stages:
        record = read_record(layout, stage.name)
        seconds = float(record["seconds"]) if record else 0.0
        total += seconds
        state = status.get(stage.name, "not run")
        state = "finished" if record or state == "ran" else state
        if record and stage.warnings():
            state += " ⚠ not trustworthy (see below)"
        commands = record["commands"] if record else []
        command = "<br>".join(f"`{c}`" for c in commands) or "-"
        wall = duration(seconds, " min ", " s") if record else "-"
        lines.append(f"| {stage.name} | {stage.summary} | {wall} | {state} | {command} |")
    lines += ["", f"Total recorded wall time: {duration(total, ' min ', ' s')}.", ""]
    finished = [stage for stage in stages if read_record(layout, stage.name)]
    flagged = [(stage.name, warning) for stage in finished for warning in stage.warnings()]
    if flagged:
        lines += ["## ⚠ Results not to trust", ""]
        lines += [f"- **{name}**: {warning}." for name, warning in flagged]
        lines.append("")
    glance = [text for stage in stages if (text := stage.results())]
    if glance:
        note = "Headline numbers of each stage (with the demo's tiny models they show the machinery, not the paper)."
        lines += ["## Results at a glance", "", note, ""]
        for text in glance:
            lines += [text, ""]
    for stage in stages:
        found = [a for a in stage.artefacts() if a.path.exists()]
        log = layout.logs / f"{stage.name}.log"
        if not found and not log.exists():
            continue
        lines += [f"## {stage.name}: {stage.summary}", ""]
        record = read_record(layout, stage.name)
        if record and record.get("work"):
            amounts = ", ".join(f"{name}: {count:,}" for name, count in record["work"].items())
            lines += [f"Written: {amounts}.", ""]
        for artefact in found:
            link = _rel(artefact.path, root)
            lines.append(f"- [`{link}`]({link}): {artefact.what}")
        if log.exists():
            lines.append(f"- [`{_rel(log, root)}`]({_rel(log, root)}): the stage's command output")
        figures = [a for a in found if a.path.suffix == ".png"]
        if figures:
            lines.append("")
            lines += [f"![{a.what}]({_rel(a.path, root)})" for a in figures]
        lines.append("")
    return write_atomic(root / "index.md", "\n".join(lines))
