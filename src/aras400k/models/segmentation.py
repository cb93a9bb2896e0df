"""``SegmentationTask``: the paper's six segmenters as one LightningModule.

One string picks the architecture (segmentation-models-pytorch's factory), one the
encoder. A subclass changes the networks, losses or metrics by overriding one of
``configure_models``, ``configure_losses``, ``configure_metrics``.

The paper reports macro F1, IoU, precision, recall and pixel accuracy (Table 3) and
per-class F1 (Table 4); they are logged as ``{stage}_f1_macro``, ``{stage}_f1_tree``, ...
Under DDP every score, the loss and the kept confusion matrix cover all ranks' samples:
the same value on every rank as one process would compute over the whole split.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from aras400k.checkpoints import (
    SafeLoadingMixin,
    checkpoint_normalization,
    load_checkpoint,
    module_from_checkpoint,
    read_checkpoint,
    save_hyperparameters,
)
from aras400k.classes import CLASS_NAMES, IGNORE_INDEX
from aras400k.errors import ConfigError, check_choice
from aras400k.metrics.segmentation import SegmentationMetrics
from aras400k.models.choices import ARCHITECTURES, LOSSES, Architecture, LossName

__all__ = [
    "ARCHITECTURES",
    "LOSSES",
    "Normalization",
    "SegmentationTask",
    "load_encoder_weights",
    "load_segmentation_task",
    "load_segmenter",
]

#: ``(mean, std)`` per band, in ``[0, 1]`` units.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]

# Smallest input side each architecture accepts (PAN's feature pyramid attention
# halves the 1/16 feature map three more times). Inputs are padded up to it.
_MIN_SIZE = {"pan": 128}
_STRIDE = 32
_HEAD_KEYS = re.compile(r"^(fc|classifier|head|last_linear)\.")


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> int:
    """Load encoder weights from a local file (never from the network).

    Accepts a plain encoder ``state_dict`` (e.g. a torchvision/timm ResNet checkpoint;
    classifier head keys are dropped), a full smp model ``state_dict`` (``encoder.``
    keys), or a :class:`SegmentationTask` checkpoint (``model.encoder.`` keys), as
    ``.safetensors`` or through :func:`aras400k.checkpoints.load_checkpoint`.

    Args:
        encoder: The smp encoder to fill.
        path: Local weights file.

    Returns:
        The number of tensors loaded.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file does not hold weights for every encoder parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: dict[str, Any] = load_file(str(path))
    else:
        state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (it holds a {type(state).__name__})")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not _HEAD_KEYS.match(k)}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the encoder: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    encoder.load_state_dict(state)
    return len(state)


def check_encoder_name(name: str) -> None:
    """Check that segmentation-models-pytorch knows the encoder ``name`` (timm ones take the ``tu-`` prefix).

    Raises:
        ValueError: For an unknown name, listing the closest known names.
    """
    known = smp.encoders.get_encoder_names()
    if name in known or name.startswith("tu-"):
        return
    near = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(near)}?" if near else f"e.g. {', '.join(known[:4])}"
    raise ValueError(
        f"unknown encoder {name!r}: {hint} (smp knows {len(known)} encoders, listed by "
        "segmentation_models_pytorch.encoders.get_encoder_names(); timm encoders take the 'tu-' prefix)"
    )


