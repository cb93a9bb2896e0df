"""Import the published ARAS400k release (folders of PNGs) into shard sets.

The release layout this reads::

    ROOT/{train,val,test,synth}/images/*.png   RGB images
    ROOT/{train,val,test,synth}/masks/*.png    colour masks in the release colours (same stem)
    ROOT/class_percentages/{split}.csv         optional: ``filename`` + one percentage column per class
    ROOT/captions/{split}/*.csv                optional: ``filename,caption``
    ROOT/captions/{split}*.csv                 optional: ``filename,caption``

Each split folder becomes the shard set ``OUT/{split}`` (see :mod:`aras400k.data.shards`).
The import is loud, never lossy: every file that cannot be imported (an image without
a mask, a mask without an image, a size mismatch, an unknown mask colour, a corrupt
PNG, two names that give the same key) is a *problem* named with its file. With
``on_error="fail"`` the first one stops the import and nothing is written; with
``on_error="skip"`` the file is skipped and the problem listed in the
:class:`ImportReport`. Warnings (a CSV row for a file that does not exist, a CSV
composition that disagrees with the mask) never stop the import and skip nothing.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, UnknownColourError, colour_to_index
from aras400k.data.composition import composition
from aras400k.data.shards import MANIFEST_NAME, Sample, ShardWriter

__all__ = ["ImportReport", "ReleaseImportError", "import_release"]

#: The split folders of the release, in import order.
_RELEASE_SPLITS = ("train", "val", "test", "synth")
#: The split whose images may come without masks.
_UNLABELLED_SPLIT = "synth"
#: File suffixes read as pictures (case-insensitive).
_PICTURE_SUFFIXES = (".png", ".tif", ".tiff")
#: Image modes converted to RGB without loss of meaning.
_IMAGE_MODES = ("RGB", "RGBA", "L", "P")
#: One-channel mask modes read as class indices.
_INDEX_MODES = ("L", "LA", "I", "I;16", "I;16B", "I;16L")
_MADE_BY = "aras-data import"
_SKIP_HINT = "pass --on-error skip (on_error='skip') to skip such files and list them in the report"
_SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-]")
#: Largest disagreement, in percentage points, between a CSV composition and its mask.
_CSV_TOLERANCE = 1.0

# Problem kinds: every problem's reason starts with one of these, then ": ".
_IMAGE_WITHOUT_MASK = "image without mask"
_MASK_WITHOUT_IMAGE = "mask without image"
_SIZE_MISMATCH = "size mismatch"
_UNKNOWN_COLOUR = "unknown mask colour"
_UNREADABLE = "unreadable file"
_KEY_COLLISION = "key collision"
_BAD_CSV = "bad csv"
_CSV_ROW_WITHOUT_FILE = "csv row for missing file"
_CSV_DIFFERS = "csv composition differs"
_CSV_SUM = "csv percentages do not sum to 100"
_CSV_DUPLICATE = "duplicate csv row"
_CSV_COLUMN_IGNORED = "csv column ignored"
_EMPTY_CAPTION = "empty caption"
_UNEXPECTED_FILE = "unexpected file"
#: Kinds that are reported but never stop the import nor skip a sample.
_WARNING_KINDS = frozenset(
    {
        _CSV_ROW_WITHOUT_FILE,
        _CSV_DIFFERS,
        _CSV_SUM,
        _CSV_DUPLICATE,
        _CSV_COLUMN_IGNORED,
        _EMPTY_CAPTION,
        _UNEXPECTED_FILE,
    }
)

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


class ReleaseImportError(ValueError):
    """The release folder cannot be imported (missing, empty, or a file with a problem)."""


@dataclass
class ImportReport:
    """What :func:`import_release` wrote and every problem it found.

    Attributes:
        written: Split name -> number of samples written to its shard set.
        problems: ``(file path, reason)`` for every problem, in the order found. A
            reason reads ``"<kind>: <details>"``, e.g. ``"image without mask: ..."``.
    """

    written: dict[str, int]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, max_problems: int = 10) -> str:
        """Render the report for a terminal.

        Args:
            max_problems: How many problems to list one by one.

        Returns:
            Multi-line text: samples per split, problem counts by kind (warnings
            marked) and the first ``max_problems`` problems.
        """
        per_split = ", ".join(f"{split} {n}" for split, n in self.written.items())
        lines = [f"wrote {sum(self.written.values())} samples ({per_split or 'no splits'})"]
        if not self.problems:
            lines.append("no problems found")
            return "\n".join(lines)
        kinds = Counter(_kind_of(reason) for _, reason in self.problems)
        lines.append(f"{len(self.problems)} problems:")
        for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            tag = " (warning)" if kind in _WARNING_KINDS else ""
            lines.append(f"  {kind}: {count}{tag}")
        shown = self.problems[:max_problems]
        lines.append(f"first {len(shown)}:")
        lines.extend(f"  {path}: {reason}" for path, reason in shown)
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


def _kind_of(reason: str) -> str:
    """Return the kind a problem reason starts with."""
    return reason.split(": ", 1)[0]


class _Problem(Exception):
    """A problem with one file, raised by the readers and recorded by :class:`_ProblemLog`."""

    def __init__(self, kind: str, detail: str, path: Path | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.path = path


class _ProblemLog:
    """Collects problems; raises on the first real one when ``on_error="fail"``."""

    def __init__(self, on_error: Literal["skip", "fail"]) -> None:
        self.on_error = on_error
        self.items: list[tuple[str, str]] = []

    def add(self, path: Path, kind: str, detail: str) -> None:
        """Record a problem with ``path``.

        Raises:
            ReleaseImportError: If the problem is not a warning and ``on_error="fail"``.
        """
        reason = " ".join(f"{kind}: {detail}".split())  # one line, whatever the detail holds
        self.items.append((str(path), reason))
        if self.on_error == "fail" and kind not in _WARNING_KINDS:
            raise ReleaseImportError(f"{path}: {reason}; {_SKIP_HINT}")

    def add_problem(self, problem: _Problem, path: Path | None = None) -> None:
        """Record a :class:`_Problem`, at its own path unless ``path`` is given."""
        where = path if path is not None else problem.path
        self.add(where if where is not None else Path("?"), problem.kind, problem.detail)


@dataclass
class _Entry:
    """One image of a split and everything attached to it before writing."""

    image: Path
    key: str
    mask: Path | None = None
    csv_percent: dict[str, float] | None = None
    csv_where: str = ""
    captions: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _SplitPlan:
    """The images of one split to write, and lookups of all its images by file name."""

    name: str
    folder: Path
    entries: list[_Entry]
    by_name: dict[str, _Entry]
    by_stem: dict[str, _Entry]

    def find(self, filename: str) -> _Entry | None:
        """Find the image a CSV ``filename`` cell names (by file name, else by stem)."""
        name = PurePosixPath(filename.strip().replace("\\", "/")).name
        return self.by_name.get(name) or self.by_stem.get(name) or self.by_stem.get(PurePosixPath(name).stem)


def import_release(
    root: str | Path,
    out_dir: str | Path,
    *,
    splits: Sequence[str] | None = None,
    synth_source: Literal["synth_uncond", "synth_cond"] = "synth_uncond",
    on_error: Literal["skip", "fail"] = "fail",
    unknown_colours: Literal["error", "ignore"] = "error",
    captions: Sequence[str | Path] = (),
    samples_per_shard: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Import an ARAS400k release folder into one shard set per split.

    Samples are written in sorted file-name order, so two imports of the same release
    give byte-identical shards. The key of a sample is its image's file stem with every
    character other than letters, digits, ``_`` and ``-`` replaced by ``_``. Colour masks
    become index masks; one-channel index masks are taken as they are. ``synth`` images
    without a mask are written unlabelled, with the composition from
    ``class_percentages/synth.csv`` when it has their row.

    Args:
        root: The release folder (holding ``train``, ``val``, ``test``, ``synth``).
        out_dir: Folder that receives one shard set per split (``out_dir/train``, ...).
        splits: Splits to import; default: those of ``train``, ``val``, ``test`` and
            ``synth`` present under ``root``.
        synth_source: ``source`` of the ``synth`` split's samples (which generator made
            them): ``synth_uncond`` (StyleGAN3) or ``synth_cond`` (SPADE).
        on_error: ``"fail"`` stops at the first problem file (nothing is written);
            ``"skip"`` skips it and lists it in the report.
        unknown_colours: ``"error"`` treats a mask colour outside the class table as a
            problem; ``"ignore"`` maps it to 255 (ignore).
        captions: Extra caption CSVs (``filename,caption``), applied to whichever split
            holds each file name. Captions found under ``root/captions`` are always read.
        samples_per_shard: Samples per tar shard.
        overwrite: Replace shard sets already in ``out_dir``.
        progress: Show a progress bar per split.

    Returns:
        The :class:`ImportReport`: samples written per split and every problem found.

    Raises:
        ValueError: On an invalid argument (an unknown choice, a bad split name).
        ReleaseImportError: If ``root`` is missing, holds no split folder, a requested
            split or a caption CSV is missing, a split has no images, or (with
            ``on_error="fail"``) on the first problem file; the message names the file.
        FileExistsError: If an output shard set exists and ``overwrite`` is off.
    """
    _check_choice("synth_source", synth_source, ("synth_uncond", "synth_cond"))
    _check_choice("on_error", on_error, ("skip", "fail"))
    _check_choice("unknown_colours", unknown_colours, ("error", "ignore"))
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    root, out_dir = Path(root), Path(out_dir)
    split_dirs = _find_splits(root, splits)
    extra_captions = _check_caption_paths(captions)
    _check_outputs(out_dir, split_dirs, overwrite)

    problems = _ProblemLog(on_error)
    plans = [_scan_split(name, folder, problems) for name, folder in split_dirs.items()]
    discovered: set[Path] = set()
    for plan in plans:
        percentages = root / "class_percentages" / f"{plan.name}.csv"
        if percentages.is_file():
            _attach_percentages(plan, percentages, problems)
        for path in _discover_caption_csvs(root, plan.name):
            discovered.add(path.resolve())
            _attach_captions([plan], path, problems)
    for path in extra_captions:
        if path.resolve() not in discovered:
            _attach_captions(plans, path, problems)

    written = _write_splits(
        plans,
        root=root,
        out_dir=out_dir,
        synth_source=synth_source,
        unknown_colours=unknown_colours,
        samples_per_shard=samples_per_shard,
        overwrite=overwrite,
        progress=progress,
        problems=problems,
    )
    return ImportReport(written=written, problems=problems.items)


