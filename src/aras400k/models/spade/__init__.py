"""Mask-conditioned synthesis: SPADE generator, U-Net discriminator, and their losses.

- :mod:`~aras400k.models.spade.normalization`: ``SPADE`` and ``one_hot_mask``.
- :mod:`~aras400k.models.spade.generator`: ``SPADEResnetBlock``, ``SPADEGenerator``
  (OASIS-style 3D noise), ``ImageEncoder`` (SPADE's VAE).
- :mod:`~aras400k.models.spade.discriminator`: ``UNetDiscriminator`` (global and
  per-pixel heads; ``unetgan`` or ``oasis`` conditioning).
- :mod:`~aras400k.models.spade.losses`: adversarial, N+1, CutMix/LabelMix consistency,
  feature-matching, perceptual and KL losses.
- :mod:`~aras400k.models.spade.module`: ``SPADEGAN``, the LightningModule that trains
  them (EMA sampling, NaN guard, sample grids, segmentation score), and
  ``load_spade_generator`` for sampling from its checkpoints.
- :mod:`~aras400k.models.spade.figures`: the mask / real / samples grid.
"""

from aras400k.models.spade.discriminator import (
    Conditioning,
    ResidualDownBlock,
    ResidualUpBlock,
    UNetDiscriminator,
    UNetDiscriminatorOutput,
)
from aras400k.models.spade.generator import ImageEncoder, NoiseMode, SPADEGenerator, SPADEResnetBlock, reparameterize
from aras400k.models.spade.losses import (
    VGG19_LAYER_WEIGHTS,
    AdversarialTerms,
    PerceptualLoss,
    SegmenterEncoderFeatures,
    UNetAdversarialLoss,
    VGG19Features,
    class_balancing_weights,
    consistency_loss,
    consistency_weight,
    cutmix_augmentation_loss,
    cutmix_mask,
    cutmix_probability,
    feature_matching_loss,
    is_degenerate_mix,
    kl_divergence,
    labelmix_mask,
    mix,
    n_plus_one_loss,
)
from aras400k.models.spade.module import (
    SPADEGAN,
    MixMode,
    PerceptualNet,
    load_spade_generator,
    spade_generator_from_hparams,
)
from aras400k.models.spade.normalization import SPADE, ParamFreeNorm, one_hot_mask

__all__ = [
    "SPADE",
    "SPADEGAN",
    "VGG19_LAYER_WEIGHTS",
    "AdversarialTerms",
    "Conditioning",
    "ImageEncoder",
    "MixMode",
    "NoiseMode",
    "ParamFreeNorm",
    "PerceptualLoss",
    "PerceptualNet",
    "ResidualDownBlock",
    "ResidualUpBlock",
    "SPADEGenerator",
    "SPADEResnetBlock",
    "SegmenterEncoderFeatures",
    "UNetAdversarialLoss",
    "UNetDiscriminator",
    "UNetDiscriminatorOutput",
    "VGG19Features",
    "class_balancing_weights",
    "consistency_loss",
    "consistency_weight",
    "cutmix_augmentation_loss",
    "cutmix_mask",
    "cutmix_probability",
    "feature_matching_loss",
    "is_degenerate_mix",
    "kl_divergence",
    "labelmix_mask",
    "load_spade_generator",
    "mix",
    "n_plus_one_loss",
    "one_hot_mask",
    "reparameterize",
    "spade_generator_from_hparams",
]
