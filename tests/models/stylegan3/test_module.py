"""The StyleGAN3 LightningModule: training phases, ADA, EMA, NaN guard, checkpoints, config."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aras400k.cli.main import cli
from aras400k.models.stylegan3 import StyleGAN3

CONFIG = Path(__file__).parents[3] / "configs" / "gan_stylegan3.yaml"
RES = 16


class _Images(Dataset):
    """Seeded random images in [-1, 1] (optionally NaN), as GANDataModule batches."""

    def __init__(self, n: int = 16, nan: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, RES, RES, generator=g) * 2 - 1
        if nan:
            self.images.fill_(float("nan"))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "key": f"k{i}"}


def tiny(cfg: str = "stylegan2", **kwargs) -> StyleGAN3:
    torch.manual_seed(0)
    base, cmax = (128, 16) if cfg == "stylegan3-r" else (256, 32)
    defaults = dict(
        cfg=cfg, resolution=RES, cbase=base, cmax=cmax, z_dim=16, w_dim=16, sample_seeds=4, sample_every_n_steps=0
    )
    return StyleGAN3(**(defaults | kwargs))


def fit(model: StyleGAN3, tmp_path: Path, iterations: int, nan: bool = False, ckpt_path: str | None = None) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=-1 if ckpt_path else 1,
        max_steps=-1,
        limit_train_batches=iterations,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    if ckpt_path:
        trainer.fit_loop.max_epochs = 2
    loader = DataLoader(_Images(nan=nan), batch_size=4, num_workers=0)
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


def test_training_updates_g_d_ema_and_ada_p(tmp_path):
    # Target 0 with a large positive D output bias makes sign(D(real)) = 1 > target: p must rise.
    # Without the ramp-up (which copies G outright in the first iterations) the EMA lags G.
    model = tiny("stylegan2", target=0.0, ada_interval=1, ada_kimg=0.1, ema_rampup=None)
    with torch.no_grad():
        model.discriminator.b4.out.bias.fill_(100.0)
    g0, d0, e0 = _params(model.generator), _params(model.discriminator), _params(model.ema.shadow)
    fit(model, tmp_path, iterations=2)
    assert int(model.iterations) == 2
    assert _changed(g0, model.generator) and _changed(d0, model.discriminator) and _changed(e0, model.ema.shadow)
    assert any(not torch.equal(p, model.generator.state_dict()[k]) for k, p in model.ema.shadow.state_dict().items())
    assert float(model.augment.p) > 0
    assert model.path_length.pl_mean > 0  # Greg ran at iteration 0 (stylegan2 only).
    assert model.guard.num_skipped == 0


def test_r1_runs_on_the_lazy_interval(tmp_path, monkeypatch):
    model = tiny("stylegan3-t", r1_interval=2, aug="noaug")
    calls = []
    original = model.discriminator_reg_step
    monkeypatch.setattr(model, "discriminator_reg_step", lambda *a: calls.append(int(model.iterations)) or original(*a))
    fit(model, tmp_path, iterations=3)
    assert calls == [0, 2]
    assert model.pl_weight == 0 and model.blur_init_sigma == 10.0  # StyleGAN3 defaults.
    # The lazy correction of the optimiser: lr * 2/3 for interval 2.
    assert model.optimizers()[1].param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)


def test_nan_batches_are_skipped_and_counted(tmp_path):
    model = tiny("stylegan2", r1_interval=1)
    d0 = _params(model.discriminator)
    fit(model, tmp_path, iterations=2, nan=True)
    assert model.guard.counts["D"] == 2 and model.guard.counts["Dreg"] == 2
    assert not _changed(d0, model.discriminator)
    assert torch.isfinite(model.augment.p) and float(model.augment.p) == 0.0  # NaN logits never reach ADA.


def test_checkpoint_loads_weights_only_and_resumes(tmp_path):
    model = tiny("stylegan2", aug="fixed", p=0.3)
    trainer = fit(model, tmp_path, iterations=2)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["hyper_parameters"]["cfg"] == "stylegan2"
    assert "ema.shadow.mapping.fc0.weight" in state["state_dict"] and "path_length.pl_mean" in state["state_dict"]
    step = trainer.global_step

    restored = StyleGAN3.load_from_checkpoint(ckpt)
    for k, v in model.ema.shadow.state_dict().items():
        assert torch.equal(v, restored.ema.shadow.state_dict()[k])
    assert float(restored.augment.p) == pytest.approx(0.3) and int(restored.iterations) == 2

    resumed = tiny("stylegan2", aug="fixed", p=0.3)
    trainer2 = fit(resumed, tmp_path, iterations=2, ckpt_path=str(ckpt))
    assert trainer2.global_step > step and int(resumed.iterations) == 4
    assert float(resumed.path_length.pl_mean) != 0.0


def test_generate_is_deterministic_and_truncation_zero_gives_average(tmp_path):
    model = tiny("stylegan3-t")
    a, b = model.generate(3, seed=5), model.generate(3, seed=5)
    assert a.shape == (3, 3, RES, RES) and torch.equal(a, b) and a.abs().max() <= 1
    assert torch.allclose(model.generate(1, seed=6), model.generate(3, seed=4)[2:], atol=1e-5)  # Sample i: seed i.
    avg = model.generate(4, seed=0, truncation_psi=0.0, use_ema=False)
    assert torch.allclose(avg, avg[:1].expand_as(avg), atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        model.generate()


def test_sample_grid_png_is_written(tmp_path):
    model = tiny("stylegan2", sample_every_n_steps=1)
    fit(model, tmp_path, iterations=1)
    path = tmp_path / "samples" / "train_it0000001.png"
    assert path.is_file() and model.last_grid_path == path
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    # A 20-px title band (black text on white) above a 2x2 grid with 1-px padding.
    assert pixels.shape[0] == 20 + 2 * RES + 3 and pixels.shape[1] >= 2 * RES + 3
    assert (pixels[:20] < 128).any() and (pixels[:20] > 250).mean() > 0.5
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically, no temporary left


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="stylegan3-t"):
        StyleGAN3(cfg="stylegan1")  # type: ignore[arg-type]


@pytest.fixture
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _run_config(cfg: str, demo_root: Path, tmp_path: Path):
    args = [
        "fit", "--config", str(CONFIG), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path), "--data.init_args.root", str(demo_root),
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4",
        "--model.init_args.resolution", "32", "--model.init_args.cfg", cfg, "--model.init_args.sample_seeds", "4",
    ]  # fmt: skip
    result = cli(args)
    assert result.trainer.state.finished and int(result.model.iterations) == 1
    return result


@pytest.mark.usefixtures("_in_tmp")
@pytest.mark.parametrize("cfg", ["stylegan2", "stylegan3-t", "stylegan3-r"])
def test_config_runs_fast_dev_run(cfg, demo_root, tmp_path):
    result = _run_config(cfg, demo_root, tmp_path)
    assert result.model.hparams["gamma"] == 0.01 and result.model.hparams["aug"] == "ada"


def test_copy_keeps_module_usable():
    model = tiny("stylegan2")
    assert torch.equal(copy.deepcopy(model).generate(1, seed=0), model.generate(1, seed=0))


def test_map_is_a_deprecated_name_of_map_depth(tmp_path):
    with pytest.warns(FutureWarning, match="use map_depth"):
        old = tiny(map=3)
    assert old.hparams["map_depth"] == 3 and "map" not in old.hparams
    assert len([n for n in old.generator.state_dict() if n.startswith("mapping.fc")]) // 2 == 3
    with pytest.raises(ValueError, match="disagree"), pytest.warns(FutureWarning):
        tiny(map=3, map_depth=2)
    # A checkpoint written before the rename (hyper-parameter "map") still loads.
    new = tiny(map_depth=3)
    checkpoint = {"state_dict": new.state_dict(), "hyper_parameters": {**dict(new.hparams), "map": 3}}
    checkpoint["hyper_parameters"].pop("map_depth")
    checkpoint["pytorch-lightning_version"] = "2.6.0"
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.warns(FutureWarning):
        loaded = StyleGAN3.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.hparams["map_depth"] == 3


def test_sample_grid_title_keeps_its_spaces():
    # Pillow's default font at 10 px drew "EMA samples" as "EMAsamples" (a 1-px space).
    from aras400k.models.stylegan3.module import _title_font

    font = _title_font()
    assert font.getlength("EMA samples") - font.getlength("EMAsamples") >= 3
