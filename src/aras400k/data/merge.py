"""Scale-out: split a stage over independent workers and merge their shard sets into one (``docs/scaling.md``).

Worker ``K`` of ``N`` (``--shard_index K --num_shards N``) writes its part of the work as a
complete shard set in ``OUT/part-K-of-N`` (:func:`worker_dir`) whose manifest records the
worker (:func:`worker_record`). :func:`merge_shard_sets` (``aras-data merge``) joins the
parts into what one worker would have written, hard-linking (else copying) their tar
files, so the parts stay valid shard sets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aras400k.classes import CLASS_NAMES
from aras400k.data.composition import composition_from_counts
from aras400k.data.remote import as_location, is_url, locate, open_shard
from aras400k.data.shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ManifestError,
    read_manifest,
    write_json_atomic,
)

__all__ = [
    "WORKER_FIELD",
    "MergeReport",
    "check_worker",
    "merge_hint",
    "merge_shard_sets",
    "work_digest",
    "worker_dir",
    "worker_name",
    "worker_parts",
    "worker_record",
]

#: Manifest field recording which part of a split run a shard set is.
WORKER_FIELD = "worker"
#: Manifest fields a shard set writes itself (summed or rebuilt when merging).
_OWN_FIELDS = frozenset(
    {"format", "format_version", "classes", "split", "source", "num_samples", "num_masks", "shards"}
    | {"class_pixels", "composition", "image_size"}
)
#: Provenance fields that may differ between the parts of one run (paths of each worker's
#: intermediate files); the merged manifest keeps a common value, or the list of values.
_PER_PART_FIELDS = frozenset({"labelled_from", "captions_sidecar"})
_SHARD_NAME_RE = re.compile(r"^(?P<prefix>.+)-\d{6}\.tar$")
_PART_RE = re.compile(r"^part-\d+-of-\d+$")


def check_worker(shard_index: int, num_shards: int) -> None:
    """Check a worker's place in a split run: part ``shard_index`` (``0 .. num_shards - 1``) of ``num_shards``.

    Raises:
        ValueError: If ``num_shards < 1`` or ``shard_index`` is out of range.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1 (the number of workers), got {num_shards!r}")
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"shard_index must be in 0..{num_shards - 1} (one per worker of num_shards={num_shards}), "
            f"got {shard_index!r}"
        )


def worker_name(shard_index: int, num_shards: int) -> str:
    """Folder (or file) name part of worker ``shard_index`` of ``num_shards``: ``part-K-of-N``.

    E.g. ``part-3-of-4`` or ``part-03-of-16`` (``K`` zero-padded, so names sort in worker order).

    Raises:
        ValueError: On an invalid ``shard_index``/``num_shards`` pair.
    """
    check_worker(shard_index, num_shards)
    return f"part-{shard_index:0{len(str(num_shards - 1))}d}-of-{num_shards}"


def worker_dir(out_dir: str | Path, shard_index: int, num_shards: int) -> Path:
    """Where a worker writes its shard set: ``out_dir`` itself for one worker, else ``out_dir/part-K-of-N``.

    ``out_dir`` is the run's output folder (where the merged set goes).

    Raises:
        ValueError: On an invalid ``shard_index``/``num_shards`` pair.
    """
    out_dir = Path(out_dir)
    return out_dir if num_shards == 1 and shard_index == 0 else out_dir / worker_name(shard_index, num_shards)


def work_digest(work: Any) -> str:
    """16 hex digits hashing a JSON-serialisable ``work``: what every worker of a run agrees on (seeds, inputs, ...)."""
    return hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()[:16]


def worker_record(shard_index: int, num_shards: int, work: Any) -> dict[str, Any]:
    """The ``worker`` manifest field, ``{"shard_index", "num_shards", "work_sha256"}``, of a part of a split run.

    ``work`` describes the whole run's work (:func:`work_digest`); parts differing in it are not merged.
    """
    check_worker(shard_index, num_shards)
    return {"shard_index": shard_index, "num_shards": num_shards, "work_sha256": work_digest(work)}


