"""The U-Net discriminator: a global real/fake verdict and a per-pixel one.

Schönfeld, Schiele and Khoreva, "A U-Net Based Discriminator for Generative Adversarial
Networks" (CVPR 2020, section 3.1): the encoder of a residual (BigGAN-style)
discriminator gives one logit per image; a decoder with skip connections from the
encoder brings the features back to the input resolution and gives one logit per pixel.

The per-pixel head conditions on the mask in one of two ways (``conditioning``):

- ``"unetgan"``: one real/fake logit per pixel; the one-hot mask is concatenated to
  the image at the input and, with ``projection``, added as a per-pixel projection
  term (U-Net GAN's class projection, with the pixel's class as the label).
- ``"oasis"`` (default): N+1 logits per pixel, the N classes plus "fake", from the
  image alone (Schönfeld, Sushko et al., "You Only Need Adversarial Supervision for
  Semantic Image Synthesis", ICLR 2021, section 3.1), trained with the class-balanced
  cross-entropy of :func:`aras400k.models.spade.losses.n_plus_one_loss`.

Why ``oasis`` is the default: the discriminator then *is* a segmenter that must
recognise each real pixel's class and reject every generated pixel, so the generator
must make every region look like its class — what the synthetic data is for (training
segmenters). The mask is never an input, so realism cannot be judged from the mask
alone, and class balancing keeps small classes (built, water) from being ignored.
OASIS reports better FID and mIoU than SPADE's concatenated-mask discriminator, without
a VGG perceptual loss. ``unetgan`` remains for comparison with the paper's setup.

Both modes keep U-Net GAN's global head; with ``projection`` it adds a projection term
(Miyato & Koyama 2018) on the mask's class fractions, so the image-level verdict also
sees whether the image's content fits the composition it was asked for.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from aras400k.errors import check_at_least, check_choice

__all__ = ["Conditioning", "ResidualDownBlock", "ResidualUpBlock", "UNetDiscriminator", "UNetDiscriminatorOutput"]

Conditioning = Literal["unetgan", "oasis"]
_CONDITIONINGS: tuple[str, ...] = get_args(Conditioning)


class UNetDiscriminatorOutput(NamedTuple):
    """What :class:`UNetDiscriminator` returns.

    Attributes:
        global_logits: ``(B,)`` one real/fake logit per image (encoder head).
        pixel_logits: ``(B, 1, H, W)`` real/fake logits (``unetgan``) or
            ``(B, N + 1, H, W)`` class + fake logits (``oasis``; channel ``N`` is "fake").
        features: Every encoder and decoder block's output, in order (for feature matching).
    """

    global_logits: torch.Tensor
    pixel_logits: torch.Tensor
    features: list[torch.Tensor]


class _ResidualBlock(nn.Module):
    """Two spectrally normalised 3x3 convolutions, a 1x1 shortcut convolution when the width changes, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__()
        self.conv_1 = spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv_2 = spectral_norm(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.conv_s = spectral_norm(nn.Conv2d(in_channels, out_channels, 1)) if in_channels != out_channels else None
        self.activation = nn.LeakyReLU(negative_slope)


class ResidualDownBlock(_ResidualBlock):
    """Encoder block: BigGAN's discriminator residual block (Brock et al. 2019, fig. 15b), no batch norm.

    ``act -> conv3x3 -> act -> conv3x3 -> avgpool2`` plus a shortcut (1x1 convolution
    when the width changes, then average pooling). The first block of the network
    skips the leading activation (its input is the image) and pools before its
    shortcut convolution. All convolutions are spectrally normalised.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        preactivation: Apply the activation before the first convolution (all but the first block).
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self, in_channels: int, out_channels: int, preactivation: bool = True, negative_slope: float = 0.2
    ) -> None:
        super().__init__(in_channels, out_channels, negative_slope)
        self.preactivation = preactivation

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Downsampled input, projected to ``out_channels`` when the width changes."""
        if self.conv_s is None:
            return F.avg_pool2d(x, 2)
        if self.preactivation:
            return F.avg_pool2d(self.conv_s(x), 2)
        return self.conv_s(F.avg_pool2d(x, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W) -> (B, out, H/2, W/2)``."""
        h = self.activation(x) if self.preactivation else x
        h = self.conv_2(self.activation(self.conv_1(h)))
        return self.shortcut(x) + F.avg_pool2d(h, 2)


class ResidualUpBlock(_ResidualBlock):
    """Decoder block: ``act -> upsample2 -> conv3x3 -> act -> conv3x3`` plus an upsampled shortcut.

    U-Net GAN's decoder block (BigGAN's generator block without batch norm), with nearest
    upsampling and a 1x1 shortcut convolution when the width changes (as in OASIS).

    Args:
        in_channels: Input channels (the decoder path plus the concatenated skip).
        out_channels: Output channels.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__(in_channels, out_channels, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W) -> (B, out, 2H, 2W)``."""
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        shortcut = up if self.conv_s is None else self.conv_s(up)
        h = self.conv_1(F.interpolate(self.activation(x), scale_factor=2, mode="nearest"))
        return shortcut + self.conv_2(self.activation(h))


class UNetDiscriminator(nn.Module):
    """U-Net discriminator (Schönfeld et al. 2020) for mask-conditioned synthesis.

    Encoder block ``i`` halves the resolution and has
    ``min(max_channels, base_channels * 2**i)`` channels; the bottleneck is at
    ``size / 2**num_downsamplings`` (4 px for 256 px inputs with the default 6, as in
    U-Net GAN and OASIS). The global head sum-pools the activated bottleneck (as
    BigGAN/SN-GAN) into a linear layer. Decoder block ``k`` upsamples the concatenation of
    the previous decoder output and encoder block ``k``'s output; a 1x1 convolution on
    the full-resolution features gives the per-pixel logits. Spectral normalisation
    everywhere, no batch norm; the two ``conditioning`` modes are in the module docstring.

    Args:
        num_classes: Classes of the one-hot mask (``N``).
        in_channels: Image channels.
        conditioning: ``oasis`` or ``unetgan``.
        num_downsamplings: Encoder blocks (each halves the resolution).
        base_channels: Width of the first encoder block and of the last decoder block.
        max_channels: Width cap.
        projection: Add projection terms on the mask: the pooled class fractions in
            the global head (both modes) and, for ``unetgan``, the pixel's class in the
            per-pixel head. Needs the mask in :meth:`forward`.
        negative_slope: LeakyReLU slope.

    Raises:
        ValueError: On an unknown ``conditioning`` or ``num_downsamplings < 1``.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 3,
        conditioning: Conditioning = "oasis",
        num_downsamplings: int = 6,
        base_channels: int = 64,
        max_channels: int = 512,
        projection: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        check_choice("conditioning", conditioning, _CONDITIONINGS)
        check_at_least("num_downsamplings", num_downsamplings, 1)
        self.num_classes = num_classes
        self.conditioning = conditioning
        self.num_downsamplings = num_downsamplings
        self.projection = projection
        self.activation = nn.LeakyReLU(negative_slope)

        enc = [min(max_channels, base_channels * 2**i) for i in range(num_downsamplings)]
        first_in = in_channels + (num_classes if conditioning == "unetgan" else 0)
        self.encoder = nn.ModuleList(
            ResidualDownBlock(first_in if i == 0 else enc[i - 1], enc[i], i > 0, negative_slope)
            for i in range(num_downsamplings)
        )
        # Global head (U-Net GAN's encoder output), with a projection on the class fractions.
        self.global_linear = spectral_norm(nn.Linear(enc[-1], 1))
        self.global_embed = spectral_norm(nn.Linear(num_classes, enc[-1], bias=False)) if projection else None

        # Decoder, from the bottleneck up; block k ends at size / 2**k.
        dec_out = [enc[k - 1] if k >= 1 else base_channels for k in range(num_downsamplings)]
        dec_in = [enc[k] + dec_out[k + 1] if k < num_downsamplings - 1 else enc[k] for k in range(num_downsamplings)]
        self.decoder = nn.ModuleList(
            ResidualUpBlock(dec_in[k], dec_out[k], negative_slope) for k in reversed(range(num_downsamplings))
        )
        pixel_outputs = 1 if conditioning == "unetgan" else num_classes + 1
        self.pixel_head = spectral_norm(nn.Conv2d(base_channels, pixel_outputs, 1))
        self.pixel_embed = (
            spectral_norm(nn.Conv2d(num_classes, base_channels, 1, bias=False))
            if projection and conditioning == "unetgan"
            else None
        )

    @property
    def needs_mask(self) -> bool:
        """Whether :meth:`forward` needs the mask (``unetgan`` input or projection terms)."""
        return self.conditioning == "unetgan" or self.projection

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> UNetDiscriminatorOutput:
        """Judge images, globally and per pixel.

        Args:
            image: ``(B, in_channels, H, W)`` images, sides divisible by ``2**num_downsamplings``.
            mask: ``(B, num_classes, H, W)`` one-hot masks the images should show
                (required when :attr:`needs_mask`).

        Returns:
            Global logits, per-pixel logits and intermediate features.

        Raises:
            ValueError: If the mask is missing when needed, or a size does not fit.
        """
        height, width = image.shape[-2:]
        factor = 2**self.num_downsamplings
        if height % factor or width % factor:
            raise ValueError(f"image size {height}x{width} is not divisible by 2**num_downsamplings = {factor}")
        if mask is None and self.needs_mask:
            raise ValueError(f"conditioning={self.conditioning!r} with projection={self.projection} needs the mask")
        if mask is not None and (mask.shape[1] != self.num_classes or mask.shape[-2:] != image.shape[-2:]):
            raise ValueError(
                f"mask must be (B, {self.num_classes}, {height}, {width}) one-hot, got {tuple(mask.shape)}"
            )

        x = image
        if self.conditioning == "unetgan":
            assert mask is not None
            x = torch.cat([image, mask], dim=1)
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)

        pooled = self.activation(x).sum(dim=(2, 3))  # global sum pooling (SN-GAN, BigGAN)
        global_logits = self.global_linear(pooled)[:, 0]
        if self.global_embed is not None:
            assert mask is not None
            fractions = mask.mean(dim=(2, 3))
            global_logits = global_logits + (self.global_embed(fractions) * pooled).sum(dim=1)

        features = list(skips)
        for k, block in zip(reversed(range(self.num_downsamplings)), self.decoder, strict=True):
            if k < self.num_downsamplings - 1:
                x = torch.cat([skips[k], x], dim=1)
            x = block(x)
            features.append(x)

        h = self.activation(x)
        pixel_logits = self.pixel_head(h)
        if self.pixel_embed is not None:
            assert mask is not None
            pixel_logits = pixel_logits + (self.pixel_embed(mask) * h).sum(dim=1, keepdim=True)
        return UNetDiscriminatorOutput(global_logits, pixel_logits, features)
