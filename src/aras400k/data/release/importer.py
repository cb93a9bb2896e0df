"""The import itself: :func:`import_release` and its :class:`ImportReport`.

It checks the arguments, scans the splits (:mod:`aras400k.data.release.layout`),
attaches the CSVs (:mod:`aras400k.data.release.tables`), then reads every image and
mask (:mod:`aras400k.data.release.pictures`) and writes one shard set per split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from aras400k.classes import CLASS_NAMES
from aras400k.data.composition import composition
from aras400k.data.parallel import ordered_map, progress, resolve_workers
from aras400k.data.release.layout import (
    UNLABELLED_SPLIT,
    Entry,
    SplitPlan,
    check_caption_paths,
    discover_caption_csvs,
    find_splits,
    scan_split,
)
from aras400k.data.release.pictures import read_image, read_mask, verbatim_png
from aras400k.data.release.problems import (
    SIZE_MISMATCH,
    WARNING_KINDS,
    Problem,
    ProblemLog,
    ReleaseImportError,
    kind_of,
)
from aras400k.data.release.tables import attach_captions, attach_percentages, compare_composition
from aras400k.data.release.zips import ReleaseZip, ZipMember, open_release_zips
from aras400k.data.shards import MANIFEST_NAME, EncodedSample, Sample, ShardWriter, Source, encode_png, encode_sample

__all__ = ["ImportReport", "import_release"]

_MADE_BY = "aras-data import"


@dataclass
class ImportReport:
    """What :func:`import_release` wrote and every problem it found.

    Attributes:
        written: Split name -> samples written to its shard set.
        problems: ``(file path, "<kind>: <details>")`` for every problem, in the order found.
    """

    written: dict[str, int]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, max_problems: int = 10) -> str:
        """Lines for a terminal: samples per split, problems by kind (warnings marked), the first ``max_problems``."""
        per_split = ", ".join(f"{split} {n}" for split, n in self.written.items())
        lines = [f"wrote {sum(self.written.values())} samples ({per_split or 'no splits'})"]
        if not self.problems:
            lines.append("no problems found")
            return "\n".join(lines)
        kinds = Counter(kind_of(reason) for _, reason in self.problems)
        lines.append(f"{len(self.problems)} problems:")
        for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            tag = " (warning)" if kind in WARNING_KINDS else ""
            lines.append(f"  {kind}: {count}{tag}")
        shown = self.problems[:max_problems]
        lines.append(f"first {len(shown)}:")
        lines.extend(f"  {path}: {reason}" for path, reason in shown)
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)


def import_release(
    root: str | Path | Sequence[str | Path],
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
    workers: int | None = None,
    check_md5: bool = True,
    notice: Callable[[str], None] = print,
) -> ImportReport:
    """Import an ARAS400k release folder, or the released zips as they are, into one shard set per split; report it.

    ``docs/preparing-data.md`` describes it, option by option. Zips are read in place and
    MD5-checked first (:data:`~aras400k.data.release.zips.RELEASE_MD5`). Samples are written
    in sorted file-name order, keyed by their image's file stem with every character other
    than letters, digits, ``_`` and ``-`` replaced by ``_``; the shards are the same, byte
    for byte, whatever the number of ``workers``.

    Args:
        root: The release folder (holding ``train``, ``val``, ``test``, ``synth``), or release zips.
        out_dir: Folder receiving one shard set per split (``out_dir/train``, ...).
        splits: Splits to import; default: every release split present.
        synth_source: ``source`` of the ``synth`` samples: ``synth_uncond`` (StyleGAN3) or ``synth_cond`` (SPADE).
        on_error: ``"fail"`` stops at the first problem file (nothing written); ``"skip"`` lists it in the report.
        unknown_colours: ``"error"``: a mask colour outside the class table is a problem; ``"ignore"``: it is 255.
        captions: Extra caption CSVs (``filename,caption``), for whichever split holds each file name
            (``root/captions`` is always read).
        samples_per_shard: Samples per tar shard.
        overwrite: Replace shard sets already in ``out_dir``.
        progress: Show a progress bar per split (a few lines on a non-terminal) and per zip while hashing.
        workers: Processes reading, checking and encoding the samples; ``None``: every usable core.
        check_md5: Check zips with a published name against the MD5 table (others get a notice, no check).
        notice: Receives the one-line notices about unchecked zips.

    Raises:
        ValueError: On an invalid argument (an unknown choice, a bad split name).
        ReleaseImportError: If ``root`` is missing, holds no split folder, a requested
            split or a caption CSV is missing, a split has no images, a zip is missing,
            not a zip or has the wrong MD5 digest, or (with
            ``on_error="fail"``) on the first problem file; the message names the file.
        FileExistsError: If an output shard set exists and ``overwrite`` is off.
    """
    _check_choice("synth_source", synth_source, ("synth_uncond", "synth_cond"))
    _check_choice("on_error", on_error, ("skip", "fail"))
    _check_choice("unknown_colours", unknown_colours, ("error", "ignore"))
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    workers = resolve_workers(workers)
    out_dir = Path(out_dir)
    extra_captions = check_caption_paths(captions)
    sources, archives = _open_sources(root, splits, check_md5=check_md5, progress=progress, notice=notice)
    try:
        _check_outputs(out_dir, [s.name for s in sources], overwrite)
        problems = ProblemLog(on_error)
        plans = [scan_split(s.name, s.folder, problems) for s in sources]
        _attach_tables(plans, sources, extra_captions, problems)
        written = _write_splits(
            plans,
            sources=sources,
            out_dir=out_dir,
            synth_source=synth_source,
            unknown_colours=unknown_colours,
            samples_per_shard=samples_per_shard,
            overwrite=overwrite,
            progress=progress,
            problems=problems,
            workers=workers,
        )
    finally:
        for archive in archives:
            archive.close()
    return ImportReport(written=written, problems=problems.items)


# --- where the splits come from -------------------------------------------------------


@dataclass
class _Source:
    """One split ``name`` to import: its ``folder`` (``Path`` or ``zipfile.Path``) and the release root above it.

    ``root`` holds its ``class_percentages`` and ``captions``; ``label`` is the release root
    or zip as the manifest records it.
    """

    name: str
    folder: Any
    root: Any
    label: str


def _is_zip_input(root: str | Path | Sequence[str | Path]) -> bool:
    """Whether ``root`` names zips rather than one release folder."""
    if isinstance(root, (str, Path)):
        return str(root).lower().endswith(".zip")
    return True


def _open_sources(
    root: str | Path | Sequence[str | Path],
    splits: Sequence[str] | None,
    *,
    check_md5: bool,
    progress: bool,
    notice: Callable[[str], None],
) -> tuple[list[_Source], list[ReleaseZip]]:
    """The splits to import from a release folder or zips, and the opened zips (none for a folder) to close.

    Raises:
        ReleaseImportError: As :func:`find_splits` and :func:`open_release_zips` do.
    """
    if not _is_zip_input(root):
        folder = Path(root)  # type: ignore[arg-type]
        found = find_splits(folder, splits)
        return [_Source(name, path, folder, str(folder)) for name, path in found.items()], []
    items = [root] if isinstance(root, (str, Path)) else list(root)
    if len(items) == 1 and not str(items[0]).lower().endswith(".zip"):
        return _open_sources(items[0], splits, check_md5=check_md5, progress=progress, notice=notice)
    archives = open_release_zips(items, check_md5=check_md5, progress=progress, notice=notice)
    wanted = [a for a in archives if splits is None or a.split in splits]
    missing = [s for s in (splits or []) if s not in {a.split for a in archives}]
    if missing:
        for archive in archives:
            archive.close()
        held = ", ".join(a.split for a in archives)
        raise ReleaseImportError(f"no zip holds split {missing[0]!r} (the zips hold {held})")
    return [_Source(a.split, a.folder, a.root, str(a.path)) for a in wanted], archives


def _attach_tables(
    plans: list[SplitPlan], sources: list[_Source], extra_captions: list[Path], problems: ProblemLog
) -> None:
    """Attach the class-percentage and caption CSVs next to each split, then the extra caption CSVs."""
    discovered: set[str] = set()
    for plan, source in zip(plans, sources, strict=True):
        percentages = source.root / "class_percentages" / f"{plan.name}.csv"
        if percentages.is_file():
            attach_percentages(plan, percentages, problems)
        for path in discover_caption_csvs(source.root, plan.name):
            discovered.add(_identity(path))
            attach_captions([plan], path, problems)
    for path in extra_captions:
        if _identity(path) not in discovered:
            attach_captions(plans, path, problems)


def _identity(path: Any) -> str:
    """A string naming a file on disk (resolved) or in a zip."""
    return str(path.resolve()) if isinstance(path, Path) else str(path)


def _relative(path: Any, root: Any) -> str:
    """``path`` relative to ``root``, with ``/`` separators (on disk or in a zip)."""
    if isinstance(path, Path):
        return path.relative_to(root).as_posix()
    return str(path.at)[len(str(root.at)) :]


# --- arguments and outputs -------------------------------------------------------------


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming the valid choices if ``value`` is not one."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_outputs(out_dir: Path, split_dirs: Sequence[str], overwrite: bool) -> None:
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


# --- writing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One picture pair (``entry``, with what the CSVs attached) to read, check and encode in a worker (picklable).

    ``root`` is what ``release_file`` is relative to, ``unknown`` what an unknown mask colour is;
    ``split``, ``source`` (filled into ``meta.json``) and ``compress_level`` are the writer's.
    """

    entry: Entry
    root: Any
    unknown: Literal["error", "ignore"]
    split: str
    source: Source
    compress_level: int


