"""The release's CSVs: class percentages per image and captions.

``class_percentages/{split}.csv`` holds a ``filename`` column and one loosely named
percentage column per class; a caption CSV holds ``filename`` and ``caption`` columns,
and optionally ``model`` and ``mode``. Rows are attached to the images they name.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from aras400k.classes import CLASS_NAMES
from aras400k.data.release.layout import Entry, SplitPlan
from aras400k.data.release.problems import (
    BAD_CSV,
    CSV_COLUMN_IGNORED,
    CSV_DIFFERS,
    CSV_DUPLICATE,
    CSV_ROW_WITHOUT_FILE,
    CSV_SUM,
    EMPTY_CAPTION,
    Problem,
    ProblemLog,
)

__all__: list[str] = []

#: Largest disagreement, in percentage points, between a CSV composition and its mask.
_CSV_TOLERANCE = 1.0

#: Normalised CSV column name (lowercase letters and digits only) -> class name.
_CLASS_ALIASES: dict[str, str] = {
    alias: name
    for name, aliases in {
        "tree": ("tree", "trees", "treecover"),
        "shrub": ("shrub", "shrubs", "shrubland"),
        "grass": ("grass", "grassland", "grasslands"),
        "crop": ("crop", "crops", "cropland"),
        "built": ("built", "builtup", "builtarea"),
        "barren": ("barren", "bare", "baresparse", "baresparsevegetation", "bareland"),
        "water": ("water", "permanentwater", "waterbodies", "permanentwaterbodies"),
    }.items()
    for alias in aliases
}
_PERCENT_SUFFIX_RE = re.compile(r"(percentage|percent|pct|share)$")
_FILENAME_COLUMNS = ("filename", "file", "filepath", "image", "imagename", "imagefile", "imagepath", "name")
_CAPTION_COLUMNS = ("caption", "text", "captiontext")
_CAPTION_MODES = ("hybrid", "vision", "text")


def _normalise_column(name: str) -> str:
    """Lowercase a column name and keep only its letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.strip().lower())


def _class_for_column(name: str) -> str | None:
    """Map a percentage column name (``Tree cover``, ``built-up``, ``water_pct``) to a class."""
    norm = _normalise_column(name)
    return _CLASS_ALIASES.get(norm) or _CLASS_ALIASES.get(_PERCENT_SUFFIX_RE.sub("", norm))


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    """Index of the first column whose normalised name is in ``names`` (in ``names`` order)."""
    normalised = [_normalise_column(h) for h in header]
    return next((normalised.index(name) for name in names if name in normalised), None)


def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """A CSV file's header and ``(line number, cells)`` rows, blank rows left out; unreadable or empty is a problem."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise Problem(BAD_CSV, f"cannot read the CSV ({err})", path) from err
    if not rows:
        raise Problem(BAD_CSV, "the CSV is empty", path)
    header = [cell.strip() for cell in rows[0][1]]
    return header, ((line, row) for line, row in rows[1:] if any(cell.strip() for cell in row))


def _cell(row: list[str], index: int, line: int, column: str) -> str:
    """The stripped cell ``index`` of ``row``; a short row is a problem."""
    if index >= len(row):
        raise Problem(BAD_CSV, f"line {line} has no {column!r} cell")
    return row[index].strip()


def _optional_cell(row: list[str], index: int | None) -> str:
    """The stripped cell ``index`` of ``row``, or ``""`` when the column or cell is absent."""
    return row[index].strip() if index is not None and index < len(row) else ""


def _percentage_columns(header: list[str], path: Path, problems: ProblemLog) -> dict[str, int]:
    """Map each class to its one percentage column; other non-filename columns are reported."""
    columns: dict[str, int] = {}
    filename_column = _find_column(header, _FILENAME_COLUMNS)
    for index, name in enumerate(header):
        if index == filename_column:
            continue
        cls = _class_for_column(name)
        if cls is None:
            problems.add(path, CSV_COLUMN_IGNORED, f"column {name!r} is not a class ({', '.join(CLASS_NAMES)})")
        elif cls in columns:
            raise Problem(BAD_CSV, f"columns {header[columns[cls]]!r} and {name!r} both name class {cls}", path)
        else:
            columns[cls] = index
    missing = [c for c in CLASS_NAMES if c not in columns]
    if missing:
        raise Problem(BAD_CSV, f"no percentage column for {', '.join(missing)}; columns are {header}", path)
    return columns


def _parse_percentages(row: list[str], line: int, columns: dict[str, int]) -> dict[str, float]:
    """One row's class percentages (0-100), in class order; a missing, non-numeric or out-of-range one is a problem."""
    values: dict[str, float] = {}
    for cls in CLASS_NAMES:
        text = _cell(row, columns[cls], line, cls)
        try:
            value = float(text)
        except ValueError:
            raise Problem(BAD_CSV, f"line {line}: {cls} percentage {text!r} is not a number") from None
        if not 0.0 <= value <= 100.0:
            raise Problem(BAD_CSV, f"line {line}: {cls} percentage {value} is outside 0-100")
        values[cls] = value
    return values


