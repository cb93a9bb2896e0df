"""Architecture-independent GAN training parts: losses, regularisers, ADA, EMA, FID callback.

Both GAN LightningModules (StyleGAN3 and SPADE) compose these, so a user can swap one
without touching a network class.
"""

from aras400k.models.gan.augment import AUGMENT_PIPES, AdaptiveAugment, AugmentParams, AugmentPipe, JointFlipRot90
from aras400k.models.gan.ema import ExponentialMovingAverage, stylegan_ema_kimg
from aras400k.models.gan.fid_callback import FIDSampler, GeneratorFID
from aras400k.models.gan.losses import (
    ADVERSARIAL_LOSSES,
    AdversarialLossName,
    discriminator_hinge_loss,
    discriminator_logistic_loss,
    generator_hinge_loss,
    generator_logistic_loss,
    get_adversarial_loss,
)
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
