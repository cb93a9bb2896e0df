"""The paper's real / synthetic / mixed training study (its Tables 3 and 4).

Every architecture in ``archs`` is trained on every :class:`DataConfiguration` (a list
of training shard sources: real; synthetic only at two sizes; real + conditional,
real + unconditional or real + both synthetic sets) with the same seed and the same
budget (``max_epochs`` / ``max_steps`` over ``samples_per_epoch`` samples per epoch),
then its best checkpoint by validation macro F1 (the last one without validation) is
tested on the **real** test split. The study writes, under ``out_dir``:

* ``runs/{configuration}/{arch}/`` with ``scores.json``, the checkpoint and the CSV log;
* ``table3.md`` / ``table3.csv``: macro F1, IoU, precision, recall and pixel accuracy
  (%) per architecture and configuration, with a mean row per configuration;
* ``table4.md`` / ``table4.csv``: per-class F1 (%) per configuration, one block per
  architecture and one for the mean over architectures;
* ``per_class_f1.png``: per-class F1 (mean over architectures), one bar per configuration;
* ``summary.json``: the configuration, every run's scores and both tables.

It resumes: a run whose ``scores.json`` exists is skipped, and the tables are rebuilt
from all ``scores.json`` files of the grid. ``scores.json`` is written last, through a
temporary file and a rename, so a killed run leaves none and is trained again from
scratch. The table builders work on :class:`RunScores` lists, without training.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from aras400k.classes import CLASS_NAMES
from aras400k.data.datamodules import SegmentationDataModule
from aras400k.data.datasets import ShardDataset, ShardSource
from aras400k.data.demo import DEFAULT_DEMO_SAMPLES, demo_is_ready, make_demo
from aras400k.data.shards import SOURCES, Source, read_manifest
from aras400k.models.segmentation import ARCHITECTURES, LOSSES, Architecture, LossName, SegmentationTask
from aras400k.plotting import save_figure

__all__ = [
    "MEAN",
    "SCORES_NAME",
    "TABLE3_METRICS",
    "AblationConfig",
    "AblationResult",
    "DataConfiguration",
    "DemoStandIn",
    "RunScores",
    "build_demo_data",
    "build_table3",
    "build_table4",
    "check_data",
    "format_table3",
    "format_table4",
    "plot_per_class_f1",
    "read_run_scores",
    "run_ablation",
    "run_folder",
    "train_and_evaluate",
    "validate_config",
    "write_report",
    "write_run_scores",
]

#: Table 3's columns: score key (as in ``scores.json``) and header.
TABLE3_METRICS: tuple[tuple[str, str], ...] = (
    ("f1_macro", "F1"),
    ("iou_macro", "IoU"),
    ("precision_macro", "precision"),
    ("recall_macro", "recall"),
    ("accuracy", "accuracy"),
)
#: Model name of the rows that average over architectures.
MEAN = "mean"
#: Per-run result file; its presence marks a finished run.
SCORES_NAME = "scores.json"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# -- configuration -----------------------------------------------------------------------


@dataclass
class DataConfiguration:
    """One training-data configuration of the study (a column group of the paper's Table 3).

    Attributes:
        name: Short name used in the tables and as the run folder (letters, digits, ``_ . + -``).
        train: Training shard sources; without weights every sample of every source is
            used (the union, as in the paper), with weights they are mixed by weight.
    """

    name: str
    train: list[ShardSource]


@dataclass
class DemoStandIn:
    """A procedural shard set that stands in for a GAN's output until one is trained.

    Built with :func:`aras400k.data.demo.make_demo` (like ``aras-data demo --seed S
    --source SOURCE --out OUT``) when ``OUT`` holds no finished set; only sets listed in
    :attr:`AblationConfig.demo_stand_ins` are ever built.

    Attributes:
        out: Destination folder (``train``, ``val`` and ``test`` shard sets inside).
        seed: Seed of the set; use one that differs from the real demo set's.
        source: ``source`` recorded in the shards: ``synth_uncond``, ``synth_cond`` or ``real``.
        num_samples: Train, val and test sizes.
        image_size: Patch side in pixels.
    """

    out: str
    seed: int
    source: Source = "synth_uncond"
    num_samples: tuple[int, int, int] = DEFAULT_DEMO_SAMPLES
    image_size: int = 64


@dataclass
class AblationConfig:
    """Everything the study needs; ``aras-ablate --config FILE.yaml`` fills it.

    Relative paths are relative to the working directory.

    Attributes:
        configurations: Training-data configurations, in table order.
        archs: Architectures, in table order, from ``unet``, ``unetplusplus``, ``pan``,
            ``deeplabv3plus``, ``segformer`` and ``fpn`` (default: all six, as in the paper).
        encoder: segmentation-models-pytorch encoder of every architecture.
        encoder_weights: Local encoder weights file, or ``None`` for random init.
        out_dir: Folder for runs, tables, figure and summary.
        root: Real data folder holding the ``val`` and ``test`` shard sets.
        val: Validation shard set; default ``root/val``.
        test: Test shard set (real data); default ``root/test``.
        validate: Validate every epoch and test the best checkpoint by validation macro F1;
            ``False``: no validation, test the last checkpoint.
        demo: Build the procedural real demo set at ``root`` when it holds no data.
        demo_stand_ins: Procedural stand-ins for synthetic sets, built when missing.
        loss: Training loss: ``ce``, ``dice``, ``dice+ce`` or ``focal``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: ReduceLROnPlateau patience in epochs (on validation macro F1).
        batch_size: Samples per batch.
        num_workers: Loader processes.
        augment: Flip/rotate/colour augmentation of training batches.
        max_epochs: Epochs per run (``None``: bounded by ``max_steps`` only).
        max_steps: Optimiser steps per run (``-1``: bounded by ``max_epochs`` only).
        samples_per_epoch: Training samples per epoch, the same for every configuration
            (equal budgets); ``None``: each configuration's own size.
        seed: Seed set before every run (same initial weights and order for all configurations).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``, ...).
        devices: Devices per run.
        log_every_n_steps: Training steps between CSV log rows.
        progress_bar: Show Lightning's progress bar.
    """

    configurations: list[DataConfiguration] = field(default_factory=list)
    archs: list[Architecture] = field(default_factory=lambda: list(ARCHITECTURES))
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    out_dir: str = "runs/ablation"
    root: str = "data/demo"
    val: str | None = None
    test: str | None = None
    validate: bool = True
    demo: bool = True
    demo_stand_ins: list[DemoStandIn] = field(default_factory=list)
    loss: LossName = "ce"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    batch_size: int = 16
    num_workers: int = 1
    augment: bool = True
    max_epochs: int | None = 3
    max_steps: int = -1
    samples_per_epoch: int | None = None
    seed: int = 0
    accelerator: str = "auto"
    devices: int = 1
    log_every_n_steps: int = 10
    progress_bar: bool = True

    @property
    def val_path(self) -> str:
        """The validation shard set."""
        return self.val or str(Path(self.root) / "val")

    @property
    def test_path(self) -> str:
        """The (real) test shard set."""
        return self.test or str(Path(self.root) / "test")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _duplicates(items: Sequence[str]) -> list[str]:
    return sorted({x for x in items if list(items).count(x) > 1})


def validate_config(config: AblationConfig) -> None:
    """Check a study's settings without touching the file system.

    Args:
        config: The study.

    Raises:
        ValueError: On empty or duplicate configurations or architectures, a bad
            configuration name, an unknown architecture, encoder or loss, or a budget
            that is not positive or not bounded.
    """
    _check(bool(config.configurations), "configurations is empty: give at least one {name, train} entry")
    names = [c.name for c in config.configurations]
    for name in names:
        _check(
            bool(_NAME_RE.match(name)),
            f"configuration name {name!r} is not usable as a folder name; use letters, digits, '_', '.', '+', '-'",
        )
    _check(not _duplicates(names), f"duplicate configuration names: {', '.join(_duplicates(names))}")
    for configuration in config.configurations:
        _check(bool(configuration.train), f"configuration {configuration.name!r} has no training sources")
        for source in configuration.train:
            _check(
                source.num_samples is None or source.num_samples > 0,
                f"configuration {configuration.name!r}: num_samples of {source.path} must be positive",
            )
    _check(bool(config.archs), f"archs is empty: give at least one of {', '.join(ARCHITECTURES)}")
    for arch in config.archs:
        _check(arch in ARCHITECTURES, f"unknown arch {arch!r} in archs; choose from {', '.join(ARCHITECTURES)}")
    _check(not _duplicates(config.archs), f"duplicate archs: {', '.join(_duplicates(config.archs))}")
    _check_encoder(config.encoder)
    _check(config.loss in LOSSES, f"unknown loss {config.loss!r}; choose from {', '.join(LOSSES)}")
    _check(config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}")
    _check(config.num_workers >= 0, f"num_workers must be >= 0, got {config.num_workers}")
    _check(
        config.samples_per_epoch is None or config.samples_per_epoch >= 1,
        f"samples_per_epoch must be >= 1 or null, got {config.samples_per_epoch}",
    )
    _check(
        config.max_epochs is None or config.max_epochs >= 1, f"max_epochs must be >= 1 or null, got {config.max_epochs}"
    )
    _check(config.max_steps == -1 or config.max_steps >= 1, f"max_steps must be >= 1 or -1, got {config.max_steps}")
    _check(
        config.max_epochs is not None or config.max_steps >= 1,
        "the training budget is unbounded: set max_epochs or max_steps",
    )
    outs = [s.out for s in config.demo_stand_ins]
    _check(not _duplicates(outs), f"duplicate demo_stand_ins folders: {', '.join(_duplicates(outs))}")
    for stand_in in config.demo_stand_ins:
        _check(stand_in.source in SOURCES, f"unknown source {stand_in.source!r}; choose from {', '.join(SOURCES)}")


def _check_encoder(encoder: str) -> None:
    from segmentation_models_pytorch.encoders import get_encoder_names

    known = get_encoder_names()
    _check(
        encoder in known or encoder.startswith("tu-"),
        f"unknown encoder {encoder!r}; use a segmentation-models-pytorch encoder such as resnet18 or mobilenet_v2",
    )


def build_demo_data(config: AblationConfig) -> list[Path]:
    """Build the procedural data the config asks for and that is missing.

    The real demo set is built at ``root`` when ``demo`` is set and ``root`` is empty or
    absent; each of ``demo_stand_ins`` is built when its folder is. Nothing else is built.

    Args:
        config: The study.

    Returns:
        The folders built.

    Raises:
        FileExistsError: If a stand-in's folder holds files but no finished shard sets.
    """
    built = []
    root = Path(config.root)
    if config.demo and not demo_is_ready(root) and not (root.exists() and any(root.iterdir())):
        # A non-empty root is the user's data; check_data says what is missing there.
        print(f"building the procedural real demo set in {root}")
        make_demo(root, progress=False)
        built.append(root)
    for stand_in in config.demo_stand_ins:
        folder = Path(stand_in.out)
        if demo_is_ready(folder):
            continue
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} holds files but no finished train/val/test shard sets; "
                "empty it to rebuild the procedural stand-in, or remove it from demo_stand_ins"
            )
        print(f"building the procedural {stand_in.source} stand-in in {folder} (seed {stand_in.seed}, demo_stand_ins)")
        make_demo(
            folder,
            stand_in.num_samples,
            stand_in.image_size,
            seed=stand_in.seed,
            progress=False,
            source=stand_in.source,
        )
        built.append(folder)
    return built


def _shard_check(sources: Sequence[ShardSource | str], what: str, samples_per_epoch: int | None = None) -> None:
    try:
        ShardDataset(list(sources), with_mask=True, samples_per_epoch=samples_per_epoch)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err


def check_data(config: AblationConfig) -> None:
    """Check that every shard set the study reads exists and has masks (manifests only).

    Args:
        config: The study.

    Raises:
        ValueError: Naming the configuration and the path that is not a labelled shard set,
            or a source asked for more samples than it holds.
    """
    _shard_check([config.test_path], "test set")
    if config.validate:
        _shard_check([config.val_path], "validation set")
    for configuration in config.configurations:
        _shard_check(configuration.train, f"configuration {configuration.name!r}", config.samples_per_epoch)
    source = read_manifest(config.test_path).get("source", "real")
    if source != "real":
        warnings.warn(
            f"the test set {config.test_path} holds {source} data; the study is meant to test on real data",
            UserWarning,
            stacklevel=2,
        )


# -- one run -------------------------------------------------------------------------------


@dataclass
class RunScores:
    """The outcome of training one architecture on one configuration.

    Attributes:
        configuration: Configuration name.
        arch: Architecture.
        scores: Test scores as fractions, keys as logged without the ``test_`` prefix
            (``f1_macro``, ``accuracy``, ``f1_tree``, ...); NaN for a class absent from
            the test truth and the predictions.
        checkpoint: Evaluated checkpoint, relative to the run folder.
        selected_by: ``best val_f1_macro`` or ``last``.
        best_val_f1: Validation macro F1 of the evaluated checkpoint (``None`` without validation).
        epochs: Epochs trained.
        steps: Optimiser steps taken.
        train_samples: Training samples seen.
        seconds: Wall time of training and testing.
        settings: The settings that shaped the run (to spot a stale ``scores.json``).
    """

    configuration: str
    arch: str
    scores: dict[str, float]
    checkpoint: str = ""
    selected_by: str = ""
    best_val_f1: float | None = None
    epochs: int = 0
    steps: int = 0
    train_samples: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN scores become ``null``)."""
        data = asdict(self)
        data["scores"] = {k: None if math.isnan(v) else v for k, v in self.scores.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunScores:
        """Inverse of :meth:`to_json` (``null`` scores become NaN).

        Args:
            data: A dict written by :meth:`to_json`.

        Returns:
            The run's scores.
        """
        scores = {k: float("nan") if v is None else float(v) for k, v in data["scores"].items()}
        return cls(**{**data, "scores": scores})


def run_folder(config: AblationConfig, configuration: str, arch: str) -> Path:
    """Folder of one run: ``out_dir/runs/{configuration}/{arch}``.

    Args:
        config: The study.
        configuration: Configuration name.
        arch: Architecture.

    Returns:
        The folder.
    """
    return Path(config.out_dir) / "runs" / configuration / arch


def write_run_scores(scores: RunScores, path: str | Path) -> Path:
    """Write ``scores.json`` atomically (temporary file, then rename).

    Args:
        scores: The run's outcome.
        path: Destination.

    Returns:
        The path written.
    """
    return _write_text(path, json.dumps(scores.to_json(), indent=2) + "\n")


def read_run_scores(path: str | Path) -> RunScores:
    """Read a ``scores.json``.

    Args:
        path: The file.

    Returns:
        The run's outcome.

    Raises:
        ValueError: If the file is not a readable ``scores.json`` (delete it to rerun the run).
    """
    try:
        return RunScores.from_json(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable scores file ({err}); delete it to rerun that run") from err


def _write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _run_settings(config: AblationConfig, configuration: DataConfiguration, arch: str) -> dict[str, Any]:
    keys = (
        "encoder", "encoder_weights", "validate", "loss", "lr", "weight_decay", "patience", "batch_size",
        "augment", "max_epochs", "max_steps", "samples_per_epoch", "seed",
    )  # fmt: skip
    settings = {key: getattr(config, key) for key in keys}
    settings.update(arch=arch, train=[asdict(s) for s in configuration.train], test=config.test_path)
    settings["val"] = config.val_path if config.validate else None
    return settings


def _make_task(config: AblationConfig, arch: Architecture) -> SegmentationTask:
    return SegmentationTask(
        arch=arch,
        encoder=config.encoder,
        encoder_weights=config.encoder_weights,
        loss=config.loss,
        lr=config.lr,
        weight_decay=config.weight_decay,
        patience=config.patience,
    )


def _make_datamodule(config: AblationConfig, configuration: DataConfiguration) -> SegmentationDataModule:
    return SegmentationDataModule(
        root=config.root,
        train=list(configuration.train),
        # Without validation no val batch is read (limit_val_batches=0), but the
        # DataModule opens a val set in setup("fit"); the test set stands in for it.
        val=config.val_path if config.validate else config.test_path,
        test=config.test_path,
        demo=False,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        samples_per_epoch=config.samples_per_epoch,
        augment=config.augment,
        seed=config.seed,
    )


def train_and_evaluate(
    config: AblationConfig, configuration: DataConfiguration, arch: Architecture, folder: Path
) -> RunScores:
    """Train one architecture on one configuration and test it on the real test split.

    The folder is emptied first (leftovers of an interrupted run), the seed is set, and
    the checkpoint (weights only), CSV log and nothing else are written there; the
    caller writes ``scores.json``.

    Args:
        config: The study.
        configuration: Training data.
        arch: Architecture.
        folder: The run folder.

    Returns:
        The run's outcome.

    Raises:
        KeyboardInterrupt: If training was interrupted (so that no scores are written).
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    seed_everything(config.seed, workers=True, verbose=False)
    task = _make_task(config, arch)
    datamodule = _make_datamodule(config, configuration)
    checkpoint = _make_checkpoint(config, folder)
    trainer = _make_trainer(config, folder, checkpoint)
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    if trainer.interrupted:
        raise KeyboardInterrupt
    epochs, steps = trainer.current_epoch, trainer.global_step
    best = checkpoint.best_model_path if config.validate else ""
    chosen = best or checkpoint.last_model_path
    if not chosen:  # the budget ended before the first validation
        chosen = str(folder / "checkpoints" / "last.ckpt")
        trainer.save_checkpoint(chosen, weights_only=True)
    results = trainer.test(task, datamodule=datamodule, ckpt_path=chosen, verbose=False)
    best_score = checkpoint.best_model_score if best else None
    return RunScores(
        configuration=configuration.name,
        arch=arch,
        scores={k.removeprefix("test_"): float(v) for k, v in results[0].items() if k.startswith("test_")},
        checkpoint=os.path.relpath(Path(chosen).resolve(), folder.resolve()),
        selected_by="best val_f1_macro" if best else "last",
        best_val_f1=None if best_score is None else float(best_score),
        epochs=epochs,
        steps=steps,
        train_samples=steps * config.batch_size * trainer.world_size,
        seconds=round(time.perf_counter() - start, 2),
        settings=_run_settings(config, configuration, arch),
    )


def _make_checkpoint(config: AblationConfig, folder: Path) -> ModelCheckpoint:
    """Weights-only checkpoints: the best by validation macro F1, or the last without validation."""
    if config.validate:
        return ModelCheckpoint(
            dirpath=folder / "checkpoints", filename="best", monitor="val_f1_macro", mode="max",
            save_weights_only=True, auto_insert_metric_name=False,
        )  # fmt: skip
    return ModelCheckpoint(dirpath=folder / "checkpoints", save_top_k=0, save_last=True, save_weights_only=True)


def _make_trainer(config: AblationConfig, folder: Path, checkpoint: ModelCheckpoint) -> Trainer:
    return Trainer(
        default_root_dir=folder,
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=config.devices,
        logger=CSVLogger(save_dir=folder, name="", version="logs"),
        callbacks=[checkpoint],
        limit_val_batches=None if config.validate else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
    )


# -- tables ----------------------------------------------------------------------------------


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _order(runs: Sequence[RunScores], attribute: str, given: Sequence[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    return list(dict.fromkeys(getattr(run, attribute) for run in runs))


def _grid_rows(
    runs: Sequence[RunScores],
    keys: Sequence[str],
    configurations: Sequence[str] | None,
    archs: Sequence[str] | None,
) -> dict[tuple[str, str], dict[str, float]]:
    """``(configuration, model) -> {key: value}`` including ``(configuration, MEAN)`` rows."""
    by_cell = {(run.configuration, run.arch): run for run in runs}
    out: dict[tuple[str, str], dict[str, float]] = {}
    for conf in _order(runs, "configuration", configurations):
        present = [by_cell[(conf, arch)] for arch in _order(runs, "arch", archs) if (conf, arch) in by_cell]
        for run in present:
            out[(conf, run.arch)] = {k: run.scores.get(k, float("nan")) for k in keys}
        if present:
            out[(conf, MEAN)] = {k: _nanmean([run.scores.get(k, float("nan")) for run in present]) for k in keys}
    return out


def build_table3(
    runs: Sequence[RunScores],
    configurations: Sequence[str] | None = None,
    archs: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Table 3: overall test scores per configuration and architecture, plus a mean row.

    Args:
        runs: Finished runs.
        configurations: Row order of configurations (default: order of first appearance).
        archs: Row order of architectures within a configuration (default: as above).

    Returns:
        Rows ``{"configuration", "model", "f1_macro", "iou_macro", "precision_macro",
        "recall_macro", "accuracy"}`` with fractions; after each configuration's
        architectures, a row with model :data:`MEAN` averaging them (NaN values skipped).
    """
    keys = [key for key, _ in TABLE3_METRICS]
    grid = _grid_rows(runs, keys, configurations, archs)
    return [{"configuration": conf, "model": model, **values} for (conf, model), values in grid.items()]


def build_table4(
    runs: Sequence[RunScores],
    configurations: Sequence[str] | None = None,
    archs: Sequence[str] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> list[dict[str, Any]]:
    """Table 4: per-class test F1 per configuration, one block per architecture and the mean.

    Args:
        runs: Finished runs.
        configurations: Row order within a block (default: order of first appearance).
        archs: Block order (default: order of first appearance); the mean block comes last.
        class_names: Classes (columns).

    Returns:
        Rows ``{"model", "configuration", <class>: fraction, ...}`` grouped by model
        (each architecture, then :data:`MEAN`); NaN where a class has no score.
    """
    keys = [f"f1_{name}" for name in class_names]
    grid = _grid_rows(runs, keys, configurations, archs)
    models = [*_order(runs, "arch", archs), MEAN]
    rows = []
    for model in models:
        for (conf, row_model), values in grid.items():
            if row_model == model:
                rows.append({"model": model, "configuration": conf, **{n: values[f"f1_{n}"] for n in class_names}})
    return rows


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return [f"| {' | '.join(line)} |" for line in (header, align, *rows)]


def format_table3(rows: Sequence[dict[str, Any]]) -> str:
    """Render Table 3 rows (from :func:`build_table3`) as Markdown, values in %.

    Args:
        rows: Table 3 rows.

    Returns:
        The Markdown table (mean rows in bold, NaN as ``n/a``).
    """
    header = ["training data", "model", *(title for _, title in TABLE3_METRICS)]
    body = []
    for row in rows:
        model = f"**{MEAN}**" if row["model"] == MEAN else row["model"]
        body.append([row["configuration"], model, *(_pct(row[key]) for key, _ in TABLE3_METRICS)])
    return "\n".join(_markdown(header, body, numeric_from=2))


def format_table4(rows: Sequence[dict[str, Any]], class_names: Sequence[str] = CLASS_NAMES) -> str:
    """Render Table 4 rows (from :func:`build_table4`) as Markdown blocks, values in %.

    Args:
        rows: Table 4 rows.
        class_names: Classes (columns).

    Returns:
        One ``###`` block per architecture and one for the mean, NaN as ``n/a``.
    """
    blocks = []
    for model in dict.fromkeys(row["model"] for row in rows):
        title = "mean over architectures" if model == MEAN else model
        body = [[row["configuration"], *(_pct(row[n]) for n in class_names)] for row in rows if row["model"] == model]
        blocks.append("\n".join([f"### {title}", "", *_markdown(["training data", *class_names], body, 1)]))
    return "\n\n".join(blocks)


def _write_csv(rows: Sequence[dict[str, Any]], labels: Sequence[str], values: Sequence[str], path: Path) -> Path:
    """Label columns as text, value columns in % with 4 decimals (NaN as ``n/a``)."""
    lines: list[list[str]] = [[*labels, *values]]
    for row in rows:
        cells = ["n/a" if math.isnan(row[v]) else f"{100 * row[v]:.4f}" for v in values]
        lines.append([*(str(row[label]) for label in labels), *cells])
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        csv.writer(fh).writerows(lines)
    os.replace(tmp, path)
    return path


def plot_per_class_f1(
    table4: Sequence[dict[str, Any]], path: str | Path, class_names: Sequence[str] = CLASS_NAMES
) -> Path:
    """Grouped bar chart of per-class F1 (mean over architectures): a group per class, a bar per configuration.

    Args:
        table4: Table 4 rows; only the :data:`MEAN` rows are drawn.
        path: Destination PNG.
        class_names: Classes (bar groups).

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    rows = [row for row in table4 if row["model"] == MEAN]
    x = np.arange(len(class_names))
    width = 0.8 / max(1, len(rows))
    fig = Figure(figsize=(max(8.0, 0.2 * len(rows) * len(class_names) + 3), 4.8), dpi=120, layout="constrained")
    ax = fig.subplots()
    colours = _palette(len(rows))
    for j, row in enumerate(rows):
        values = np.array([100 * row[name] for name in class_names], dtype=float)
        offsets = x - 0.4 + width * (j + 0.5)
        ax.bar(offsets, np.nan_to_num(values), width, label=row["configuration"], color=colours[j])
        for offset, value in zip(offsets, values, strict=True):
            if math.isnan(value):
                ax.text(offset, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set_xticks(x, list(class_names))
    ax.set_ylim(0, 100)
    ax.set_ylabel("test F1 (%)")
    ax.set_title("Per-class test F1 on real data, mean over architectures")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(title="training data", loc="outside lower center", ncols=min(len(rows), 6) or 1, frameon=False)
    return save_figure(fig, path)


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# -- the study -------------------------------------------------------------------------------


@dataclass
class AblationResult:
    """What :func:`run_ablation` did and wrote.

    Attributes:
        runs: Scores of every finished run of the grid, in table order.
        table3: Table 3 rows (see :func:`build_table3`).
        table4: Table 4 rows (see :func:`build_table4`).
        files: Output name -> path (``table3.md``, ``table3.csv``, ``table4.md``,
            ``table4.csv``, ``per_class_f1.png``, ``summary.json``).
        trained: ``configuration/arch`` of the runs trained now.
        skipped: ``configuration/arch`` of the runs skipped because ``scores.json`` existed.
        missing: ``configuration/arch`` of the runs without scores (``tables_only``).
    """

    runs: list[RunScores]
    table3: list[dict[str, Any]]
    table4: list[dict[str, Any]]
    files: dict[str, Path]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def table3_markdown(self) -> str:
        """Table 3 as Markdown (values in %)."""
        return format_table3(self.table3)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_report(config: AblationConfig, runs: Sequence[RunScores], missing: Sequence[str] = ()) -> AblationResult:
    """Write Tables 3 and 4 (Markdown + CSV), the per-class F1 chart and ``summary.json``.

    Args:
        config: The study (gives the output folder and the row order).
        runs: Finished runs.
        missing: ``configuration/arch`` of runs without scores, noted under the tables.

    Returns:
        The tables and the files written.
    """
    out = Path(config.out_dir)
    names = [c.name for c in config.configurations]
    table3 = build_table3(runs, names, config.archs)
    table4 = build_table4(runs, names, config.archs)
    note = f"\n\nNo scores yet for: {', '.join(missing)} (means are over the runs with scores).\n" if missing else "\n"
    intro = "Test scores (%) on the real test split"
    intro4 = "Per-class test F1 (%) on the real test split"
    files = {
        "table3.md": _write_text(out / "table3.md", f"## Table 3. {intro}\n\n{format_table3(table3)}{note}"),
        "table3.csv": _write_csv(
            table3, ["configuration", "model"], [k for k, _ in TABLE3_METRICS], out / "table3.csv"
        ),
        "table4.md": _write_text(out / "table4.md", f"## Table 4. {intro4}\n\n{format_table4(table4)}{note}"),
        "table4.csv": _write_csv(table4, ["model", "configuration"], list(CLASS_NAMES), out / "table4.csv"),
        "per_class_f1.png": plot_per_class_f1(table4, out / "per_class_f1.png"),
    }
    summary = {
        "note": "scores are fractions in [0, 1]; the .md/.csv tables show them in %",
        "config": asdict(config),
        "runs": [run.to_json() for run in runs],
        "missing": list(missing),
        "table3": table3,
        "table4": table4,
        "files": {name: str(path) for name, path in files.items()},
    }
    files["summary.json"] = _write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    return AblationResult(runs=list(runs), table3=table3, table4=table4, files=files, missing=list(missing))


def _stale_keys(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    current = json.loads(json.dumps(current))  # tuples -> lists, as stored
    return sorted(k for k in current if k in stored and stored[k] != current[k])


def run_ablation(config: AblationConfig, tables_only: bool = False) -> AblationResult:
    """Run the whole study (resumably) and write its tables, figure and summary.

    Everything is checked before the first run starts: the settings
    (:func:`validate_config`), the procedural data the config asks for
    (:func:`build_demo_data`) and every shard set (:func:`check_data`).

    Args:
        config: The study.
        tables_only: Train nothing; rebuild the outputs from the existing ``scores.json`` files.

    Returns:
        The runs, tables and files.

    Raises:
        ValueError: On a bad setting or shard set (see :func:`validate_config`, :func:`check_data`).
        FileExistsError: If a stand-in's folder holds other files.
    """
    validate_config(config)
    if not tables_only:
        build_demo_data(config)
        check_data(config)
    grid = [(c, arch) for c in config.configurations for arch in config.archs]
    runs: list[RunScores] = []
    trained, skipped, missing = [], [], []
    for index, (configuration, arch) in enumerate(grid, start=1):
        tag = f"[{index}/{len(grid)}] {configuration.name} / {arch}"
        cell = f"{configuration.name}/{arch}"
        folder = run_folder(config, configuration.name, arch)
        path = folder / SCORES_NAME
        if path.is_file():
            run = read_run_scores(path)
            stale = _stale_keys(run.settings, _run_settings(config, configuration, arch))
            print(f"{tag}: skipped, {path} exists" + (f" (made with other {', '.join(stale)})" if stale else ""))
            skipped.append(cell)
        elif tables_only:
            print(f"{tag}: no scores yet")
            missing.append(cell)
            continue
        else:
            print(f"{tag} ...", flush=True)
            run = train_and_evaluate(config, configuration, arch, folder)
            run.settings = _run_settings(config, configuration, arch)
            write_run_scores(run, path)
            print(f"{tag}: test F1 {_pct(run.scores['f1_macro'])}% ({run.selected_by} checkpoint, {run.seconds:.0f} s)")
            trained.append(cell)
        runs.append(run)
    result = write_report(config, runs, missing)
    result.trained, result.skipped = trained, skipped
    return result
