from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from PIL import Image
from torch.utils.data import DataLoader

from aras400k.cli.main import cli
from aras400k.data import GANDataModule
from aras400k.models.segmentation import SegmentationTask
from aras400k.models.spade import SPADEGAN, load_spade_generator

CONFIGS = Path(__file__).parents[3] / "configs"
SEG_MEAN, SEG_STD = (0.4, 0.4, 0.4), (0.2, 0.2, 0.2)

#: A SPADEGAN with 8-16 channels for 32 px images (about 100k parameters).
TINY = {
    "g_num_upsamplings": 2,
    "g_base_channels": 8,
    "g_max_channels": 16,
    "g_spade_hidden": 16,
    "z_dim": 8,
    "d_num_downsamplings": 3,
    "d_base_channels": 8,
    "d_max_channels": 16,
    "sample_every_n_steps": 0,
    "grid_rows": 2,
    "samples_per_mask": 2,
}


def tiny_gan(**kwargs) -> SPADEGAN:
    return SPADEGAN(**(TINY | kwargs))


def make_segmenter_checkpoint(path: Path) -> Path:
    """A randomly initialised ~2M-parameter segmenter saved as a plain checkpoint dict (no training)."""
    task = SegmentationTask(arch="fpn", encoder="tu-mobilenetv3_small_050")
    torch.save(
        {
            "hyper_parameters": dict(task.hparams),
            "state_dict": task.state_dict(),
            "datamodule_hyper_parameters": {"mean": SEG_MEAN, "std": SEG_STD},
        },
        path,
    )
    return path


def gan_data(root: Path, batch_size: int = 2) -> GANDataModule:
    return GANDataModule(with_mask=True, mirror=False, root=str(root), demo=False, batch_size=batch_size, num_workers=0)


def make_trainer(tmp_path: Path, **kwargs) -> Trainer:
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    } | kwargs
    return Trainer(**options)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], p) for name, p in module.named_parameters())


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        self.losses.append((float(metrics["train_d_loss"]), float(metrics["train_g_loss"])))


@pytest.fixture(scope="module")
def segmenter_ckpt(tmp_path_factory) -> Path:
    return make_segmenter_checkpoint(tmp_path_factory.mktemp("seg") / "seg.ckpt")


def test_training_steps_move_both_losses_and_update_the_ema(demo_root, tmp_path):
    seed_everything(0)
    model = tiny_gan(mix_warmup_steps=0, mix_probability=1.0, ema_decay=0.9)
    g0, d0, ema0 = params(model.generator), params(model.discriminator), params(model.ema.shadow)
    recorder = LossRecorder()
    make_trainer(tmp_path, max_steps=8, callbacks=[recorder]).fit(model, gan_data(demo_root))

    assert model.iterations == 4 and model.guard.num_skipped == 0
    assert changed(g0, model.generator) and changed(d0, model.discriminator)
    assert changed(ema0, model.ema.shadow)  # moved from its initial weights ...
    assert changed(params(model.ema.shadow), model.generator)  # ... but is not a copy of G
    d_losses, g_losses = zip(*recorder.losses, strict=True)
    assert len(set(d_losses)) == 4 and len(set(g_losses)) == 4
    metrics = model.trainer.callback_metrics
    assert float(metrics["train_d_consistency"]) > 0  # every batch was mixed
    for name in ("train_d_adv_image", "train_d_adv_pixel", "train_g_adv_pixel", "train_g_feature_matching"):
        assert torch.isfinite(metrics[name])


