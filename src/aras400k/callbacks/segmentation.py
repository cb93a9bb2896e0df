"""The segmenters' report: confusion matrices, prediction grids and the score table, as files."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from aras400k.files import write_atomic
from aras400k.plotting import plot_confusion_matrix, plot_prediction_grid

__all__ = ["SegmentationReport", "format_scores_table"]


def format_scores_table(scores: dict[str, float], class_names: tuple[str, ...], stage: str) -> str:
    """Render macro scores and a per-class table (F1, IoU, precision, recall) as Markdown.

    Args:
        scores: Logged values, keys like ``test_f1_macro`` and ``test_f1_tree``.
        class_names: Classes in index order.
        stage: Key prefix (``val`` or ``test``).

    Returns:
        The Markdown text.
    """

    def pct(key: str) -> str:
        value = scores.get(f"{stage}_{key}", float("nan"))
        return "n/a" if math.isnan(value) else f"{100 * value:.2f}"

    lines = [
        "| F1 | IoU | precision | recall | accuracy |",
        "|---:|---:|---:|---:|---:|",
        f"| {pct('f1_macro')} | {pct('iou_macro')} | {pct('precision_macro')} | {pct('recall_macro')} "
        f"| {pct('accuracy')} |",
        "",
        "| class | F1 | IoU | precision | recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in class_names:
        cells = [name, *(pct(f"{metric}_{name}") for metric in ("f1", "iou", "precision", "recall"))]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


class SegmentationReport(Callback):
    """Write a confusion matrix PNG, an image / truth / prediction grid and a score table.

    Every ``every_n_epochs`` validation epochs: ``val_confusion_epoch{E}.png`` and
    ``val_predictions_epoch{E}.png`` in ``out_dir`` (default ``<log dir>/figures``). A test
    run writes ``test_confusion.png``, ``test_predictions.png``, ``test_scores.md`` and
    ``test_scores.csv`` to ``out_dir`` (default ``<default_root_dir>/test``, replacing the
    last test's files) and prints the table.

    Args:
        every_n_epochs: Validation epochs between figures (0 disables validation figures).
        num_samples: Rows in the prediction grid.
        out_dir: Destination folder.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 6, out_dir: str | None = None) -> None:
        super().__init__()
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.out_dir = out_dir
        self._grid: dict[str, Any] | None = None

    def _folder(self, trainer: Trainer, stage: str = "val") -> Path:
        if self.out_dir is not None:
            return Path(self.out_dir)
        if stage == "test":
            return Path(trainer.default_root_dir) / "test"
        return Path(trainer.log_dir or trainer.default_root_dir) / "figures"

    def _collect(self, trainer: Trainer, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        if batch_idx != 0 or not isinstance(outputs, dict) or "preds" not in outputs:
            return
        n = min(self.num_samples, len(batch["image"]))
        images = batch["image"][:n].detach()
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "denormalize"):
            images = datamodule.denormalize(images)
        else:  # per-image min-max for display
            lo = images.amin(dim=(1, 2, 3), keepdim=True)
            hi = images.amax(dim=(1, 2, 3), keepdim=True)
            images = (images - lo) / (hi - lo).clamp(min=1e-6)
        self._grid = {
            "images": images.permute(0, 2, 3, 1).float().cpu().numpy(),
            "masks": batch["mask"][:n].cpu().numpy() if "mask" in batch else None,
            "preds": outputs["preds"][:n].cpu().numpy(),
            "keys": list(batch.get("key", []))[:n] or None,
        }

    def _due(self, trainer: Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and self.every_n_epochs > 0
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Keep the first validation batch's images and predictions."""
        if self._due(trainer):
            self._collect(trainer, outputs, batch, batch_idx)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Keep the first test batch's images and predictions."""
        self._collect(trainer, outputs, batch, batch_idx)

    @rank_zero_only
    def _write(self, trainer: Trainer, pl_module: LightningModule, stage: str, suffix: str) -> None:
        folder = self._folder(trainer, stage)
        names = tuple(getattr(pl_module, "class_names", ()))
        confmat = getattr(pl_module, "last_confmat", {}).get(stage)
        if confmat is not None and names:
            plot_confusion_matrix(
                confmat.numpy(), names, folder / f"{stage}_confusion{suffix}.png", title=f"{stage} confusion"
            )
        if self._grid is not None:
            grid = self._grid
            plot_prediction_grid(
                grid["images"], grid["masks"], grid["preds"], folder / f"{stage}_predictions{suffix}.png", grid["keys"]
            )
            self._grid = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the validation figures when due."""
        if self._due(trainer):
            self._write(trainer, pl_module, "val", f"_epoch{trainer.current_epoch:03d}")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the test figures and the score table, and print the table."""
        self._write(trainer, pl_module, "test", "")
        self._write_table(trainer, pl_module)

    @rank_zero_only
    def _write_table(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
        names = tuple(getattr(pl_module, "class_names", ()))
        if not scores or not names:
            return
        folder = self._folder(trainer, "test")
        folder.mkdir(parents=True, exist_ok=True)
        table = format_scores_table(scores, names, "test")
        write_atomic(folder / "test_scores.md", table + "\n")
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows([["metric", "value"], *([key, f"{scores[key]:.6f}"] for key in sorted(scores))])
        write_atomic(folder / "test_scores.csv", buffer.getvalue())
        print(f"\nTest scores (%), also in {folder / 'test_scores.md'}:\n\n{table}\n")
