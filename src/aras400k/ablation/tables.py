"""The paper's Tables 3 and 4 from finished runs: rows, Markdown, CSV and the per-class F1 chart.

The builders work on :class:`~aras400k.ablation.runs.RunScores` lists, without training.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aras400k.ablation.runs import RunScores
from aras400k.classes import CLASS_NAMES
from aras400k.files import write_atomic
from aras400k.plotting import save_figure

__all__ = [
    "MEAN",
    "TABLE3_METRICS",
    "build_table3",
    "build_table4",
    "format_table3",
    "format_table4",
    "plot_per_class_f1",
]

#: Table 3's columns: score key (as in ``scores.json``) and header.
TABLE3_METRICS: tuple[tuple[str, str], ...] = (
    ("f1_macro", "F1"),
    ("iou_macro", "IoU"),
    ("precision_macro", "precision"),
    ("recall_macro", "recall"),
    ("accuracy", "accuracy"),
)
#: Model name of the rows that average over architectures.
MEAN = "mean"


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _order(runs: Sequence[RunScores], attribute: str, given: Sequence[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    return list(dict.fromkeys(getattr(run, attribute) for run in runs))


def _grid_rows(
    runs: Sequence[RunScores],
    keys: Sequence[str],
    configurations: Sequence[str] | None,
    archs: Sequence[str] | None,
) -> dict[tuple[str, str], dict[str, float]]:
    """``(configuration, model) -> {key: value}``; ``(configuration, MEAN)`` rows where several architectures ran."""
    by_cell = {(run.configuration, run.arch): run for run in runs}
    out: dict[tuple[str, str], dict[str, float]] = {}
    for conf in _order(runs, "configuration", configurations):
        present = [by_cell[(conf, arch)] for arch in _order(runs, "arch", archs) if (conf, arch) in by_cell]
        for run in present:
            out[(conf, run.arch)] = {k: run.scores.get(k, float("nan")) for k in keys}
        if len(present) > 1:  # the mean of one architecture would only repeat its row
            out[(conf, MEAN)] = {k: _nanmean([run.scores.get(k, float("nan")) for run in present]) for k in keys}
    return out


def build_table3(
    runs: Sequence[RunScores],
    configurations: Sequence[str] | None = None,
    archs: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Table 3: overall test scores of the finished ``runs`` per configuration and architecture, plus a mean row.

    ``configurations`` and ``archs`` (within a configuration) give the row order (default: order
    of first appearance). Rows are ``{"configuration", "model", "f1_macro", "iou_macro",
    "precision_macro", "recall_macro", "accuracy"}`` with fractions; after each configuration's
    architectures, a row with model :data:`MEAN` averaging them (NaN values skipped)
    when there is more than one.
    """
    keys = [key for key, _ in TABLE3_METRICS]
    grid = _grid_rows(runs, keys, configurations, archs)
    return [{"configuration": conf, "model": model, **values} for (conf, model), values in grid.items()]


def build_table4(
    runs: Sequence[RunScores],
    configurations: Sequence[str] | None = None,
    archs: Sequence[str] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> list[dict[str, Any]]:
    """Table 4: per-class test F1 of the finished ``runs`` per configuration, one block per architecture and the mean.

    ``configurations`` (the row order within a block) and ``archs`` (the block order; the mean
    block comes last) default to the order of first appearance. Rows are ``{"model",
    "configuration", <class>: fraction, ...}`` grouped by model; NaN where a class has no score.
    """
    keys = [f"f1_{name}" for name in class_names]
    grid = _grid_rows(runs, keys, configurations, archs)
    models = [*_order(runs, "arch", archs), MEAN]  # MEAN rows exist only with several architectures
    return [
        {"model": model, "configuration": conf, **{n: values[f"f1_{n}"] for n in class_names}}
        for model in models
        for (conf, row_model), values in grid.items()
        if row_model == model
    ]


def pct(value: float) -> str:
    """A fraction as a percentage with two decimals, or ``n/a`` for NaN."""
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return [f"| {' | '.join(line)} |" for line in (header, align, *rows)]


def format_table3(rows: Sequence[dict[str, Any]]) -> str:
    """Table 3 ``rows`` (from :func:`build_table3`) as Markdown, values in %, mean rows in bold, NaN as ``n/a``."""
    header = ["training data", "model", *(title for _, title in TABLE3_METRICS)]
    body = []
    for row in rows:
        model = f"**{MEAN}**" if row["model"] == MEAN else row["model"]
        body.append([row["configuration"], model, *(pct(row[key]) for key, _ in TABLE3_METRICS)])
    return "\n".join(_markdown(header, body, numeric_from=2))


def format_table4(rows: Sequence[dict[str, Any]], class_names: Sequence[str] = CLASS_NAMES) -> str:
    """Table 4 ``rows`` (from :func:`build_table4`) as Markdown, values in %, NaN as ``n/a``.

    One ``###`` block per architecture and one for the mean; ``class_names`` are the columns.
    """
    blocks = []
    for model in dict.fromkeys(row["model"] for row in rows):
        title = "mean over architectures" if model == MEAN else model
        body = [[row["configuration"], *(pct(row[n]) for n in class_names)] for row in rows if row["model"] == model]
        blocks.append("\n".join([f"### {title}", "", *_markdown(["training data", *class_names], body, 1)]))
    return "\n\n".join(blocks)


def write_csv(rows: Sequence[dict[str, Any]], labels: Sequence[str], values: Sequence[str], path: Path) -> Path:
    """Label columns as text, value columns in % with 4 decimals (NaN as ``n/a``)."""
    lines: list[list[str]] = [[*labels, *values]]
    for row in rows:
        cells = ["n/a" if math.isnan(row[v]) else f"{100 * row[v]:.4f}" for v in values]
        lines.append([*(str(row[label]) for label in labels), *cells])
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(lines)
    return write_atomic(path, buffer.getvalue(), tmp_name=f".{path.name}.tmp")


def plot_per_class_f1(
    table4: Sequence[dict[str, Any]], path: str | Path, class_names: Sequence[str] = CLASS_NAMES
) -> Path:
    """Write to the PNG ``path`` a bar chart of per-class F1: a group per class, a bar per training configuration.

    Of the ``table4`` rows, the :data:`MEAN` ones are drawn (with a single architecture, its rows).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    rows = [row for row in table4 if row["model"] == MEAN]
    models = list(dict.fromkeys(row["model"] for row in table4))
    if not rows and len(models) == 1:
        rows = list(table4)
    what = "mean over architectures" if rows and rows[0]["model"] == MEAN else (models[0] if models else "")
    x = np.arange(len(class_names))
    width = 0.8 / max(1, len(rows))
    fig = Figure(figsize=(max(8.0, 0.2 * len(rows) * len(class_names) + 3), 4.8), dpi=120, layout="constrained")
    ax = fig.subplots()
    colours = colormaps["tab10" if len(rows) <= 10 else "tab20"]
    for j, row in enumerate(rows):
        values = np.array([100 * row[name] for name in class_names], dtype=float)
        offsets = x - 0.4 + width * (j + 0.5)
        ax.bar(offsets, np.nan_to_num(values), width, label=row["configuration"], color=colours(j % colours.N))
        for offset, value in zip(offsets, values, strict=True):
            if math.isnan(value):
                ax.text(offset, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set_xticks(x, list(class_names))
    ax.set_xlabel("land-cover class")
    ax.set_ylim(0, 100)
    ax.set_ylabel("test F1 on the real test split (%)")
    ax.set_title(f"Per-class test F1 by training data ({what})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(title="bars: training data", loc="outside right upper", frameon=False)
    return save_figure(fig, path)
