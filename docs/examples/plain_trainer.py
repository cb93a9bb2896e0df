"""Training and testing a segmenter with a plain ``lightning.Trainer`` (no command line, no config).

Every aras400k part is an ordinary Lightning object, so this is the whole program; see
the "Without the command line" section of ``docs/segmentation.md``.
"""

from __future__ import annotations

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from aras400k.callbacks import SegmentationReport
from aras400k.data import SegmentationDataModule
from aras400k.models import SegmentationTask


def train_and_test(
    root: str = "data/demo", out_dir: str = "runs/plain", epochs: int = 3, encoder: str = "resnet18"
) -> dict[str, float]:
    """Train a U-Net on ``root/{train,val}``, test the best checkpoint on ``root/test``; return the test scores."""
    seed_everything(0)
    data = SegmentationDataModule(root=root, batch_size=16, num_workers=1)  # builds the demo set on first use
    task = SegmentationTask(arch="unet", encoder=encoder)
    best = ModelCheckpoint(dirpath=f"{out_dir}/checkpoints", monitor="val_f1_macro", mode="max")
    trainer = Trainer(
        max_epochs=epochs,  # a work budget: the same model on a slow or a busy machine
        default_root_dir=out_dir,
        callbacks=[best, SegmentationReport()],  # confusion matrices, prediction grids, score table
        logger=False,
    )
    trainer.fit(task, data)
    (scores,) = trainer.test(task, data, ckpt_path=best.best_model_path)
    return scores
