"""``SPADEGAN``: the mask-conditioned GAN (SPADE generator + U-Net discriminator) as a LightningModule.

The module only composes the parts of this package and of :mod:`aras400k.models.gan`:

- networks (:meth:`SPADEGAN.configure_models`): :class:`SPADEGenerator` (OASIS 3D noise,
  optional VAE encoder), :class:`UNetDiscriminator` (``oasis`` or ``unetgan``
  conditioning), an EMA copy of the generator (used for sampling and validation) and
  :class:`~aras400k.models.gan.JointFlipRot90` (the same flip/rot90 on image and mask);
- losses (:meth:`SPADEGAN.configure_losses`): :class:`UNetAdversarialLoss` on both
  heads, CutMix or LabelMix consistency with U-Net GAN's warm-up, feature matching, an
  optional perceptual loss (local VGG19 file or a trained segmenter's encoder), KL;
- the validation score (:meth:`SPADEGAN.configure_metrics`): macro IoU of a trained
  segmenter on generated images against the masks they were generated from.

Every iteration (manual optimisation) runs the generator once, then one discriminator
step (on the detached images) and one generator step, each guarded by
:class:`~aras400k.models.gan.NonFiniteGuard` (a NaN/inf loss or gradient skips the step
and is counted), then updates the EMA. Lightning counts optimiser steps, so
``trainer.max_steps`` is twice the number of iterations (fewer when steps are
skipped); the ``iterations`` buffer counts iterations.

Frozen feature networks (the perceptual network and the validation segmenter) are
rebuilt from their files and kept out of the ``state_dict`` and the optimisers (they
follow the module's device and dtype when used): checkpoints hold only the trained
networks and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from aras400k.checkpoints import save_hyperparameters
from aras400k.classes import NUM_CLASSES
from aras400k.data.transforms import Normalize
from aras400k.errors import check_at_least, check_choice, check_within
from aras400k.metrics.segmentation import SegmentationMetrics
from aras400k.models.gan import ExponentialMovingAverage, GANModule, JointFlipRot90, NonFiniteGuard
from aras400k.models.gan.losses import ADVERSARIAL_LOSSES, AdversarialLossName
from aras400k.models.spade.discriminator import Conditioning, UNetDiscriminator
from aras400k.models.spade.figures import plot_conditional_grid, to_display
from aras400k.models.spade.generator import NoiseMode, SPADEGenerator, reparameterize
from aras400k.models.spade.losses import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG19_LAYER_WEIGHTS,
    PerceptualLoss,
    SegmenterEncoderFeatures,
    UNetAdversarialLoss,
    VGG19Features,
    consistency_loss,
    consistency_weight,
    cutmix_augmentation_loss,
    cutmix_mask,
    cutmix_probability,
    feature_matching_loss,
    kl_divergence,
    labelmix_mask,
    mix,
)
from aras400k.models.spade.normalization import ParamFreeNorm, one_hot_mask

if TYPE_CHECKING:
    from aras400k.models.segmentation import SegmentationTask

__all__ = ["SPADEGAN", "MixMode", "PerceptualNet", "load_spade_generator", "spade_generator_from_hparams"]

MixMode = Literal["cutmix", "labelmix", "none"]
PerceptualNet = Literal["none", "vgg19", "segmenter"]
_MIX_MODES: tuple[str, ...] = ("cutmix", "labelmix", "none")
_PERCEPTUAL_NETS: tuple[str, ...] = ("none", "vgg19", "segmenter")


class SPADEGAN(GANModule):
    """Mask-conditioned GAN: SPADE generator, U-Net discriminator, EMA sampling, guarded manual optimisation.

    Batches are dicts with ``image`` (``(B, 3, H, W)`` in ``[-1, 1]``) and ``mask``
    (``(B, H, W)`` class indices, 255 = ignore), as
    :class:`~aras400k.data.GANDataModule` gives with ``with_mask=True``. ``H`` and ``W``
    must be divisible by ``2**g_num_upsamplings`` and ``2**d_num_downsamplings``.

    Defaults are the OASIS/SPADE 256 px settings (generator 64...1024 channels from 8 px,
    discriminator 64...512 channels down to 4 px, hinge loss, TTUR Adam G 1e-4 / D 4e-4
    with betas (0, 0.999), feature matching 10, EMA 0.999); ``configs/gan_spade.yaml``
    shrinks them for a CPU demo.

    Args:
        num_classes: Land-cover classes of the masks.
        g_num_upsamplings: Generator upsamplings (start size = image size / 2**n).
        g_base_channels: Generator width at full resolution (SPADE's ``ngf``).
        g_max_channels: Generator width cap.
        g_spade_hidden: Width of the SPADE embedding networks.
        noise: ``global`` (default), ``per_class`` or ``none`` (see :class:`SPADEGenerator`).
        z_dim: Noise / style vector size.
        norm: Parameter-free normalisation inside SPADE: ``instance`` or ``batch``.
        use_encoder: Train SPADE's VAE image encoder (needs ``noise="global"``).
        encoder_downsamplings: Stride-2 layers of the image encoder.
        d_num_downsamplings: Discriminator encoder blocks (bottleneck = size / 2**n).
        d_base_channels: Discriminator width of the first block.
        d_max_channels: Discriminator width cap.
        conditioning: ``oasis`` (default) or ``unetgan`` (see :class:`UNetDiscriminator`).
        projection: Projection terms on the mask in the discriminator.
        loss: ``hinge`` or ``logistic``, of the global head (and the pixel head for ``unetgan``).
        global_weight: Weight of the global head's adversarial loss.
        pixel_weight: Weight of the per-pixel head's adversarial loss.
        class_balancing: Class-balanced N+1 cross-entropy (``oasis``).
        lambda_feature_matching: Weight of discriminator feature matching (0 disables).
        perceptual: Perceptual loss network: ``none`` (default), ``vgg19`` or ``segmenter``
            (the encoder of a trained :class:`~aras400k.models.SegmentationTask`).
        perceptual_weights: Its local file: torchvision VGG19 weights or a segmenter
            checkpoint (nothing is downloaded).
        lambda_perceptual: Weight of the perceptual loss.
        mix_mode: Real/fake mixing for the consistency loss: ``cutmix`` (U-Net GAN,
            default), ``labelmix`` (OASIS) or ``none``.
        lambda_consistency: Weight of the consistency loss after the warm-up (U-Net GAN 1,
            OASIS 10); ``unetgan`` adds the CutMix augmentation loss with weight 1.
        mix_probability: Probability of mixing a batch after the warm-up (U-Net GAN: 0.5).
        mix_warmup_steps: Iterations of the linear ramp of mixing probability and weight.
        lambda_kl: Weight of the KL term of the VAE encoder (SPADE: 0.05).
        lr_g: Generator Adam learning rate (unless ``optimizer_g`` is given).
        lr_d: Discriminator Adam learning rate (unless ``optimizer_d`` is given).
        betas: Adam betas of both optimisers.
        optimizer_g: Generator optimiser factory from the config (``class_path`` + ``init_args``).
        optimizer_d: Discriminator optimiser factory from the config.
        p_flip: Probability of a joint left-right flip of a training image and its mask.
        p_rot90: Probability of a joint rotation by a multiple of 90 degrees.
        ema_decay: Decay of the generator's exponential moving average per iteration.
        ema_warmup: Use ``min(ema_decay, (1 + t) / (10 + t))`` at iteration ``t``.
        max_consecutive_skips: Stop after this many NaN/inf steps in a row (``None``: never).
        segmenter_ckpt: Checkpoint of a trained segmenter; validation then logs its macro
            IoU on EMA samples (``val_seg_miou``) and real images (``val_seg_miou_real``).
        sample_every_n_steps: Write a sample grid every this many iterations (0: only at
            validation): ``samples/step{N}.png`` and ``samples/val_epoch{E}_step{N}.png``.
        grid_rows: Masks (rows) in a sample grid.
        samples_per_mask: Generated images per mask in a grid (different noise).

    Raises:
        ValueError: On an unknown choice, a negative weight, a probability outside
            ``[0, 1]``, or a perceptual loss without its weights file.
    """

    train_grid_name = "step{iterations:07d}"
    val_grid_name = "val_epoch{epoch:03d}_step{iterations:07d}"

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        g_num_upsamplings: int = 5,
        g_base_channels: int = 64,
        g_max_channels: int = 1024,
        g_spade_hidden: int = 128,
        noise: NoiseMode = "global",
        z_dim: int = 64,
        norm: ParamFreeNorm = "instance",
        use_encoder: bool = False,
        encoder_downsamplings: int = 6,
        d_num_downsamplings: int = 6,
        d_base_channels: int = 64,
        d_max_channels: int = 512,
        conditioning: Conditioning = "oasis",
        projection: bool = True,
        loss: AdversarialLossName = "hinge",
        global_weight: float = 1.0,
        pixel_weight: float = 1.0,
        class_balancing: bool = True,
        lambda_feature_matching: float = 10.0,
        perceptual: PerceptualNet = "none",
        perceptual_weights: str | None = None,
        lambda_perceptual: float = 10.0,
        mix_mode: MixMode = "cutmix",
        lambda_consistency: float = 1.0,
        mix_probability: float = 0.5,
        mix_warmup_steps: int = 2000,
        lambda_kl: float = 0.05,
        lr_g: float = 1e-4,
        lr_d: float = 4e-4,
        betas: tuple[float, float] = (0.0, 0.999),
        optimizer_g: OptimizerCallable | None = None,
        optimizer_d: OptimizerCallable | None = None,
        p_flip: float = 0.5,
        p_rot90: float = 0.5,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        max_consecutive_skips: int | None = 100,
        segmenter_ckpt: str | None = None,
        sample_every_n_steps: int = 500,
        grid_rows: int = 4,
        samples_per_mask: int = 4,
    ) -> None:
        super().__init__()
        save_hyperparameters(self, ignore=["optimizer_g", "optimizer_d"])
        self.hparams["betas"] = tuple(float(b) for b in betas)  # plain values for weights_only loading
        _check_arguments(self.hparams)
        self.num_classes = num_classes
        self.optimizer_g_factory = optimizer_g
        self.optimizer_d_factory = optimizer_d
        # Frozen networks rebuilt from files: not registered, so they stay out of the
        # state dict and the optimisers; _frozen_net moves them along with the module.
        self._frozen: dict[str, nn.Module] = {}
        self._frozen_place: tuple[Any, ...] = (torch.device("cpu"), torch.get_default_dtype())
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- overridable parts -------------------------------------------------------------

    def configure_models(self) -> None:
        """Build ``generator``, ``discriminator``, the generator's EMA ``ema`` and ``augment``."""
        hp = self.hparams
        self.generator: SPADEGenerator = spade_generator_from_hparams(hp)
        same = {name: hp[name] for name in ("num_classes", "conditioning", "projection")}
        sizes = {name: hp[f"d_{name}"] for name in ("num_downsamplings", "base_channels", "max_channels")}
        self.discriminator = UNetDiscriminator(**same, **sizes)
        self.ema = ExponentialMovingAverage(self.generator, decay=hp["ema_decay"], warmup=hp["ema_warmup"])
        self.augment = JointFlipRot90(hp["p_flip"], hp["p_rot90"])
        self.guard = NonFiniteGuard(hp["max_consecutive_skips"])

    def configure_losses(self) -> None:
        """Build ``adversarial_loss`` and, when asked for, the frozen perceptual loss."""
        hp = self.hparams
        self.adversarial_loss = UNetAdversarialLoss(
            hp["loss"], hp["conditioning"], hp["global_weight"], hp["pixel_weight"], hp["class_balancing"]
        )
        if hp["perceptual"] != "none" and hp["lambda_perceptual"] > 0:
            self._frozen["perceptual"] = self._build_perceptual(hp["perceptual"], hp["perceptual_weights"])

    def configure_metrics(self) -> None:
        """Build the validation segmentation scores and load the frozen segmenter if one is configured."""
        self.seg_metrics_fake = SegmentationMetrics(self.num_classes)
        self.seg_metrics_real = SegmentationMetrics(self.num_classes)
        if self.hparams["segmenter_ckpt"] is not None:
            task, normalize = _load_segmenter(self.hparams["segmenter_ckpt"])
            self._frozen["segmenter"] = task
            self._frozen["segmenter_normalize"] = normalize

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """``[G optimiser, D optimiser]``: Adam with ``lr_g`` / ``lr_d`` and ``betas`` (TTUR) unless configured."""
        hp = self.hparams
        return [
            factory(net.parameters()) if factory is not None
            else torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(hp["betas"]))
            for net, factory, lr in (
                (self.generator, self.optimizer_g_factory, hp["lr_g"]),
                (self.discriminator, self.optimizer_d_factory, hp["lr_d"]),
            )
        ]  # fmt: skip

    def make_mix_mask(self, onehot: torch.Tensor) -> torch.Tensor:
        """The ``(B, 1, H, W)`` real/fake mixing mask (``1`` = real) for one-hot masks: CutMix or LabelMix."""
        if self.hparams["mix_mode"] == "labelmix":
            return labelmix_mask(onehot)
        batch, _, height, width = onehot.shape
        return cutmix_mask(batch, height, width, device=onehot.device).to(onehot.dtype)

    # -- frozen networks ---------------------------------------------------------------

    @staticmethod
    def _build_perceptual(kind: str, weights: str | None) -> PerceptualLoss:
        if weights is None:
            raise ValueError(
                f"perceptual={kind!r} needs perceptual_weights: a local torchvision VGG19 state_dict for vgg19, "
                "or a SegmentationTask checkpoint for segmenter (nothing is downloaded)"
            )
        if kind == "vgg19":
            return PerceptualLoss(VGG19Features(weights), VGG19_LAYER_WEIGHTS)
        task, normalize = _load_segmenter(weights)
        features = SegmenterEncoderFeatures(task, normalize.mean.flatten().tolist(), normalize.std.flatten().tolist())
        return PerceptualLoss(features)

    def _frozen_net(self, name: str) -> nn.Module | None:
        """A frozen network, moved to the module's device and float dtype on first use after the module moved."""
        place = (self.device, self.dtype)
        if self._frozen_place != place and isinstance(self.dtype, torch.dtype):
            for net in self._frozen.values():
                net.to(device=self.device, dtype=self.dtype)
            self._frozen_place = place
        return self._frozen.get(name)

    @property
    def perceptual_loss(self) -> PerceptualLoss | None:
        """The frozen perceptual loss, or ``None`` when it is off."""
        return self._frozen_net("perceptual")  # type: ignore[return-value]

    @property
    def segmenter(self) -> nn.Module | None:
        """The frozen validation segmenter, or ``None`` when ``segmenter_ckpt`` is not set."""
        return self._frozen_net("segmenter")

    # -- inference ---------------------------------------------------------------------

    def _onehot(self, mask: torch.Tensor) -> torch.Tensor:
        if mask.is_floating_point() and mask.ndim == 4 and mask.shape[1] == self.num_classes:
            return mask.to(self.device)
        return one_hot_mask(mask.to(self.device), self.num_classes)

    @torch.no_grad()
    def generate(
        self, mask: torch.Tensor, seed: int | None = None, z: torch.Tensor | None = None, use_ema: bool = True
    ) -> torch.Tensor:
        """Generate images for masks (in eval mode, without gradients).

        Args:
            mask: ``(B, H, W)`` class indices (255 = ignore) or ``(B, N, H, W)`` one-hot masks.
            seed: Seed of the noise (a CPU generator: the same noise on any device);
                ``None`` draws from the global generator.
            z: Explicit noise (see :meth:`SPADEGenerator.sample_noise`); overrides ``seed``.
            use_ema: Use the EMA generator (default) rather than the trained weights.

        Returns:
            ``(B, 3, H, W)`` images in ``[-1, 1]``.
        """
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with self.sampler(use_ema) as net:
            return net(self._onehot(mask).to(next(net.parameters()).dtype), z=z, generator=generator)

    def fid_samples(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """EMA samples for the batch's masks, seeded by ``batch_idx`` (see :meth:`GANModule.fid_samples`)."""
        return self.generate(_image_and_mask(batch)[1], seed=batch_idx)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Segment generator-range images with the validation segmenter, quantised to 8 bits as in a shard.

        Args:
            images: ``(B, 3, H, W)`` images in ``[-1, 1]``.

        Returns:
            ``(B, H, W)`` predicted class indices.

        Raises:
            RuntimeError: If no ``segmenter_ckpt`` is configured.
        """
        segmenter = self.segmenter
        if segmenter is None:
            raise RuntimeError("no segmenter configured; set segmenter_ckpt")
        scaled = torch.round((images.float().clamp(-1, 1) + 1) * 127.5) / 255.0
        return segmenter.predict_masks(self._frozen_net("segmenter_normalize")(scaled))  # type: ignore[operator,misc]

    # -- training ----------------------------------------------------------------------
    # The step's parts take ``real`` (``(B, 3, H, W)`` images), ``fake`` (generated from
    # the same masks; detached on the discriminator side) and ``onehot`` (``(B, N, H, W)``
    # masks), and return their loss terms, already weighted, by name.

    def augment_batch(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint flip/rot90 of ``(B, 3, H, W)`` images and ``(B, H, W)`` masks when training, else identity."""
        return self.augment(image, mask) if self.training else (image, mask)

    def generate_for_training(
        self, real: torch.Tensor, onehot: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One generator forward with gradients, ``(fake, extra)``.

        With the VAE encoder, the noise is the real image's style and ``extra`` holds its ``kl``.
        """
        if self.generator.encoder is None:
            return self.generator(onehot), {}
        mu, logvar = self.generator.encode(real)
        fake = self.generator(onehot, z=reparameterize(mu, logvar))
        return fake, {"kl": kl_divergence(mu, logvar)}

    def discriminator_losses(
        self, real: torch.Tensor, fake: torch.Tensor, onehot: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``d_adv_image``, ``d_adv_pixel``, ``d_consistency``, ``d_cutmix`` (``unetgan``), their sum ``d_loss``."""
        real_out = self.discriminator(real, onehot)
        fake_out = self.discriminator(fake, onehot)
        adversarial = self.adversarial_loss.discriminator_loss(real_out, fake_out, onehot)
        terms = {"d_adv_image": adversarial.image, "d_adv_pixel": adversarial.pixel}
        terms.update(self.mixing_losses(real, fake, onehot, real_out.pixel_logits, fake_out.pixel_logits))
        terms["d_loss"] = torch.stack(list(terms.values())).sum()
        return terms

    def mixing_losses(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        onehot: torch.Tensor,
        real_pixel_logits: torch.Tensor,
        fake_pixel_logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """CutMix/LabelMix consistency (and, for ``unetgan``, CutMix augmentation) with warm-up.

        The batch is mixed with probability :func:`cutmix_probability` (0 to
        ``mix_probability`` over ``mix_warmup_steps``); the terms are weighted by
        :func:`consistency_weight` over the same warm-up. ``real_pixel_logits`` and
        ``fake_pixel_logits`` are the decoder's outputs on ``real`` and (detached) ``fake``.

        Returns:
            ``d_consistency`` (and ``d_cutmix`` for ``unetgan``), zero when the batch is not mixed.
        """
        hp = self.hparams
        zero = real.new_zeros(())
        unetgan = hp["conditioning"] == "unetgan"
        terms = {"d_consistency": zero} | ({"d_cutmix": zero} if unetgan else {})
        if hp["mix_mode"] == "none":
            return terms
        iterations = int(self.iterations)
        probability = cutmix_probability(iterations, hp["mix_warmup_steps"], hp["mix_probability"])
        if probability <= 0 or float(torch.rand(())) >= probability:
            return terms
        mix_mask = self.make_mix_mask(onehot)
        mixed_out = self.discriminator(mix(real, fake, mix_mask), onehot)
        ramp = consistency_weight(iterations, hp["mix_warmup_steps"], 1.0)
        consistency = consistency_loss(mixed_out.pixel_logits, real_pixel_logits, fake_pixel_logits, mix_mask)
        terms["d_consistency"] = ramp * hp["lambda_consistency"] * consistency
        if unetgan:
            mixed_logits = mixed_out.pixel_logits, mixed_out.global_logits
            terms["d_cutmix"] = ramp * cutmix_augmentation_loss(*mixed_logits, mix_mask, hp["loss"])
        return terms

    def generator_losses(
        self, real: torch.Tensor, fake: torch.Tensor, onehot: torch.Tensor, extra: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``g_adv_image``, ``g_adv_pixel``, ``g_feature_matching``, ``g_perceptual``, ``g_kl`` (if on), ``g_loss``.

        ``real`` are the targets of feature matching and the perceptual loss; ``extra`` is
        what :meth:`generate_for_training` returned besides the images.
        """
        hp = self.hparams
        fake_out = self.discriminator(fake, onehot)
        adversarial = self.adversarial_loss.generator_loss(fake_out, onehot)
        terms = {"g_adv_image": adversarial.image, "g_adv_pixel": adversarial.pixel}
        if hp["lambda_feature_matching"] > 0:
            with torch.no_grad():
                real_features = self.discriminator(real, onehot).features
            matching = feature_matching_loss(fake_out.features, real_features)
            terms["g_feature_matching"] = hp["lambda_feature_matching"] * matching
        if self.perceptual_loss is not None:
            terms["g_perceptual"] = hp["lambda_perceptual"] * self.perceptual_loss(fake, real)
        if "kl" in extra:
            terms["g_kl"] = hp["lambda_kl"] * extra["kl"]
        terms["g_loss"] = torch.stack(list(terms.values())).sum()
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One iteration on ``image`` (in ``[-1, 1]``) and ``mask``: G forward, D step, G step, EMA update."""
        real, mask = self.augment_batch(*_image_and_mask(batch))
        onehot = one_hot_mask(mask, self.num_classes).to(real.dtype)
        optimizers = self.optimizers()
        assert isinstance(optimizers, list), "configure_optimizers must return [G optimiser, D optimiser]"
        opt_g, opt_d = optimizers
        fake, extra = self.generate_for_training(real, onehot)
        d_terms = self.discriminator_losses(real, fake.detach(), onehot)
        self._optimise(d_terms["d_loss"], self.discriminator, opt_d, "D")
        with self.toggled_optimizer(opt_g):
            g_terms = self.generator_losses(real, fake, onehot, extra)
            self._optimise(g_terms["g_loss"], self.generator, opt_g, "G")
        decay = self.update_ema(len(real))
        self.iterations += 1
        self._log_training(d_terms | g_terms, len(real), decay)

    def _log_training(self, terms: Mapping[str, torch.Tensor], batch_size: int, ema_decay: float) -> None:
        values: dict[str, Any] = {f"train_{name}": value.detach() for name, value in terms.items()}
        values |= {"skipped_steps": float(self.guard.num_skipped), "ema_decay": float(ema_decay)}
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
        losses = {"d_loss": terms["d_loss"].detach(), "g_loss": terms["g_loss"].detach()}
        self.log_dict(losses, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=batch_size)

    # -- validation and sample grids -------------------------------------------------------

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Update the segmentation scores (with a ``segmenter_ckpt``); ``batch_idx`` seeds the samples."""
        image, mask = _image_and_mask(batch)
        if self.segmenter is not None:
            self.seg_metrics_fake.update(self.segment(self.generate(mask, seed=batch_idx)), mask)
            self.seg_metrics_real.update(self.segment(image), mask)

    def on_validation_epoch_end(self) -> None:
        """Log ``val_seg_miou`` (and ``val_seg_miou_real``)."""
        if self.segmenter is not None:
            for metric, key in ((self.seg_metrics_fake, "val_seg_miou"), (self.seg_metrics_real, "val_seg_miou_real")):
                self.log(key, metric.compute()["iou_macro"], prog_bar=key == "val_seg_miou")
                metric.reset()

    def draw_sample_grid(self, path: Path, batch: Mapping[str, Any] | None) -> bool:
        """One row per mask of the batch's first ``grid_rows``: mask, real image, ``samples_per_mask`` EMA samples.

        Sample ``k`` of every grid uses seed ``k``, so grids over training are comparable.
        See :meth:`GANModule.draw_sample_grid`; a ``batch`` holds ``image`` and ``mask`` (and ``key``).
        """
        if batch is None:
            return False
        rows = self.hparams["grid_rows"]
        image, mask = (x[:rows] for x in _image_and_mask(batch))
        keys = batch.get("key")
        samples = torch.stack([self.generate(mask, seed=k) for k in range(self.hparams["samples_per_mask"])], dim=1)
        plot_conditional_grid(
            mask.cpu().numpy(), to_display(samples), path, reals=to_display(image),
            keys=list(keys)[:rows] if keys is not None else None, title=f"iteration {int(self.iterations)}",
        )  # fmt: skip
        return True


# -- helpers -------------------------------------------------------------------------------


def _check_arguments(hp: Mapping[str, Any]) -> None:
    """Fail early, naming the argument and the valid choices."""
    for name, valid in {"mix_mode": _MIX_MODES, "perceptual": _PERCEPTUAL_NETS, "loss": ADVERSARIAL_LOSSES}.items():
        check_choice(name, hp[name], valid)
    for name in ("lambda_feature_matching", "lambda_perceptual", "lambda_consistency", "lambda_kl", "ema_decay"):
        check_at_least(name, hp[name], 0)
    for name in ("p_flip", "p_rot90", "mix_probability"):
        check_within(name, hp[name])
    for name in ("grid_rows", "samples_per_mask"):
        check_at_least(name, hp[name], 1)


def _image_and_mask(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's images and masks, or a clear error when the data gives no masks."""
    if "mask" not in batch:
        raise ValueError(
            "SPADEGAN trains on image + mask batches, but the batch has no 'mask': "
            "use aras400k.data.GANDataModule with with_mask: true"
        )
    return batch["image"], batch["mask"]


def _load_segmenter(path: str) -> tuple[SegmentationTask, Normalize]:
    """A frozen segmenter from its checkpoint and the normalisation it was trained with."""
    from aras400k.checkpoints import checkpoint_normalization, read_checkpoint
    from aras400k.models.segmentation import load_segmentation_task

    task = load_segmentation_task(path)
    mean, std = checkpoint_normalization(read_checkpoint(path)) or (IMAGENET_MEAN, IMAGENET_STD)
    return task.eval().requires_grad_(False), Normalize(tuple(mean), tuple(std))


def spade_generator_from_hparams(hparams: Mapping[str, Any]) -> SPADEGenerator:
    """Build the generator :class:`SPADEGAN` would build for these hyperparameters.

    Args:
        hparams: :class:`SPADEGAN` constructor arguments (missing ones take the defaults),
            e.g. a checkpoint's ``hyper_parameters``.

    Returns:
        A freshly initialised :class:`SPADEGenerator`.
    """
    parameters = inspect.signature(SPADEGAN.__init__).parameters.items()
    hp = {name: p.default for name, p in parameters if p.default is not inspect.Parameter.empty} | dict(hparams)
    # Generator arguments are the module's, with a ``g_`` prefix on the sizes.
    same = ("num_classes", "noise", "z_dim", "norm", "use_encoder", "encoder_downsamplings")
    sizes = {name: hp[f"g_{name}"] for name in ("num_upsamplings", "base_channels", "max_channels")}
    return SPADEGenerator(**{name: hp[name] for name in same}, **sizes, spade_hidden=hp["g_spade_hidden"])


def load_spade_generator(
    path: str | Path,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    module_class: type[SPADEGAN] | None = None,
) -> SPADEGenerator:
    """Load the (EMA) generator, alone, of a :class:`SPADEGAN` checkpoint, safely (``weights_only=True``).

    Args:
        path: Lightning checkpoint written by ``aras-fit`` / ``Trainer.save_checkpoint``.
        use_ema: Load the EMA weights (the ones to sample from) rather than the trained ones.
        map_location: Where the weights are loaded.
        module_class: The :class:`SPADEGAN` subclass that trained the checkpoint, when
            its ``configure_models`` builds a generator of its own (built without the
            networks only training needs). ``None``: the standard :class:`SPADEGenerator`.

    Returns:
        The generator in eval mode, without gradients.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a SPADEGAN checkpoint (or holds code), or does
            not fit ``module_class``.
        TypeError: If ``module_class`` is not a SPADEGAN subclass.
    """
    from aras400k.checkpoints import generator_from_module, read_checkpoint

    checkpoint = read_checkpoint(path, map_location)
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, Mapping) or not isinstance(state, Mapping) or "g_base_channels" not in hparams:
        raise ValueError(f"{path} is not a SPADEGAN checkpoint (it lacks the GAN's hyper_parameters or state_dict)")
    prefix = "ema.shadow." if use_ema else "generator."
    if module_class is not None:
        if not (isinstance(module_class, type) and issubclass(module_class, SPADEGAN)):
            raise TypeError(f"module_class must be a SPADEGAN subclass, got {module_class!r}")
        skip = {"segmenter_ckpt": None, "perceptual": "none", "perceptual_weights": None}
        built = generator_from_module(module_class, checkpoint, prefix, str(path), overrides=skip)
        return built.to(map_location).eval().requires_grad_(False)  # type: ignore[return-value]
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    generator = spade_generator_from_hparams(hparams)
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: the {prefix.rstrip('.')} weights do not fit the generator ({first})") from err
    return generator.to(map_location).eval().requires_grad_(False)
