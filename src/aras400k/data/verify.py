"""Check a shard set against its manifest and decode every sample (``aras-data verify``)."""

from __future__ import annotations

import hashlib
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aras400k.classes import CLASS_NAMES, NUM_CLASSES
from aras400k.data.composition import class_counts
from aras400k.data.remote import as_location, locate, location_name
from aras400k.data.shards import (
    KEY_RE,
    SOURCES,
    ManifestError,
    SampleError,
    ShardReadError,
    Size,
    brief,
    decode_sample,
    iter_raw_samples,
    manifest_image_size,
    mixes_sizes,
    read_manifest,
)
from aras400k.files import sha256_file

__all__ = ["VerifyReport", "verify_shards"]

_REQUIRED_META = ("source", "split", "composition")
MANIFEST_FIELD = "manifest.json"
_SHA_DIFFERS = "sha256 differs from the manifest (file changed or truncated)"


@dataclass
class VerifyReport:
    """What :func:`verify_shards` found.

    Attributes:
        directory: The shard set checked.
        num_samples: Samples decoded successfully.
        problems: ``(where, what)`` pairs; ``where`` is a shard name or ``shard:key``.
        warnings: Findings that do not make the set invalid (e.g. a stale temporary file).
    """

    directory: str
    num_samples: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the shard set passed every check."""
        return not self.problems

    def summary(self, limit: int = 20) -> str:
        """The report as a few lines of text, listing at most ``limit`` problems (and warnings) one by one."""
        status = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"{self.directory}: {self.num_samples} samples decoded, {status}"]
        lines += [f"  problem: {where}: {what}" for where, what in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more problems")
        lines += [f"  warning: {where}: {what}" for where, what in self.warnings[:limit]]
        return "\n".join(lines)


def verify_shards(directory: str | Path, progress: bool = True) -> VerifyReport:
    """Check every shard of a local or URL set against the manifest and decode every sample (bar if ``progress``).

    The checks are listed in ``docs/data.md#checking-and-summarising``; a shard name that is
    not a plain ``.tar`` file in the set is a problem, never opened, and a sample's
    ``meta.json`` needs a known ``source``, a ``split`` and a ``composition``. It never
    raises: ``report.ok`` is false when anything is wrong (an unreadable shard included).
    A URL folder is checked the same way, each shard downloaded once, but cannot be
    listed for unlisted or temporary files.
    """
    directory = as_location(directory)
    name = str(directory).rstrip("/") if isinstance(directory, str) else str(directory)
    report = VerifyReport(name)
    try:
        manifest = read_manifest(directory)
    except ManifestError as err:
        report.problems.append((name, str(err)))
        return report
    if isinstance(directory, Path):
        listed = {s["name"] for s in manifest["shards"]}
        for extra in sorted(p.name for p in directory.glob("*.tar") if p.name not in listed):
            report.problems.append((extra, "shard file is not listed in the manifest"))
        for tmp in sorted(directory.glob("*.tmp")):
            report.warnings.append((tmp.name, "temporary file left by an interrupted write"))
    if mixes_sizes(manifest):
        report.warnings.append((MANIFEST_FIELD, "images differ in size (image_size is null); training needs one size"))
    state = _SetState(size=manifest_image_size(manifest), learn_size=not mixes_sizes(manifest))
    for entry in tqdm(manifest["shards"], desc=f"verify {location_name(name)}", unit="shard", disable=not progress):
        _verify_shard(directory, entry, state, report)
    if report.num_samples != manifest["num_samples"] and not report.problems:
        report.problems.append(
            (MANIFEST_FIELD, f"manifest says {manifest['num_samples']} samples, shards hold {report.num_samples}")
        )
    recorded = manifest.get("class_pixels")
    if recorded is not None and manifest.get("num_masks", 0) == manifest["num_samples"] and not report.problems:
        expected = np.array([recorded.get(n, 0) for n in CLASS_NAMES])
        if not np.array_equal(expected, state.pixels):
            report.problems.append((MANIFEST_FIELD, "class_pixels differ from the masks in the shards"))
    return report


@dataclass
class _SetState:
    """What the shards of one set have shown so far."""

    size: Size | None
    learn_size: bool = True
    seen: set[str] = field(default_factory=set)
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, dtype=np.int64))


def _verify_shard(directory: str | Path, entry: dict, state: _SetState, report: VerifyReport) -> None:
    name = entry["name"]
    path = locate(directory, name)
    digest = None
    if isinstance(path, Path):
        if not path.is_file():
            report.problems.append((name, "shard file is missing"))
            return
        if "sha256" in entry and sha256_file(path) != entry["sha256"]:
            report.problems.append((name, _SHA_DIFFERS))
    elif "sha256" in entry:
        digest = hashlib.sha256()  # a remote shard is hashed as it is read, not downloaded twice
    count = 0
    try:
        for raw in iter_raw_samples(path, digest=digest):
            count += 1
            where = f"{name}:{raw['__key__']}"
            if raw["__key__"] in state.seen:
                report.problems.append((where, "key occurs more than once in the set"))
            state.seen.add(raw["__key__"])
            problem = _verify_sample(raw, state)
            if problem is not None:
                report.problems.append((where, problem))
            else:
                report.num_samples += 1
    except FileNotFoundError:
        report.problems.append((name, "shard file is missing"))
        return
    except (tarfile.TarError, OSError, EOFError) as err:
        reason = err.reason if isinstance(err, ShardReadError) else err
        report.problems.append((name, f"tar file is corrupt after {count} samples ({reason})"))
        return
    if digest is not None and digest.hexdigest() != entry["sha256"]:
        report.problems.append((name, _SHA_DIFFERS))
    if count != entry["num_samples"]:
        report.problems.append((name, f"manifest says {entry['num_samples']} samples, shard holds {count}"))


def _verify_sample(raw: dict, state: _SetState) -> str | None:
    """Check one raw sample; return what is wrong with it, or ``None``."""
    key = raw["__key__"]
    if not KEY_RE.match(key):
        return f"key {key!r} may hold only letters, digits, '_' and '-'"
    try:
        sample = decode_sample(raw, size=state.size)
    except SampleError as err:
        return str(err).removeprefix(f"sample {key}: ")
    problem = _meta_problem(sample.meta)
    if problem is not None:
        return problem
    if state.size is None and state.learn_size:
        state.size = (sample.image.shape[0], sample.image.shape[1])
    if sample.mask is not None:
        state.pixels += class_counts(sample.mask)
    return None


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a sample's ``meta.json`` object, or ``None``."""
    missing = [f for f in _REQUIRED_META if f not in meta]
    if missing:
        return f"meta.json lacks {missing}"
    if not isinstance(meta["source"], str) or meta["source"] not in SOURCES:
        return f"meta source {brief(meta['source'])} is not one of {SOURCES}"
    if not isinstance(meta["split"], str):
        return f"meta split {brief(meta['split'])} is not a string"
    composition = meta["composition"]
    if not isinstance(composition, dict) or not all(_is_share(v) for v in composition.values()):
        return f"meta composition {brief(composition)} does not map class names to shares"
    return None


def _is_share(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
