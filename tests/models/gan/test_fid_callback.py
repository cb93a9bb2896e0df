"""GeneratorFID: FID/KID of a GAN's samples logged at validation, for StyleGAN3 and SPADEGAN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from aras400k.metrics.fid import FeatureFID
from aras400k.models.features import SegmenterFeatures
from aras400k.models.gan import GeneratorFID
from tests.models.spade.test_module import gan_data, make_segmenter_checkpoint, tiny_gan
from tests.models.stylegan3.test_module import _Images, tiny


def _trainer(tmp_path: Path, callbacks: list[Callback], epochs: int = 2) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=1,
        limit_val_batches=2,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )


@pytest.fixture(scope="module")
def segmenter_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_segmenter_checkpoint(tmp_path_factory.mktemp("seg") / "seg.ckpt")


def test_stylegan3_logs_fid_equal_to_a_direct_computation(tmp_path, segmenter_ckpt):
    model = tiny()
    fid_cb = GeneratorFID("segmenter", str(segmenter_ckpt), kid=True, kid_subset_size=4)
    loader = DataLoader(_Images(n=8), batch_size=4)
    trainer = _trainer(tmp_path, [fid_cb])
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)

    # Sanity-check batches are not counted; one value per epoch, the real set counted once.
    assert [epoch for epoch, _ in fid_cb.history] == [0, 1]
    assert all(set(v) == {"val_fid", "val_kid", "val_kid_std"} for _, v in fid_cb.history)
    assert int(fid_cb.fid.real_features_num_samples) == 8
    logged = float(trainer.callback_metrics["val_fid"])
    assert logged == pytest.approx(fid_cb.history[-1][1]["val_fid"])

    # The logged value equals FID computed by hand from the same images and seeds.
    features = SegmenterFeatures.from_checkpoint(segmenter_ckpt)
    direct = FeatureFID(features)
    for i, batch in enumerate(loader):
        direct.update(batch["image"].add(1).div(2), real=True)
        direct.update(model.fid_samples(batch, i).add(1).div(2), real=False)
    assert logged == pytest.approx(direct.compute().item(), rel=1e-4)
    assert logged > 0


def test_spade_fid_every_n_epochs(tmp_path, demo_root, segmenter_ckpt):
    fid_cb = GeneratorFID("segmenter", str(segmenter_ckpt), every_n_epochs=2)
    trainer = _trainer(tmp_path, [fid_cb], epochs=3)
    trainer.fit(tiny_gan(), datamodule=gan_data(demo_root))
    assert [epoch for epoch, _ in fid_cb.history] == [0, 2]
    assert all(math.isfinite(v["val_fid"]) for _, v in fid_cb.history)


def test_refuses_a_module_without_fid_samples(tmp_path, segmenter_ckpt):
    from aras400k.models.segmentation import SegmentationTask  # a LightningModule that is not a GAN

    trainer = _trainer(tmp_path, [GeneratorFID("segmenter", str(segmenter_ckpt))])
    with pytest.raises(TypeError, match="fid_samples"):
        trainer.fit(SegmentationTask(arch="fpn", encoder="resnet18"), train_dataloaders=DataLoader(_Images(n=4)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_epochs"):
        GeneratorFID("segmenter", "x.ckpt", every_n_epochs=0)


def test_fid_validation_then_training_with_a_loader_worker(tmp_path, demo_root, segmenter_ckpt):
    """FID validation (under inference mode) between training epochs, with a loader worker.

    Worker batches come through shared memory the loaders reuse. This does not reproduce
    the demo's failure of a loader made under inference mode (that is
    tests/data/test_batch_reuse.py), but covers the GAN + FID + worker path it hit.
    """
    fid_cb = GeneratorFID("segmenter", str(segmenter_ckpt))
    trainer = _trainer(tmp_path, [fid_cb], epochs=3)
    data = gan_data(demo_root)
    data.num_workers = 1
    trainer.fit(tiny_gan(), datamodule=data)
    assert trainer.state.finished and [epoch for epoch, _ in fid_cb.history] == [0, 1, 2]
