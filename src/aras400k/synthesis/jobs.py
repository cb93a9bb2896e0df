"""One resumable, splittable job over shard sets: the engine of synthesis, labelling and captioning.

Every job that writes a shard set from a model's output follows the contract in
``docs/architecture.md`` ("Resumable jobs over shard sets"); :class:`ShardJob` is that
contract written once::

    job = ShardJob(out_dir, shard_index, num_shards)
    with job.lock():                                  # one writer per output
        job.refuse_finished(overwrite)                # a finished set is replaced only on request
        job.open(record, overwrite)                   # resume, refuse other settings, or start
        job.write_parts(parts, write_part, ...)       # one shard set per part, in OUT/.partial
        manifest = job.assemble(job.out_dir, ...)     # parts -> OUT, manifest last
        job.finish()                                  # the work folder goes

A rerun with the same record (``OUT/.partial/run.json``) resumes; with another it is
refused (:func:`check_settings`) unless ``overwrite``. A part (``.partial/part-NNNNNN``)
with a manifest is finished and kept; one without is redone from its start. Assembly
copies image and mask bytes verbatim and writes the manifest last. The lock lies beside
the output (:mod:`aras400k.locking`), since the work folder inside it is deleted at the end.

**Workers.** With ``shard_index=K, num_shards=N`` a job is one worker of a split run:
it makes only the ``K``-th of ``N`` contiguous runs of parts into ``OUT/part-K-of-N``
(:func:`~aras400k.data.merge.worker_dir`; its lock is ``OUT/part-K-of-N.lock``), whose
manifest records the worker; :func:`~aras400k.data.merge.merge_shard_sets` (``aras-data
merge``) joins the parts into the single run's shard set, byte for byte. Captioning
writes sidecars, so it uses only :func:`check_settings` and the worker naming.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tqdm.auto import tqdm

from aras400k.data.merge import WORKER_FIELD, check_worker, merge_hint, worker_dir, worker_record
from aras400k.data.remote import locate
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    ShardWriter,
    Source,
    decode_sample,
    iter_raw_samples,
    shard_paths,
    write_json_atomic,
)
from aras400k.locking import exclusive_lock

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "RUN_RECORD",
    "WORK_DIR",
    "ShardJob",
    "ShardSetReport",
    "batches_by",
    "check_settings",
    "input_shard_size",
    "locate_shard",
    "refuse_finished",
    "refuse_in_place",
    "summary_head",
    "to_uint8_images",
]

_T = TypeVar("_T")

#: The work folder inside a job's output.
WORK_DIR = ".partial"
#: The run record inside the work folder.
RUN_RECORD = "run.json"

#: Writes one part: gets the part's writer, the part's number and the progress bar.
PartWriter = Callable[[ShardWriter, int, "tqdm[Any]"], None]


class ShardSetReport(Protocol):
    """What every synthesis report says about the shard set it wrote."""

    out_dir: str
    manifest: str
    num_shards: int
    resumed_parts: int
    worker: tuple[int, int] | None


def summary_head(report: ShardSetReport, done: str, parts: str) -> list[str]:
    """The lines every synthesis report's summary starts with.

    They say ``done`` (what was generated, from what; prefixed with the worker), where it
    went, how to join a worker's part with the others, and how many ``parts`` (in words:
    ``"input shards"``, ``"seed chunks"``) were resumed.
    """
    worker = report.worker
    lines = [
        f"worker {worker[0]} of {worker[1]}: {done}" if worker else done,
        f"wrote {report.num_shards} shards to {report.out_dir} (manifest {report.manifest})",
    ]
    if worker:
        lines.append(merge_hint(report.out_dir, worker))
    if report.resumed_parts:
        lines.append(f"resumed: {report.resumed_parts} {parts} were kept from the interrupted run")
    return lines


def check_settings(previous: Mapping[str, Any], record: Mapping[str, Any], problem: str, remedy: str) -> None:
    """Refuse to continue work begun with other settings, naming the settings that differ.

    Args:
        previous: The settings the work was begun with.
        record: This run's settings.
        problem: What is wrong (``"OUT/.partial holds an unfinished run with other settings"``).
        remedy: What the user can do.

    Raises:
        ValueError: ``"{problem} (seed, limit differ); {remedy}"`` if the settings differ.
    """
    if previous == record:
        return
    changed = sorted(k for k in record.keys() | previous.keys() if record.get(k) != previous.get(k))
    verb = "differs" if len(changed) == 1 else "differ"
    raise ValueError(f"{problem} ({', '.join(changed)} {verb}); {remedy}")


def refuse_finished(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into a finished shard set unless ``overwrite``.

    Raises:
        FileExistsError: If ``out_dir`` holds a manifest and ``overwrite`` is off.
    """
    if (out_dir / MANIFEST_NAME).exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a shard set; pass overwrite=True (--overwrite true) to replace it"
        )


