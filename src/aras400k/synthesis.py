"""Synthetic data: label shard sets with a trained segmenter (the paper's pseudo-labelling).

The paper labels every GAN image with a trained segmenter before it is captioned or
used for training. :func:`label_shards` does that for a whole shard set: it writes a
*new* shard set with the same samples, in the same order and shard boundaries, whose
``mask.png`` is the segmenter's prediction, whose ``meta.json`` has the composition
recomputed from it and a ``labelled_by`` record, and whose other members (the
``image.png`` bytes, ``captions.json``, anything unknown) are copied byte for byte::

    report = label_shards("runs/seg_unet/checkpoints/last.ckpt", "data/synth_uncond", "data/synth_uncond_labelled")
    print(report.summary())

Batches never cross an input shard, so a run split over workers by input shard
(``shard_index``/``num_shards``, see :mod:`aras400k.data.merge`) predicts every mask
exactly as a single run does.

Checkpoints are read by :func:`aras400k.checkpoints.read_checkpoint`: plain tensors and
values only, never code (:func:`load_segmentation_task`).
"""

from __future__ import annotations

import inspect
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from aras400k.checkpoints import read_checkpoint
from aras400k.classes import NUM_CLASSES
from aras400k.data.composition import composition, format_composition
from aras400k.data.datamodules import IMAGENET_MEAN, IMAGENET_STD
from aras400k.data.merge import WORKER_FIELD, check_worker, merge_hint, worker_dir, worker_record
from aras400k.data.remote import as_location, locate, location_name
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    SampleError,
    ShardReadError,
    ShardWriter,
    decode_sample,
    iter_raw_samples,
    read_manifest,
)
from aras400k.data.sources import partition_range
from aras400k.data.transforms import Normalize
from aras400k.locking import exclusive_lock
from aras400k.models.segmentation import SegmentationTask

_T = TypeVar("_T")

__all__ = [
    "LabelReport",
    "checkpoint_normalization",
    "generator_from_module",
    "label_shards",
    "load_segmentation_task",
    "outside_cli_instantiation",
    "read_checkpoint",
]

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
        """Render the report for a terminal.

        Returns:
            A few lines: what was labelled by what, where it went, and the composition.
        """
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


# -- checkpoints ----------------------------------------------------------------------------


def load_segmentation_task(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    task_class: type[SegmentationTask] = SegmentationTask,
) -> SegmentationTask:
    """Load a trained :class:`SegmentationTask` from a Lightning checkpoint, safely.

    The checkpoint is read with :func:`read_checkpoint` (``weights_only=True``); the task
    is rebuilt from its saved hyperparameters and its weights loaded strictly. The
    training-time ``encoder_weights`` file is not needed (the checkpoint holds every
    weight). The task is returned in eval mode.

    Args:
        path: Checkpoint written by ``aras-fit`` or ``Trainer.save_checkpoint``.
        map_location: Where the weights are loaded.
        task_class: Class to build (a :class:`SegmentationTask` subclass with the same
            constructor arguments, if the checkpoint came from one).

    Returns:
        The task, in eval mode, on ``map_location``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a checkpoint of a segmentation task.
    """
    return _task_from_checkpoint(read_checkpoint(path, map_location), str(path), task_class)


def checkpoint_normalization(checkpoint: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The normalisation a segmenter was trained with, from its checkpoint.

    Lightning stores the DataModule's hyperparameters under
    ``datamodule_hyper_parameters``; a :class:`~aras400k.data.SegmentationDataModule`'s
    include ``mean`` and ``std``.

    Args:
        checkpoint: A checkpoint dict (see :func:`read_checkpoint`).

    Returns:
        ``(mean, std)``, or ``None`` when the checkpoint does not record them.
    """
    hparams = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(hparams, Mapping) or hparams.get("mean") is None or hparams.get("std") is None:
        return None
    return tuple(float(m) for m in hparams["mean"]), tuple(float(s) for s in hparams["std"])


def outside_cli_instantiation(build: Callable[[], _T]) -> _T:
    """Build a LightningModule with its own hyper-parameters, even inside another module's LightningCLI instantiation.

    While LightningCLI instantiates a module, Lightning hands that module's config to
    every ``save_hyperparameters()`` call through a context variable. A module built
    inside the outer module's ``__init__`` (``SPADEGAN(segmenter_ckpt=...)`` loading a
    segmenter) would then record the outer module's arguments instead of its own.
    Lightning offers no public switch, so the variable is cleared here when it exists.

    Args:
        build: Builds and returns the module.

    Returns:
        What ``build`` returns.
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - other Lightning versions
        return build()
    token = _given_hyperparameters.set(None)
    try:
        return build()
    finally:
        _given_hyperparameters.reset(token)


