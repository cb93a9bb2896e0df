"""aras400k.callbacks: a light package of the file-writing callbacks; the segmenters' report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

import aras400k.callbacks
from aras400k.callbacks import SegmentationReport, format_scores_table
from aras400k.data import SegmentationDataModule
from aras400k.models import SegmentationTask

SRC = Path(__file__).resolve().parents[1] / "src"


def test_import_is_light_and_every_name_resolves():
    heavy = "[m for m in ('torch', 'lightning') if m in sys.modules]"
    code = f"import sys, json, aras400k.callbacks\nprint(json.dumps({heavy}))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == []
    # The names of the former aras400k.callbacks module, plus the callbacks that moved here.
    assert {"PredictionWriter", "SegmentationReport", "format_scores_table"} <= set(aras400k.callbacks.__all__)
    for name in aras400k.callbacks.__all__:
        assert getattr(aras400k.callbacks, name).__module__.startswith("aras400k."), name


def test_format_scores_table_shows_percentages_and_missing_values():
    scores = {"test_f1_macro": 0.5, "test_iou_macro": 0.25, "test_f1_tree": 0.125}
    table = format_scores_table(scores, ("tree", "water"), "test").splitlines()
    assert table[2] == "| 50.00 | 25.00 | n/a | n/a | n/a |"
    assert table[6] == "| tree | 12.50 | n/a | n/a | n/a |" and table[7].startswith("| water | n/a")


def test_the_report_writes_the_test_files(demo_root, tmp_path, capsys):
    data = SegmentationDataModule(root=str(demo_root), batch_size=4, num_workers=0)
    trainer = Trainer(
        accelerator="cpu", limit_test_batches=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[SegmentationReport(num_samples=2)],
    )  # fmt: skip
    trainer.test(SegmentationTask(arch="fpn", encoder="tu-mobilenetv3_small_050"), data)
    folder = tmp_path / "test"
    assert {p.name for p in folder.iterdir()} == {
        "test_confusion.png", "test_predictions.png", "test_scores.md", "test_scores.csv",
    }  # fmt: skip
    with (folder / "test_scores.csv").open() as f:
        rows = {row["metric"]: float(row["value"]) for row in csv.DictReader(f)}
    assert 0.0 <= rows["test_f1_macro"] <= 1.0 and "test_iou_water" in rows
    assert "| water |" in (folder / "test_scores.md").read_text() and "Test scores (%)" in capsys.readouterr().out


@pytest.mark.parametrize("every", [0, 1])
def test_validation_figures_follow_every_n_epochs(demo_root, tmp_path, every):
    data = SegmentationDataModule(root=str(demo_root), batch_size=4, num_workers=0)
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[SegmentationReport(every_n_epochs=every, num_samples=2)],
    )  # fmt: skip
    trainer.fit(SegmentationTask(arch="fpn", encoder="tu-mobilenetv3_small_050"), data)
    names = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert names == ([] if every == 0 else ["val_confusion_epoch000.png", "val_predictions_epoch000.png"])