#: A worker's answer: the sample ready to append and its warnings, or the problem ``(kind, detail, path)``.
_Loaded = tuple[EncodedSample | None, list[tuple[str, str]], tuple[str, str, Path | None] | None]


def _load_job(job: _Job) -> _Loaded:
    """Read, check and encode one sample in a worker, down to its tar bytes.

    The decoded arrays never leave the worker; problems come back as values, not exceptions.
    """
    warnings = ProblemLog("skip")
    try:
        sample = _load_sample(job.entry, job.root, job.unknown, warnings)
    except Problem as problem:
        return None, warnings.items, (problem.kind, problem.detail, problem.path)
    sample.image_png = verbatim_png(job.entry.image)
    if sample.mask is not None:
        sample.mask_png = encode_png(sample.mask, job.compress_level)
    encoded = encode_sample(sample, job.split, job.source, job.compress_level)
    return encoded, warnings.items, None


def _load_sample(entry: Entry, root: Any, unknown: Literal["error", "ignore"], problems: ProblemLog) -> Sample:
    """Read one image (and mask) into a :class:`Sample`, checking the CSV composition; :class:`Problem` if unusable."""
    image = read_image(entry.image)
    meta: dict[str, object] = {"release_file": _relative(entry.image, root)}
    mask = None
    if entry.mask is not None:
        mask = read_mask(entry.mask, unknown)
        if mask.shape != image.shape[:2]:
            raise Problem(
                SIZE_MISMATCH,
                f"mask {entry.mask.name} is {mask.shape[1]}x{mask.shape[0]} "
                f"but the image is {image.shape[1]}x{image.shape[0]}",
                entry.image,
            )
        if entry.csv_percent is not None:
            compare_composition(entry, composition(mask), problems)
    elif entry.csv_percent is not None:
        meta["composition"] = {c: round(entry.csv_percent[c] / 100.0, 6) for c in CLASS_NAMES}
    return Sample(key=entry.key, image=image, mask=mask, meta=meta, captions=list(entry.captions) or None)


