import pytest
import torch

from aras400k.data import GANDataModule, SegmentationDataModule, ShardSource
from aras400k.data.demo import demo_is_ready, make_demo
from tests.conftest import write_random_set


def test_segmentation_datamodule_batches(demo_root):
    dm = SegmentationDataModule(root=str(demo_root), batch_size=8, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(batch, 0)
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (8, 32, 32) and batch["mask"].dtype == torch.long
    assert set(batch["mask"].unique().tolist()) <= set(range(7)) | {255}
    val_keys = [k for b in dm.val_dataloader() for k in b["key"]]
    assert val_keys == [f"demo_val_{i:06d}" for i in range(16)]
    dm.setup("test")
    assert sum(len(b["key"]) for b in dm.test_dataloader()) == 16


def test_denormalize_inverts_normalisation(demo_root):
    dm = SegmentationDataModule(root=str(demo_root), batch_size=4, num_workers=0, augment=False)
    dm.setup("validate")
    raw = next(iter(dm.val_dataloader()))
    original = raw["image"].float() / 255
    batch = dm.on_after_batch_transfer(dict(raw), 0)
    assert torch.allclose(dm.denormalize(batch["image"]), original, atol=1e-5)


@pytest.mark.parametrize("module", [SegmentationDataModule, GANDataModule])
def test_device_step_matches_the_plain_arithmetic_and_keeps_its_input(demo_root, module):
    dm = module(root=str(demo_root), batch_size=4, num_workers=0)
    dm.setup("validate")
    raw = next(iter(dm.val_dataloader()))
    before = raw["image"].clone()
    mean, std = dm.normalize.mean, dm.normalize.std
    expected = (raw["image"].float() / 255.0 - mean) / std  # the step as it was written before (out of place)
    batch = dm.on_after_batch_transfer(dict(raw), 0)
    assert torch.equal(batch["image"], expected)  # bit for bit, not merely close
    assert torch.equal(raw["image"], before) and raw["image"].dtype == torch.uint8


def test_mixed_training_sources(tmp_path, demo_root):
    synth = write_random_set(tmp_path / "synth", 20, source="synth_uncond", prefix="g")
    dm = SegmentationDataModule(
        root=str(demo_root),
        train=[ShardSource(str(demo_root / "train")), ShardSource(str(synth), num_samples=10)],
        batch_size=6,
        num_workers=0,
    )
    dm.setup("fit")
    keys = [k for b in dm.train_dataloader() for k in b["key"]]
    assert len(keys) == 48 + 10 and len(set(keys)) == 58
    assert sum(k.startswith("g") for k in keys) == 10


def test_prepare_data_builds_demo_once(tmp_path):
    root = tmp_path / "demo"
    dm = SegmentationDataModule(root=str(root), demo_samples=(4, 2, 2), demo_image_size=32, num_workers=0)
    dm.prepare_data()
    assert demo_is_ready(root)
    stamp = (root / "train" / "manifest.json").stat().st_mtime_ns
    dm.prepare_data()
    assert (root / "train" / "manifest.json").stat().st_mtime_ns == stamp


def test_prepare_data_refuses_to_fill_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    dm = SegmentationDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(FileNotFoundError, match="no complete train/val/test"):
        dm.prepare_data()


def test_missing_data_without_demo_is_a_clear_error(tmp_path):
    dm = SegmentationDataModule(root=str(tmp_path / "nothing"), demo=False, num_workers=0)
    dm.prepare_data()
    with pytest.raises(ValueError, match=r"data root .*nothing does not exist"):
        dm.setup("fit")


def test_gan_datamodule_scales_to_minus_one_one(demo_root):
    dm = GANDataModule(root=str(demo_root), batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert "mask" not in batch
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    dm = GANDataModule(root=str(demo_root), with_mask=True, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert "mask" in next(iter(dm.train_dataloader()))


def test_demo_is_deterministic(tmp_path):
    make_demo(tmp_path / "a", (3, 1, 1), image_size=32, progress=False)
    make_demo(tmp_path / "b", (3, 1, 1), image_size=32, progress=False)
    import json

    for split in ("train", "val", "test"):
        ma = json.loads((tmp_path / "a" / split / "manifest.json").read_text())
        mb = json.loads((tmp_path / "b" / split / "manifest.json").read_text())
        assert ma["shards"] == mb["shards"]
    with pytest.raises(ValueError, match="at least 32"):
        make_demo(tmp_path / "c", (1, 1, 1), image_size=16)