def merge_hint(part_dir: str | Path, worker: tuple[int, int]) -> str:
    """The line the worker ``(shard_index, num_shards)`` in ``part_dir`` (``OUT/part-K-of-N``) prints about merging.

    E.g. ``part 1 of 4; when all 4 are done, join them with: aras-data merge OUT --out OUT``.
    """
    out = Path(part_dir).parent
    return (
        f"part {worker[0]} of {worker[1]}; when all {worker[1]} are done, join them with: "
        f"aras-data merge {out} --out {out}"
    )


def worker_parts(directory: str | Path) -> list[Path]:
    """The ``part-K-of-N`` sub-folders holding a manifest in a run's ``--out`` folder, in worker order.

    Empty if there are none (always for a URL, which cannot be listed: give its parts one by one).
    """
    if is_url(directory) or not Path(directory).is_dir():
        return []
    return sorted(p for p in Path(directory).iterdir() if _PART_RE.match(p.name) and (p / MANIFEST_NAME).is_file())


@dataclass
class MergeReport:
    """What :func:`merge_shard_sets` wrote: the merged set ``out_dir``, its ``manifest`` path and counts.

    ``parts`` are the merged shard sets in merge order; ``linked`` counts the tar files
    hard-linked rather than copied.
    """

    out_dir: str
    manifest: str
    parts: list[str]
    num_samples: int
    num_shards: int
    linked: int

    def summary(self) -> str:
        """Two lines for a terminal: what was merged and where it went."""
        copied = self.num_shards - self.linked
        how = f"{self.linked} hard-linked, {copied} copied" if self.linked else f"{copied} copied"
        parts = ", ".join(self.parts[:4]) + (", ..." if len(self.parts) > 4 else "")
        merged = f"merged {len(self.parts)} shard sets ({parts}) into {self.num_samples} samples"
        return f"{merged}\nwrote {self.num_shards} shards ({how}) to {self.out_dir} (manifest {self.manifest})"


def merge_shard_sets(
    parts: Sequence[str | Path], out_dir: str | Path, overwrite: bool = False, link: bool = True
) -> MergeReport:
    """Join shard sets of one run (e.g. the ``part-K-of-N`` sets of split workers) into one in ``out_dir``; report it.

    The parts must agree on split, source, classes and every run field (``generator``,
    ``labelled_by``, ...), and no key may occur in two parts. Worker parts must be all
    ``N`` parts of one run and are taken in worker order; other shard sets in the order given.

    Shards are renamed ``{prefix}-{i:06d}.tar``; the manifest (summed counts, the parts'
    common fields) is written last. A part behind a URL is downloaded.

    ``parts`` are local or URL folders; ``out_dir`` may hold them, and a shard set there is
    replaced with ``overwrite``. ``link`` hard-links the tar files on one file system, else
    they are copied.

    Raises:
        ManifestError: If a part is not a shard set, or its manifest lacks ``class_pixels``.
        FileExistsError: If ``out_dir`` holds a shard set and ``overwrite`` is off.
        ValueError: If no parts are given, ``out_dir`` is one of them, the parts differ (split,
            source, classes, a run field), worker parts are missing or from different runs, a
            key occurs twice, or a shard does not hold the samples its manifest says.
    """
    out_dir = Path(out_dir)
    if not parts:
        raise ValueError("give at least one shard set to merge (e.g. the part-K-of-N folders of a split run)")
    paths = [as_location(p) for p in parts]
    if len({_identity(p) for p in paths}) != len(paths):
        raise ValueError(f"a shard set is given twice among {', '.join(map(str, paths))}")
    if _identity(out_dir) in {_identity(p) for p in paths}:
        raise ValueError(f"out_dir {out_dir} is one of the parts; merge into another folder")
    manifests = [read_manifest(p) for p in paths]
    paths, manifests = _order_parts(paths, manifests)
    extra = _common_fields(paths, manifests)
    sources = _check_keys(paths, manifests)
    _clear_out_dir(out_dir, overwrite)
    prefix = _prefix(manifests)
    shards, linked = [], 0
    for index, (source, entry) in enumerate(sources):
        name = f"{prefix}-{index:06d}.tar"
        linked += _place(source, out_dir / name, link)
        shards.append({**entry, "name": name})
    pixels = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    for path, manifest in zip(paths, manifests, strict=True):
        pixels += _class_pixels(path, manifest)
    first = manifests[0]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": first.get("format_version", FORMAT_VERSION),
        "classes": first.get("classes"),
        "split": first["split"],
        "source": first["source"],
        "num_samples": sum(int(m["num_samples"]) for m in manifests),
        "num_masks": sum(int(m.get("num_masks", 0)) for m in manifests),
        "shards": shards,
        "class_pixels": {name: int(n) for name, n in zip(CLASS_NAMES, pixels, strict=True)},
        "composition": composition_from_counts(pixels),
        **extra,
    }
    if "classes" not in first:
        del manifest["classes"]
    # Parts without samples, or written before sizes were recorded, have no image_size; mixed sizes give None.
    sizes = [m["image_size"] for m in manifests if "image_size" in m]
    if sizes:
        manifest["image_size"] = sizes[0] if all(size == sizes[0] for size in sizes) else None
    _remove_stale(out_dir, prefix, len(shards))
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return MergeReport(
        out_dir=str(out_dir),
        manifest=str(out_dir / MANIFEST_NAME),
        parts=[str(p) for p in paths],
        num_samples=int(manifest["num_samples"]),
        num_shards=len(shards),
        linked=linked,
    )