def refuse_in_place(input_dir: str | Path, out_dir: Path) -> None:
    """Refuse an output that is the input shard set.

    Raises:
        ValueError: If the local ``input_dir`` is ``out_dir``.
    """
    if isinstance(input_dir, Path) and input_dir.resolve() == out_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is the input shard set; shards are never edited in place")


def locate_shard(directory: str | Path, name: str) -> str | Path:
    """Where a shard listed in a set's manifest is (:func:`~aras400k.data.remote.locate`).

    Raises:
        FileNotFoundError: If a local shard is missing.
    """
    path = locate(directory, name)
    if isinstance(path, Path) and not path.is_file():
        raise FileNotFoundError(f"shard {path} listed in the manifest is missing")
    return path


def input_shard_size(manifest: Mapping[str, Any], per_sample: int = 1) -> int:
    """The input's samples per shard (its first shard's) times ``per_sample``, so output shards follow it."""
    shards = manifest["shards"]
    return max(1, int(shards[0]["num_samples"]) * per_sample) if shards else 1000


def batches_by(items: Iterable[_T], size: int, key: Callable[[_T], object]) -> Iterator[list[_T]]:
    """Group items, in order, into batches of up to ``size`` that share ``key`` (a shape, a shard)."""
    batch: list[_T] = []
    for item in items:
        if batch and (len(batch) >= size or key(item) != key(batch[0])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` generator output in ``[-1, 1]`` -> ``(B, H, W, 3)`` uint8, ``round((x + 1) * 127.5)``."""
    import torch

    pixels = torch.round((images.float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


class ShardJob:
    """The output of one job, or of one worker of a split job: its lock, work folder, parts and assembly.

    Args:
        out_dir: The job's output shard set (for a worker, the run's; the worker writes
            into ``out_dir/part-K-of-N``).
        shard_index: This worker's part of a split run, ``0 .. num_shards - 1``.
        num_shards: Workers the run is split over (1: a single run).

    Raises:
        ValueError: On an invalid ``shard_index``/``num_shards`` pair.
    """

    def __init__(self, out_dir: str | Path, shard_index: int = 0, num_shards: int = 1) -> None:
        check_worker(shard_index, num_shards)
        self.shard_index, self.num_shards = shard_index, num_shards
        self.out_dir = worker_dir(out_dir, shard_index, num_shards)
        self.work = self.out_dir / WORK_DIR

    @property
    def worker(self) -> tuple[int, int] | None:
        """``(shard_index, num_shards)`` for a worker of a split run, ``None`` for a single run."""
        return (self.shard_index, self.num_shards) if self.num_shards > 1 else None

    def lock(self) -> AbstractContextManager[Any]:
        """Hold the output's lock (:func:`~aras400k.locking.exclusive_lock`) while the ``with`` block runs."""
        return exclusive_lock(self.out_dir)

    def refuse_finished(self, overwrite: bool) -> None:
        """:func:`refuse_finished` for this job's output."""
        refuse_finished(self.out_dir, overwrite)

    def worker_fields(self, work: Any) -> dict[str, Any]:
        """The manifest fields that record a worker of a split run (``{}`` for a single run).

        ``work`` is what every worker of the run shares; its digest lets the merge check
        that the parts belong together.
        """
        if self.worker is None:
            return {}
        return {WORKER_FIELD: worker_record(self.shard_index, self.num_shards, work)}

    def open(self, record: Mapping[str, Any], overwrite: bool) -> None:
        """Create the work folder, or check that the one there belongs to a run with these settings.

        ``record`` is everything the output depends on (JSON); with ``overwrite`` an
        unfinished run with other settings is discarded instead of refused.

        Raises:
            ValueError: If the work folder holds a run with other settings and ``overwrite`` is off.
        """
        path = self.work / RUN_RECORD
        previous = json.loads(path.read_text()) if path.is_file() else None
        if previous == record:
            return  # resume
        if previous is not None and not overwrite:
            check_settings(
                previous,
                record,
                f"{self.work} holds an unfinished run with other settings",
                "rerun with the same settings to resume it, or pass overwrite=True (--overwrite true) to start over",
            )
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        write_json_atomic(path, dict(record))

    def write_parts(
        self,
        parts: Sequence[tuple[int, int]],
        write_part: PartWriter,
        split: str,
        source: Source,
        desc: str,
        progress: bool,
    ) -> int:
        """Write every part that is not finished; return how many finished ones were kept.

        Args:
            parts: ``(part number, samples it will hold)`` in output order.
            write_part: Writes one part's samples (see :data:`PartWriter`), updating the bar.
            split: The parts' split.
            source: The parts' source.
            desc: The progress bar's label.
            progress: Show the progress bar (samples).
        """
        kept = 0
        with tqdm(total=sum(n for _, n in parts), desc=desc, unit="img", disable=not progress) as bar:
            for index, count in parts:
                part = self.work / f"part-{index:06d}"
                if (part / MANIFEST_NAME).is_file():
                    bar.update(count)
                    kept += 1
                    continue
                if part.exists():
                    shutil.rmtree(part)  # unfinished: redo from its first sample
                with ShardWriter(part, split=split, source=source, samples_per_shard=10**9, prefix="part") as writer:
                    write_part(writer, index, bar)
        return kept

    def samples(self, with_mask: bool = True) -> Iterator[Sample]:
        """The samples of all parts in order, image (and mask) bytes kept verbatim."""
        for part in sorted(self.work.glob("part-*")):
            for path in shard_paths(part):
                for raw in iter_raw_samples(path):
                    sample = decode_sample(raw, with_mask=with_mask, with_captions=False)
                    sample.image_png = raw["image.png"]
                    if with_mask:
                        sample.mask_png = raw["mask.png"]
                    yield sample

    def assemble(
        self,
        dest: Path,
        split: str,
        source: Source,
        samples_per_shard: int,
        extra: Mapping[str, Any],
        overwrite: bool,
        with_mask: bool = True,
    ) -> dict[str, Any]:
        """Copy the parts, in order, into the shard set ``dest``; return its manifest.

        ``dest`` is ``self.out_dir``, or a folder inside the work folder when another step
        follows; the other arguments are :class:`ShardWriter`'s (``extra``: further
        manifest fields), and ``with_mask`` says whether the parts' samples have masks.
        Shards left by an interrupted assembly have the names of the ones written now,
        so they are replaced.
        """
        writer = ShardWriter(
            dest, split=split, source=source, samples_per_shard=samples_per_shard, overwrite=overwrite, extra=extra
        )
        with writer:
            for sample in self.samples(with_mask=with_mask):
                writer.write(sample)
        return writer.manifest

    def finish(self) -> None:
        """Remove the work folder (the output is complete)."""
        shutil.rmtree(self.work)
