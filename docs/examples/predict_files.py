"""Prediction files without the command line: a Trainer with a ``PredictionWriter``.

The same files as ``aras predict`` (mask, colour and overlay PNGs, GeoTIFFs for
georeferenced samples, ``index.csv``), here with ``predictions.zip`` as well; see the
Predictions section of ``docs/segmentation.md``.
"""

from __future__ import annotations

from lightning.pytorch import Trainer

from aras400k.callbacks import PredictionWriter
from aras400k.data import SegmentationDataModule
from aras400k.models import SegmentationTask


def write_predictions(checkpoint: str, root: str, out_dir: str) -> None:
    """Predict every sample of ``root/test`` and write its files into ``out_dir``."""
    task = SegmentationTask.load_from_checkpoint(checkpoint)
    data = SegmentationDataModule(root=root, demo=False, num_workers=0)  # predict: root/test by default
    trainer = Trainer(callbacks=[PredictionWriter(out_dir=out_dir, archive=True)], logger=False)
    trainer.predict(task, data)
