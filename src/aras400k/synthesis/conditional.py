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
  input shard, so every run with the same settings (resumed or split) gives the same bytes.
- **Resumable, locked, splittable** (:mod:`aras400k.synthesis.jobs`). Each input shard
  is one part, kept by a rerun with the same settings (checkpoint, masks, seed,
  ``per_mask``, ``batch_size``, device type); a worker of a split run makes the parts of
  its run of input shards (so use at most as many workers as input shards).

Checkpoints are read with ``torch.load(weights_only=True)``
(:func:`~aras400k.models.spade.load_spade_generator`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from tqdm.auto import tqdm

from aras400k.checkpoints import checkpoint_sha256, resolve_device
from aras400k.data.composition import composition, format_composition
from aras400k.data.remote import as_location, location_name
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    SampleError,
    ShardWriter,
    decode_mask,
    iter_raw_samples,
    iter_samples,
    read_manifest,
)
from aras400k.data.sources import partition_range
from aras400k.metrics.segmentation import SegmentationMetrics
from aras400k.models.spade.generator import SPADEGenerator
from aras400k.models.spade.module import SPADEGAN, load_spade_generator
from aras400k.models.spade.normalization import one_hot_mask
from aras400k.synthesis.jobs import (
    ShardJob,
    batches_by,
    input_shard_size,
    locate_shard,
    refuse_finished,
    refuse_in_place,
    summary_head,
    to_uint8_images,
)
from aras400k.synthesis.label import assemble_parts

__all__ = ["SpadeSynthesisReport", "sample_seed", "synthesize_conditional"]

#: Version of the run record (``.partial/run.json``); a record of another version is not resumed.
_RUN_FORMAT = 1
_SOURCE: Final = "synth_cond"


def sample_seed(seed: int, parent: str, index: int) -> int:
    """The noise seed (non-negative, 63 bits) of sample ``index`` of parent key ``parent`` in a run seeded ``seed``.

    A hash, so it depends on these three values only, not on the order or the batch.
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
        """Render the report for a terminal: what was generated from what, where, and the composition."""
        done = (
            f"generated {self.num_samples} images ({self.per_mask} per mask, seed {self.seed}) from "
            f"{self.num_parents} masks of {self.masks_dir} with {self.checkpoint} (sha256 {self.checkpoint_sha256})"
        )
        lines = summary_head(self, done, "input shards")
        if self.labelled_with is not None:
            lines.append(
                f"masks replaced by the predictions of {self.labelled_with}; "
                f"macro IoU against the input masks: {self.label_miou:.3f}"
            )
        lines.append(f"composition: {format_composition(self.composition) or 'empty'}")
        return "\n".join(lines)


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
    parent. See the module docstring for determinism, resuming and workers.

    Args:
        checkpoint: A :class:`~aras400k.models.spade.SPADEGAN` Lightning checkpoint.
        masks_dir: Shard set whose masks condition the generator (every sample needs a mask).
        out_dir: Folder of the new shard set.
        per_mask: Images per mask.
        seed: Seed of the run (see :func:`sample_seed`).
        batch_size: Images per generator forward pass.
        force_split: Accept masks from a split other than ``train``.
        label_with: Segmenter checkpoint; its predictions on the generated images become
            the masks (pseudo-labels), and the report gives their macro IoU against the input's.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        use_ema: Sample from the EMA generator (recommended) rather than the trained weights.
        samples_per_shard: Samples per output tar (default: the input's shard size times ``per_mask``).
        overwrite: Replace a finished shard set at ``out_dir``, or an unfinished run with other settings.
        progress: Show a progress bar.
        shard_index: This worker's part of a split run, ``0 .. num_shards - 1``.
        num_shards: Workers the run is split over (1: this call does everything).
        module_class: The SPADEGAN subclass that trained the checkpoint, when it builds a
            generator of its own (``None``: the standard one).

    Returns:
        A :class:`SpadeSynthesisReport`.

    Raises:
        FileNotFoundError: If the checkpoint or a listed shard does not exist.
        FileExistsError: If ``out_dir`` holds a shard set and ``overwrite`` is off.
        ValueError: If the masks are not from ``train`` (without ``force_split``), an
            argument is out of range, the checkpoint is not a SPADEGAN's, a sample has no
            mask or one of a size the generator cannot take, ``out_dir`` is the input, or
            it holds an unfinished run with other settings.
        LockedError: If another run is writing ``out_dir`` (a worker's part).
    """
    job = ShardJob(out_dir, shard_index, num_shards)
    masks_dir = as_location(masks_dir)
    with job.lock():
        manifest = _check_inputs(masks_dir, job.out_dir, per_mask, batch_size, force_split, overwrite)
        torch_device = resolve_device(device)
        generator = load_spade_generator(
            checkpoint, use_ema=use_ema, map_location=torch_device, module_class=module_class
        )
        digest = checkpoint_sha256(checkpoint)[:16]
        meta = {"checkpoint": str(checkpoint), "checkpoint_sha256": digest, "seed": seed, "use_ema": use_ema}
        low, high = partition_range(len(manifest["shards"]), shard_index, num_shards)
        run = _Run(
            generator, torch_device, masks_dir, manifest, per_mask, seed, batch_size, meta, list(range(low, high))
        )
        record = _run_record(run)
        extra: dict[str, Any] = {"generator": meta | {"per_mask": per_mask}, "conditioned_on": str(masks_dir)}
        # Every worker of the run has the same work (all input shards, seed, batching); the device may differ.
        extra |= job.worker_fields(record | {"device": None})
        if job.worker:
            record["worker"] = list(job.worker)
        job.open(record, overwrite)
        parts = [(i, int(manifest["shards"][i]["num_samples"]) * per_mask) for i in run.shards]
        name = location_name(str(masks_dir).rstrip("/"))
        resumed = job.write_parts(
            parts, lambda writer, index, bar: _write_part(run, writer, index, bar), run.split, _SOURCE,
            f"spade {name}", progress,
        )  # fmt: skip
        spp = samples_per_shard or input_shard_size(manifest, per_mask)
        written, assembled = assemble_parts(
            job, label_with, run.split, _SOURCE, spp, extra, overwrite, batch_size, torch_device, progress,
            with_mask=True,
        )  # fmt: skip
        label_miou = None if assembled is None else _mask_agreement(assembled, job.out_dir)
        job.finish()
        return SpadeSynthesisReport(
            masks_dir=str(masks_dir),
            out_dir=str(job.out_dir),
            manifest=str(job.out_dir / MANIFEST_NAME),
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
            worker=job.worker,
        )


