"""Synthetic data: label shard sets with a trained segmenter (the paper's pseudo-labelling).

The paper labels every GAN image with a trained segmenter before it is captioned or
used for training. :func:`label_shards` writes a *new* shard set whose masks are the
segmenter's predictions (see there for what else changes and what is copied)::

    report = label_shards("runs/seg_unet/checkpoints/last.ckpt", "data/synth_uncond", "data/synth_uncond_labelled")
    print(report.summary())

Batches never cross an input shard, so a worker of a split run (one part per input
shard, :mod:`aras400k.synthesis.jobs`) predicts every mask exactly as a single run does.
Checkpoints are read with plain tensors and values only, never code
(:func:`~aras400k.models.segmentation.load_segmentation_task`).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aras400k.checkpoints import resolve_device
from aras400k.data.composition import composition, format_composition
from aras400k.data.datamodules import IMAGENET_MEAN, IMAGENET_STD
from aras400k.data.merge import merge_hint
from aras400k.data.remote import as_location, location_name
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    SampleError,
    ShardReadError,
    ShardWriter,
    Source,
    decode_sample,
    iter_raw_samples,
    read_manifest,
)
from aras400k.data.sources import partition_range
from aras400k.data.transforms import Normalize
from aras400k.errors import check_at_least
from aras400k.models.segmentation import SegmentationTask, load_segmenter
from aras400k.synthesis.jobs import (
    ShardJob,
    batches_by,
    input_shard_size,
    locate_shard,
    refuse_finished,
    refuse_in_place,
)

__all__ = ["LabelReport", "LabelSettings", "label_job", "label_shards"]

#: Members :func:`label_shards` rebuilds; every other member is copied verbatim.
_REBUILT_MEMBERS = frozenset({"image.png", "mask.png", "meta.json"})
#: Manifest fields :class:`ShardWriter` writes itself; the others are carried over.
_MANIFEST_FIELDS = frozenset(
    {"format", "format_version", "classes", "split", "source", "num_samples", "num_masks", "shards"}
    | {"class_pixels", "composition", "labelled_by", "labelled_from"}
)
_SHARD_NAME_RE = re.compile(r"^(?P<prefix>.+)-\d{6}\.tar$")


@dataclass
class LabelReport:
    """What :func:`label_shards` wrote.

    Attributes:
        input_dir: The shard set that was labelled.
        out_dir: The new shard set.
        manifest: Path of the new set's ``manifest.json``.
        num_samples: Samples labelled and written.
        num_replaced: Of these, samples whose existing mask was replaced.
        num_shards: Tar shards written.
        composition: Class name -> fraction of all predicted pixels.
        labelled_by: The ``labelled_by`` record stored in every sample's meta.
        mean: Normalisation mean the images were given.
        std: Normalisation std the images were given.
        worker: ``(shard_index, num_shards)`` of a worker of a split run; ``None`` for a single run.
    """

    input_dir: str
    out_dir: str
    manifest: str
    num_samples: int
    num_replaced: int
    num_shards: int
    composition: dict[str, float] = field(default_factory=dict)
    labelled_by: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    worker: tuple[int, int] | None = None

    def summary(self) -> str:
        """Render the report for a terminal: what was labelled by what, where, and the composition."""
        by = self.labelled_by
        source = by.get("checkpoint") or "an in-memory model"
        comp = format_composition(self.composition)
        worker = f"worker {self.worker[0]} of {self.worker[1]}: " if self.worker else ""
        lines = [
            f"{worker}labelled {self.num_samples} samples of {self.input_dir} with "
            f"{by.get('arch')}/{by.get('encoder')} ({source}; normalised with mean {list(self.mean)}, "
            f"std {list(self.std)})",
            f"wrote {self.num_shards} shards to {self.out_dir} (manifest {self.manifest})",
            f"{self.num_replaced} existing masks replaced",
            f"predicted composition: {comp or 'empty'}",
        ]
        if self.worker:
            lines.append(merge_hint(self.out_dir, self.worker))
        return "\n".join(lines)


@dataclass(frozen=True)
class LabelSettings:
    """The options of :func:`label_shards` (documented there) that :func:`label_job` takes as one value."""

    batch_size: int = 32
    device: str = "auto"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    overwrite: bool = False
    progress: bool = True
    compress_level: int = 6


def label_shards(
    segmenter: SegmentationTask | str | Path,
    input_dir: str | Path,
    out_dir: str | Path,
    batch_size: int = 32,
    device: str = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    overwrite: bool = False,
    progress: bool = True,
    compress_level: int = 6,
    shard_index: int = 0,
    num_shards: int = 1,
) -> LabelReport:
    """Label every image of a shard set with a segmenter, writing a new shard set.

    The new set has the same samples in the same order, with the same keys, split,
    source and samples per shard (those of the input's first shard, so shard boundaries
    match). Each sample's ``mask.png`` is the predicted mask (replacing any existing
    one); its ``meta.json`` is the input meta with ``composition`` recomputed from the
    prediction and ``labelled_by`` (``checkpoint``, ``arch``, ``encoder``) added; every
    other member is copied byte for byte. Images are scaled to ``[0, 1]`` and normalised
    with the ``mean``/``std`` recorded in the checkpoint's DataModule hyperparameters,
    or with the ``mean``/``std`` arguments when it records none or ``segmenter`` is a
    task instance. With ``num_shards > 1`` it is one worker of a split run
    (:mod:`aras400k.synthesis.jobs`).

    Args:
        segmenter: A trained task, or the path of its Lightning checkpoint.
        input_dir: Shard set to label (with or without masks).
        out_dir: Folder of the new shard set; must differ from ``input_dir``.
        batch_size: Images per forward pass.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mean: Normalisation mean (``[0, 1]`` units) when the checkpoint records none.
        std: Normalisation std when the checkpoint records none.
        overwrite: Replace an existing shard set at ``out_dir``.
        progress: Show a progress bar.
        compress_level: PNG zlib level of the predicted masks.
        shard_index: This worker's part of a split run, ``0 .. num_shards - 1``.
        num_shards: Workers the run is split over (1: this call labels everything).

    Returns:
        A :class:`LabelReport` with the counts and the new manifest's path.

    Raises:
        FileNotFoundError: If the checkpoint or a shard listed in the input manifest is missing.
        FileExistsError: If ``out_dir`` holds a shard set and ``overwrite`` is off.
        ValueError: If ``out_dir`` is ``input_dir``, the input is not a shard set
            (:class:`~aras400k.data.ManifestError`), the checkpoint is not a segmentation
            task's, the task does not predict the 7 classes from RGB, an argument is out
            of range, or a sample is corrupt (:class:`~aras400k.data.SampleError`, naming
            the shard and key; nothing is skipped).
        LockedError: If another run is writing ``out_dir`` (a worker's part).
    """
    settings = LabelSettings(batch_size, device, mean, std, overwrite, progress, compress_level)
    job = ShardJob(out_dir, shard_index, num_shards)
    with job.lock():
        return label_job(job, segmenter, input_dir, settings)


def label_job(
    job: ShardJob,
    segmenter: SegmentationTask | str | Path,
    input_dir: str | Path,
    settings: LabelSettings | None = None,
) -> LabelReport:
    """:func:`label_shards` into ``job.out_dir`` (for a worker, its part), for a caller that holds the job's lock.

    Args:
        job: The output.
        segmenter: As for :func:`label_shards`.
        input_dir: As for :func:`label_shards`.
        settings: The other options of :func:`label_shards` (default: its defaults).

    Returns:
        A :class:`LabelReport`.
    """
    settings = settings or LabelSettings()
    input_dir, out_dir = as_location(input_dir), job.out_dir
    refuse_in_place(input_dir, out_dir)
    manifest = read_manifest(input_dir)
    refuse_finished(out_dir, settings.overwrite)
    check_at_least("batch_size", settings.batch_size, 1)
    low, high = partition_range(len(manifest["shards"]), job.shard_index, job.num_shards)
    shards = manifest["shards"][low:high]
    torch_device = resolve_device(settings.device)
    task, checkpoint_path, norm = load_segmenter(segmenter, torch_device, purpose="labelling shards")
    mean, std = norm or (tuple(float(m) for m in settings.mean), tuple(float(s) for s in settings.std))
    labelled_by = {"checkpoint": checkpoint_path, "arch": task.hparams["arch"], "encoder": task.hparams["encoder"]}
    labeller = _Labeller(task, Normalize(mean, std), torch_device)
    extra = {k: v for k, v in manifest.items() if k not in _MANIFEST_FIELDS}
    extra.update(labelled_by=labelled_by, labelled_from=str(input_dir))
    inputs = [{"name": s["name"], "sha256": s.get("sha256")} for s in manifest["shards"]]
    extra.update(job.worker_fields({"inputs": inputs, "labelled_by": labelled_by}))
    writer = _open_writer(manifest, out_dir, settings.overwrite, settings.compress_level, extra)
    replaced = 0
    total = sum(int(s["num_samples"]) for s in shards)
    name = location_name(str(input_dir).rstrip("/"))
    bar = tqdm(total=total, desc=f"label {name}", unit="img", disable=not settings.progress)
    with labeller, writer, bar:
        # One forward pass takes images of one size from one input shard.
        for batch in batches_by(
            _read_samples(input_dir, [s["name"] for s in shards]),
            settings.batch_size,
            lambda item: (item[1].image.shape, item[0].get("__shard__")),
        ):
            masks = labeller(np.stack([sample.image for _, sample in batch]))
            for (raw, sample), mask in zip(batch, masks, strict=True):
                replaced += int("mask.png" in raw)
                writer.write(_labelled_sample(raw, sample, mask, labelled_by))
            bar.update(len(batch))
    return LabelReport(
        input_dir=str(input_dir),
        out_dir=str(out_dir),
        manifest=str(out_dir / MANIFEST_NAME),
        num_samples=writer.num_samples,
        num_replaced=replaced,
        num_shards=len(writer.shards),
        composition=dict(writer.manifest["composition"]),
        labelled_by=labelled_by,
        mean=mean,
        std=std,
        worker=job.worker,
    )


def assemble_parts(
    job: ShardJob,
    segmenter: str | Path | None,
    split: str,
    source: Source,
    samples_per_shard: int,
    extra: Mapping[str, Any],
    overwrite: bool,
    batch_size: int,
    device: torch.device,
    progress: bool,
    with_mask: bool,
) -> tuple[dict[str, Any], Path | None]:
    """Assemble a synthesis job's parts into its output or, given a ``segmenter`` checkpoint, label them into it.

    The other arguments are those of :meth:`ShardJob.assemble` and :class:`LabelSettings`.

    Returns:
        The output's manifest, and with a segmenter the assembled, unlabelled shard set
        (inside the work folder, removed by ``job.finish()``).
    """
    if segmenter is None:
        return job.assemble(job.out_dir, split, source, samples_per_shard, extra, overwrite, with_mask), None
    assembled = job.work / "assembled"
    job.assemble(assembled, split, source, samples_per_shard, extra, overwrite=True, with_mask=with_mask)
    # The assembled set holds only this worker's images, so it is labelled whole; the
    # worker record it carries (in ``extra``) passes on to the output's manifest.
    whole = ShardJob(job.out_dir)
    label_job(whole, segmenter, assembled, LabelSettings(batch_size, str(device), overwrite=True, progress=progress))
    return read_manifest(job.out_dir), assembled


def _open_writer(
    manifest: Mapping[str, Any], out_dir: Path, overwrite: bool, compress_level: int, extra: Mapping[str, Any]
) -> ShardWriter:
    """A writer matching the input's split, source, shard size and shard names."""
    return ShardWriter(
        out_dir,
        split=manifest["split"],
        source=manifest["source"],
        samples_per_shard=input_shard_size(manifest),
        prefix=_shard_prefix(manifest["shards"], manifest["split"]),
        overwrite=overwrite,
        compress_level=compress_level,
        extra=extra,
    )


def _shard_prefix(shards: list[dict[str, Any]], default: str) -> str:
    """The input's shard name prefix (``train`` of ``train-000000.tar``), so names match."""
    match = _SHARD_NAME_RE.match(shards[0]["name"]) if shards else None
    return match.group("prefix") if match else default


class _Labeller:
    """Runs a task on uint8 image batches in eval mode and restores its mode and device after."""

    def __init__(self, task: SegmentationTask, normalize: Normalize, device: torch.device) -> None:
        self.task = task
        self.normalize = normalize.to(device)
        self.device = device
        self._was_training = task.training
        self._home = next(task.parameters()).device

    def __enter__(self) -> _Labeller:
        self.task.to(self.device).eval()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.task.to(self._home).train(self._was_training)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Predict ``(B, H, W)`` uint8 masks for ``(B, H, W, 3)`` uint8 images."""
        batch = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return self.task.predict_masks(self.normalize(batch)).cpu().numpy()


def _read_samples(directory: str | Path, shard_names: list[str]) -> Iterator[tuple[dict[str, Any], Sample]]:
    """Yield ``(raw members, decoded sample)`` in manifest order; fail naming shard and key."""
    for name in shard_names:
        path = locate_shard(directory, name)
        key = None
        try:
            for raw in iter_raw_samples(path):
                key = raw["__key__"]
                yield raw, decode_sample(raw, with_mask=False, with_captions=False)
        except SampleError as err:
            raise SampleError(f"{path}: {err}; fix or remove it (aras-data verify lists every problem)") from err
        except (tarfile.TarError, EOFError) as err:
            where = f"after sample {key}" if key else "before its first sample"
            reason = err.reason if isinstance(err, ShardReadError) else err
            raise SampleError(f"{path}: the tar file is corrupt {where} ({reason})") from err


def _labelled_sample(raw: Mapping[str, Any], sample: Sample, mask: np.ndarray, labelled_by: dict[str, Any]) -> Sample:
    """The output sample: predicted mask, updated meta, every other member verbatim."""
    meta = {**sample.meta, "composition": composition(mask), "labelled_by": labelled_by}
    copied = {name: data for name, data in raw.items() if not name.startswith("_") and name not in _REBUILT_MEMBERS}
    return Sample(
        key=sample.key, image=sample.image, mask=mask, meta=meta, image_png=raw["image.png"], raw_members=copied
    )
