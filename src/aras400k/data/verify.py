"""Check a shard set against its manifest and decode every sample (``aras-data verify``)."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from aras400k.classes import CLASS_NAMES, NUM_CLASSES
from aras400k.data.composition import class_counts
from aras400k.data.remote import as_location, locate, location_name
from aras400k.data.shards import (
    SOURCES,
    ManifestError,
    SampleError,
    ShardReadError,
    _sha256,
    decode_sample,
    iter_raw_samples,
    read_manifest,
)

__all__ = ["VerifyReport", "verify_shards"]

_REQUIRED_META = ("source", "split", "composition")
MANIFEST_FIELD = "manifest.json"


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
        """Render the report as a few lines of text.

        Args:
            limit: Most problems to list one by one.

        Returns:
            The text.
        """
        status = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"{self.directory}: {self.num_samples} samples decoded, {status}"]
        lines += [f"  problem: {where}: {what}" for where, what in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more problems")
        lines += [f"  warning: {where}: {what}" for where, what in self.warnings[:limit]]
        return "\n".join(lines)


def verify_shards(directory: str | Path, progress: bool = True) -> VerifyReport:
    """Check every shard of a set against the manifest and decode every sample.

    Checks: the manifest is readable; every listed shard exists with the recorded
    sha256 and sample count; no unlisted ``.tar`` files; every sample has a readable
    ``image.png`` and ``meta.json`` (with ``source``, ``split``, ``composition``), a valid
    ``mask.png`` of the image's size where present and parsable ``captions.json``; keys
    are unique; the totals and summed class pixels equal the manifest's.

    A URL folder (``http://host/train/``, ``s3://bucket/train/``) is checked the same way,
    each shard downloaded once, except that it cannot be listed for unlisted or
    temporary files.

    Args:
        directory: Shard set folder, local or a URL.
        progress: Show a progress bar over shards.

    Returns:
        The report; ``report.ok`` is false when anything is wrong (a shard that cannot be
        read, or misses its deadline, included).
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
    seen: set[str] = set()
    pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    for entry in _progress(manifest["shards"], progress, location_name(name)):
        _verify_shard(directory, entry, seen, pixels, report)
    if report.num_samples != manifest["num_samples"] and not report.problems:
        report.problems.append(
            (MANIFEST_FIELD, f"manifest says {manifest['num_samples']} samples, shards hold {report.num_samples}")
        )
    recorded = manifest.get("class_pixels")
    if recorded is not None and manifest.get("num_masks", 0) == manifest["num_samples"] and not report.problems:
        expected = np.array([recorded.get(n, 0) for n in CLASS_NAMES])
        if not np.array_equal(expected, pixels):
            report.problems.append((MANIFEST_FIELD, "class_pixels differ from the masks in the shards"))
    return report


def _progress(items: list[dict], enabled: bool, name: str) -> Iterable[dict]:
    return tqdm(items, desc=f"verify {name}", unit="shard", disable=not enabled)


def _verify_shard(directory: str | Path, entry: dict, seen: set[str], pixels: np.ndarray, report: VerifyReport) -> None:
    name = entry["name"]
    path = locate(directory, name)
    digest = None
    if isinstance(path, Path):
        if not path.is_file():
            report.problems.append((name, "shard file is missing"))
            return
        if "sha256" in entry and _sha256(path) != entry["sha256"]:
            report.problems.append((name, "sha256 differs from the manifest (file changed or truncated)"))
    elif "sha256" in entry:
        digest = hashlib.sha256()  # a remote shard is hashed as it is read, not downloaded twice
    count = 0
    try:
        for raw in iter_raw_samples(path, digest=digest):
            count += 1
            key = raw["__key__"]
            where = f"{name}:{key}"
            if key in seen:
                report.problems.append((where, "key occurs more than once in the set"))
            seen.add(key)
            try:
                sample = decode_sample(raw)
            except SampleError as err:
                report.problems.append((where, str(err).removeprefix(f"sample {key}: ")))
                continue
            missing = [f for f in _REQUIRED_META if f not in sample.meta]
            if missing:
                report.problems.append((where, f"meta.json lacks {missing}"))
                continue
            if sample.meta["source"] not in SOURCES:
                report.problems.append((where, f"meta source {sample.meta['source']!r} is not one of {SOURCES}"))
            if sample.mask is not None:
                pixels += class_counts(sample.mask)
            report.num_samples += 1
    except FileNotFoundError:
        report.problems.append((name, "shard file is missing"))
        return
    except ShardReadError as err:
        report.problems.append((name, f"tar file is corrupt after {count} samples ({err.reason})"))
        return
    except (tarfile.TarError, OSError, EOFError) as err:
        report.problems.append((name, f"tar file is corrupt after {count} samples ({err})"))
        return
    if digest is not None and digest.hexdigest() != entry["sha256"]:
        report.problems.append((name, "sha256 differs from the manifest (file changed or truncated)"))
    if count != entry.get("num_samples", count):
        report.problems.append((name, f"manifest says {entry['num_samples']} samples, shard holds {count}"))
