"""GANModule: what StyleGAN3 and SPADEGAN share (counter buffer, old checkpoints, SampleGrid, exports)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.demos.boring_classes import BoringModel

from aras400k.callbacks import GeneratorFID, SampleGrid
from aras400k.models import SPADEGAN, GANModule, StyleGAN3
from aras400k.models.spade import load_spade_generator
from tests.models.spade.test_module import gan_data, make_trainer, tiny_gan
from tests.models.stylegan3.test_module import fit, tiny


def test_both_gans_are_gan_modules_exported_by_models():
    import aras400k.models

    assert issubclass(StyleGAN3, GANModule) and issubclass(SPADEGAN, GANModule)
    assert {"GANModule", "SPADEGAN", "StyleGAN3", "SegmentationTask"} <= set(aras400k.models.__all__)
    for cls in (StyleGAN3, SPADEGAN):  # one counter, one EMA hook, one grid writer: the base's
        for name in ("update_ema", "_optimise", "sampler", "write_sample_grid", "on_load_checkpoint", "on_fit_start"):
            assert name not in vars(cls), f"{cls.__name__} overrides {name}"
    assert "_apply" not in vars(SPADEGAN) and "_apply" not in vars(GANModule)


def test_a_spade_checkpoint_of_the_old_format_loads_and_resumes(demo_root, tmp_path):
    """SPADEGAN used to save its counter as ``{"spade_gan": {"iterations": N}}``, not as a buffer."""
    seed_everything(0)
    trainer = make_trainer(tmp_path, max_steps=4)
    model = tiny_gan()
    trainer.fit(model, gan_data(demo_root))
    new = tmp_path / "new.ckpt"
    trainer.save_checkpoint(new)
    checkpoint = torch.load(new, weights_only=True)
    assert int(checkpoint["state_dict"].pop("iterations")) == 2
    checkpoint["spade_gan"] = {"iterations": 2}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    assert int(SPADEGAN.load_from_checkpoint(old).iterations) == 2  # strict loading: the buffer is filled in
    sampled = load_spade_generator(old).state_dict()
    assert all(torch.equal(v, sampled[k]) for k, v in model.ema.shadow.state_dict().items())
    resumed = tiny_gan()
    make_trainer(tmp_path, max_steps=8).fit(resumed, gan_data(demo_root), ckpt_path=str(old))
    assert int(resumed.iterations) == 4


def test_a_checkpoint_without_any_counter_starts_at_zero():
    model = tiny_gan()
    checkpoint = {"state_dict": {k: v for k, v in model.state_dict().items() if k != "iterations"}}
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    assert int(model.iterations) == 0


def test_the_module_adds_one_sample_grid_and_a_trainer_one_wins(tmp_path):
    model = tiny("stylegan2", sample_every_n_steps=2)
    trainer = fit(model, tmp_path / "own", iterations=2)
    assert [type(c) for c in trainer.callbacks].count(SampleGrid) == 1
    assert sorted(p.name for p in (tmp_path / "own" / "samples").glob("*.png")) == ["train_it0000002.png"]

    model = tiny("stylegan2", sample_every_n_steps=0)
    trainer = Trainer(
        accelerator="cpu", max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path / "cfg", callbacks=[SampleGrid(every_n_steps=1)],
    )  # fmt: skip
    from tests.models.stylegan3.test_module import _Images

    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(_Images(), batch_size=4))
    assert [c.every_n_steps for c in trainer.callbacks if isinstance(c, SampleGrid)] == [1]
    names = sorted(p.name for p in (tmp_path / "cfg" / "samples").glob("*.png"))
    assert names == ["train_it0000001.png", "train_it0000002.png"]


def test_spade_keeps_the_first_validation_batch_for_its_grids(demo_root, tmp_path):
    seed_everything(0)
    model = tiny_gan(sample_every_n_steps=1)
    grid = SampleGrid(every_n_steps=1)
    trainer = make_trainer(
        tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1, callbacks=[grid]
    )
    data = gan_data(demo_root)
    trainer.fit(model, data)
    data.setup("validate")
    first = next(iter(data.val_dataloader()))
    assert grid.batch is not None and list(grid.batch["key"]) == list(
        first["key"]
    )  # the sanity check kept it before any training grid
    names = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert names == ["step0000001.png", "val_epoch000_step0000001.png"]


def test_sample_grid_refuses_other_modules_and_bad_intervals(tmp_path):
    trainer = Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=[SampleGrid()], default_root_dir=tmp_path)
    with pytest.raises(TypeError, match="SampleGrid needs a GANModule"):
        trainer.fit(BoringModel())
    with pytest.raises(ValueError, match="every_n_steps"):
        SampleGrid(every_n_steps=-1)


def test_the_old_fid_callback_path_warns_and_names_the_new_one():
    sys.modules.pop("aras400k.models.gan.fid_callback", None)
    with pytest.warns(FutureWarning, match="aras400k.callbacks"):
        old = importlib.import_module("aras400k.models.gan.fid_callback")
    assert old.GeneratorFID is GeneratorFID
    from aras400k.models.gan import GeneratorFID as from_gan

    assert from_gan is GeneratorFID