class SegmentationTask(SafeLoadingMixin, LightningModule):  # type: ignore[misc]  # Lightning types load_from_checkpoint as a private descriptor
    """Semantic segmentation of land-cover patches with any of the paper's six networks.

    Batches are dicts with ``image`` (normalised ``(B, C, H, W)`` floats) and ``mask``
    (``(B, H, W)`` longs, ``ignore_index`` = ignore), as the aras400k DataModules give.

    Args:
        arch: Network: ``unet``, ``unetplusplus``, ``pan``, ``deeplabv3plus``, ``segformer`` or ``fpn``.
        encoder: Any segmentation-models-pytorch encoder name (e.g. ``resnet18``, ``mobilenet_v2``).
        encoder_weights: ``None`` (random init) or the path of a local weights file
            (see :func:`load_encoder_weights`). Named sets such as ``"imagenet"`` would
            download and are refused.
        in_channels: Input bands.
        num_classes: Output classes.
        loss: ``ce``, ``dice``, ``dice+ce`` or ``focal``.
        class_weights: Per-class cross-entropy weights (``num_classes`` values).
        ignore_index: Mask value left out of loss and metrics.
        lr: AdamW learning rate (when ``optimizer`` is not given).
        weight_decay: AdamW weight decay (when ``optimizer`` is not given).
        patience: ReduceLROnPlateau patience in epochs (when ``lr_scheduler`` is not given).
        monitor: Metric the default scheduler follows (maximised).
        optimizer: Optimiser factory from the config (``class_path`` + ``init_args``); default AdamW.
        lr_scheduler: Scheduler factory from the config; default ReduceLROnPlateau on ``monitor``.

    Raises:
        ValueError: On an unknown architecture or loss, wrong ``class_weights`` length,
            or a named (downloadable) ``encoder_weights``.
    """

    def __init__(
        self,
        arch: Architecture = "unet",
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 7,
        loss: LossName = "ce",
        class_weights: list[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 5,
        monitor: str = "val_f1_macro",
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        save_hyperparameters(self, ignore=["optimizer", "lr_scheduler"])
        check_choice("arch", arch, ARCHITECTURES)
        check_choice("loss", loss, LOSSES)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} values for {num_classes} classes")
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.class_names = (
            tuple(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else tuple(f"class{i}" for i in range(num_classes))
        )
        self.last_confmat: dict[str, torch.Tensor] = {}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- overridable parts -------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check, before any step, that the DataModule's masks have this task's classes.

        Raises:
            ConfigError: If the DataModule says its masks hold another number of classes.
        """
        super().setup(stage)
        data_classes = getattr(getattr(self._trainer, "datamodule", None), "num_classes", None)
        if isinstance(data_classes, int) and data_classes != self.hparams["num_classes"]:
            names = ", ".join(CLASS_NAMES) if data_classes == len(CLASS_NAMES) else f"{data_classes} classes"
            raise ConfigError(
                f"model num_classes is {self.hparams['num_classes']} but the data's masks hold {data_classes} "
                f"classes ({names}); set num_classes: {data_classes}"
            )

    def configure_models(self) -> None:
        """Build ``self.model`` (an smp model) and load local encoder weights if given."""
        hp = self.hparams
        weights = hp["encoder_weights"]
        if weights is not None and not Path(weights).exists() and Path(weights).suffix == "" and "/" not in weights:
            raise ValueError(
                f"encoder_weights={weights!r} names a pretrained set that would be downloaded; aras400k never "
                "downloads at run time: pass the path of a local weights file, or null for random init"
            )
        check_encoder_name(hp["encoder"])
        self.model = smp.create_model(
            hp["arch"],
            encoder_name=hp["encoder"],
            encoder_weights=None,
            in_channels=hp["in_channels"],
            classes=hp["num_classes"],
        )
        if weights is not None:
            load_encoder_weights(self.model.encoder, weights)

    def configure_losses(self) -> None:
        """Build ``self.criterion`` from ``loss``, ``class_weights`` and ``ignore_index``."""
        hp = self.hparams
        weight = torch.tensor(hp["class_weights"], dtype=torch.float32) if hp["class_weights"] else None
        ce = nn.CrossEntropyLoss(weight=weight, ignore_index=hp["ignore_index"])
        dice = smp.losses.DiceLoss("multiclass", ignore_index=hp["ignore_index"])
        losses: dict[str, nn.Module] = {
            "ce": ce,
            "dice": dice,
            "focal": smp.losses.FocalLoss("multiclass", ignore_index=hp["ignore_index"]),
            "dice+ce": _SumLoss(dice, ce),
        }
        self.criterion = losses[hp["loss"]]

    def configure_metrics(self) -> None:
        """Build one metric collection per stage (``train_``, ``val_``, ``test_`` prefixes) and the loss means."""
        base = MetricCollection(
            [SegmentationMetrics(self.hparams["num_classes"], self.hparams["ignore_index"], self.class_names)]
        )
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_metrics", base.clone(prefix=f"{stage}_"))
            # The epoch loss as a sample-weighted mean whose sums are reduced across ranks. (Lightning's
            # own `sync_dist` mean floors the summed batch sizes when ranks see unequal sample counts,
            # lightning#21859.)
            setattr(self, f"{stage}_loss_mean", MeanMetric())

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW + ReduceLROnPlateau on validation macro F1 unless the config gives factories."""
        hp = self.hparams
        optimizer = (
            self.optimizer_factory(self.parameters()) if self.optimizer_factory is not None
            else torch.optim.AdamW(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        )  # fmt: skip
        scheduler = (
            self.scheduler_factory(optimizer) if self.scheduler_factory is not None
            else torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=hp["patience"])
        )  # fmt: skip
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams["monitor"], "strict": False},
        }

    # -- inference -----------------------------------------------------------------------

    def _padding(self, images: torch.Tensor) -> tuple[int, int, int, int]:
        """``F.pad`` widths (left, right, top, bottom) that take ``images`` to a size the network accepts."""
        smallest = _MIN_SIZE.get(self.hparams["arch"], _STRIDE)
        ph, pw = (-(-max(side, smallest) // _STRIDE) * _STRIDE - side for side in images.shape[-2:])
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes, H, W)`` logits of normalised images (padded to a size the network takes, cropped back)."""
        h, w = images.shape[-2:]
        pad = self._padding(images)
        if any(pad):
            mode = "reflect" if max(pad) < min(h, w) else "replicate"
            logits = self.model(F.pad(images, pad, mode=mode))
            return logits[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]
        return self.model(images)

    @torch.no_grad()
    def predict_masks(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` uint8 predicted class indices of ``(B, C, H, W)`` normalised images."""
        return self(images).max(1).indices.to(torch.uint8)

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor, pooled: bool = True) -> torch.Tensor:
        """Bottleneck (deepest encoder) features of normalised images, the domain feature space for FID and t-SNE/UMAP.

        ``pooled``: global-average-pool to ``(B, D)``; otherwise the ``(B, D, h, w)`` map.
        """
        pad = self._padding(images)
        if any(pad):
            images = F.pad(images, pad, mode="replicate")
        deepest = self.model.encoder(images)[-1]
        return deepest.mean(dim=(2, 3)) if pooled else deepest

    # -- steps -----------------------------------------------------------------------------

    def _shared_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        images, masks = batch["image"], batch["mask"]
        logits = self(images)
        loss = self.criterion(logits, masks)
        if not torch.isfinite(loss):
            keys = batch.get("key", [])[:4]
            raise FloatingPointError(
                f"{stage} loss became {loss.item()} at step {self.global_step} (batch keys {keys}); "
                "lower the learning rate or check the inputs"
            )
        # max(1).indices: same first-maximum index as argmax, ~10x faster on CPU NCHW tensors.
        preds = logits.detach().max(1).indices
        getattr(self, f"{stage}_metrics").update(preds, masks)
        mean: MeanMetric = getattr(self, f"{stage}_loss_mean")
        mean(loss.detach(), len(masks))  # forward: the step value is this batch's loss
        self.log(f"{stage}_loss", mean, on_step=stage == "train", on_epoch=True, prog_bar=True)
        return {"loss": loss, "preds": preds}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step."""
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss and metric update on a validation batch; returns predictions for callbacks."""
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss and metric update on a test batch; returns predictions for callbacks."""
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predicted masks with their keys."""
        return {"key": batch.get("key"), "mask": self.predict_masks(batch["image"])}

    def _log_epoch(self, stage: str) -> None:
        collection: MetricCollection = getattr(self, f"{stage}_metrics")
        scores = collection.compute()
        metric: SegmentationMetrics = next(iter(collection.values()))  # type: ignore[assignment]
        # compute() gives back the rank's own state when it is done; keep the matrix summed over ranks.
        with metric.sync_context():
            self.last_confmat[stage] = metric.confmat.detach().cpu().clone()
        headline = f"{stage}_f1_macro"
        self.log(headline, scores.pop(headline), prog_bar=True)
        self.log_dict(scores)
        collection.reset()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics."""
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics (macro F1 drives the scheduler and checkpoints)."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self._log_epoch("test")


def load_segmentation_task(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    task_class: type[SegmentationTask] = SegmentationTask,
) -> SegmentationTask:
    """Load a trained :class:`SegmentationTask` from a Lightning checkpoint, safely.

    The checkpoint is read with :func:`~aras400k.checkpoints.read_checkpoint`
    (``weights_only=True``); the task is rebuilt from its saved hyperparameters and its
    weights loaded strictly (the training-time ``encoder_weights`` file is not needed).

    Args:
        path: Checkpoint written by ``aras-fit`` or ``Trainer.save_checkpoint``.
        map_location: Where the weights are loaded.
        task_class: Class to build (a :class:`SegmentationTask` subclass with the same
            constructor arguments, if the checkpoint came from one).

    Returns:
        The task, in eval mode.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a checkpoint of a segmentation task.
    """
    return _task_from_checkpoint(read_checkpoint(path, map_location), str(path), task_class)


def load_segmenter(
    segmenter: SegmentationTask | str | Path, device: torch.device, purpose: str | None = None
) -> tuple[SegmentationTask, str | None, Normalization | None]:
    """A task given as an instance or a checkpoint path, with where it came from and its normalisation.

    Args:
        segmenter: A task, or the path of its Lightning checkpoint.
        device: Where a checkpoint's weights are loaded.
        purpose: When given, the task must map RGB images to the land-cover classes,
            and the error says what needed it (``"labelling shards"``).

    Returns:
        ``(task, checkpoint path or None, (mean, std) recorded in the checkpoint or None)``.

    Raises:
        ValueError: If the file is not a segmentation task's checkpoint, or (with
            ``purpose``) the task does not predict the land-cover classes from RGB.
    """
    if isinstance(segmenter, SegmentationTask):
        task, path, norm = segmenter, None, None
    else:
        checkpoint = read_checkpoint(segmenter, map_location=device)
        task = _task_from_checkpoint(checkpoint, str(segmenter), SegmentationTask)
        path, norm = str(segmenter), checkpoint_normalization(checkpoint)
    bands, classes = task.hparams["in_channels"], task.hparams["num_classes"]
    if purpose is not None and (classes != len(CLASS_NAMES) or bands != 3):
        raise ValueError(
            f"the segmenter takes {bands} bands and predicts {classes} classes; {purpose} needs RGB input "
            f"and the {len(CLASS_NAMES)} land-cover classes"
        )
    return task, path, norm


def _task_from_checkpoint(
    checkpoint: dict[str, Any], name: str, task_class: type[SegmentationTask]
) -> SegmentationTask:
    # encoder_weights=None: the state dict holds every weight
    task, state = module_from_checkpoint(task_class, checkpoint, name, {"encoder_weights": None}, required="arch")
    try:
        task.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{name} is not a checkpoint of {task_class.__name__} ({first})") from err
    return task.eval()


class _SumLoss(nn.Module):
    """Sum of several losses on the same inputs (``dice+ce``)."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum((loss(logits, target) for loss in self.losses), torch.zeros((), device=logits.device))
