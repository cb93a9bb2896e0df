"""Run the worked examples of docs/extending.md (docs/examples/*.py) with tiny settings.

The documentation includes these files verbatim, so these tests are what keeps the
examples working: each one is run the way its page says it is used.
"""

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from aras400k.captioning import CaptionBackend, Captioner, read_captions
from aras400k.cli.main import cli
from aras400k.data import GANDataModule, Sample, ShardWriter
from aras400k.models.spade import one_hot_mask

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "docs" / "examples"
CONFIGS = ROOT / "configs"


@pytest.fixture
def examples(monkeypatch, tmp_path):
    """Make docs/examples importable (as the pages' PYTHONPATH=docs/examples does); work in tmp."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(tmp_path)  # configs write to runs/... relative to the working directory
    return lambda name: importlib.import_module(name)


def _data_overrides(demo_root, tmp_path, batch_size):
    return [
        "--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", str(batch_size), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", "false",
    ]  # fmt: skip


def test_every_example_is_included_in_a_page():
    pages = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for example in EXAMPLES.glob("*.py"):
        assert f"docs/examples/{example.name}" in pages, f"{example.name} is not included in any docs page"


# -- a custom loss for SegmentationTask ---------------------------------------------------


def test_custom_loss_adds_lovasz_to_the_configured_loss(examples):
    custom_loss = examples("custom_loss")
    task = custom_loss.LovaszTask(arch="unet", encoder="resnet18", loss="ce")
    assert set(task.criterion.losses) == {"base", "lovasz"}
    logits = torch.randn(2, 7, 32, 32)
    target = torch.randint(0, 7, (2, 32, 32))
    target[0, :4] = 255  # ignored pixels stay ignored
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    lovasz = task.criterion.losses["lovasz"](logits, target)
    assert lovasz > 0
    torch.testing.assert_close(task.criterion(logits, target), ce + custom_loss.LovaszTask.lovasz_weight * lovasz)


def test_custom_loss_trains_through_aras_fit(examples, demo_root, tmp_path):
    custom_loss = examples("custom_loss")
    result = cli([
        "fit", "--config", str(CONFIGS / "seg_unet.yaml"), "--model.class_path", "custom_loss.LovaszTask",
        "--trainer.fast_dev_run", "1", *_data_overrides(demo_root, tmp_path, 8),
    ])  # fmt: skip
    assert isinstance(result.model, custom_loss.LovaszTask) and result.trainer.state.finished
    assert result.model.hparams["arch"] == "unet"  # the config's init_args were kept
    assert isinstance(result.model.criterion, custom_loss.WeightedSum)


# -- a custom prompt for Captioner --------------------------------------------------------


class RecordingBackend(CaptionBackend):
    """Answers every request with a caption lacking its full stop, and keeps the prompts."""

    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    @property
    def model_name(self) -> str:
        return "recording"

    def generate(self, requests):
        self.prompts += [r.user_prompt for r in requests]
        return [f'"Caption: fields and woods, take {r.seed}"' for r in requests]


def test_located_captioner_puts_the_tile_in_the_prompt(examples, tmp_path):
    custom_prompt = examples("custom_prompt")
    assert custom_prompt.tile_location("N36E027") == " The patch lies in the 1-degree cell 36-37 N, 27-28 E."
    assert custom_prompt.tile_location("S05W072") == " The patch lies in the 1-degree cell 5-6 S, 72-73 W."
    assert custom_prompt.tile_location("DEMO") is None

    rng = np.random.default_rng(0)
    shards = tmp_path / "located"
    with ShardWriter(shards, split="train", samples_per_shard=2) as writer:
        for i, tile in enumerate(["N36E027", "N36E027", "DEMO"]):
            mask = rng.integers(0, 7, (16, 16), dtype=np.uint8)
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            writer.write(Sample(key=f"{tile}_000_{i:03d}", image=image, mask=mask, meta={"tile": tile}))

    backend = RecordingBackend()
    captioner = custom_prompt.LocatedCaptioner("hybrid", backend, captions_per_image=2, progress=False)
    report = captioner.caption_shards(shards, tmp_path / "captions.jsonl")

    assert report.stats.captions == 6
    assert sum("36-37 N, 27-28 E" in p for p in backend.prompts) == 4  # the two N36E027 samples, 2 captions each
    assert all(p.startswith("This satellite image patch has this land-cover composition") for p in backend.prompts)
    captions = read_captions(tmp_path / "captions.jsonl")
    texts = [r["text"] for records in captions.values() for r in records]
    assert all(t.startswith("fields and woods") and t.endswith(".") for t in texts)  # parent's cleaning + stop
    # Another prompt, another hash: a plain Captioner refuses to resume this sidecar.
    assert captioner.prompt_hash != Captioner("hybrid", backend).prompt_hash
    assert {r["prompt_hash"] for records in captions.values() for r in records} == {captioner.prompt_hash}
    with pytest.raises(ValueError, match="prompt_hash"):
        Captioner("hybrid", backend, progress=False).caption_shards(shards, tmp_path / "captions.jsonl")


# -- a new generator for the mask-conditioned GAN -----------------------------------------

#: A SPADEGAN with 8-16 channels for 32 px images (as tests/models/spade/test_module.py).
TINY_GAN = {
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


def test_illumination_generator_starts_as_spade_and_ramps_with_the_gain(examples):
    custom_generator = examples("custom_generator")
    generator = custom_generator.IlluminationGenerator(num_upsamplings=2, base_channels=8, max_channels=16, z_dim=8)
    mask = one_hot_mask(torch.randint(0, 7, (2, 32, 32)), 7)
    z = torch.randn(2, 8)
    broadcast = z[:, :, None, None].expand(2, 8, 32, 32)
    torch.testing.assert_close(generator.noise_map(mask, z), broadcast)  # gain 0: plain SPADE noise
    with torch.no_grad():
        generator.illumination_gain.fill_(1.0)
    ramped = generator.noise_map(mask, z)
    assert ramped.shape == (2, 8, 32, 32) and not torch.allclose(ramped, broadcast)
    # The ramp runs along x with slope z[0] and along y with slope z[1].
    ratio = ramped[:, 2] / broadcast[:, 2]
    torch.testing.assert_close(ratio[:, 0, -1] - ratio[:, 0, 0], 2 * z[:, 0])
    torch.testing.assert_close(ratio[:, -1, 0] - ratio[:, 0, 0], 2 * z[:, 1])
    with pytest.raises(ValueError, match="noise='global'"):
        custom_generator.IlluminationGenerator(noise="per_class")


def test_illumination_gan_trains_and_its_checkpoint_samples(examples, demo_root, tmp_path):
    custom_generator = examples("custom_generator")
    seed_everything(0)
    model = custom_generator.IlluminationSPADEGAN(**TINY_GAN)
    assert isinstance(model.generator, custom_generator.IlluminationGenerator)
    assert isinstance(model.ema.shadow, custom_generator.IlluminationGenerator)
    data = GANDataModule(with_mask=True, mirror=False, root=str(demo_root), demo=False, batch_size=2, num_workers=0)
    trainer = Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, data)
    assert model.iterations == 2 and model.generator.illumination_gain.item() != 0.0  # the gain is trained

    path = tmp_path / "illumination.ckpt"
    trainer.save_checkpoint(path)
    loaded = custom_generator.load_illumination_generator(path)
    mask = torch.randint(0, 7, (2, 32, 32))
    expected = model.generate(mask, seed=0)  # the EMA generator of the module in memory
    actual = loaded(one_hot_mask(mask, 7), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(actual, expected)

    # aras-synth spade samples it when told the module class, and refuses it when not.
    from aras400k.cli.synth import main as synth

    args = ["spade", "--ckpt", str(path), "--masks", str(demo_root / "train"), "--progress", "false"]
    module_class = ["--module_class", "custom_generator.IlluminationSPADEGAN"]
    assert synth([*args, "--out", str(tmp_path / "illum"), *module_class]) == 0
    assert (tmp_path / "illum" / "manifest.json").is_file()
    with pytest.raises(SystemExit) as stop:
        synth([*args, "--out", str(tmp_path / "plain")])
    assert stop.value.code == 2


def test_illumination_gan_trains_through_aras_fit(examples, demo_root, tmp_path):
    custom_generator = examples("custom_generator")
    result = cli([
        "fit", "--config", str(CONFIGS / "gan_spade.yaml"),
        "--model.class_path", "custom_generator.IlluminationSPADEGAN", "--trainer.fast_dev_run", "1",
        *_data_overrides(demo_root, tmp_path, 2),
    ])  # fmt: skip
    assert isinstance(result.model, custom_generator.IlluminationSPADEGAN) and result.trainer.state.finished
    assert result.model.hparams["g_base_channels"] == 16  # the config's init_args were kept
    assert isinstance(result.model.ema.shadow, custom_generator.IlluminationGenerator)


def test_plain_trainer_example_trains_and_tests(examples, demo_root, tmp_path):
    scores = examples("plain_trainer").train_and_test(
        root=str(demo_root), out_dir=str(tmp_path / "plain"), epochs=1, encoder="tu-mobilenetv3_small_050"
    )
    assert 0.0 <= scores["test_f1_macro"] <= 1.0
    assert len(list((tmp_path / "plain" / "checkpoints").glob("*.ckpt"))) == 1
    assert (tmp_path / "plain" / "test" / "test_scores.md").is_file()