# --- arguments and folders -------------------------------------------------------------


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming the valid choices if ``value`` is not one."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _find_splits(root: Path, splits: Sequence[str] | None) -> dict[str, Path]:
    """Resolve the split folders to import.

    Raises:
        ValueError: On an empty, repeated or malformed split name.
        ReleaseImportError: If ``root`` or a requested split folder is missing, or (by
            default) ``root`` holds none of the release splits.
    """
    if not root.exists():
        raise ReleaseImportError(f"release folder {root} does not exist")
    if not root.is_dir():
        raise ReleaseImportError(f"release folder {root} is not a folder")
    present = [s for s in _RELEASE_SPLITS if (root / s).is_dir()]
    if splits is None:
        if not present:
            raise ReleaseImportError(
                f"{root} holds none of the release split folders {', '.join(_RELEASE_SPLITS)}{_nested_hint(root)}"
            )
        return {name: root / name for name in present}
    names = [str(s) for s in splits]
    if not names:
        raise ValueError("splits is empty; give at least one split name or None for all present")
    for name in names:
        if not _SPLIT_NAME_RE.match(name):
            raise ValueError(f"split name {name!r} may hold only letters, digits, '_' and '-'")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"splits {repeated} are given more than once")
    for name in names:
        if not (root / name).is_dir():
            found = ", ".join(present) or "none of " + ", ".join(_RELEASE_SPLITS)
            raise ReleaseImportError(f"split folder {root / name} does not exist ({root} holds {found})")
    return {name: root / name for name in names}