def test_nan_guard_skips_and_counts_a_bad_step(tmp_path):
    seed_everything(0)
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:, 16:] = 3
    clean = {"image": torch.rand(3, 32, 32) * 2 - 1, "mask": mask}
    poisoned = {"image": torch.full((3, 32, 32), float("nan")), "mask": mask}
    loader = DataLoader([poisoned, poisoned, clean, clean], batch_size=2)
    model = tiny_gan()
    g0, d0 = params(model.generator), params(model.discriminator)

    class StopAfterFirst(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 0:
                assert not changed(g0, pl_module.generator) and not changed(d0, pl_module.discriminator)
                assert float(trainer.callback_metrics["skipped_steps"]) == 2

    make_trainer(tmp_path, max_epochs=1, callbacks=[StopAfterFirst()]).fit(model, loader)
    assert model.guard.counts == {"D": 1, "G": 1} and model.guard.consecutive == 0
    assert changed(g0, model.generator) and changed(d0, model.discriminator)  # the clean batch trained
    assert model.iterations == 2 and model.trainer.global_step == 2  # the skipped steps are not counted


def test_checkpoint_loads_with_weights_only_and_resumes(demo_root, tmp_path, segmenter_ckpt):
    seed_everything(0)
    model = tiny_gan(perceptual="segmenter", perceptual_weights=str(segmenter_ckpt), lambda_perceptual=1.0)
    trainer = make_trainer(tmp_path, max_steps=4)
    trainer.fit(model, gan_data(demo_root))
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert int(checkpoint["state_dict"]["iterations"]) == 2
    assert checkpoint["hyper_parameters"]["betas"] == (0.0, 0.999)
    prefixes = {key.split(".")[0] for key in checkpoint["state_dict"]}
    assert prefixes == {"iterations", "generator", "discriminator", "ema", "guard"}  # no frozen perceptual network
    generator = load_spade_generator(path)
    shadow = model.ema.shadow.state_dict()
    assert all(torch.equal(tensor, shadow[name]) for name, tensor in generator.state_dict().items())
    trained = load_spade_generator(path, use_ema=False).state_dict()
    assert all(torch.equal(tensor, trained[name]) for name, tensor in model.generator.state_dict().items())

    resumed = tiny_gan(perceptual="segmenter", perceptual_weights=str(segmenter_ckpt), lambda_perceptual=1.0)
    trainer = make_trainer(tmp_path, max_steps=8)
    trainer.fit(resumed, gan_data(demo_root), ckpt_path=str(path))
    assert resumed.iterations == 4 and trainer.global_step == 8
    adam_steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert adam_steps == {4}  # optimiser state restored and continued


def test_validation_writes_the_grid_and_logs_the_segmentation_score(demo_root, tmp_path, segmenter_ckpt):
    seed_everything(0)
    model = tiny_gan(segmenter_ckpt=str(segmenter_ckpt), grid_rows=3, samples_per_mask=2)
    (scores,) = make_trainer(tmp_path, limit_val_batches=2).validate(model, gan_data(demo_root))
    assert 0.0 <= scores["val_seg_miou"] <= 1.0 and 0.0 <= scores["val_seg_miou_real"] <= 1.0
    path = model.last_grid_path
    assert path == tmp_path / "samples" / "val_epoch000_step0000000.png" and path.is_file()
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.width > grid.height  # 3 rows x (mask, real, 2 samples)
    assert str(model.hparams["segmenter_ckpt"]) == str(segmenter_ckpt)
    assert model.segmenter is not None and not any(p.requires_grad for p in model.segmenter.parameters())


def test_the_segmentation_score_uses_the_segmenter_normalisation(segmenter_ckpt):
    model = tiny_gan(segmenter_ckpt=str(segmenter_ckpt))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    scaled = torch.round((images + 1) * 127.5) / 255
    expected = model.segmenter.predict_masks((scaled - torch.tensor(SEG_MEAN).view(1, 3, 1, 1)) / 0.2)
    assert torch.equal(model.segment(images), expected)
    model.double()  # frozen networks follow the module's conversions
    assert next(model.segmenter.parameters()).dtype == torch.float64


def test_generate_is_seeded_and_conditioned():
    model = tiny_gan()
    mask = torch.zeros(2, 32, 32, dtype=torch.long)
    other = mask.clone()
    other[:, :, 16:] = 6
    a, b = model.generate(mask, seed=1), model.generate(mask, seed=1)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.equal(a, model.generate(mask, seed=2))
    assert not torch.equal(a, model.generate(other, seed=1))
    z = torch.zeros(2, TINY["z_dim"])
    assert torch.equal(model.generate(mask, z=z, seed=1), model.generate(mask, z=z, seed=2))
    assert not model.generate(mask, seed=1).requires_grad and model.training


def test_sample_grids_during_training(demo_root, tmp_path):
    seed_everything(0)
    model = tiny_gan(sample_every_n_steps=2)
    make_trainer(tmp_path, max_steps=8).fit(model, gan_data(demo_root))
    names = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert names == ["step0000002.png", "step0000004.png"]


def test_bad_arguments_are_refused_with_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="perceptual_weights"):
        tiny_gan(perceptual="vgg19")
    with pytest.raises(FileNotFoundError, match="VGG19"):
        tiny_gan(perceptual="vgg19", perceptual_weights=str(tmp_path / "vgg19.pth"))
    with pytest.raises(ValueError, match="choose one of"):
        tiny_gan(mix_mode="mixup")
    with pytest.raises(ValueError, match="mix_probability"):
        tiny_gan(mix_probability=1.5)
    with pytest.raises(ValueError, match="lambda_kl"):
        tiny_gan(lambda_kl=-1.0)
    with pytest.raises(ValueError, match="with_mask: true"):
        tiny_gan().training_step({"image": torch.zeros(2, 3, 32, 32)}, 0)
    with pytest.raises(ValueError, match="not a SPADEGAN checkpoint"):
        torch.save({"state_dict": {}, "hyper_parameters": {"arch": "unet"}}, tmp_path / "seg.ckpt")
        load_spade_generator(tmp_path / "seg.ckpt")


def test_unetgan_labelmix_and_the_vae_encoder_train(demo_root, tmp_path):
    seed_everything(0)
    model = tiny_gan(
        conditioning="unetgan", mix_mode="labelmix", mix_warmup_steps=0, mix_probability=1.0, use_encoder=True,
        encoder_downsamplings=3, loss="logistic",
    )  # fmt: skip
    recorder = LossRecorder()
    make_trainer(tmp_path, max_steps=4, callbacks=[recorder]).fit(model, gan_data(demo_root))
    metrics = model.trainer.callback_metrics
    assert model.iterations == 2 and float(metrics["train_g_kl"]) > 0 and float(metrics["train_d_cutmix"]) > 0
    assert all(np.isfinite(recorder.losses).ravel())


def test_the_config_runs_fast_dev_run(demo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config writes to runs/... relative to the working directory
    result = cli([
        "fit", "--config", str(CONFIGS / "gan_spade.yaml"), "--trainer.fast_dev_run", "1",
        "--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2", "--trainer.logger", "false",
    ])  # fmt: skip
    assert isinstance(result.model, SPADEGAN) and result.trainer.state.finished
    assert result.model.iterations == 1
    assert result.model.last_grid_path is not None and result.model.last_grid_path.is_file()
