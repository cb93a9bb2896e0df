"""Conditional synthesis: sample a trained SPADE GAN on real masks into a new shard set.

For every mask of a shard set, :func:`synthesize_conditional` generates ``per_mask``
images with the EMA generator of a :class:`~aras400k.models.spade.SPADEGAN` checkpoint
and writes them, with the input ``mask.png`` copied byte for byte, as samples keyed
``{parent}_c{k}``::

    report = synthesize_conditional("runs/gan_spade/checkpoints/last.ckpt", "data/demo/train",
                                    "data/synth_cond", per_mask=4, seed=0)
    print(report.summary())

Guarantees:

- **No leakage into evaluation.** Masks must come from a ``train`` shard set (the
  manifest's ``split``) unless ``force_split`` is given.
- **Deterministic by seed.** Sample ``k`` of parent ``p`` draws its noise from a CPU
  generator seeded with :func:`sample_seed` ``(seed, p, k)``, and batches never cross an
  input shard, so a run, a resumed run and a run with the same settings give the same
  bytes.
- **Resumable without duplicates.** Each input shard becomes one part (a complete
  shard set of its own) in ``OUT/.partial``; an interrupted run leaves finished parts,
  which a rerun with the same settings (checkpoint, masks, seed, ``per_mask``,
  ``batch_size``, device type) keeps, redoing only unfinished ones; other settings are
  refused rather than mixed in. The parts
  are assembled into ``OUT`` at the end and removed; ``OUT/manifest.json`` is written
  last, so ``OUT`` is a finished shard set only when everything is there.
- **One run per output.** A run holds the lock ``OUT.lock`` beside ``OUT`` (a worker:
  ``OUT/part-K-of-N.lock``; see :mod:`aras400k.locking`; beside, since the work folder
  inside ``OUT`` is deleted at the end) from its first check to its last write; a
  second run on the same output stops at once with
  :class:`~aras400k.locking.LockedError` naming the first one's PID.
- **Splittable over workers.** With ``shard_index=K, num_shards=N`` worker ``K`` makes
  the parts of the ``K``-th of ``N`` contiguous runs of input shards into
  ``OUT/part-K-of-N`` (so use at most as many workers as input shards); since batches
  never cross an input shard, its images are the single run's, byte for byte.
  :func:`~aras400k.data.merge.merge_shard_sets` (``aras-data merge``) joins the parts.

Checkpoints are read with ``torch.load(weights_only=True)``
(:func:`~aras400k.models.spade.load_spade_generator`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aras400k.checkpoints import checkpoint_sha256
from aras400k.data.composition import composition, format_composition
from aras400k.data.merge import WORKER_FIELD, check_worker, merge_hint, worker_dir, worker_record
from aras400k.data.remote import as_location, locate, location_name
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    SampleError,
    ShardWriter,
    decode_mask,
    decode_sample,
    iter_raw_samples,
    iter_samples,
    read_manifest,
    shard_paths,
    write_json_atomic,
)
from aras400k.data.sources import partition_range
from aras400k.locking import exclusive_lock
from aras400k.metrics.segmentation import SegmentationMetrics
from aras400k.models.spade.generator import SPADEGenerator
from aras400k.models.spade.module import SPADEGAN, load_spade_generator
from aras400k.models.spade.normalization import one_hot_mask
from aras400k.synthesis import _label_shards, _resolve_device

__all__ = ["SpadeSynthesisReport", "sample_seed", "synthesize_conditional"]

#: Folder inside the output where parts are written until the run is complete.
WORK_DIR = ".partial"
_RUN_RECORD = "run.json"
_RUN_FORMAT = 1


def sample_seed(seed: int, parent: str, index: int) -> int:
    """The noise seed of sample ``index`` of parent ``parent`` in a run seeded ``seed``.

    A hash, so it depends only on these three values (not on the order, the batch or
    which other samples a run makes).

    Args:
        seed: The run's seed.
        parent: Key of the real sample whose mask is used.
        index: Sample number for that mask (``0 .. per_mask - 1``).

    Returns:
        A non-negative 63-bit integer.
    """
    digest = hashlib.sha256(f"{seed}:{parent}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class SpadeSynthesisReport:
    """What :func:`synthesize_conditional` wrote.

    Attributes:
        masks_dir: The shard set whose masks were used.
        out_dir: The new shard set.
        manifest: Path of its ``manifest.json``.
        num_parents: Masks used (by this worker, in a split run).
        num_samples: Images written (``num_parents * per_mask``).
        num_shards: Tar shards written.
        per_mask: Images per mask.
        seed: The run's seed.
        checkpoint: The generator checkpoint.
        checkpoint_sha256: Its sha256 (first 16 hex digits).
        resumed_parts: Input shards whose samples came from an earlier, interrupted run.
        composition: Class name -> fraction of all mask pixels of the new set.
        labelled_with: Segmenter checkpoint whose predictions replaced the masks, if any.
        label_miou: Macro IoU of those predictions against the input masks, if labelled.
        worker: ``(shard_index, num_shards)`` of a worker of a split run; ``None`` for a single run.
    """

    masks_dir: str
    out_dir: str
    manifest: str
    num_parents: int
    num_samples: int
    num_shards: int
    per_mask: int
    seed: int
    checkpoint: str
    checkpoint_sha256: str
    resumed_parts: int = 0
    composition: dict[str, float] = field(default_factory=dict)
    labelled_with: str | None = None
    label_miou: float | None = None
    worker: tuple[int, int] | None = None

    def summary(self) -> str:
        """Render the report for a terminal.

        Returns:
            A few lines: what was generated from what, where it went, and the composition.
        """
        worker = f"worker {self.worker[0]} of {self.worker[1]}: " if self.worker else ""
        lines = [
            f"{worker}generated {self.num_samples} images ({self.per_mask} per mask, seed {self.seed}) from "
            f"{self.num_parents} masks of {self.masks_dir} with {self.checkpoint} (sha256 {self.checkpoint_sha256})",
            f"wrote {self.num_shards} shards to {self.out_dir} (manifest {self.manifest})",
        ]
        if self.worker:
            lines.append(merge_hint(self.out_dir, self.worker))
        if self.resumed_parts:
            lines.append(f"resumed: {self.resumed_parts} input shards were kept from the interrupted run")
        if self.labelled_with is not None:
            lines.append(
                f"masks replaced by the predictions of {self.labelled_with}; "
                f"macro IoU against the input masks: {self.label_miou:.3f}"
            )
        lines.append(f"composition: {format_composition(self.composition) or 'empty'}")
        return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """Settings of one synthesis run, shared by its steps."""

    generator: SPADEGenerator
    device: torch.device
    masks_dir: str | Path
    manifest: dict[str, Any]
    per_mask: int
    seed: int
    batch_size: int
    generator_meta: dict[str, Any]
    shards: list[int] = field(default_factory=list)

    @property
    def split(self) -> str:
        """The input's (and the output's) split."""
        return str(self.manifest["split"])


def synthesize_conditional(
    checkpoint: str | Path,
    masks_dir: str | Path,
    out_dir: str | Path,
    per_mask: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    force_split: bool = False,
    label_with: str | Path | None = None,
    device: str = "auto",
    use_ema: bool = True,
    samples_per_shard: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    module_class: type[SPADEGAN] | None = None,
) -> SpadeSynthesisReport:
    """Generate ``per_mask`` images for every mask of a shard set and write them as a new shard set.

    Each output sample has the generated ``image.png``, the parent's ``mask.png`` (same
    bytes) and a ``meta.json`` with ``source: synth_cond``, the parent's ``split``,
    ``parent`` (the real key), ``composition`` (of the mask) and ``generator``
    (``checkpoint``, ``checkpoint_sha256``, ``seed``, ``index``, ``sample_seed``,
    ``use_ema``). Keys are ``{parent}_c{k}``; samples follow the input order, parent by
    parent. See the module docstring for determinism and resuming.

    With ``num_shards > 1`` this call is one worker of a split run: it uses only the
    masks of its contiguous run of input shards and writes into ``out_dir/part-K-of-N``
    (:func:`~aras400k.data.merge.worker_dir`), whose manifest records the worker; merge
    the parts with :func:`~aras400k.data.merge.merge_shard_sets`.

    Args:
        checkpoint: A :class:`~aras400k.models.spade.SPADEGAN` Lightning checkpoint.
        masks_dir: Shard set whose masks condition the generator (every sample needs a mask).
        out_dir: Folder of the new shard set.
        per_mask: Images per mask.
        seed: Seed of the run (see :func:`sample_seed`).
        batch_size: Images per generator forward pass.
        force_split: Accept masks from a split other than ``train``.
        label_with: Segmenter checkpoint; when given, the masks written are its
            predictions on the generated images (the paper's pseudo-labels), and the
            report gives their macro IoU against the input masks.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        use_ema: Sample from the EMA generator (recommended) rather than the trained weights.
        samples_per_shard: Samples per output tar (default: the input's shard size times ``per_mask``).
        overwrite: Replace a finished shard set at ``out_dir``, and discard an unfinished
            run there that used other settings (one with the same settings is resumed).
        progress: Show a progress bar.
        shard_index: This worker's part of a split run, ``0 .. num_shards - 1``.
        num_shards: Workers the run is split over (1: this call does everything).
        module_class: The :class:`~aras400k.models.spade.SPADEGAN` subclass that trained the
            checkpoint, when it builds a generator of its own (``None``: the standard one).

    Returns:
        A :class:`SpadeSynthesisReport`.

    Raises:
        FileNotFoundError: If the checkpoint or a listed shard does not exist.
        FileExistsError: If ``out_dir`` holds a shard set and ``overwrite`` is off.
        ValueError: If the masks are not from ``train`` (without ``force_split``), an
            argument is out of range (``shard_index`` outside ``0 .. num_shards - 1``
            included), the checkpoint is not a SPADEGAN's, a sample has no mask or one
            of a size the generator cannot take, ``out_dir`` is the input, or
            ``out_dir`` holds an unfinished run with other settings.
        LockedError: If another run is writing ``out_dir`` (the worker's part for a worker).
    """
    check_worker(shard_index, num_shards)
    masks_dir, out_dir = as_location(masks_dir), worker_dir(out_dir, shard_index, num_shards)
    with exclusive_lock(out_dir):  # beside out_dir: the work folder inside it is deleted at the end
        manifest = _check_inputs(masks_dir, out_dir, per_mask, batch_size, force_split, overwrite)
        torch_device = _resolve_device(device)
        generator = load_spade_generator(
            checkpoint, use_ema=use_ema, map_location=torch_device, module_class=module_class
        )
        digest = checkpoint_sha256(checkpoint)[:16]
        meta = {"checkpoint": str(checkpoint), "checkpoint_sha256": digest, "seed": seed, "use_ema": use_ema}
        low, high = partition_range(len(manifest["shards"]), shard_index, num_shards)
        run = _Run(
            generator, torch_device, masks_dir, manifest, per_mask, seed, batch_size, meta, list(range(low, high))
        )
        work = out_dir / WORK_DIR
        record = _run_record(run)
        extra: dict[str, Any] = {"generator": meta | {"per_mask": per_mask}, "conditioned_on": str(masks_dir)}
        if num_shards > 1:
            # Every worker of the run has the same work (all input shards, seed, batching); the device may differ.
            extra[WORKER_FIELD] = worker_record(shard_index, num_shards, record | {"device": None})
            record["worker"] = [shard_index, num_shards]
        _open_work_dir(work, record, overwrite)
        resumed = _write_parts(run, work, progress)
        spp = samples_per_shard or _default_shard_size(manifest, per_mask)
        if label_with is None:
            written = _assemble(work, out_dir, run.split, spp, extra, overwrite)
            label_miou = None
        else:
            written, label_miou = _assemble_and_label(run, work, out_dir, spp, extra, Path(label_with), progress)
        shutil.rmtree(work)
        return SpadeSynthesisReport(
            masks_dir=str(masks_dir),
            out_dir=str(out_dir),
            manifest=str(out_dir / MANIFEST_NAME),
            num_parents=sum(int(manifest["shards"][i]["num_samples"]) for i in run.shards),
            num_samples=int(written["num_samples"]),
            num_shards=len(written["shards"]),
            per_mask=per_mask,
            seed=seed,
            checkpoint=str(checkpoint),
            checkpoint_sha256=digest,
            resumed_parts=resumed,
            composition=dict(written["composition"]),
            labelled_with=str(label_with) if label_with is not None else None,
            label_miou=label_miou,
            worker=(shard_index, num_shards) if num_shards > 1 else None,
        )


def _check_inputs(
    masks_dir: str | Path, out_dir: Path, per_mask: int, batch_size: int, force_split: bool, overwrite: bool
) -> dict[str, Any]:
    """Check arguments, the split and the output; return the input manifest."""
    if per_mask < 1 or batch_size < 1:
        raise ValueError(f"per_mask and batch_size must be >= 1, got {per_mask} and {batch_size}")
    if isinstance(masks_dir, Path) and masks_dir.resolve() == out_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is the input shard set; shards are never edited in place")
    manifest = read_manifest(masks_dir)
    if manifest["split"] != "train" and not force_split:
        raise ValueError(
            f"{masks_dir} holds the {manifest['split']!r} split; conditional samples are made from training masks "
            "only (evaluation masks would leak into training data); pass --force_split true to use them anyway"
        )
    if (out_dir / MANIFEST_NAME).exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a shard set; pass overwrite=True (--overwrite true) to replace it"
        )
    return manifest


def _default_shard_size(manifest: Mapping[str, Any], per_mask: int) -> int:
    """The input's samples per shard times ``per_mask`` (so output shards follow the input's)."""
    shards = manifest["shards"]
    return max(1, int(shards[0]["num_samples"]) * per_mask) if shards else 1000


def _run_record(run: _Run) -> dict[str, Any]:
    """Everything the output depends on; a resumed run must match it exactly."""
    shards = [{"name": s["name"], "sha256": s.get("sha256")} for s in run.manifest["shards"]]
    return {
        "format": _RUN_FORMAT,
        "generator": run.generator_meta,
        "masks_dir": str(run.masks_dir),
        "masks_shards": shards,
        "per_mask": run.per_mask,
        "batch_size": run.batch_size,  # batches never cross shards; same batches -> same float results
        "device": run.device.type,
    }


def _open_work_dir(work: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Create the work folder, or check that an existing one belongs to a run with these settings."""
    path = work / _RUN_RECORD
    previous = json.loads(path.read_text()) if path.is_file() else None
    if previous == record:
        return  # resume
    if previous is not None and not overwrite:
        changed = sorted(k for k in record.keys() | previous.keys() if record.get(k) != previous.get(k))
        raise ValueError(
            f"{work} holds an unfinished run with other settings ({', '.join(changed)} "
            f"{'differs' if len(changed) == 1 else 'differ'}); rerun with the "
            "same settings to resume it, or pass overwrite=True (--overwrite true) to start over"
        )
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_json_atomic(path, record)


# -- parts: one per input shard ----------------------------------------------------------------


def _write_parts(run: _Run, work: Path, progress: bool) -> int:
    """Write the part of every input shard that is not finished; return how many were kept."""
    shards = run.manifest["shards"]
    total = sum(int(shards[i]["num_samples"]) for i in run.shards) * run.per_mask
    kept = 0
    name = location_name(str(run.masks_dir).rstrip("/"))
    with tqdm(total=total, desc=f"spade {name}", unit="img", disable=not progress) as bar:
        for index in run.shards:
            entry = shards[index]
            part = work / f"part-{index:06d}"
            if (part / MANIFEST_NAME).is_file():
                bar.update(int(read_manifest(part)["num_samples"]))
                kept += 1
                continue
            if part.exists():
                shutil.rmtree(part)  # unfinished: redo from its first sample
            _write_part(run, locate(run.masks_dir, entry["name"]), part, bar)
    return kept


def _write_part(run: _Run, shard: str | Path, part: Path, bar: tqdm) -> None:
    """Generate the samples of one input shard into a shard set of its own."""
    if isinstance(shard, Path) and not shard.is_file():
        raise FileNotFoundError(f"shard {shard} listed in the manifest is missing")
    writer = ShardWriter(part, split=run.split, source="synth_cond", samples_per_shard=10**9, prefix="part")
    with writer:
        for jobs in _batches(_jobs(run, shard), run.batch_size):
            images = _generate_batch(run.generator, [j.mask for j in jobs], [j.sample_seed for j in jobs], run.device)
            for job, image in zip(jobs, images, strict=True):
                writer.write(job.sample(image, run))
            bar.update(len(jobs))


@dataclass
class _Job:
    """One image to generate: sample ``index`` of ``parent``'s mask."""

    parent: str
    index: int
    mask: np.ndarray
    mask_png: bytes
    sample_seed: int

    def sample(self, image: np.ndarray, run: _Run) -> Sample:
        generator = run.generator_meta | {"index": self.index, "sample_seed": self.sample_seed}
        meta = {
            "source": "synth_cond",
            "split": run.split,
            "parent": self.parent,
            "composition": composition(self.mask),
            "generator": generator,
        }
        key = f"{self.parent}_c{self.index}"
        return Sample(key=key, image=image, mask=self.mask, meta=meta, mask_png=self.mask_png)


def _jobs(run: _Run, shard: str | Path) -> Iterator[_Job]:
    """The shard's masks, each repeated ``per_mask`` times, in input order."""
    factor = 2**run.generator.num_upsamplings
    for raw in iter_raw_samples(shard):
        key = raw["__key__"]
        if "mask.png" not in raw:
            raise ValueError(f"{shard}: sample {key} has no mask.png; conditional synthesis needs a mask per sample")
        try:
            mask = decode_mask(raw["mask.png"])
        except SampleError as err:
            raise SampleError(f"{shard}: sample {key}: {err}") from err
        if mask.shape[0] % factor or mask.shape[1] % factor:
            raise ValueError(
                f"{shard}: sample {key} has a {mask.shape[1]}x{mask.shape[0]} mask; the generator needs sides "
                f"divisible by {factor}"
            )
        for k in range(run.per_mask):
            yield _Job(key, k, mask, raw["mask.png"], sample_seed(run.seed, key, k))


def _batches(jobs: Iterator[_Job], batch_size: int) -> Iterator[list[_Job]]:
    """Group jobs into batches of up to ``batch_size`` masks of one size, keeping order."""
    batch: list[_Job] = []
    for job in jobs:
        if batch and (len(batch) >= batch_size or job.mask.shape != batch[0].mask.shape):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


@torch.no_grad()
def _generate_batch(
    generator: SPADEGenerator, masks: Sequence[np.ndarray], seeds: Sequence[int], device: torch.device
) -> np.ndarray:
    """Generate one image per mask, each from the noise of its own seed.

    Returns:
        ``(B, H, W, 3)`` uint8 images.
    """
    onehot = one_hot_mask(torch.from_numpy(np.stack(masks)).to(device), generator.num_classes)
    noise = [generator.sample_noise(onehot[i : i + 1], torch.Generator().manual_seed(s)) for i, s in enumerate(seeds)]
    z = torch.cat(noise) if noise[0] is not None else None  # type: ignore[arg-type]
    images = generator(onehot, z=z)
    pixels = torch.round((images.float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


# -- assembly -------------------------------------------------------------------------------


def _iter_part_samples(work: Path, with_mask: bool = True) -> Iterator[Sample]:
    """Samples of all parts in order, image (and mask) bytes kept verbatim."""
    for part in sorted(work.glob("part-*")):
        for path in shard_paths(part):
            for raw in iter_raw_samples(path):
                sample = decode_sample(raw, with_mask=with_mask, with_captions=False)
                sample.image_png = raw["image.png"]
                if with_mask:
                    sample.mask_png = raw["mask.png"]
                yield sample


def _assemble(
    work: Path, out_dir: Path, split: str, samples_per_shard: int, extra: Mapping[str, Any], overwrite: bool
) -> dict[str, Any]:
    """Copy the parts, in order, into the final shard set; return its manifest.

    Shards left by an interrupted assembly have the same names as the ones written
    now, so they are replaced.
    """
    writer = ShardWriter(
        out_dir, split=split, source="synth_cond", samples_per_shard=samples_per_shard, overwrite=overwrite, extra=extra
    )
    with writer:
        for sample in _iter_part_samples(work):
            writer.write(sample)
    return writer.manifest


def _assemble_and_label(
    run: _Run,
    work: Path,
    out_dir: Path,
    samples_per_shard: int,
    extra: Mapping[str, Any],
    segmenter: Path,
    progress: bool,
) -> tuple[dict[str, Any], float]:
    """Assemble into the work folder, label into ``out_dir``; return the manifest and the mask agreement."""
    assembled = work / "assembled"
    _assemble(work, assembled, run.split, samples_per_shard, extra, overwrite=True)
    _label_shards(
        segmenter,
        assembled,
        out_dir,
        batch_size=run.batch_size,
        device=str(run.device),
        overwrite=True,
        progress=progress,
    )
    return read_manifest(out_dir), _mask_agreement(assembled, out_dir)


def _mask_agreement(conditions: Path, predictions: Path) -> float:
    """Macro IoU of the predicted masks against the masks the images were generated from."""
    metric = SegmentationMetrics()
    for condition, prediction in zip(iter_samples(conditions), iter_samples(predictions), strict=True):
        assert condition.mask is not None and prediction.mask is not None
        metric.update(torch.from_numpy(prediction.mask)[None], torch.from_numpy(condition.mask)[None])
    return float(metric.compute()["iou_macro"])