def _nested_hint(root: Path) -> str:
    """Suggest a subfolder of ``root`` that looks like the release folder."""
    candidates = [
        child
        for child in sorted(root.iterdir())
        if child.is_dir() and any((child / s).is_dir() for s in _RELEASE_SPLITS)
    ]
    return f"; did you mean {candidates[0]}?" if candidates else ""


def _check_caption_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Check that every explicitly given caption CSV exists.

    Raises:
        ReleaseImportError: If one is missing.
    """
    checked = [Path(p) for p in paths]
    for path in checked:
        if not path.is_file():
            raise ReleaseImportError(f"caption CSV {path} does not exist")
    return checked


def _check_outputs(out_dir: Path, split_dirs: dict[str, Path], overwrite: bool) -> None:
    """Refuse, before writing anything, to replace existing shard sets without ``overwrite``.

    Raises:
        FileExistsError: If a split's output folder holds a manifest and ``overwrite`` is off.
    """
    if overwrite:
        return
    existing = [str(out_dir / s) for s in split_dirs if (out_dir / s / MANIFEST_NAME).exists()]
    if existing:
        raise FileExistsError(
            f"{', '.join(existing)} already hold{'s' if len(existing) == 1 else ''} a shard set; "
            "pass overwrite=True (--overwrite) to replace it"
        )


def _sanitise_key(stem: str) -> str:
    """Turn a file stem into a sample key (letters, digits, ``_`` and ``-`` only)."""
    return _KEY_BAD_CHARS.sub("_", stem) or "_"


# --- scanning a split ------------------------------------------------------------------


def _list_pictures(directory: Path, problems: _ProblemLog) -> list[Path]:
    """List the picture files of a folder in file-name order, reporting anything else.

    Hidden files (``.DS_Store``, ...) are not data and pass unreported.
    """
    pictures = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in _PICTURE_SUFFIXES:
            pictures.append(path)
        else:
            problems.add(path, _UNEXPECTED_FILE, f"not a {'/'.join(_PICTURE_SUFFIXES)} file; not imported")
    return pictures


def _scan_split(name: str, folder: Path, problems: _ProblemLog) -> _SplitPlan:
    """Pair the images of a split with their masks and give each a key.

    Raises:
        ReleaseImportError: If the split has no images.
    """
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise ReleaseImportError(f"split folder {folder} has no images folder ({images_dir})")
    images = _list_pictures(images_dir, problems)
    if not images:
        raise ReleaseImportError(f"split folder {folder} is empty: {images_dir} holds no {'/'.join(_PICTURE_SUFFIXES)}")
    masks = _list_pictures(masks_dir, problems) if masks_dir.is_dir() else []
    pairs = _pair_masks(images, masks, problems)

    labelled = name != _UNLABELLED_SPLIT
    entries: list[_Entry] = []
    by_name: dict[str, _Entry] = {}
    by_stem: dict[str, _Entry] = {}
    keys: dict[str, Path] = {}
    for image in images:
        entry = _Entry(image=image, key=_sanitise_key(image.stem), mask=pairs.get(image))
        by_name.setdefault(image.name, entry)
        by_stem.setdefault(image.stem, entry)
        if entry.mask is None and labelled:
            missing = "" if masks_dir.is_dir() else " (the folder does not exist)"
            problems.add(
                image,
                _IMAGE_WITHOUT_MASK,
                f"no mask {image.stem}.png or {image.stem}_mask.png in {masks_dir}{missing}",
            )
            continue
        if entry.key in keys:
            problems.add(
                image,
                _KEY_COLLISION,
                f"its key {entry.key!r} is already taken by {keys[entry.key].name}; rename one of them",
            )
            continue
        keys[entry.key] = image
        entries.append(entry)
    return _SplitPlan(name=name, folder=folder, entries=entries, by_name=by_name, by_stem=by_stem)


def _pair_masks(images: list[Path], masks: list[Path], problems: _ProblemLog) -> dict[Path, Path]:
    """Match each image with a mask of the same stem (or the stem plus ``_mask``).

    A mask with the image's own suffix is preferred. Masks left unmatched are problems.

    Returns:
        Image path -> mask path, for the images that have a mask.
    """
    exact: dict[str, list[Path]] = {}
    suffixed: dict[str, list[Path]] = {}
    for mask in masks:
        exact.setdefault(mask.stem, []).append(mask)
        if mask.stem.endswith("_mask"):
            suffixed.setdefault(mask.stem[: -len("_mask")], []).append(mask)
    pairs: dict[Path, Path] = {}
    used: dict[Path, Path] = {}
    for image in images:
        for group in (exact.get(image.stem, []), suffixed.get(image.stem, [])):
            free = [m for m in group if m not in used]
            free.sort(key=lambda m: m.suffix.lower() != image.suffix.lower())
            if free:
                pairs[image] = free[0]
                used[free[0]] = image
                break
    image_stems = {image.stem for image in images}
    for mask in masks:
        if mask in used:
            continue
        stem = mask.stem[: -len("_mask")] if mask.stem.endswith("_mask") else mask.stem
        owner = next((used[m] for m in exact.get(stem, []) + suffixed.get(stem, []) if m in used), None)
        if owner is not None or mask.stem in image_stems or stem in image_stems:
            detail = f"image {owner.name if owner else stem} already has another mask"
        else:
            detail = f"no image named {mask.stem}.* in {mask.parent.parent / 'images'}"
        problems.add(mask, _MASK_WITHOUT_IMAGE, detail)
    return pairs


# --- CSVs ------------------------------------------------------------------------------


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
    for name in names:
        if name in normalised:
            return normalised.index(name)
    return None


def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Read a CSV file into its header and ``(line number, cells)`` rows, blank rows left out.

    Raises:
        _Problem: If the file is unreadable or empty.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise _Problem(_BAD_CSV, f"cannot read the CSV ({err})", path) from err
    if not rows:
        raise _Problem(_BAD_CSV, "the CSV is empty", path)
    header = [cell.strip() for cell in rows[0][1]]
    return header, ((line, row) for line, row in rows[1:] if any(cell.strip() for cell in row))


def _cell(row: list[str], index: int, line: int, column: str) -> str:
    """The stripped cell ``index`` of ``row``; a short row is a problem."""
    if index >= len(row):
        raise _Problem(_BAD_CSV, f"line {line} has no {column!r} cell")
    return row[index].strip()


def _optional_cell(row: list[str], index: int | None) -> str:
    """The stripped cell ``index`` of ``row``, or ``""`` when the column or cell is absent."""
    return row[index].strip() if index is not None and index < len(row) else ""


def _percentage_columns(header: list[str], path: Path, problems: _ProblemLog) -> dict[str, int]:
    """Map each class to its percentage column; other non-filename columns are reported.

    Raises:
        _Problem: If a class has no column or two columns.
    """
    columns: dict[str, int] = {}
    filename_column = _find_column(header, _FILENAME_COLUMNS)
    for index, name in enumerate(header):
        if index == filename_column:
            continue
        cls = _class_for_column(name)
        if cls is None:
            problems.add(path, _CSV_COLUMN_IGNORED, f"column {name!r} is not a class ({', '.join(CLASS_NAMES)})")
        elif cls in columns:
            raise _Problem(_BAD_CSV, f"columns {header[columns[cls]]!r} and {name!r} both name class {cls}", path)
        else:
            columns[cls] = index
    missing = [c for c in CLASS_NAMES if c not in columns]
    if missing:
        raise _Problem(_BAD_CSV, f"no percentage column for {', '.join(missing)}; columns are {header}", path)
    return columns


def _parse_percentages(row: list[str], line: int, columns: dict[str, int]) -> dict[str, float]:
    """Read one row's class percentages (0-100), in class order.

    Raises:
        _Problem: On a missing, non-numeric or out-of-range value.
    """
    values: dict[str, float] = {}
    for cls in CLASS_NAMES:
        text = _cell(row, columns[cls], line, cls)
        try:
            value = float(text)
        except ValueError:
            raise _Problem(_BAD_CSV, f"line {line}: {cls} percentage {text!r} is not a number") from None
        if not 0.0 <= value <= 100.0:
            raise _Problem(_BAD_CSV, f"line {line}: {cls} percentage {value} is outside 0-100")
        values[cls] = value
    return values


def _attach_percentages(plan: _SplitPlan, path: Path, problems: _ProblemLog) -> None:
    """Attach the class percentages of ``path`` to the images of ``plan``."""
    try:
        header, rows = _read_csv(path)
        filename_column = _find_column(header, _FILENAME_COLUMNS)
        if filename_column is None:
            raise _Problem(_BAD_CSV, f"no 'filename' column; columns are {header}", path)
        columns = _percentage_columns(header, path, problems)
    except _Problem as problem:
        problems.add_problem(problem, path)
        return
    for line, row in rows:
        try:
            filename = _cell(row, filename_column, line, "filename")
            values = _parse_percentages(row, line, columns)
        except _Problem as problem:
            problems.add_problem(problem, path)
            continue
        entry = plan.find(filename)
        if entry is None:
            problems.add(path, _CSV_ROW_WITHOUT_FILE, f"line {line}: {filename!r} is not an image of split {plan.name}")
        elif entry.csv_percent is not None:
            problems.add(path, _CSV_DUPLICATE, f"line {line}: {filename!r} has a row already ({entry.csv_where})")
        else:
            total = sum(values.values())
            if abs(total - 100.0) > _CSV_TOLERANCE:
                problems.add(path, _CSV_SUM, f"line {line}: the percentages of {filename!r} sum to {total:.2f}")
            entry.csv_percent = values
            entry.csv_where = f"{path}:{line}"


def _discover_caption_csvs(root: Path, split: str) -> list[Path]:
    """Caption CSVs of a split: ``captions/{split}/*.csv``, then ``captions/{split}*.csv``."""
    folder = root / "captions"
    found = sorted((folder / split).glob("*.csv")) if (folder / split).is_dir() else []
    found += sorted(p for p in folder.glob(f"{split}*.csv") if p.is_file()) if folder.is_dir() else []
    return found


def _caption_mode(stem: str) -> str:
    """The caption mode a CSV's stem names (``hybrid``, ``vision``, ``text``), else ``unknown``."""
    lowered = stem.lower()
    return next((mode for mode in _CAPTION_MODES if mode in lowered), "unknown")


def _attach_captions(plans: list[_SplitPlan], path: Path, problems: _ProblemLog) -> None:
    """Append the captions of ``path`` to the images of ``plans`` it names, in row order.

    The caption ``model`` is the CSV's stem and its ``mode`` comes from the stem, unless
    the CSV has ``model`` / ``mode`` columns.
    """
    try:
        header, rows = _read_csv(path)
        filename_column = _find_column(header, _FILENAME_COLUMNS)
        caption_column = _find_column(header, _CAPTION_COLUMNS)
        if filename_column is None or caption_column is None:
            raise _Problem(_BAD_CSV, f"a caption CSV needs 'filename' and 'caption' columns; it has {header}", path)
    except _Problem as problem:
        problems.add_problem(problem, path)
        return
    model_column = _find_column(header, ("model",))
    mode_column = _find_column(header, ("mode",))
    default_model, default_mode = path.stem, _caption_mode(path.stem)
    splits = ", ".join(plan.name for plan in plans)
    for line, row in rows:
        try:
            filename = _cell(row, filename_column, line, "filename")
            text = _cell(row, caption_column, line, "caption")
        except _Problem as problem:
            problems.add_problem(problem, path)
            continue
        entries = [entry for plan in plans if (entry := plan.find(filename)) is not None]
        if not entries:
            problems.add(path, _CSV_ROW_WITHOUT_FILE, f"line {line}: {filename!r} is not an image of split {splits}")
            continue
        if not text:
            problems.add(path, _EMPTY_CAPTION, f"line {line}: the caption of {filename!r} is empty; not imported")
            continue
        model = _optional_cell(row, model_column) or default_model
        mode = _optional_cell(row, mode_column) or default_mode
        for entry in entries:
            entry.captions.append({"text": text, "model": model, "mode": mode})


# --- reading images and masks ----------------------------------------------------------


def _read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        _Problem: If the file is not a readable picture or has an unsupported mode.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            rgb = np.asarray(img.convert("RGB")) if mode in _IMAGE_MODES else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise _Problem(_UNREADABLE, f"not a readable image ({err})", path) from err
    if rgb is None:
        raise _Problem(_UNREADABLE, f"unsupported image mode {mode}; expected an RGB picture", path)
    return rgb


def _read_mask(path: Path, unknown: Literal["error", "ignore"]) -> np.ndarray:
    """Read a colour mask (RGB or palette) or a one-channel index mask as class indices.

    Raises:
        _Problem: If the file is unreadable, has an unsupported mode, or holds unknown
            colours or values while ``unknown="error"``.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            pixels = np.asarray(img)
            palette = img.getpalette() if mode == "P" else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise _Problem(_UNREADABLE, f"not a readable mask ({err})", path) from err
    if mode in ("RGB", "RGBA"):
        return _colours_to_index(pixels[..., :3], path, unknown)
    if mode == "P":
        return _palette_to_index(pixels, palette or [], path, unknown)
    if mode in _INDEX_MODES:
        return _check_indices(pixels[..., 0] if mode == "LA" else pixels, path, unknown)
    raise _Problem(
        _UNREADABLE, f"unsupported mask mode {mode}; expected an RGB colour mask or a one-channel index mask", path
    )


def _colours_to_index(rgb: np.ndarray, path: Path, unknown: Literal["error", "ignore"]) -> np.ndarray:
    """Convert release colours to indices (a vectorised lookup).

    Raises:
        _Problem: On an unknown colour while ``unknown="error"``.
    """
    try:
        return colour_to_index(rgb, unknown=unknown, source=path)
    except UnknownColourError as err:
        detail = str(err).removeprefix(f"{_UNKNOWN_COLOUR} ")
        raise _Problem(_UNKNOWN_COLOUR, f"{detail} with --unknown-colours ignore", path) from err


def _palette_to_index(
    values: np.ndarray, palette: list[int], path: Path, unknown: Literal["error", "ignore"]
) -> np.ndarray:
    """Read a palette PNG as a colour mask if it uses release colours, else as indices.

    Raises:
        _Problem: On unknown colours or values while ``unknown="error"``.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    entries = np.asarray(palette[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    table[: len(entries)] = entries
    used = table[np.unique(values)]
    release = colour_to_index(used[None], unknown="ignore") != IGNORE_INDEX
    if release.any():
        return _colours_to_index(table[values], path, unknown)
    return _check_indices(values, path, unknown)


def _check_indices(values: np.ndarray, path: Path, unknown: Literal["error", "ignore"]) -> np.ndarray:
    """Check a one-channel mask holds only class indices and 255.

    Raises:
        _Problem: On other values while ``unknown="error"``.
    """
    values = np.asarray(values)
    valid = (values >= 0) & ((values < NUM_CLASSES) | (values == IGNORE_INDEX))
    if valid.all():
        return values.astype(np.uint8)
    if unknown == "ignore":
        return np.where(valid, values, IGNORE_INDEX).astype(np.uint8)
    bad = np.unique(values[~valid])
    listed = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    raise _Problem(
        _UNKNOWN_COLOUR,
        f"one-channel mask holds values {listed} on {int((~valid).sum())} pixels, neither classes "
        f"0-{NUM_CLASSES - 1} nor {IGNORE_INDEX}; map them to ignore ({IGNORE_INDEX}) with --unknown-colours ignore",
        path,
    )


# --- writing ---------------------------------------------------------------------------


def _load_sample(entry: _Entry, root: Path, unknown: Literal["error", "ignore"], problems: _ProblemLog) -> Sample:
    """Read one image (and mask) into a :class:`Sample`, checking the CSV composition.

    Raises:
        _Problem: If the image or mask cannot be used.
    """
    image = _read_image(entry.image)
    meta: dict[str, object] = {"release_file": entry.image.relative_to(root).as_posix()}
    mask = None
    if entry.mask is not None:
        mask = _read_mask(entry.mask, unknown)
        if mask.shape != image.shape[:2]:
            raise _Problem(
                _SIZE_MISMATCH,
                f"mask {entry.mask.name} is {mask.shape[1]}x{mask.shape[0]} "
                f"but the image is {image.shape[1]}x{image.shape[0]}",
                entry.image,
            )
        if entry.csv_percent is not None:
            _compare_composition(entry, composition(mask), problems)
    elif entry.csv_percent is not None:
        meta["composition"] = {c: round(entry.csv_percent[c] / 100.0, 6) for c in CLASS_NAMES}
    return Sample(key=entry.key, image=image, mask=mask, meta=meta, captions=list(entry.captions) or None)


def _compare_composition(entry: _Entry, from_mask: dict[str, float], problems: _ProblemLog) -> None:
    """Report a CSV composition more than 1 percentage point off the mask's on any class."""
    assert entry.csv_percent is not None
    diffs = {c: 100.0 * from_mask[c] - entry.csv_percent[c] for c in CLASS_NAMES}
    worst = max(CLASS_NAMES, key=lambda c: abs(diffs[c]))
    if abs(diffs[worst]) > _CSV_TOLERANCE + 1e-9:
        problems.add(
            entry.image,
            _CSV_DIFFERS,
            f"{entry.csv_where} gives {worst} {entry.csv_percent[worst]:.2f}% but the mask has "
            f"{100.0 * from_mask[worst]:.2f}%; the mask's composition is kept",
        )


def _write_splits(
    plans: list[_SplitPlan],
    *,
    root: Path,
    out_dir: Path,
    synth_source: Literal["synth_uncond", "synth_cond"],
    unknown_colours: Literal["error", "ignore"],
    samples_per_shard: int,
    overwrite: bool,
    progress: bool,
    problems: _ProblemLog,
) -> dict[str, int]:
    """Write every split; manifests are written only once all splits succeeded.

    Returns:
        Split name -> samples written.
    """
    writers: list[ShardWriter] = []
    written: dict[str, int] = {}
    try:
        for plan in plans:
            writer = ShardWriter(
                out_dir / plan.name,
                split=plan.name,
                source=synth_source if plan.name == _UNLABELLED_SPLIT else "real",
                samples_per_shard=samples_per_shard,
                overwrite=overwrite,
                extra={"made_by": _MADE_BY, "release_root": str(root)},
            )
            writers.append(writer)
            written[plan.name] = _write_split(plan, writer, root, unknown_colours, problems, progress)
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            _discard(writer)
        raise
    return written


def _write_split(
    plan: _SplitPlan,
    writer: ShardWriter,
    root: Path,
    unknown: Literal["error", "ignore"],
    problems: _ProblemLog,
    progress: bool,
) -> int:
    """Write the samples of one split in file-name order.

    Returns:
        The number of samples written.
    """
    count = 0
    for entry in tqdm(plan.entries, desc=f"import {plan.name}", unit="image", disable=not progress):
        try:
            sample = _load_sample(entry, root, unknown, problems)
        except _Problem as problem:
            problems.add_problem(problem)
            continue
        writer.write(sample)
        count += 1
    return count


def _discard(writer: ShardWriter) -> None:
    """Abort a writer and remove the shards it finished, unless its manifest is written."""
    writer.abort()
    if (writer.out_dir / MANIFEST_NAME).exists():
        return
    for shard in writer.shards:
        (writer.out_dir / shard["name"]).unlink(missing_ok=True)
