"""Losses and regularisers of the SPADE / U-Net GAN: plain functions or small modules, so a subclass swaps one.

- adversarial losses for the global and per-pixel heads, hinge (Lim & Ye 2017; SPADE's)
  or non-saturating logistic (Goodfellow et al. 2014; U-Net GAN's);
- OASIS's class-balanced N+1 cross-entropy for the per-pixel head in ``oasis`` mode;
- CutMix (Yun et al. 2019) of real and fake images with U-Net GAN's consistency loss
  and warm-up, and OASIS's LabelMix;
- feature matching (pix2pixHD), a perceptual loss with a pluggable feature network,
  and the KL term of SPADE's VAE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn

from aras400k.checkpoints import load_checkpoint
from aras400k.errors import check_choice
from aras400k.models.gan.losses import ADVERSARIAL_LOSSES, AdversarialLossName, get_adversarial_loss
from aras400k.models.spade.discriminator import Conditioning, UNetDiscriminatorOutput

if TYPE_CHECKING:
    from aras400k.models.segmentation import SegmentationTask

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG19_LAYER_WEIGHTS",
    "AdversarialTerms",
    "PerceptualLoss",
    "SegmenterEncoderFeatures",
    "UNetAdversarialLoss",
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
    "mix",
    "n_plus_one_loss",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SPADE's / pix2pixHD's weights of relu1_1 ... relu5_1 in the VGG perceptual loss.
VGG19_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


# -- OASIS N+1 loss ------------------------------------------------------------------------


def class_balancing_weights(mask: torch.Tensor) -> torch.Tensor:
    """OASIS's per-class weights: inverse class frequency in the batch (Schönfeld, Sushko et al. 2021, eq. 2).

    ``w_c = P / (K * count_c)`` for the ``K`` classes present in the batch, where
    ``P`` is the number of pixels in the batch (ignored pixels included, as in OASIS)
    and ``count_c`` the pixels of class ``c``; absent classes get 0, so the mean
    weighted loss is the average over present classes of each class's mean loss.

    Args:
        mask: ``(B, N, H, W)`` one-hot masks (ignored pixels all zero).

    Returns:
        ``(N,)`` weights.
    """
    counts = mask.sum(dim=(0, 2, 3))
    present = (counts > 0).sum().clamp(min=1)
    pixels = mask.shape[0] * mask.shape[2] * mask.shape[3]
    weights = pixels / (present * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def n_plus_one_loss(
    logits: torch.Tensor, mask: torch.Tensor, target_is_real: bool, class_balancing: bool = True
) -> torch.Tensor:
    """OASIS's (N+1)-class cross-entropy for a segmenting discriminator (Schönfeld, Sushko et al. 2021, eq. 2-3).

    Real pixels (and, for the generator, generated ones) should be classified as their
    class; for the discriminator generated pixels should be "fake", channel ``N``. Class
    targets take :func:`class_balancing_weights` (ignored pixels weight 0); the fake
    target is unweighted and covers every pixel. Averaged over all pixels.

    Args:
        logits: ``(B, N + 1, H, W)`` discriminator output.
        mask: ``(B, N, H, W)`` one-hot masks.
        target_is_real: ``True`` for "its class" (D on real, G on fake), ``False`` for
            "fake" (D on fake).
        class_balancing: Weight classes by inverse frequency (OASIS's default).

    Returns:
        Scalar loss.

    Raises:
        ValueError: If ``logits`` does not have ``N + 1`` channels.
    """
    num_classes = mask.shape[1]
    if logits.shape[1] != num_classes + 1 or logits.shape[-2:] != mask.shape[-2:]:
        raise ValueError(
            f"logits must be (B, {num_classes + 1}, H, W) for a {num_classes}-class mask of size "
            f"{tuple(mask.shape[-2:])}, got {tuple(logits.shape)}"
        )
    if not target_is_real:
        target = torch.full_like(mask[:, 0], num_classes, dtype=torch.long)
        return F.cross_entropy(logits, target)
    labelled = mask.sum(dim=1) > 0
    target = mask.argmax(dim=1)
    loss = F.cross_entropy(logits, target, reduction="none") * labelled
    return (loss * class_balancing_weights(mask)[target] if class_balancing else loss).mean()


class AdversarialTerms(NamedTuple):
    """Adversarial loss of the two U-Net discriminator heads.

    Attributes:
        image: Loss of the global (encoder) head.
        pixel: Loss of the per-pixel (decoder) head.
    """

    image: torch.Tensor
    pixel: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """``image + pixel``."""
        return self.image + self.pixel


class UNetAdversarialLoss(nn.Module):
    """Adversarial losses of both U-Net discriminator heads, for either conditioning mode.

    The global head uses ``kind`` (the shared losses of :mod:`aras400k.models.gan.losses`),
    as does the per-pixel head in ``unetgan`` mode (U-Net GAN's decoder loss); in ``oasis``
    mode the per-pixel head uses the class-balanced N+1 cross-entropy. U-Net GAN sums
    the two heads' losses; ``global_weight`` and ``pixel_weight`` scale them.

    Args:
        kind: ``hinge`` (SPADE's) or ``logistic`` (non-saturating, U-Net GAN's); global
            head, and per-pixel head for ``unetgan``.
        conditioning: The discriminator's mode, ``oasis`` or ``unetgan``.
        global_weight: Weight of the global head's loss.
        pixel_weight: Weight of the per-pixel head's loss.
        class_balancing: Class-balanced weights in the N+1 loss (``oasis``).

    Raises:
        ValueError: On an unknown ``kind`` or ``conditioning``.
    """

    def __init__(
        self,
        kind: AdversarialLossName = "hinge",
        conditioning: Conditioning = "oasis",
        global_weight: float = 1.0,
        pixel_weight: float = 1.0,
        class_balancing: bool = True,
    ) -> None:
        super().__init__()
        self.g_loss, self.d_loss = get_adversarial_loss(kind)
        check_choice("conditioning", conditioning, get_args(Conditioning))
        self.kind = kind
        self.conditioning = conditioning
        self.global_weight = global_weight
        self.pixel_weight = pixel_weight
        self.class_balancing = class_balancing

    def discriminator_loss(
        self, real: UNetDiscriminatorOutput, fake: UNetDiscriminatorOutput, mask: torch.Tensor
    ) -> AdversarialTerms:
        """Discriminator side: real images judged real (their class), generated ones fake.

        Args:
            real: Discriminator output on real images.
            fake: Discriminator output on generated images (detached from the generator).
            mask: ``(B, N, H, W)`` one-hot masks of both.

        Returns:
            The two heads' weighted losses.
        """
        image = self.d_loss(real.global_logits, fake.global_logits)
        if self.conditioning == "oasis":
            real_pixel = n_plus_one_loss(real.pixel_logits, mask, True, self.class_balancing)
            pixel = real_pixel + n_plus_one_loss(fake.pixel_logits, mask, False)
        else:
            pixel = self.d_loss(real.pixel_logits, fake.pixel_logits)
        return AdversarialTerms(self.global_weight * image, self.pixel_weight * pixel)

    def generator_loss(self, fake: UNetDiscriminatorOutput, mask: torch.Tensor) -> AdversarialTerms:
        """Generator side: generated images should be judged real (their class); see :meth:`discriminator_loss`."""
        image = self.g_loss(fake.global_logits)
        if self.conditioning == "oasis":
            pixel = n_plus_one_loss(fake.pixel_logits, mask, True, self.class_balancing)
        else:
            pixel = self.g_loss(fake.pixel_logits)
        return AdversarialTerms(self.global_weight * image, self.pixel_weight * pixel)


# -- CutMix, LabelMix and the consistency regulariser ---------------------------------------


def mix(real: torch.Tensor, fake: torch.Tensor, mix_mask: torch.Tensor) -> torch.Tensor:
    """``mix(x, G(z), M) = M * x + (1 - M) * G(z)`` (U-Net GAN, eq. 5): ``M = 1`` takes the real pixel.

    ``real`` and ``fake`` are ``(B, C, H, W)`` images (or discriminator outputs on them),
    ``mix_mask`` a ``(B, 1, H, W)`` binary mask.
    """
    return mix_mask * real + (1 - mix_mask) * fake


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | None) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def cutmix_mask(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random CutMix masks as U-Net GAN samples them (Yun et al. 2019; Schönfeld et al. 2020, sec. 3.2).

    Per image: ``lam ~ Beta(1, 1)`` (uniform), a box of sides ``sqrt(1 - lam)`` times
    the image's, centred on a uniform pixel and clipped to the image; ``M = 0`` inside
    the box and 1 outside, swapped with probability 1/2. Unlike the original, the box's
    half-sides are kept within ``[1, (side - 1) // 2]`` so that every mask holds both
    real and fake pixels (the consistency loss is void otherwise).

    Args:
        batch: Number of masks.
        height: Mask height (at least 3).
        width: Mask width (at least 3).
        generator: Optional random generator.
        device: Device of the masks.

    Returns:
        ``(batch, 1, height, width)`` float masks of 0 and 1.

    Raises:
        ValueError: If a side is smaller than 3 pixels.
    """
    if height < 3 or width < 3:
        raise ValueError(f"CutMix needs masks of at least 3x3 pixels, got {height}x{width}")
    device = torch.device(device) if device is not None else None
    u = _uniform((batch, 4), generator, device)
    ratio = torch.sqrt(1 - u[:, 0])  # lam = u[:, 0] ~ Beta(1, 1)
    centre_y = (u[:, 1] * height).long().clamp(max=height - 1)
    centre_x = (u[:, 2] * width).long().clamp(max=width - 1)
    half_h = (ratio * height).long().div(2, rounding_mode="floor").clamp(1, (height - 1) // 2)
    half_w = (ratio * width).long().div(2, rounding_mode="floor").clamp(1, (width - 1) // 2)
    ys = torch.arange(height, device=device)[None, :, None]
    xs = torch.arange(width, device=device)[None, None, :]
    inside = (
        (ys >= (centre_y - half_h)[:, None, None])
        & (ys < (centre_y + half_h)[:, None, None])
        & (xs >= (centre_x - half_w)[:, None, None])
        & (xs < (centre_x + half_w)[:, None, None])
    )
    swap = (u[:, 3] < 0.5)[:, None, None]
    return (inside == swap).float().unsqueeze(1)


def is_degenerate_mix(mix_mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` booleans: which ``(B, 1, H, W)`` binary masks select all or none of the pixels (nothing to mix)."""
    flat = mix_mask.flatten(1)
    return flat.amin(dim=1) == flat.amax(dim=1)


def labelmix_mask(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """LabelMix masks: real pixels for a random subset of each image's classes (OASIS, sec. 3.2).

    Every class of every image is kept real with probability 1/2 (OASIS draws one coin
    per class for the whole batch; per image mixes more variedly). Ignored pixels are
    taken from the fake image. An image whose draw selects all or none of its pixels
    (always so for a single-class mask) falls back to a :func:`cutmix_mask`.

    Args:
        mask: ``(B, N, H, W)`` one-hot masks.
        generator: Optional random generator.

    Returns:
        ``(B, 1, H, W)`` float masks of 0 and 1.
    """
    batch, num_classes, height, width = mask.shape
    coins = (_uniform((batch, num_classes), generator, mask.device) < 0.5).to(mask.dtype)
    selected = (mask * coins[:, :, None, None]).sum(dim=1, keepdim=True).clamp(max=1)
    degenerate = is_degenerate_mix(selected)
    if degenerate.any():
        fallback = cutmix_mask(batch, height, width, generator=generator, device=mask.device).to(mask.dtype)
        selected = torch.where(degenerate[:, None, None, None], fallback, selected)
    return selected


def consistency_loss(
    mixed_logits: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor, mix_mask: torch.Tensor
) -> torch.Tensor:
    """U-Net GAN's CutMix consistency regulariser (Schönfeld et al. 2020, eq. 6); OASIS's LabelMix loss (eq. 4).

    ``|| D_dec(mix(x, G(z), M)) - mix(D_dec(x), D_dec(G(z)), M) ||^2`` (mean squared):
    zero for a decoder that judges each pixel independently; it penalises per-pixel
    verdicts that depend on the context.

    Args:
        mixed_logits: ``(B, C, H, W)`` decoder output on the mixed images.
        real_logits: Decoder output on the real images, same shape.
        fake_logits: Decoder output on the generated images, same shape.
        mix_mask: ``(B, 1, H, W)`` the mask that mixed the images.

    Returns:
        Scalar loss.
    """
    return F.mse_loss(mixed_logits, mix(real_logits, fake_logits, mix_mask))


def cutmix_augmentation_loss(
    mixed_pixel_logits: torch.Tensor,
    mixed_global_logits: torch.Tensor,
    mix_mask: torch.Tensor,
    kind: AdversarialLossName = "logistic",
) -> torch.Tensor:
    """U-Net GAN's CutMix augmentation loss for single-logit heads (``unetgan`` mode; sec. 3.2).

    The decoder should call the mixed image's real pixels real and its fake pixels
    fake (target ``M`` per pixel); the encoder should call the mixed image fake.

    Args:
        mixed_pixel_logits: ``(B, 1, H, W)`` decoder output on the mixed images.
        mixed_global_logits: ``(B,)`` encoder output on them.
        mix_mask: ``(B, 1, H, W)`` the mixing mask.
        kind: ``hinge`` or ``logistic`` (U-Net GAN's).

    Returns:
        Scalar loss.

    Raises:
        ValueError: On an unknown ``kind`` or a multi-channel pixel output.
    """
    check_choice("adversarial loss", kind, ADVERSARIAL_LOSSES)
    if mixed_pixel_logits.shape[1] != 1:
        raise ValueError("the CutMix augmentation loss needs one logit per pixel (conditioning='unetgan')")
    real_term, fake_term = _PER_LOGIT_TERMS[kind]
    pixel_term = mix(real_term(mixed_pixel_logits), fake_term(mixed_pixel_logits), mix_mask)
    return pixel_term.mean() + fake_term(mixed_global_logits).mean()


#: Per-logit terms "judged real" and "judged fake" of each adversarial loss, before averaging.
_PER_LOGIT_TERMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "hinge": (lambda x: F.relu(1 - x), lambda x: F.relu(1 + x)),
    "logistic": (lambda x: F.softplus(-x), F.softplus),
}


def consistency_weight(step: int, warmup_steps: int, max_weight: float = 1.0) -> float:
    """Warm-up of the CutMix losses: a linear ramp from 0 to ``max_weight`` (U-Net GAN, sec. 3.2).

    U-Net GAN multiplies the CutMix losses by ``min(1, epoch / warmup_epochs)``: the
    discriminator must first learn to tell real from fake before its per-pixel outputs
    can be asked to be consistent.

    Args:
        step: Current training step (or epoch).
        warmup_steps: Steps until the full weight (``<= 0``: no warm-up).
        max_weight: Weight after the warm-up.

    Returns:
        The weight at ``step``.
    """
    if warmup_steps <= 0:
        return max_weight
    return max_weight * min(1.0, max(0, step) / warmup_steps)


def cutmix_probability(step: int, warmup_steps: int, max_probability: float = 0.5) -> float:
    """Probability of mixing a batch, the same linear ramp up to ``max_probability`` (U-Net GAN, sec. 3.2).

    The paper's "full batch" variant applies CutMix to a batch with probability
    ``r_mix``, raised linearly from 0 to 0.5 over the first epochs; arguments and
    result as for :func:`consistency_weight`.
    """
    return consistency_weight(step, warmup_steps, max_probability)


# -- feature matching, KL, perceptual -------------------------------------------------------


def feature_matching_loss(fake_features: Sequence[torch.Tensor], real_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD, Wang et al. 2018, eq. 4; used by SPADE).

    Mean over layers of the L1 distance between the features on generated and on real
    images; the real features are targets (detached).

    Args:
        fake_features: Features on generated images (e.g. ``UNetDiscriminatorOutput.features``).
        real_features: Features on the real images, same shapes.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the lists differ in length or are empty.
    """
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(f"need as many fake as real feature maps, got {len(fake_features)} and {len(real_features)}")
    return torch.stack([F.l1_loss(f, r.detach()) for f, r in zip(fake_features, real_features, strict=True)]).mean()


def kl_divergence(
    mu: torch.Tensor, logvar: torch.Tensor, reduction: Literal["sum", "batchmean", "mean"] = "sum"
) -> torch.Tensor:
    """KL divergence of ``N(mu, exp(logvar))`` from ``N(0, I)`` (Kingma & Welling 2014, app. B).

    ``-1/2 * sum(1 + logvar - mu^2 - exp(logvar))``. SPADE sums over batch and latent
    dimensions (``reduction="sum"``) and weights the term by 0.05.

    Args:
        mu: ``(B, z_dim)`` means.
        logvar: Log-variances, same shape.
        reduction: ``sum`` (SPADE), ``batchmean`` (sum / B) or ``mean`` (over all elements).

    Returns:
        Scalar KL divergence.

    Raises:
        ValueError: On an unknown ``reduction``.
    """
    check_choice("reduction", reduction, ("sum", "batchmean", "mean"))
    terms = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "mean":
        return terms.mean()
    return terms.sum() / (mu.shape[0] if reduction == "batchmean" else 1)


class _ImageFeatures(nn.Module):
    """Maps images from ``value_range`` to ``[0, 1]`` and normalises them with ``mean`` / ``std``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], value_range: tuple[float, float] = (-1.0, 1.0)
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need the same length and a positive std, got {mean} and {std}")
        low, high = value_range
        if high <= low:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        self.value_range = (float(low), float(high))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        return ((images - low) / (high - low) - self.mean) / self.std


class VGG19Features(_ImageFeatures):
    """ImageNet VGG19 activations relu1_1 ... relu5_1 (Simonyan & Zisserman 2015), from a local weights file.

    The feature network of SPADE's and OASIS's perceptual loss (use it with
    :data:`VGG19_LAYER_WEIGHTS`), from a local file only: nothing is downloaded.

    Args:
        weights_path: A torchvision ``vgg19`` ``state_dict`` (e.g. ``vgg19-dcbb9e9d.pth``),
            or one holding only the ``features.*`` keys.
        mean: Normalisation mean in ``[0, 1]`` units (ImageNet's).
        std: Normalisation std (ImageNet's).
        value_range: Range of the input images (``(-1, 1)``: the generator's tanh output).

    Raises:
        FileNotFoundError: If ``weights_path`` does not exist.
        ValueError: If the file does not hold VGG19 weights.
    """

    #: Layer indices of ``torchvision.models.vgg19().features`` that end each slice (relu1_1 ... relu5_1).
    SLICE_ENDS = (2, 7, 12, 21, 30)

    def __init__(
        self,
        weights_path: str | Path,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__(mean, std, value_range)
        from torchvision.models import vgg19

        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGG19 weights file {path} does not exist; give the path of a local torchvision vgg19 "
                "state_dict (e.g. vgg19-dcbb9e9d.pth) — aras400k never downloads weights"
            )
        state = load_checkpoint(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        with torch.device("meta"):  # no random init of 143M parameters that are overwritten anyway
            network = vgg19(weights=None)
        try:
            if any(key.startswith("classifier.") for key in state):
                network.load_state_dict(state, assign=True)
            else:
                features = {k.removeprefix("features."): v for k, v in state.items()}
                network.features.load_state_dict(features, assign=True)
        except (RuntimeError, AttributeError) as error:
            raise ValueError(f"{path} does not hold torchvision VGG19 weights: {error}") from error
        layers = list(network.features.children())
        starts = (0, *self.SLICE_ENDS[:-1])
        self.slices = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in zip(starts, self.SLICE_ENDS, strict=True))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Five feature maps of a ``(B, 3, H, W)`` image batch in ``value_range``."""
        return list(accumulate(self.slices, lambda x, block: block(x), initial=self.normalize(images)))[1:]


class SegmenterEncoderFeatures(_ImageFeatures):
    """The encoder of a trained :class:`~aras400k.models.segmentation.SegmentationTask` as a feature network.

    A domain-specific alternative to ImageNet VGG: its features are the ones the
    synthetic data must get right. Images are normalised with the ``mean`` / ``std``
    the task was trained with; the input itself and empty (zero-channel) stages that
    smp encoders return are skipped.

    Args:
        task: A trained segmentation task (its ``model.encoder`` is used).
        mean: Normalisation mean the task was trained with (``[0, 1]`` units).
        std: Its normalisation std.
        value_range: Range of the input images.
        stages: Indices of the encoder stages to use (after skipping the input and empty
            stages); all when ``None``.
    """

    def __init__(
        self,
        task: SegmentationTask,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        value_range: tuple[float, float] = (-1.0, 1.0),
        stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__(mean, std, value_range)
        self.encoder = task.model.encoder
        self.stages = tuple(stages) if stages is not None else None

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder feature maps of a ``(B, C, H, W)`` image batch in ``value_range``."""
        features = [f for f in self.encoder(self.normalize(images))[1:] if f.shape[1] > 0]
        if self.stages is not None:
            features = [features[i] for i in self.stages]
        return features


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between feature maps of a frozen network (Johnson et al. 2016; SPADE's VGG loss).

    ``sum_i w_i * mean|phi_i(fake) - phi_i(real)|`` over a frozen feature network
    (no gradients, kept in eval mode); gradients flow to ``fake``.

    Args:
        feature_net: Module mapping images to a list of feature maps, e.g.
            :class:`VGG19Features` or :class:`SegmenterEncoderFeatures`.
        layer_weights: One weight per feature map (all 1 when ``None``;
            :data:`VGG19_LAYER_WEIGHTS` with VGG19, as SPADE).
    """

    def __init__(self, feature_net: nn.Module, layer_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.feature_net = feature_net.eval().requires_grad_(False)
        self.layer_weights = tuple(layer_weights) if layer_weights is not None else None

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Switch mode, keeping the feature network in eval mode (frozen batch-norm statistics)."""
        super().train(mode)
        self.feature_net.eval()
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Perceptual distance of ``(B, C, H, W)`` generated images to real ones (the targets; no gradient).

        Raises:
            ValueError: If the number of layer weights differs from the number of feature maps.
        """
        fake_features = self.feature_net(fake)
        with torch.no_grad():
            real_features = self.feature_net(real)
        weights = self.layer_weights if self.layer_weights is not None else (1.0,) * len(fake_features)
        if len(weights) != len(fake_features):
            raise ValueError(f"{len(weights)} layer weights for {len(fake_features)} feature maps")
        terms = [w * F.l1_loss(f, r) for w, f, r in zip(weights, fake_features, real_features, strict=True)]
        return torch.stack(terms).sum()
