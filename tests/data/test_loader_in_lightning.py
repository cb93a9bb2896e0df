"""The shared-memory batch ring (``ReusingCollate``) inside real Lightning runs.

``trainer.test`` / ``trainer.validate`` run under ``torch.inference_mode``, and
``aras-pipeline`` runs its stages in one process: the segmenter stage's ``aras test``
made its test loader there, then the StyleGAN3 stage trained outside inference mode.
The main process frees a loader's slot when it unpickles the next batch, whichever loader
that batch comes from, so the first training batch wrote to the test loader's slot
table, an inference tensor: "Inplace update to inference tensor outside InferenceMode".
It happened when the test's last batches had been garbage-collected by then; the
``gc.collect()`` between the runs makes that certain.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from aras400k.data import SegmentationDataModule
from aras400k.data.datasets import ReusingCollate
from tests.conftest import write_random_set


class _PixelClassifier(LightningModule):
    """A 1x1 convolution: enough to train and validate on the DataModule's batches."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 7, 1)

    def _loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.head(batch["image"].float()), batch["mask"].long())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), batch_size=batch["image"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch), batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _CheckLoaders(Callback):
    """Assert that the loaders batch with :class:`ReusingCollate` (the path under test)."""

    def __init__(self) -> None:
        self.loaders_checked = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        gc.collect()  # free the sanity check's batches too

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: dict, batch_idx: int) -> None:
        if batch_idx == 0:
            for loader in (trainer.train_dataloader, *_as_list(trainer.val_dataloaders)):
                assert isinstance(loader.collate_fn, ReusingCollate)  # the path under test is taken
                self.loaders_checked += 1


def _as_list(loaders: object) -> list:
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


def _trainer(tmp_path: Path, **kwargs: Any) -> Trainer:
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return Trainer(enable_model_summary=False, default_root_dir=tmp_path, **quiet, **kwargs)


def _data(root: Path) -> SegmentationDataModule:
    return SegmentationDataModule(
        root=str(root), demo=False, batch_size=4, num_workers=1, augment=False, shuffle_buffer=8
    )


def test_test_then_fit_in_one_process(tmp_path):
    """``aras test`` then ``aras-fit`` in one process, as ``aras-pipeline`` runs them."""
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        write_random_set(tmp_path / "data" / split, n, size=32, split=split, per_shard=6)
    model = _PixelClassifier()
    tested = _trainer(tmp_path).test(model, datamodule=_data(tmp_path / "data"), verbose=False)
    assert torch.isfinite(torch.tensor(tested[0]["test_loss"]))
    gc.collect()  # the test loader's last batches are gone before training starts
    callback = _CheckLoaders()
    trainer = _trainer(tmp_path, max_epochs=2, num_sanity_val_steps=2, callbacks=[callback])
    trainer.fit(_PixelClassifier(), datamodule=_data(tmp_path / "data"))
    assert trainer.global_step == 2 * 6 and callback.loaders_checked == 4
    assert trainer.callback_metrics["val_loss"].isfinite()
