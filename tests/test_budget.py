"""Work budgets, not clock budgets: threads sized to the machine, and runs that say when they did not finish."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from aras400k import threads as threads_module
from aras400k.budget import SUMMARY_NAME, fid_warning, read_summary, summarize_fit
from aras400k.cli.main import fit_main
from aras400k.models.stylegan3 import StyleGAN3
from aras400k.threads import configure_threads, usable_cores

CONFIGS = Path(__file__).parents[1] / "configs"


class _Slow(LightningModule):
    """A linear model whose steps take ``delay`` seconds (to be cut by max_time)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.delay = delay

    def training_step(self, batch, batch_idx):
        time.sleep(self.delay)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(module: LightningModule, **trainer_args) -> Trainer:
    loader = DataLoader(TensorDataset(torch.zeros(40, 2)), batch_size=4)  # 10 batches an epoch
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", **trainer_args)  # fmt: skip
    trainer.fit(module, loader)
    return trainer


def test_a_run_that_did_its_work_has_no_warnings(tmp_path):
    module = _Slow()
    summary = summarize_fit(_fit(module, max_epochs=2), module, threads=1)
    assert summary.stopped_by == "max_epochs" and summary.epochs == 2 and summary.steps == 20
    assert summary.trustworthy and summary.budget == {"max_epochs": 2}
    summary.write(tmp_path)
    assert read_summary(tmp_path) == summary


def test_a_run_cut_by_max_time_is_flagged_in_words():
    module = _Slow(delay=0.3)
    summary = summarize_fit(_fit(module, max_epochs=5, max_time={"seconds": 1}), module)
    assert summary.stopped_by == "max_time" and summary.steps < 10
    assert summary.budget["max_time"] == "00:00:01"
    assert any("cut by the wall-clock limit max_time 00:00:01" in w and "max_epochs 5" in w for w in summary.warnings)
    assert any("less than one epoch" in w for w in summary.warnings)


def test_a_run_shorter_than_one_epoch_is_flagged():
    module = _Slow()
    summary = summarize_fit(_fit(module, max_epochs=1, limit_train_batches=3), module)
    assert summary.warnings == [
        "the model saw less than one epoch of its training data (3 of 10 batches): its scores are not trustworthy"
    ]


def _tiny_gan(**kwargs) -> StyleGAN3:
    return StyleGAN3(cfg="stylegan2", resolution=16, cbase=256, cmax=16, z_dim=8, w_dim=8, sample_seeds=2,
                     sample_every_n_steps=0, aug="noaug", **kwargs)  # fmt: skip


def _gan_loader() -> DataLoader:
    images = torch.rand(32, 3, 16, 16) * 2 - 1
    return DataLoader([{"image": x} for x in images], batch_size=4)


def test_stylegan_stops_at_its_kimg():
    module = _tiny_gan(kimg=0.012)  # 12 images = 3 iterations at batch 4
    trainer = Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", limit_val_batches=0)  # fmt: skip
    trainer.fit(module, _gan_loader())
    summary = summarize_fit(trainer, module)
    assert int(module.iterations) == 3 and summary.stopped_by == "kimg" and math.isclose(summary.kimg, 0.012)
    assert summary.trustworthy


def test_a_gan_short_of_its_kimg_is_flagged():
    module = _tiny_gan(kimg=1.0)
    trainer = Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                      limit_val_batches=0)  # fmt: skip
    trainer.fit(module, _gan_loader())
    assert summarize_fit(trainer, module).warnings == ["the GAN stopped at 0.01 of its 1.0 kimg: it is undertrained"]
    with pytest.raises(ValueError, match="kimg must be > 0"):
        _tiny_gan(kimg=0)


def test_fid_above_the_bound_is_flagged():
    assert fid_warning([900.0, 120.0], bound=1000) is None
    assert "val_fid ended at 6341.0, above the sanity bound 1000" in fid_warning([6341.0, 6341.0], bound=1000)
    assert fid_warning([float("nan")]) is not None and fid_warning([]) is None


def test_aras_fit_writes_the_summary_and_prints_warnings(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fit_main(["--config", str(CONFIGS / "seg_unet.yaml"), "--data.init_args.root", str(demo_root),
              "--data.init_args.num_workers", "0", "--trainer.logger", "false", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--trainer.enable_progress_bar", "false", "--model.init_args.arch", "fpn",
              "--model.init_args.encoder", "tu-mobilenetv3_small_050", "--threads", "1"])  # fmt: skip
    summary = json.loads((tmp_path / "runs" / "seg_unet" / SUMMARY_NAME).read_text())
    assert summary["steps"] == 2 and summary["threads"] == 1
    err = capsys.readouterr().err
    assert "aras-fit: warning: the model saw less than one epoch of its training data (2 of 3 batches)" in err


def test_threads_follow_the_option_the_environment_and_the_machine(monkeypatch):
    monkeypatch.delenv("ARAS_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert configure_threads(3) == 3 and torch.get_num_threads() == 3
        assert configure_threads(loader_workers=1) == max(1, usable_cores() - 1)
        assert configure_threads(loader_workers=99) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert configure_threads(loader_workers=1) == 2
        monkeypatch.setenv("ARAS_THREADS", "1")
        assert configure_threads() == 1
        monkeypatch.setenv("ARAS_THREADS", "many")
        with pytest.raises(ValueError, match="ARAS_THREADS='many' is not a whole number"):
            configure_threads()
        with pytest.raises(ValueError, match="threads must be >= 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_threads_are_set_through_the_environment_before_torch_is_imported():
    code = ("import sys, os; from aras400k.threads import configure_threads; "
            "n = configure_threads(loader_workers=0); assert 'torch' not in sys.modules; "
            "import torch; print(n, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("ARAS_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    n, torch_threads, omp = out.split()
    assert n == torch_threads == omp == str(usable_cores())
    assert threads_module.THREADS_VARIABLE == "ARAS_THREADS"