def _check_inputs(
    masks_dir: str | Path, out_dir: Path, per_mask: int, batch_size: int, force_split: bool, overwrite: bool
) -> dict[str, Any]:
    """Check arguments, the split and the output; return the input manifest."""
    if per_mask < 1 or batch_size < 1:
        raise ValueError(f"per_mask and batch_size must be >= 1, got {per_mask} and {batch_size}")
    refuse_in_place(masks_dir, out_dir)
    manifest = read_manifest(masks_dir)
    if manifest["split"] != "train" and not force_split:
        raise ValueError(
            f"{masks_dir} holds the {manifest['split']!r} split; conditional samples are made from training masks "
            "only (evaluation masks would leak into training data); pass --force_split true to use them anyway"
        )
    refuse_finished(out_dir, overwrite)
    return manifest


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


def _write_part(run: _Run, writer: ShardWriter, index: int, bar: tqdm) -> None:
    """Generate the samples of input shard ``index`` into its part."""
    shard = locate_shard(run.masks_dir, run.manifest["shards"][index]["name"])
    for jobs in batches_by(_jobs(run, shard), run.batch_size, lambda job: job.mask.shape):
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
            "source": _SOURCE,
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


@torch.no_grad()
def _generate_batch(
    generator: SPADEGenerator, masks: Sequence[np.ndarray], seeds: Sequence[int], device: torch.device
) -> np.ndarray:
    """Generate one ``(H, W, 3)`` uint8 image per mask, each from the noise of its own seed."""
    onehot = one_hot_mask(torch.from_numpy(np.stack(masks)).to(device), generator.num_classes)
    noise = [generator.sample_noise(onehot[i : i + 1], torch.Generator().manual_seed(s)) for i, s in enumerate(seeds)]
    z = torch.cat(noise) if noise[0] is not None else None  # type: ignore[arg-type]
    return to_uint8_images(generator(onehot, z=z))


def _mask_agreement(conditions: Path, predictions: Path) -> float:
    """Macro IoU of the predicted masks against the masks the images were generated from."""
    metric = SegmentationMetrics()
    for condition, prediction in zip(iter_samples(conditions), iter_samples(predictions), strict=True):
        assert condition.mask is not None and prediction.mask is not None
        metric.update(torch.from_numpy(prediction.mask)[None], torch.from_numpy(condition.mask)[None])
    return float(metric.compute()["iou_macro"])
