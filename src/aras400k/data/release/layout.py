"""The release's layout: its split folders, the images and masks in them, the caption CSVs.

Scanning a split pairs each image with its mask and keys it, in file-name order, into a
plan that :mod:`~aras400k.data.release.tables` completes before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aras400k.data.release.problems import (
    IMAGE_WITHOUT_MASK,
    KEY_COLLISION,
    MASK_WITHOUT_IMAGE,
    UNEXPECTED_FILE,
    ProblemLog,
    ReleaseImportError,
)

__all__: list[str] = []

#: The split folders of the release, in import order.
_RELEASE_SPLITS = ("train", "val", "test", "synth")
#: The split whose images may come without masks.
UNLABELLED_SPLIT = "synth"
#: File suffixes read as pictures (case-insensitive).
_PICTURE_SUFFIXES = (".png", ".tif", ".tiff")
_SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


@dataclass
class Entry:
    """One image of a split and everything attached to it before writing."""

    image: Path
    key: str
    mask: Path | None = None
    csv_percent: dict[str, float] | None = None
    csv_where: str = ""
    captions: list[dict[str, str]] = field(default_factory=list)


@dataclass
class SplitPlan:
    """The images of one split to write, and lookups of all its images by file name."""

    name: str
    folder: Path
    entries: list[Entry]
    by_name: dict[str, Entry]
    by_stem: dict[str, Entry]

    def find(self, filename: str) -> Entry | None:
        """Find the image a CSV ``filename`` cell names (by file name, else by stem)."""
        name = PurePosixPath(filename.strip().replace("\\", "/")).name
        return self.by_name.get(name) or self.by_stem.get(name) or self.by_stem.get(PurePosixPath(name).stem)


def find_splits(root: Path, splits: Sequence[str] | None) -> dict[str, Path]:
    """Resolve the split folders to import (``None``: every release split present).

    Raises:
        ValueError: On an empty, repeated or malformed split name.
        ReleaseImportError: If ``root`` or a requested split folder is missing, or ``root``
            holds none of the release splits.
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


def check_caption_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The explicitly given caption CSVs as paths; a missing one raises :class:`ReleaseImportError`."""
    checked = [Path(p) for p in paths]
    for path in checked:
        if not path.is_file():
            raise ReleaseImportError(f"caption CSV {path} does not exist")
    return checked


def discover_caption_csvs(root: Path, split: str) -> list[Path]:
    """Caption CSVs of a split: ``captions/{split}/*.csv``, then ``captions/{split}*.csv``."""
    folder = root / "captions"
    found = _csv_files(folder / split, lambda name: True) if (folder / split).is_dir() else []
    found += _csv_files(folder, lambda name: name.startswith(split)) if folder.is_dir() else []
    return found


def _csv_files(folder: Path, keep: Callable[[str], bool]) -> list[Path]:
    """The ``*.csv`` files of a folder (or a folder in a zip) whose name ``keep`` accepts, by name."""
    found = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(".csv") and keep(p.name)]
    return sorted(found, key=lambda p: p.name)


def _sanitise_key(stem: str) -> str:
    """Turn a file stem into a sample key (letters, digits, ``_`` and ``-`` only)."""
    return _KEY_BAD_CHARS.sub("_", stem) or "_"


def _list_pictures(directory: Path, problems: ProblemLog) -> list[Path]:
    """The picture files of a folder in file-name order; anything else but hidden files is reported."""
    pictures = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in _PICTURE_SUFFIXES:
            pictures.append(path)
        else:
            problems.add(path, UNEXPECTED_FILE, f"not a {'/'.join(_PICTURE_SUFFIXES)} file; not imported")
    return pictures


def scan_split(name: str, folder: Path, problems: ProblemLog) -> SplitPlan:
    """Pair the images of a split with their masks and give each a key; no images raise :class:`ReleaseImportError`."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise ReleaseImportError(f"split folder {folder} has no images folder ({images_dir})")
    images = _list_pictures(images_dir, problems)
    if not images:
        raise ReleaseImportError(f"split folder {folder} is empty: {images_dir} holds no {'/'.join(_PICTURE_SUFFIXES)}")
    masks = _list_pictures(masks_dir, problems) if masks_dir.is_dir() else []
    pairs = _pair_masks(images, masks, problems)

    labelled = name != UNLABELLED_SPLIT
    entries: list[Entry] = []
    by_name: dict[str, Entry] = {}
    by_stem: dict[str, Entry] = {}
    keys: dict[str, Path] = {}
    for image in images:
        entry = Entry(image=image, key=_sanitise_key(image.stem), mask=pairs.get(image))
        by_name.setdefault(image.name, entry)
        by_stem.setdefault(image.stem, entry)
        if entry.mask is None and labelled:
            missing = "" if masks_dir.is_dir() else " (the folder does not exist)"
            detail = f"no mask {image.stem}.png or {image.stem}_mask.png in {masks_dir}{missing}"
            problems.add(image, IMAGE_WITHOUT_MASK, detail)
            continue
        if entry.key in keys:
            detail = f"its key {entry.key!r} is already taken by {keys[entry.key].name}; rename one of them"
            problems.add(image, KEY_COLLISION, detail)
            continue
        keys[entry.key] = image
        entries.append(entry)
    return SplitPlan(name=name, folder=folder, entries=entries, by_name=by_name, by_stem=by_stem)


def _pair_masks(images: list[Path], masks: list[Path], problems: ProblemLog) -> dict[Path, Path]:
    """Image -> its mask of the same stem (or the stem plus ``_mask``), one with the image's suffix preferred.

    Masks left unmatched are problems.
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
        stem = mask.stem.removesuffix("_mask")
        owner = next((used[m] for m in exact.get(stem, []) + suffixed.get(stem, []) if m in used), None)
        if owner is not None or mask.stem in image_stems or stem in image_stems:
            detail = f"image {owner.name if owner else stem} already has another mask"
        else:
            detail = f"no image named {mask.stem}.* in {mask.parent.parent / 'images'}"
        problems.add(mask, MASK_WITHOUT_IMAGE, detail)
    return pairs
