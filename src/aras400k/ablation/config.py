"""The study's settings: its dataclasses and the check of them that reads no file.

:class:`AblationConfig` holds everything ``aras-ablate`` takes; its training data are
:class:`DataConfiguration` entries and the procedural sets standing in for missing GAN
output are :class:`DemoStandIn` entries. :func:`validate_config` checks the settings
before anything is built or trained.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aras400k.data.demo import DEFAULT_DEMO_SAMPLES
from aras400k.data.shards import SOURCES, Source
from aras400k.data.sources import ShardSource
from aras400k.models.choices import ARCHITECTURES, LOSSES, Architecture, LossName

__all__ = ["AblationConfig", "DataConfiguration", "DemoStandIn", "validate_config"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


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
    """Check the settings of the study ``config`` without touching the file system.

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
    from segmentation_models_pytorch.encoders import get_encoder_names

    encoder = config.encoder
    _check(
        encoder in get_encoder_names() or encoder.startswith("tu-"),
        f"unknown encoder {encoder!r}; use a segmentation-models-pytorch encoder such as resnet18 or mobilenet_v2",
    )
    _check(config.loss in LOSSES, f"unknown loss {config.loss!r}; choose from {', '.join(LOSSES)}")
    _check(config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}")
    _check(config.num_workers >= 0, f"num_workers must be >= 0, got {config.num_workers}")
    for name in ("samples_per_epoch", "max_epochs"):
        value = getattr(config, name)
        _check(value is None or value >= 1, f"{name} must be >= 1 or null, got {value}")
    _check(config.max_steps == -1 or config.max_steps >= 1, f"max_steps must be >= 1 or -1, got {config.max_steps}")
    _check(
        config.max_epochs is not None or config.max_steps >= 1,
        "the training budget is unbounded: set max_epochs or max_steps",
    )
    outs = [s.out for s in config.demo_stand_ins]
    _check(not _duplicates(outs), f"duplicate demo_stand_ins folders: {', '.join(_duplicates(outs))}")
    for stand_in in config.demo_stand_ins:
        _check(stand_in.source in SOURCES, f"unknown source {stand_in.source!r}; choose from {', '.join(SOURCES)}")