def _identity(location: str | Path) -> str | Path:
    """What tells two shard set folders apart: the resolved path, or the URL without a trailing slash."""
    return location.rstrip("/") if isinstance(location, str) else location.resolve()


def _order_parts(
    paths: list[str | Path], manifests: list[dict[str, Any]]
) -> tuple[list[str | Path], list[dict[str, Any]]]:
    """Check worker records (all parts of one run, none missing) and sort the parts by worker."""
    records: list[Any] = [m.get(WORKER_FIELD) for m in manifests]
    if all(r is None for r in records):
        return paths, manifests
    for path, record in zip(paths, records, strict=True):
        if not isinstance(record, Mapping) or not {"shard_index", "num_shards", "work_sha256"} <= record.keys():
            other = next(p for p, r in zip(paths, records, strict=True) if r is not None)
            raise ValueError(
                f"{other} is a part of a split run but {path} is not; merge only the part-K-of-N sets of one run"
            )
    first_path, first = paths[0], records[0]
    for path, record in zip(paths, records, strict=True):
        for name in ("num_shards", "work_sha256"):
            if record[name] != first[name]:
                raise ValueError(
                    f"{first_path} and {path} are parts of different runs (their worker {name} differ: "
                    f"{first[name]} vs {record[name]}); rerun the workers with the same options"
                )
    total = int(first["num_shards"])
    indices = [int(r["shard_index"]) for r in records]
    if len(set(indices)) != len(indices):
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise ValueError(f"part(s) {repeated} of {total} are given more than once")
    missing = sorted(set(range(total)) - set(indices))
    if missing:
        raise ValueError(
            f"part(s) {', '.join(map(str, missing))} of {total} are missing (given: {', '.join(map(str, paths))}); "
            "run those workers (--shard_index K) to completion first"
        )
    order = sorted(range(len(paths)), key=lambda i: indices[i])
    return [paths[i] for i in order], [manifests[i] for i in order]


