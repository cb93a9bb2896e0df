import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from aras400k.data import SegmentationDataModule
from aras400k.models import ARCHITECTURES, LOSSES, SegmentationTask


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_gives_full_resolution_logits(arch):
    task = SegmentationTask(arch=arch, encoder="resnet18").eval()
    for size in (32, 48):  # 48 is not a multiple of 32: padded and cropped back
        logits = task(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 7, size, size)
    assert task.predict_masks(torch.randn(1, 3, 32, 32)).dtype == torch.uint8


def test_unknown_choices_are_named():
    with pytest.raises(ValueError, match="choose one of"):
        SegmentationTask(arch="segnet")
    with pytest.raises(ValueError, match="choose one of"):
        SegmentationTask(loss="hinge")
    with pytest.raises(ValueError, match="3 values for 7 classes"):
        SegmentationTask(class_weights=[1.0, 2.0, 3.0])


def test_named_pretrained_weights_are_refused_offline():
    with pytest.raises(ValueError, match="would be downloaded"):
        SegmentationTask(encoder_weights="imagenet")


def test_local_encoder_weights(tmp_path):
    source = SegmentationTask()
    torch.save(source.model.encoder.state_dict(), tmp_path / "enc.pt")
    torch.save(source.state_dict(), tmp_path / "task.pt")  # keys under model.encoder.
    for name in ("enc.pt", "task.pt"):
        task = SegmentationTask(encoder_weights=str(tmp_path / name))
        for key, value in source.model.encoder.state_dict().items():
            assert torch.equal(task.model.encoder.state_dict()[key], value)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match the encoder"):
        SegmentationTask(encoder_weights=str(tmp_path / "bad.pt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentationTask(encoder_weights=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_are_finite_and_skip_ignored_pixels(loss):
    task = SegmentationTask(loss=loss, class_weights=[1, 2, 1, 1, 1, 3, 1] if loss == "ce" else None)
    logits = torch.randn(2, 7, 8, 8, requires_grad=True)
    target = torch.randint(0, 7, (2, 8, 8))
    target[:, :4] = 255
    value = task.criterion(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert logits.grad[:, :, :4].abs().sum() == 0  # ignored pixels get no gradient


def test_subclass_can_swap_one_part():
    class L1Task(SegmentationTask):
        def configure_losses(self):
            self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=255)

    task = L1Task()
    assert isinstance(task.criterion, nn.CrossEntropyLoss) and task.criterion.label_smoothing == 0.1


def test_extract_features():
    task = SegmentationTask().eval()
    feats = task.extract_features(torch.randn(3, 3, 32, 32))
    assert feats.shape == (3, 512)
    assert task.extract_features(torch.randn(1, 3, 64, 64), pooled=False).shape == (1, 512, 2, 2)


def test_default_optimiser_and_scheduler():
    task = SegmentationTask(lr=0.01, weight_decay=0.1, patience=2)
    config = task.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert config["optimizer"].param_groups[0]["lr"] == 0.01
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and scheduler.mode == "max"
    assert config["lr_scheduler"]["monitor"] == "val_f1_macro"
    task = SegmentationTask(optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    assert isinstance(task.configure_optimizers()["optimizer"], torch.optim.SGD)


def _trainer(tmp_path, **kw):
    return Trainer(
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kw,
    )  # fmt: skip


def test_fit_logs_the_papers_metrics(demo_root, tmp_path):
    dm = SegmentationDataModule(root=str(demo_root), batch_size=16, num_workers=0)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(SegmentationTask(), dm)
    logged = trainer.callback_metrics
    for key in ("val_f1_macro", "val_iou_macro", "val_precision_macro", "val_recall_macro", "val_accuracy",
                "val_f1_water", "val_iou_shrub", "train_f1_macro", "val_loss"):  # fmt: skip
        assert key in logged, key


def test_nan_loss_stops_with_a_clear_error(demo_root, tmp_path):
    class NaNTask(SegmentationTask):
        def configure_losses(self):
            self.criterion = lambda logits, target: logits.sum() * float("nan")

    dm = SegmentationDataModule(root=str(demo_root), batch_size=4, num_workers=0)
    with pytest.raises(FloatingPointError, match="train loss became nan"):
        _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(NaNTask(), dm)