def generator_from_module(
    module_class: type[nn.Module],
    checkpoint: Mapping[str, Any],
    prefix: str,
    name: str,
    overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a GAN module subclass from a checkpoint's hyper-parameters and return its generator, loaded.

    This is how a generator of your own (built in a subclass's ``configure_models``)
    is sampled: the subclass builds it exactly as in training, then the checkpoint's
    ``generator.*`` or ``ema.shadow.*`` weights are loaded into it, strictly. Only the
    class you name is imported; nothing in the checkpoint is run.

    Args:
        module_class: The LightningModule class that trained the checkpoint (e.g. a
            :class:`~aras400k.models.spade.SPADEGAN` subclass).
        checkpoint: The checkpoint dict (see :func:`read_checkpoint`).
        prefix: State-dict prefix of the wanted weights (``"ema.shadow."`` or ``"generator."``).
        name: The checkpoint's name, for messages.
        overrides: Constructor arguments replacing the recorded ones (e.g. to skip
            loading networks that only training needs).

    Returns:
        The module's ``generator`` attribute with the checkpoint's weights.

    Raises:
        ValueError: If the checkpoint does not fit the class.
    """
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, Mapping) or not isinstance(state, Mapping):
        raise ValueError(f"{name} is not a Lightning checkpoint with hyper_parameters and a state_dict")
    accepted = inspect.signature(module_class.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    kwargs |= {k: v for k, v in (overrides or {}).items() if k in accepted}
    try:
        module = outside_cli_instantiation(lambda: module_class(**kwargs))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot build {module_class.__name__} from its hyper-parameters ({err})") from err
    generator = getattr(module, "generator", None)
    if not isinstance(generator, nn.Module):
        raise ValueError(f"{module_class.__name__} has no generator module to sample from")
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"{name}: the {prefix.rstrip('.')} weights do not fit {module_class.__name__}'s generator ({first})"
        ) from err
    return generator


def _task_from_checkpoint(
    checkpoint: Mapping[str, Any], name: str, task_class: type[SegmentationTask]
) -> SegmentationTask:
    hparams = checkpoint.get("hyper_parameters")
    state = checkpoint.get("state_dict")
    if not isinstance(hparams, Mapping) or not isinstance(state, Mapping) or "arch" not in hparams:
        raise ValueError(
            f"{name} is not a SegmentationTask checkpoint (it lacks the task's hyper_parameters or state_dict)"
        )
    accepted = inspect.signature(task_class.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    kwargs["encoder_weights"] = None  # the state dict holds every weight
    try:
        task = outside_cli_instantiation(lambda: task_class(**kwargs))
        task.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{name} is not a checkpoint of {task_class.__name__} ({first})") from err
    return task.eval()


# -- labelling -----------------------------------------------------------------------------


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
    task instance. Batches never cross an input shard.

    With ``num_shards > 1`` this call is one worker of a split run: it labels only the
    ``shard_index``-th of ``num_shards`` contiguous runs of input shards into
    ``out_dir/part-K-of-N`` (:func:`~aras400k.data.merge.worker_dir`), whose manifest
    records the worker; :func:`~aras400k.data.merge.merge_shard_sets` joins the parts
    into the single run's shard set (same shards, same bytes).

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
        FileNotFoundError: If the checkpoint file or a shard listed in the input manifest
            does not exist.
        FileExistsError: If ``out_dir`` holds a shard set and ``overwrite`` is off.
        ValueError: If ``out_dir`` is ``input_dir``, the input is not a shard set
            (:class:`~aras400k.data.ManifestError`), the checkpoint is not a segmentation
            task's, the task does not predict the 7 classes from RGB, an argument is
            out of range (``shard_index`` outside ``0 .. num_shards - 1`` included), or a
            sample is corrupt (:class:`~aras400k.data.SampleError`,
            naming the shard and key; nothing is skipped).
        LockedError: If another run is writing ``out_dir`` (the worker's part for a
            worker); the lock (:mod:`aras400k.locking`) is held for the whole call.
    """
    check_worker(shard_index, num_shards)
    with exclusive_lock(worker_dir(out_dir, shard_index, num_shards)):
        return _label_shards(
            segmenter,
            input_dir,
            out_dir,
            batch_size=batch_size,
            device=device,
            mean=mean,
            std=std,
            overwrite=overwrite,
            progress=progress,
            compress_level=compress_level,
            shard_index=shard_index,
            num_shards=num_shards,
        )


def _label_shards(
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
    """:func:`label_shards` with the lock of its output already held (by the caller)."""
    input_dir, out_dir = as_location(input_dir), worker_dir(out_dir, shard_index, num_shards)
    manifest = _check_paths(input_dir, out_dir, overwrite)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    low, high = partition_range(len(manifest["shards"]), shard_index, num_shards)
    shards = manifest["shards"][low:high]
    torch_device = _resolve_device(device)
    task, checkpoint_path, norm = _resolve_segmenter(segmenter, torch_device)
    mean, std = norm or (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    labelled_by = {"checkpoint": checkpoint_path, "arch": task.hparams["arch"], "encoder": task.hparams["encoder"]}
    labeller = _Labeller(task, Normalize(mean, std), torch_device)
    extra = {k: v for k, v in manifest.items() if k not in _MANIFEST_FIELDS}
    extra.update(labelled_by=labelled_by, labelled_from=str(input_dir))
    if num_shards > 1:
        inputs = [{"name": s["name"], "sha256": s.get("sha256")} for s in manifest["shards"]]
        extra[WORKER_FIELD] = worker_record(shard_index, num_shards, {"inputs": inputs, "labelled_by": labelled_by})
    writer = _open_writer(manifest, out_dir, overwrite, compress_level, extra)
    replaced = 0
    total = sum(int(s["num_samples"]) for s in shards)
    bar = tqdm(total=total, desc=f"label {location_name(str(input_dir).rstrip('/'))}", unit="img", disable=not progress)
    with labeller, writer, bar:
        for batch in _batches(_read_samples(input_dir, [s["name"] for s in shards]), batch_size):
            for raw, sample, mask in zip(batch.raws, batch.samples, labeller(batch.images()), strict=True):
                replaced += int("mask.png" in raw)
                writer.write(_labelled_sample(raw, sample, mask, labelled_by))
            bar.update(len(batch.raws))
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
        worker=(shard_index, num_shards) if num_shards > 1 else None,
    )


def _check_paths(input_dir: str | Path, out_dir: Path, overwrite: bool) -> dict[str, Any]:
    """Check the input is a shard set and the output a new place; return the input manifest."""
    if isinstance(input_dir, Path) and input_dir.resolve() == out_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is the input shard set; shards are never edited in place")
    manifest = read_manifest(input_dir)
    if (out_dir / MANIFEST_NAME).exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a shard set; pass overwrite=True (--overwrite true) to replace it"
        )
    return manifest


def _resolve_device(device: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda[:N]`` into a device, checking CUDA is there when asked for."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def _resolve_segmenter(
    segmenter: SegmentationTask | str | Path, device: torch.device
) -> tuple[SegmentationTask, str | None, tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """Return the task, its checkpoint path (or ``None``) and the checkpoint's normalisation."""
    if isinstance(segmenter, SegmentationTask):
        task, path, norm = segmenter, None, None
    else:
        checkpoint = read_checkpoint(segmenter, map_location=device)
        task = _task_from_checkpoint(checkpoint, str(segmenter), SegmentationTask)
        path, norm = str(segmenter), checkpoint_normalization(checkpoint)
    if task.hparams["num_classes"] != NUM_CLASSES or task.hparams["in_channels"] != 3:
        raise ValueError(
            f"the segmenter takes {task.hparams['in_channels']} bands and predicts {task.hparams['num_classes']} "
            f"classes; labelling shards needs RGB input and the {NUM_CLASSES} land-cover classes"
        )
    return task, path, norm


def _open_writer(
    manifest: Mapping[str, Any], out_dir: Path, overwrite: bool, compress_level: int, extra: Mapping[str, Any]
) -> ShardWriter:
    """A writer matching the input's split, source, shard size and shard names."""
    shards = manifest["shards"]
    return ShardWriter(
        out_dir,
        split=manifest["split"],
        source=manifest["source"],
        samples_per_shard=max(1, int(shards[0]["num_samples"])) if shards else 1000,
        prefix=_shard_prefix(shards, manifest["split"]),
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


@dataclass
class _Batch:
    """Raw and decoded samples of one forward pass (all images of one size)."""

    raws: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def images(self) -> np.ndarray:
        return np.stack([s.image for s in self.samples])


def _read_samples(directory: str | Path, shard_names: list[str]) -> Iterator[tuple[dict[str, Any], Sample]]:
    """Yield ``(raw members, decoded sample)`` in manifest order; fail naming shard and key."""
    for name in shard_names:
        path = locate(directory, name)
        if isinstance(path, Path) and not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in the manifest is missing")
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


def _batches(samples: Iterator[tuple[dict[str, Any], Sample]], batch_size: int) -> Iterator[_Batch]:
    """Group samples into batches of up to ``batch_size`` images of one size and one shard, keeping order."""
    batch = _Batch()
    for raw, sample in samples:
        if batch.samples and (
            len(batch.samples) >= batch_size
            or sample.image.shape != batch.samples[0].image.shape
            or raw.get("__shard__") != batch.raws[0].get("__shard__")
        ):
            yield batch
            batch = _Batch()
        batch.raws.append(raw)
        batch.samples.append(sample)
    if batch.samples:
        yield batch


def _labelled_sample(raw: Mapping[str, Any], sample: Sample, mask: np.ndarray, labelled_by: dict[str, Any]) -> Sample:
    """The output sample: predicted mask, updated meta, every other member verbatim."""
    meta = {**sample.meta, "composition": composition(mask), "labelled_by": labelled_by}
    copied = {name: data for name, data in raw.items() if not name.startswith("_") and name not in _REBUILT_MEMBERS}
    return Sample(
        key=sample.key,
        image=sample.image,
        mask=mask,
        meta=meta,
        image_png=raw["image.png"],
        raw_members=copied,
    )