def _common_fields(paths: list[str | Path], manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """Check the parts agree on everything but counts and shards; return the run fields of the merged manifest."""
    first_path, first = paths[0], manifests[0]
    for path, manifest in zip(paths[1:], manifests[1:], strict=True):
        for name in ("split", "source", "classes", "format_version"):
            if manifest.get(name) != first.get(name):
                raise ValueError(
                    f"{first_path} and {path} differ in {name} ({_short(first.get(name))} vs "
                    f"{_short(manifest.get(name))}); only shard sets of one split and source can be merged"
                )
    names = [n for m in manifests for n in m if n not in _OWN_FIELDS and n != WORKER_FIELD]
    extra: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        values = [m.get(name) for m in manifests]
        if all(v == values[0] for v in values):
            extra[name] = values[0]
        elif name in _PER_PART_FIELDS:
            extra[name] = values
        else:
            other = next(i for i, v in enumerate(values) if v != values[0])
            raise ValueError(
                f"{first_path} and {paths[other]} differ in {name!r} ({_short(values[0])} vs {_short(values[other])}); "
                "only shard sets made the same way (same generator, checkpoint and settings) can be merged"
            )
    return extra


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_keys(paths: list[str | Path], manifests: list[dict[str, Any]]) -> list[tuple[str | Path, dict[str, Any]]]:
    """``(tar location, manifest entry)`` of every shard, in merge order; fail on a repeated key or a wrong count."""
    owner: dict[str, str | Path] = {}
    sources = []
    for path, manifest in zip(paths, manifests, strict=True):
        for entry in manifest["shards"]:
            shard = locate(path, entry["name"])
            if isinstance(shard, Path) and not shard.is_file():
                raise FileNotFoundError(f"shard {shard} listed in the manifest is missing")
            keys = _shard_keys(shard)
            if len(keys) != int(entry["num_samples"]):
                raise ValueError(
                    f"{shard} holds {len(keys)} samples but its manifest says {entry['num_samples']}; "
                    f"check it with aras-data verify {path}"
                )
            for key in keys:
                if key in owner:
                    raise ValueError(
                        f"key {key!r} is in both {owner[key]} and {path}; the parts overlap "
                        "(were they made from overlapping seeds or inputs?), so merging would repeat a sample"
                    )
                owner[key] = path
            sources.append((shard, dict(entry)))
    return sources


def _shard_keys(shard: str | Path) -> list[str]:
    """Sample keys of a tar shard, in order, from its member names (a local file's data is not read)."""
    keys: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            if isinstance(shard, str):
                tar = tarfile.open(fileobj=stack.enter_context(open_shard(shard)), mode="r|")
            else:
                tar = tarfile.open(shard, mode="r:")
            for info in stack.enter_context(tar):
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and "." in base:
                    key = base.split(".", 1)[0]
                    if not keys or keys[-1] != key:
                        keys.append(key)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{shard} is not a readable tar file ({err}); check it with aras-data verify") from err
    return keys


def _class_pixels(path: str | Path, manifest: Mapping[str, Any]) -> np.ndarray:
    recorded = manifest.get("class_pixels")
    if not isinstance(recorded, Mapping):
        where = locate(path, MANIFEST_NAME)
        raise ManifestError(f"{where} lacks class_pixels; rewrite it with this version of aras400k")
    return np.array([int(recorded.get(name, 0)) for name in CLASS_NAMES], dtype=np.int64)


def _prefix(manifests: list[dict[str, Any]]) -> str:
    """The shard name prefix of the first part (``train`` of ``train-000000.tar``), else the split."""
    for manifest in manifests:
        for entry in manifest["shards"]:
            match = _SHARD_NAME_RE.match(entry["name"])
            return match.group("prefix") if match else str(manifest["split"])
    return str(manifests[0]["split"])


def _clear_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, or remove, a shard set already in ``out_dir``; create the folder."""
    if (out_dir / MANIFEST_NAME).exists():
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} already holds a shard set; pass overwrite=True (--overwrite true) to replace it"
            )
        try:
            old = read_manifest(out_dir)["shards"]
        except ManifestError:
            old = []
        (out_dir / MANIFEST_NAME).unlink()
        for entry in old:
            (out_dir / entry["name"]).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _place(source: str | Path, dest: Path, link: bool) -> int:
    """Hard-link (or copy, or download) ``source`` to ``dest`` through a temporary name; return 1 if linked."""
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    linked = 0
    if isinstance(source, str):
        with open_shard(source) as stream, tmp.open("wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    else:
        if link:
            with contextlib.suppress(OSError):
                os.link(source, tmp)
                linked = 1
        if not linked:
            shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return linked


def _remove_stale(out_dir: Path, prefix: str, count: int) -> None:
    """Remove shards of this prefix beyond ``count`` left by an interrupted or larger earlier merge."""
    for path in out_dir.glob(f"{prefix}-*.tar"):
        match = re.fullmatch(rf"{re.escape(prefix)}-(\d{{6}})\.tar", path.name)
        if match and int(match.group(1)) >= count:
            path.unlink()
