"""One rank of a 2-process DDP segmentation fit on CPU, for ``tests/test_ddp.py``.

Not a test module (pytest does not collect it): ``test_ddp.py`` starts it twice, once
per rank, with ``LOCAL_RANK``/``RANK``, ``WORLD_SIZE``, ``NODE_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT`` set, so Lightning joins the two processes instead of launching its
own. For every ``NUM_WORKERS:BATCH_SIZE`` pair given it runs one epoch of
:class:`SegmentationTask` training and validation with ``strategy="ddp"`` (gloo) and
``NUM_WORKERS`` loader workers per rank, and writes what this rank saw:

* ``{NUM_WORKERS}x{BATCH_SIZE}_rank{R}.json``: the train and validation sample keys of
  each batch, the per-batch validation losses and sizes, ``trainer.callback_metrics``,
  the task's ``last_confmat`` and the rank's dataset lengths;
* ``{NUM_WORKERS}x{BATCH_SIZE}_rank{R}.pt``: this rank's validation predictions and masks.

Usage::

    python tests/ddp_worker.py TRAIN_SET VAL_SET OUT_DIR NUM_WORKERS:BATCH_SIZE [...]
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from aras400k.data import SegmentationDataModule
from aras400k.models import SegmentationTask


class BatchRecorder(Callback):
    """Record the keys of every batch this rank trains and validates on, and its validation outputs."""

    def __init__(self) -> None:
        self.train_keys: list[str] = []
        self.val_keys: list[str] = []
        self.val_losses: list[tuple[float, int]] = []
        self.val_preds: list[torch.Tensor] = []
        self.val_masks: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.train_keys.extend(batch["key"])

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self.val_keys.extend(batch["key"])
        self.val_losses.append((float(outputs["loss"]), len(batch["key"])))
        self.val_preds.append(outputs["preds"].to(torch.uint8).cpu())
        self.val_masks.append(batch["mask"].to(torch.uint8).cpu())


def fit_once(train: str, val: str, out: Path, num_workers: int, batch_size: int) -> None:
    """Run one DDP epoch with ``num_workers`` loader workers per rank and write this rank's record."""
    datamodule = SegmentationDataModule(
        train=[train], val=val, demo=False, batch_size=batch_size, num_workers=num_workers, shuffle_buffer=8,
    )  # fmt: skip
    task = SegmentationTask(arch="unet", encoder="tu-test_efficientnet")  # timm's tiny test network
    recorder = BatchRecorder()
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder], default_root_dir=out,
    )  # fmt: skip
    trainer.fit(task, datamodule)
    rank = trainer.global_rank
    record = {
        "rank": rank,
        "world_size": trainer.world_size,
        "train_len": len(datamodule.datasets["train"]),
        "val_len": len(datamodule.datasets["val"]),
        "train_keys": recorder.train_keys,
        "val_keys": recorder.val_keys,
        "val_losses": recorder.val_losses,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "confmat": {stage: m.tolist() for stage, m in task.last_confmat.items()},
    }
    (out / f"{num_workers}x{batch_size}_rank{rank}.json").write_text(json.dumps(record))
    torch.save(
        {"preds": torch.cat(recorder.val_preds), "masks": torch.cat(recorder.val_masks)},
        out / f"{num_workers}x{batch_size}_rank{rank}.pt",
    )


def main(argv: list[str]) -> None:
    """Parse ``TRAIN_SET VAL_SET OUT_DIR NUM_WORKERS:BATCH_SIZE...`` and fit once per pair."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    train, val, out, *configs = argv
    for config in configs:
        num_workers, batch_size = map(int, config.split(":"))
        fit_once(train, val, Path(out), num_workers, batch_size)
    torch.distributed.destroy_process_group()
    # Every record is written and closed: skip the interpreter's teardown of torch and
    # Lightning, which takes longer than the fits themselves on a busy 2-core machine.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
