"""One run of the study: train one architecture on one configuration, test it, keep its scores.

Its :class:`RunScores` are written last, as ``scores.json``, whose presence marks the run
as finished when the study resumes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aras400k.ablation.config import AblationConfig, DataConfiguration
from aras400k.files import write_atomic
from aras400k.models.choices import Architecture
from aras400k.threads import configure_threads

if TYPE_CHECKING:  # Lightning, smp and torch load when a run trains, not at start-up
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from aras400k.data.datamodules import SegmentationDataModule

__all__ = ["SCORES_NAME", "RunScores", "read_run_scores", "run_folder", "train_and_evaluate", "write_run_scores"]

#: Per-run result file; its presence marks a finished run.
SCORES_NAME = "scores.json"


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
        """The run's scores from ``data`` written by :meth:`to_json` (``null`` scores become NaN)."""
        scores = {k: float("nan") if v is None else float(v) for k, v in data["scores"].items()}
        return cls(**{**data, "scores": scores})


def run_folder(config: AblationConfig, configuration: str, arch: str) -> Path:
    """Folder of one run of the study ``config``: ``out_dir/runs/{configuration}/{arch}``."""
    return Path(config.out_dir) / "runs" / configuration / arch


def write_run_scores(scores: RunScores, path: str | Path) -> Path:
    """Write a run's ``scores`` to the ``scores.json`` at ``path`` atomically (temporary file, then rename)."""
    return write_text(path, json.dumps(scores.to_json(), indent=2) + "\n")


def read_run_scores(path: str | Path) -> RunScores:
    """The run's outcome read from the ``scores.json`` at ``path``.

    Raises:
        ValueError: If the file is not a readable ``scores.json`` (delete it to rerun the run).
    """
    try:
        return RunScores.from_json(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable scores file ({err}); delete it to rerun that run") from err


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (:func:`~aras400k.files.write_atomic`), creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, text, tmp_name=f".{path.name}.tmp")


#: The study's settings that are :class:`~aras400k.models.SegmentationTask` arguments of the same name.
_TASK_OPTIONS = ("encoder", "encoder_weights", "loss", "lr", "weight_decay", "patience")


def run_settings(config: AblationConfig, configuration: DataConfiguration, arch: str) -> dict[str, Any]:
    """Everything one run of the study depends on (a finished run with other settings is redone)."""
    keys = (
        "encoder", "encoder_weights", "validate", "loss", "lr", "weight_decay", "patience", "batch_size",
        "augment", "max_epochs", "max_steps", "samples_per_epoch", "seed",
    )  # fmt: skip
    settings = {key: getattr(config, key) for key in keys}
    settings.update(arch=arch, train=[asdict(s) for s in configuration.train], test=config.test_path)
    settings["val"] = config.val_path if config.validate else None
    return settings


def _make_datamodule(config: AblationConfig, configuration: DataConfiguration) -> SegmentationDataModule:
    from aras400k.data.datamodules import SegmentationDataModule

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
    the checkpoint (weights only), CSV log and nothing else are written in the run ``folder``;
    the caller writes ``scores.json`` of the returned outcome.

    Raises:
        KeyboardInterrupt: If training was interrupted (so that no scores are written).
    """
    from lightning.pytorch import seed_everything

    from aras400k.models.segmentation import SegmentationTask

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    seed_everything(config.seed, workers=True, verbose=False)
    task = SegmentationTask(arch=arch, **{name: getattr(config, name) for name in _TASK_OPTIONS})
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
        settings=run_settings(config, configuration, arch),
    )


def _make_checkpoint(config: AblationConfig, folder: Path) -> ModelCheckpoint:
    """Weights-only checkpoints: the best by validation macro F1, or the last without validation."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    if config.validate:
        return ModelCheckpoint(
            dirpath=folder / "checkpoints", filename="best", monitor="val_f1_macro", mode="max",
            save_weights_only=True, auto_insert_metric_name=False,
        )  # fmt: skip
    return ModelCheckpoint(dirpath=folder / "checkpoints", save_top_k=0, save_last=True, save_weights_only=True)


def _make_trainer(config: AblationConfig, folder: Path, checkpoint: ModelCheckpoint) -> Trainer:
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger

    configure_threads(loader_workers=config.num_workers)
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
