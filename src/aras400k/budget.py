"""Did a training run finish its work? A summary of why it stopped, and warnings a newcomer reads.

A run that a wall-clock limit (``trainer.max_time``) cut short, a segmenter that saw
less than one epoch of its data, or a GAN that stopped before its ``kimg`` gives
numbers that look like results and are not. :func:`summarize_fit` says how far a
``fit`` got against its own budget and why it stopped; ``aras-fit`` prints its
warnings and writes it as ``training_summary.json`` in the run's folder, where
``aras-pipeline`` reads it to flag the stage on the console and in ``index.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aras400k.files import write_json_atomic

__all__ = ["DEFAULT_FID_BOUND", "SUMMARY_NAME", "TrainingSummary", "fid_warning", "read_summary", "summarize_fit"]

#: File name of the summary in the run's ``default_root_dir``.
SUMMARY_NAME = "training_summary.json"

#: ``val_fid`` above this means the generator's images are far from the real ones.
DEFAULT_FID_BOUND = 1000.0


@dataclass
class TrainingSummary:
    """How far a ``fit`` got against its own budget.

    Attributes:
        stopped_by: ``max_epochs``, ``max_steps``, ``kimg``, ``max_time``,
            ``early_stopping``, ``interrupted`` or ``other``.
        epochs: Epochs completed.
        steps: Optimiser steps (Lightning's ``global_step``).
        iterations: Training iterations of a GAN (``None`` for other modules).
        kimg: Thousands of real images a GAN was shown (``None`` for other modules).
        budget: The limits set (of ``max_epochs``, ``max_steps``, ``max_time``, ``kimg``).
        threads: torch intra-op threads used (results are bit-identical only at equal counts).
        warnings: Plain-language reasons not to trust the model; empty when it did its work.
    """

    stopped_by: str
    epochs: int
    steps: int
    iterations: int | None = None
    kimg: float | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def trustworthy(self) -> bool:
        """Whether no warning was raised."""
        return not self.warnings

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/training_summary.json`` (``folder``: ``trainer.default_root_dir``); return its path."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        return write_json_atomic(Path(folder) / SUMMARY_NAME, asdict(self))


def read_summary(folder: str | Path) -> TrainingSummary | None:
    """Read ``folder/training_summary.json`` (``None`` when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / SUMMARY_NAME).read_text())
        return TrainingSummary(**data)
    except (OSError, ValueError, TypeError):
        return None


def _timer_expired(trainer: Any) -> tuple[bool, str | None]:
    from lightning.pytorch.callbacks import Timer

    for callback in getattr(trainer, "callbacks", []):
        if isinstance(callback, Timer):
            remaining = callback.time_remaining()
            duration = getattr(callback, "_duration", None)
            if duration is None:
                return False, None
            hours, rest = divmod(int(duration), 3600)
            return remaining is not None and remaining <= 0, f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return False, None


def _early_stopped(trainer: Any) -> bool:
    from lightning.pytorch.callbacks import EarlyStopping

    return any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in getattr(trainer, "callbacks", []))


def summarize_fit(trainer: Any, module: Any, threads: int | None = None) -> TrainingSummary:
    """Summarise a finished ``trainer.fit`` of ``module`` against its budget, with its warnings.

    Args:
        trainer: The Trainer after ``fit``.
        module: The LightningModule it trained.
        threads: torch intra-op threads used, to record.
    """
    epochs, steps = int(trainer.current_epoch), int(trainer.global_step)
    limits = {"max_epochs": trainer.max_epochs, "max_steps": trainer.max_steps}
    budget: dict[str, Any] = {k: v for k, v in limits.items() if v is not None and v >= 0}  # -1: unlimited
    expired, limit = _timer_expired(trainer)
    if limit is not None:
        budget["max_time"] = limit
    hparams = getattr(module, "hparams", {})
    kimg_budget = hparams.get("kimg") if hasattr(hparams, "get") else None
    iterations = int(module.iterations) if hasattr(module, "iterations") else None
    batch = getattr(module, "last_batch_size", None)
    kimg = iterations * batch / 1000 if iterations is not None and batch else None
    if kimg_budget is not None:
        budget["kimg"] = kimg_budget
    kimg_done = kimg_budget is not None and kimg is not None and kimg >= kimg_budget - 1e-9
    if getattr(trainer, "interrupted", False):
        stopped_by = "interrupted"
    elif kimg_done:
        stopped_by = "kimg"
    elif steps >= budget.get("max_steps", math.inf):
        stopped_by = "max_steps"
    elif epochs >= budget.get("max_epochs", math.inf):
        stopped_by = "max_epochs"
    elif expired:
        stopped_by = "max_time"
    elif _early_stopped(trainer):
        stopped_by = "early_stopping"
    else:
        stopped_by = "other"
    summary = TrainingSummary(stopped_by, epochs, steps, iterations, kimg, budget, threads)
    summary.warnings = _warnings(summary, trainer, kimg_budget)
    return summary


def _warnings(summary: TrainingSummary, trainer: Any, kimg_budget: float | None) -> list[str]:
    done = f"after {summary.epochs} epoch(s) and {summary.steps} step(s)"
    if summary.iterations is not None:
        done = f"after {summary.iterations} iterations ({summary.kimg or 0:.2f} kimg)"
    warnings: list[str] = []
    if summary.stopped_by == "max_time":
        work = {k: v for k, v in summary.budget.items() if k != "max_time"}
        warnings.append(
            f"training was cut by the wall-clock limit max_time {summary.budget.get('max_time')} {done}, before its "
            f"work budget ({', '.join(f'{k} {v}' for k, v in work.items()) or 'none'}): the model is undertrained "
            "and its numbers depend on how fast and how busy the machine was"
        )
    elif summary.stopped_by == "interrupted":
        warnings.append(f"training was interrupted {done}: the model is undertrained")
    full = _batches_per_epoch(trainer)
    if summary.iterations is None and full and summary.steps < full:
        warnings.append(
            f"the model saw less than one epoch of its training data ({summary.steps} of {full} batches): its "
            "scores are not trustworthy"
        )
    if kimg_budget is not None and summary.stopped_by != "kimg":
        warnings.append(f"the GAN stopped at {summary.kimg or 0:.2f} of its {kimg_budget} kimg: it is undertrained")
    return warnings


def _batches_per_epoch(trainer: Any) -> int | None:
    """Batches in one full pass over the training data (before ``limit_train_batches``), if known."""
    loader = getattr(trainer, "train_dataloader", None)
    try:
        return len(loader) if loader is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


def fid_warning(values: Sequence[float], bound: float = DEFAULT_FID_BOUND, name: str = "val_fid") -> str | None:
    """A warning when the last of the logged FID ``values`` is above ``bound`` (or not finite), else ``None``.

    ``name`` is the metric's name, for the message.
    """
    if not values:
        return None
    last = float(values[-1])
    if math.isfinite(last) and last <= bound:
        return None
    return (
        f"{name} ended at {last:.1f}, above the sanity bound {bound:g}: the generator's images are far from the real "
        "ones (undertrained), so synthetic sets made from it say little"
    )
