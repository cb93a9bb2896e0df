"""FID (and KID) of a GAN's samples against the validation images, logged during training.

The paper judges its generators by FID (16 unconditional, 72 conditional) in a feature
space; :class:`GeneratorFID` computes the same number on the validation set while a
GAN trains, so ``ModelCheckpoint(monitor="val_fid", mode="min")`` can keep the best
generator. It works with any module of the :class:`FIDSampler` protocol, as every
:class:`~aras400k.models.gan.GANModule` is (StyleGAN3 draws from seeds fixed per batch
index, SPADEGAN from the batch's masks).

The real statistics are computed once, on the first validation epoch, and kept
(``reset_real_features=False``): the validation set must be the same every epoch, as
it is for the shard DataModules (no shuffling, fixed ``limit_val_batches``). FID of a
few hundred samples is biased upwards; compare values of one run, not across sample counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from aras400k.errors import check_at_least
from aras400k.metrics.fid import FeatureFID, FeatureKID
from aras400k.models.features import feature_extractor

__all__ = ["FIDSampler", "GeneratorFID"]


@runtime_checkable
class FIDSampler(Protocol):
    """A GAN module that can generate images for a validation batch."""

    def fid_samples(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Generated ``(B, 3, H, W)`` images in ``[-1, 1]`` for ``batch`` (deterministic per ``batch_idx``)."""
        ...


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Map ``[-1, 1]`` images to ``[0, 1]``."""
    return images.float().add(1).div(2).clamp(0, 1)


class GeneratorFID(Callback):
    """Log ``val_fid`` (and optionally ``val_kid``) of the generator at validation.

    Real images are the validation batches (in ``[-1, 1]``), generated ones come from
    ``pl_module.fid_samples``; features from a trained segmenter (the paper's domain
    feature space) or a local Inception-v3 file (nothing downloads).

    Args:
        feature: ``segmenter`` (a :class:`~aras400k.models.SegmentationTask` checkpoint)
            or ``inception`` (an Inception-v3 weights file).
        path: The checkpoint or weights file.
        every_n_epochs: Compute on every n-th validation epoch (others are skipped).
        kid: Also log ``val_kid`` (more reliable than FID on small sets).
        kid_subset_size: KID subset size (lowered to the sample count if larger).
        mean: Segmenter normalisation mean (default: from the checkpoint).
        std: Segmenter normalisation std (default: from the checkpoint).

    Raises:
        ValueError: If ``every_n_epochs`` or ``kid_subset_size`` is below 1.
    """

    def __init__(
        self,
        feature: Literal["segmenter", "inception"],
        path: str,
        every_n_epochs: int = 1,
        kid: bool = False,
        kid_subset_size: int = 100,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_at_least("every_n_epochs", every_n_epochs, 1)
        check_at_least("kid_subset_size", kid_subset_size, 1)
        self.feature, self.path = feature, path
        self.every_n_epochs, self.kid, self.kid_subset_size = every_n_epochs, kid, kid_subset_size
        self.mean, self.std = mean, std
        self.fid: FeatureFID | None = None
        self.kid_metric: FeatureKID | None = None
        self.real_done = False
        self._collecting_real = False
        #: ``(epoch, {"val_fid": ..., "val_kid": ...})`` for every epoch computed, in order.
        self.history: list[tuple[int, dict[str, float]]] = []

    def configure_extractor(self) -> nn.Module:
        """The frozen ``[0, 1]`` images to ``(B, D)`` feature extractor (override for another feature space)."""
        return feature_extractor(self.feature, self.path, mean=self.mean, std=self.std)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check that the module is a :class:`FIDSampler` and build the metrics on its device.

        Raises:
            TypeError: If the module has no ``fid_samples`` method.
        """
        if not isinstance(pl_module, FIDSampler):
            raise TypeError(
                f"GeneratorFID needs a module with fid_samples(batch, batch_idx) (StyleGAN3, SPADEGAN); "
                f"{type(pl_module).__name__} has none"
            )
        if self.fid is None:
            extractor = self.configure_extractor()
            self.fid = FeatureFID(extractor, reset_real_features=False)
            if self.kid:
                self.kid_metric = FeatureKID(extractor, subset_size=self.kid_subset_size, reset_real_features=False)
        for metric in self._metrics():
            metric.to(pl_module.device)

    def _metrics(self) -> list[FeatureFID | FeatureKID]:
        return [m for m in (self.fid, self.kid_metric) if m is not None]

    def _due(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting (real statistics only on the first due epoch)."""
        self._collecting_real = self._due(trainer) and not self.real_done

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Add the batch's real images (first epoch) and the generator's samples (seeded by ``batch_idx``)."""
        if not self._due(trainer):
            return
        assert isinstance(pl_module, FIDSampler)
        fake = _unit(pl_module.fid_samples(batch, batch_idx))
        real = _unit(batch["image"]) if self._collecting_real else None
        for metric in self._metrics():
            if real is not None:
                metric.update(real, real=True)
            metric.update(fake, real=False)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log ``val_fid`` (and ``val_kid``, ``val_kid_std``) and clear the generated statistics."""
        if not self._due(trainer) or self.fid is None:
            return
        self.real_done = True
        self._collecting_real = False
        values = {"val_fid": self.fid.compute()}
        if self.kid_metric is not None:
            values["val_kid"], values["val_kid_std"] = self.kid_metric.compute()
        pl_module.log_dict(values, prog_bar=True)
        self.history.append((trainer.current_epoch, {k: float(v) for k, v in values.items()}))
        for metric in self._metrics():
            metric.reset()  # keeps the real statistics (reset_real_features=False)