def _write_splits(
    plans: list[SplitPlan],
    *,
    sources: list[_Source],
    out_dir: Path,
    synth_source: Literal["synth_uncond", "synth_cond"],
    unknown_colours: Literal["error", "ignore"],
    samples_per_shard: int,
    overwrite: bool,
    progress: bool,
    problems: ProblemLog,
    workers: int = 1,
) -> dict[str, int]:
    """Write every split, returning the samples written per split; manifests only once all succeeded."""
    writers: list[ShardWriter] = []
    written: dict[str, int] = {}
    try:
        for plan, source in zip(plans, sources, strict=True):
            writer = ShardWriter(
                out_dir / plan.name,
                split=plan.name,
                source=synth_source if plan.name == UNLABELLED_SPLIT else "real",
                samples_per_shard=samples_per_shard,
                overwrite=overwrite,
                extra={"made_by": _MADE_BY, "release_root": source.label},
            )
            writers.append(writer)
            written[plan.name] = _write_split(plan, writer, source.root, unknown_colours, problems, progress, workers)
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            _discard(writer)
        raise
    return written


def _write_split(
    plan: SplitPlan,
    writer: ShardWriter,
    root: Any,
    unknown: Literal["error", "ignore"],
    problems: ProblemLog,
    progress_bar: bool,
    workers: int = 1,
) -> int:
    """Write (and count) one split's samples in file-name order, read and encoded by ``workers`` processes."""
    count = 0
    level = writer.compress_level
    entries: Iterable[Entry] = plan.entries
    if workers > 1 and not isinstance(root, Path):
        # A zipfile.Path holds its open zip: workers get the names, and open the zip themselves.
        root = ZipMember.of(root)
        entries = (_named_in_zip(entry) for entry in plan.entries)
    jobs = (_Job(entry, root, unknown, writer.split, writer.source, level) for entry in entries)
    with progress(len(plan.entries), f"import {plan.name}", "image", progress_bar) as bar:
        for sample, warnings, problem in ordered_map(_load_job, jobs, workers):
            for path, reason in warnings:
                kind, _, detail = reason.partition(": ")
                problems.add(Path(path), kind, detail)
            bar.update(1)
            if problem is not None:
                problems.add_problem(Problem(*problem))
                continue
            assert sample is not None
            writer.write_encoded(sample)
            count += 1
    return count


def _named_in_zip(entry: Entry) -> Entry:
    """The entry with its zip members as :class:`~aras400k.data.release.zips.ZipMember` (picklable)."""
    mask = ZipMember.of(entry.mask) if entry.mask is not None else None
    # Like the zipfile.Path it replaces, a ZipMember stands in for a Path (same reading methods).
    return replace(entry, image=ZipMember.of(entry.image), mask=mask)  # type: ignore[arg-type]


def _discard(writer: ShardWriter) -> None:
    """Abort a writer and remove the shards it finished, unless its manifest is written."""
    writer.abort()
    if (writer.out_dir / MANIFEST_NAME).exists():
        return
    for shard in writer.shards:
        (writer.out_dir / shard["name"]).unlink(missing_ok=True)
