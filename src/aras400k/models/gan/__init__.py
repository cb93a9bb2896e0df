"""Architecture-independent GAN training parts: the ``GANModule`` base, losses, regularisers, ADA, EMA.

Both GAN LightningModules (StyleGAN3 and SPADE) derive from :class:`GANModule` and
compose these parts, so a user can swap one without touching a network class.
``GeneratorFID`` and ``FIDSampler`` are re-exported from :mod:`aras400k.callbacks`.
"""

from aras400k.callbacks.fid import FIDSampler, GeneratorFID
from aras400k.models.gan.augment import AUGMENT_PIPES, AdaptiveAugment, AugmentParams, AugmentPipe, JointFlipRot90
from aras400k.models.gan.ema import ExponentialMovingAverage, stylegan_ema_kimg
from aras400k.models.gan.losses import (
    ADVERSARIAL_LOSSES,
    AdversarialLossName,
    discriminator_hinge_loss,
    discriminator_logistic_loss,
    generator_hinge_loss,
    generator_logistic_loss,
    get_adversarial_loss,
)
from aras400k.models.gan.module import GANModule
from aras400k.models.gan.regularizers import (
    LazyOptimizerParams,
    NonFiniteGuard,
    PathLengthRegularizer,
    blur_images,
    blur_sigma,
    guarded_step,
    lazy_optimizer_params,
    r1_penalty,
    style_mixing,
    stylegan_blur_fade_kimg,
)

__all__ = [
    "ADVERSARIAL_LOSSES",
    "AUGMENT_PIPES",
    "AdaptiveAugment",
    "AdversarialLossName",
    "AugmentParams",
    "AugmentPipe",
    "ExponentialMovingAverage",
    "FIDSampler",
    "GANModule",
    "GeneratorFID",
    "JointFlipRot90",
    "LazyOptimizerParams",
    "NonFiniteGuard",
    "PathLengthRegularizer",
    "blur_images",
    "blur_sigma",
    "discriminator_hinge_loss",
    "discriminator_logistic_loss",
    "generator_hinge_loss",
    "generator_logistic_loss",
    "get_adversarial_loss",
    "guarded_step",
    "lazy_optimizer_params",
    "r1_penalty",
    "style_mixing",
    "stylegan_blur_fade_kimg",
    "stylegan_ema_kimg",
]