def attach_percentages(plan: SplitPlan, path: Path, problems: ProblemLog) -> None:
    """Attach the class percentages of ``path`` to the images of ``plan``."""
    try:
        header, rows = _read_csv(path)
        filename_column = _find_column(header, _FILENAME_COLUMNS)
        if filename_column is None:
            raise Problem(BAD_CSV, f"no 'filename' column; columns are {header}", path)
        columns = _percentage_columns(header, path, problems)
    except Problem as problem:
        problems.add_problem(problem, path)
        return
    for line, row in rows:
        try:
            filename = _cell(row, filename_column, line, "filename")
            values = _parse_percentages(row, line, columns)
        except Problem as problem:
            problems.add_problem(problem, path)
            continue
        entry = plan.find(filename)
        if entry is None:
            problems.add(path, CSV_ROW_WITHOUT_FILE, f"line {line}: {filename!r} is not an image of split {plan.name}")
        elif entry.csv_percent is not None:
            problems.add(path, CSV_DUPLICATE, f"line {line}: {filename!r} has a row already ({entry.csv_where})")
        else:
            total = sum(values.values())
            if abs(total - 100.0) > _CSV_TOLERANCE:
                problems.add(path, CSV_SUM, f"line {line}: the percentages of {filename!r} sum to {total:.2f}")
            entry.csv_percent = values
            entry.csv_where = f"{path}:{line}"


def attach_captions(plans: list[SplitPlan], path: Path, problems: ProblemLog) -> None:
    """Append the captions of ``path`` to the images of ``plans`` it names, in row order.

    ``model`` and ``mode`` come from their columns, else the CSV's stem and the mode it names
    (``hybrid``, ``vision``, ``text``; else ``unknown``).
    """
    try:
        header, rows = _read_csv(path)
        filename_column = _find_column(header, _FILENAME_COLUMNS)
        caption_column = _find_column(header, _CAPTION_COLUMNS)
        if filename_column is None or caption_column is None:
            raise Problem(BAD_CSV, f"a caption CSV needs 'filename' and 'caption' columns; it has {header}", path)
    except Problem as problem:
        problems.add_problem(problem, path)
        return
    model_column = _find_column(header, ("model",))
    mode_column = _find_column(header, ("mode",))
    default_mode = next((name for name in _CAPTION_MODES if name in path.stem.lower()), "unknown")
    splits = ", ".join(plan.name for plan in plans)
    for line, row in rows:
        try:
            filename = _cell(row, filename_column, line, "filename")
            text = _cell(row, caption_column, line, "caption")
        except Problem as problem:
            problems.add_problem(problem, path)
            continue
        entries = [entry for plan in plans if (entry := plan.find(filename)) is not None]
        if not entries:
            problems.add(path, CSV_ROW_WITHOUT_FILE, f"line {line}: {filename!r} is not an image of split {splits}")
            continue
        if not text:
            problems.add(path, EMPTY_CAPTION, f"line {line}: the caption of {filename!r} is empty; not imported")
            continue
        model = _optional_cell(row, model_column) or path.stem
        mode = _optional_cell(row, mode_column) or default_mode
        for entry in entries:
            entry.captions.append({"text": text, "model": model, "mode": mode})


def compare_composition(entry: Entry, from_mask: dict[str, float], problems: ProblemLog) -> None:
    """Report a CSV composition more than 1 percentage point off the mask's on any class."""
    assert entry.csv_percent is not None
    diffs = {c: 100.0 * from_mask[c] - entry.csv_percent[c] for c in CLASS_NAMES}
    worst = max(CLASS_NAMES, key=lambda c: abs(diffs[c]))
    if abs(diffs[worst]) > _CSV_TOLERANCE + 1e-9:
        mask_has = f"{100.0 * from_mask[worst]:.2f}%"
        detail = f"{entry.csv_where} gives {worst} {entry.csv_percent[worst]:.2f}% but the mask has {mask_has}"
        problems.add(entry.image, CSV_DIFFERS, f"{detail}; the mask's composition is kept")
