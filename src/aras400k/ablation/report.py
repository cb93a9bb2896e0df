"""The study's outputs: Tables 3 and 4 as Markdown and CSV, the per-class F1 chart and ``summary.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aras400k.ablation.config import AblationConfig
from aras400k.ablation.runs import RunScores, write_text
from aras400k.ablation.tables import (
    TABLE3_METRICS,
    build_table3,
    build_table4,
    format_table3,
    format_table4,
    plot_per_class_f1,
    write_csv,
)
from aras400k.classes import CLASS_NAMES

__all__ = ["AblationResult", "write_report"]


@dataclass
class AblationResult:
    """What :func:`~aras400k.ablation.run_ablation` did and wrote.

    Attributes:
        runs: Scores of every finished run of the grid, in table order.
        table3: Table 3 rows (see :func:`build_table3`).
        table4: Table 4 rows (see :func:`build_table4`).
        files: Output name (``table3.md``, ``per_class_f1.png``, ...) -> path.
        trained: ``configuration/arch`` of the runs trained now.
        skipped: ``configuration/arch`` of the runs skipped because ``scores.json`` existed.
        missing: ``configuration/arch`` of the runs without scores (``tables_only``).
    """

    runs: list[RunScores]
    table3: list[dict[str, Any]]
    table4: list[dict[str, Any]]
    files: dict[str, Path]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def table3_markdown(self) -> str:
        """Table 3 as Markdown (values in %)."""
        return format_table3(self.table3)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_report(config: AblationConfig, runs: Sequence[RunScores], missing: Sequence[str] = ()) -> AblationResult:
    """Write Tables 3 and 4 (Markdown + CSV), the per-class F1 chart and ``summary.json`` of the finished ``runs``.

    ``config`` gives the output folder and the row order; ``missing`` (``configuration/arch`` of
    runs without scores) is noted under the tables. Returns the tables and the files written.
    """
    out = Path(config.out_dir)
    names = [c.name for c in config.configurations]
    table3 = build_table3(runs, names, config.archs)
    table4 = build_table4(runs, names, config.archs)
    note = f"\n\nNo scores yet for: {', '.join(missing)} (means are over the runs with scores).\n" if missing else "\n"
    intro = "Test scores (%) on the real test split"
    intro4 = "Per-class test F1 (%) on the real test split"
    files = {
        "table3.md": write_text(out / "table3.md", f"## Table 3. {intro}\n\n{format_table3(table3)}{note}"),
        "table3.csv": write_csv(table3, ["configuration", "model"], [k for k, _ in TABLE3_METRICS], out / "table3.csv"),
        "table4.md": write_text(out / "table4.md", f"## Table 4. {intro4}\n\n{format_table4(table4)}{note}"),
        "table4.csv": write_csv(table4, ["model", "configuration"], list(CLASS_NAMES), out / "table4.csv"),
        "per_class_f1.png": plot_per_class_f1(table4, out / "per_class_f1.png"),
    }
    summary = {
        "note": "scores are fractions in [0, 1]; the .md/.csv tables show them in %",
        "config": asdict(config),
        "runs": [run.to_json() for run in runs],
        "missing": list(missing),
        "table3": table3,
        "table4": table4,
        "files": {name: str(path) for name, path in files.items()},
    }
    files["summary.json"] = write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    return AblationResult(runs=list(runs), table3=table3, table4=table4, files=files, missing=list(missing))
