"""The SPADE generator with OASIS-style 3D noise and an optional VAE image encoder.

Architecture after Park et al., "Semantic Image Synthesis with Spatially-Adaptive
Normalization" (CVPR 2019, section 3 and appendix A): a stack of ``SPADEResnetBlock`` with
nearest-neighbour upsampling between them, then LeakyReLU, a 3x3 convolution and tanh.
As in OASIS (Schönfeld, Sushko et al., "You Only Need Adversarial Supervision for
Semantic Image Synthesis", ICLR 2021, section 3.3) the first block's input is the
downsampled conditioning map, and multi-modality comes from "3D noise": a latent
vector concatenated, channel-wise, to the one-hot mask that every SPADE layer sees.

The generator is fully convolutional: the output has the mask's size; the first block
runs at ``size / 2**num_upsamplings`` (the "start size"), the last at full resolution.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from aras400k.errors import check_choice
from aras400k.models.spade.normalization import SPADE, ParamFreeNorm

__all__ = ["ImageEncoder", "NoiseMode", "SPADEGenerator", "SPADEResnetBlock", "reparameterize"]

NoiseMode = Literal["none", "global", "per_class"]


def _maybe_spectral(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


class SPADEResnetBlock(nn.Module):
    """Residual block whose normalisations are SPADE layers (Park et al. 2019, fig. 4).

    ``out = shortcut(x) + conv_1(act(SPADE_1(conv_0(act(SPADE_0(x))))))``; the shortcut is
    SPADE then a bias-free 1x1 convolution when the width changes, else the identity.
    The middle width is ``min(in_channels, out_channels)``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        label_channels: Channels of the conditioning map given to every SPADE layer.
        hidden_channels: Width of the SPADE embedding networks.
        kernel_size: Kernel size inside the SPADE layers.
        norm: Their parameter-free normalisation (``instance`` or ``batch``).
        spectral: Spectral normalisation on the block's convolutions (the paper's default).
        negative_slope: LeakyReLU slope (0.2 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        label_channels: int,
        hidden_channels: int = 128,
        kernel_size: int = 3,
        norm: ParamFreeNorm = "instance",
        spectral: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        middle = min(in_channels, out_channels)
        self.learned_shortcut = in_channels != out_channels
        spade = partial(SPADE, hidden_channels=hidden_channels, kernel_size=kernel_size, norm=norm)
        self.norm_0 = spade(in_channels, label_channels)
        self.conv_0 = _maybe_spectral(nn.Conv2d(in_channels, middle, 3, padding=1), spectral)
        self.norm_1 = spade(middle, label_channels)
        self.conv_1 = _maybe_spectral(nn.Conv2d(middle, out_channels, 3, padding=1), spectral)
        if self.learned_shortcut:
            self.norm_s = spade(in_channels, label_channels)
            self.conv_s = _maybe_spectral(nn.Conv2d(in_channels, out_channels, 1, bias=False), spectral)
        self.activation = nn.LeakyReLU(negative_slope)

    def shortcut(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """Identity, or SPADE + 1x1 convolution when the channel count changes."""
        if self.learned_shortcut:
            return self.conv_s(self.norm_s(x, segmap))
        return x

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, h, w)`` features to ``(B, out_channels, h, w)``, conditioned on ``segmap``."""
        dx = self.conv_0(self.activation(self.norm_0(x, segmap)))
        dx = self.conv_1(self.activation(self.norm_1(dx, segmap)))
        return self.shortcut(x, segmap) + dx


class ImageEncoder(nn.Module):
    """SPADE's VAE image encoder: image -> ``(mu, logvar)`` of a style vector (Park et al. 2019, sec. 4, app. B).

    Stride-2 3x3 convolutions with spectral and instance normalisation and LeakyReLU,
    then two linear layers on the flattened map. The original resizes every image to
    256 px; here the map is average-pooled to ``pooled_size``, so any size large enough
    for ``num_downsamplings`` works.

    Args:
        in_channels: Image channels.
        z_dim: Size of the latent vector.
        base_channels: Width of the first convolution (doubles per layer up to ``max_channels``).
        max_channels: Width cap.
        num_downsamplings: Number of stride-2 convolutions (6 in SPADE at 256 px).
        pooled_size: Side of the pooled map fed to the linear layers (4 in SPADE).
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        in_channels: int = 3,
        z_dim: int = 64,
        base_channels: int = 64,
        max_channels: int = 512,
        num_downsamplings: int = 6,
        pooled_size: int = 4,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_downsamplings = num_downsamplings
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(num_downsamplings):
            out = min(max_channels, base_channels * 2**i)
            layers += [
                spectral_norm(nn.Conv2d(channels, out, 3, stride=2, padding=1)),
                nn.InstanceNorm2d(out, affine=False),
                nn.LeakyReLU(negative_slope),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.fc_mu = nn.Linear(channels * pooled_size**2, z_dim)
        self.fc_var = nn.Linear(channels * pooled_size**2, z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(B, z_dim)``, of ``(B, in_channels, H, W)`` images in ``[-1, 1]``.

        Raises:
            ValueError: If the image is too small for ``num_downsamplings`` (instance
                normalisation needs at least 2x2 pixels at the last layer).
        """
        smallest = min(image.shape[-2:]) // 2 ** (self.num_downsamplings - 1)
        if smallest < 2:
            raise ValueError(
                f"images of {tuple(image.shape[-2:])} px are too small for {self.num_downsamplings} downsamplings; "
                "use a smaller num_downsamplings"
            )
        h = self.pool(self.body(image)).flatten(1)
        return self.fc_mu(h), self.fc_var(h)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws on ``like``'s device and dtype; a CPU generator also seeds CUDA draws."""
    source = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=source).to(like.device, like.dtype)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``z = mu + eps * exp(logvar / 2)`` with ``eps ~ N(0, I)`` (Kingma & Welling 2014, eq. 10).

    Gradients flow to ``mu`` and ``logvar`` (same shape); ``generator`` makes the draw reproducible.
    """
    eps = _normal(tuple(mu.shape), generator, mu)
    return mu + eps * torch.exp(0.5 * logvar)


class SPADEGenerator(nn.Module):
    """Mask-to-image generator: SPADE residual blocks from the start size up to the full resolution.

    Block ``i`` runs at ``size / 2**(num_upsamplings - i)`` with
    ``min(max_channels, base_channels * 2**(num_upsamplings - i))`` output channels (the
    defaults give OASIS's 1024-1024-512-256-128-64 blocks at 8...256 px). The first
    block's input is a 3x3 convolution of the conditioning map resized to the start size.

    Diversity (``noise``), after OASIS's 3D noise (Schönfeld, Sushko et al. 2021, sec. 3.3):

    - ``none``: deterministic, the mask alone decides the image (plain SPADE).
    - ``global``: one ``z`` of ``z_dim`` per image, broadcast over all pixels and
      concatenated to the one-hot mask (OASIS's default). The default here: a satellite
      patch is one acquisition (one season, one illumination), and a single latent
      keeps those global properties coherent across class regions.
    - ``per_class``: one ``z`` per image and class, painted into that class's pixels, so
      one class's appearance can be re-drawn while the others (mostly) keep theirs.
      Ignored pixels receive zero noise.

    With ``use_encoder`` the ``global`` vector may come from :class:`ImageEncoder` (SPADE's
    VAE): ``z = reparameterize(*G.encode(image))`` reproduces the style of an image.

    Args:
        num_classes: Classes of the one-hot mask.
        out_channels: Image channels.
        num_upsamplings: Upsamplings between the first and the last block (5: 8 -> 256 px;
            see :meth:`upsamplings_for`).
        base_channels: Channels of the last (full-resolution) block (SPADE's ``ngf``, 64).
        max_channels: Channel cap of the low-resolution blocks (16 * 64 in SPADE/OASIS).
        noise: ``none``, ``global`` or ``per_class`` (see above).
        z_dim: Noise / style vector size (64 in OASIS).
        spade_hidden: Width of each SPADE embedding network (128 in SPADE).
        spade_kernel_size: Kernel size inside SPADE (3 in SPADE).
        norm: Parameter-free normalisation inside SPADE: ``instance`` (default) or ``batch``.
        spectral: Spectral normalisation on the residual blocks' convolutions.
        use_encoder: Build the VAE image encoder (needs ``noise="global"``).
        encoder_downsamplings: Stride-2 layers of the image encoder.

    Raises:
        ValueError: On an unknown ``noise``, ``use_encoder`` without global noise, or
            non-positive sizes.
    """

    def __init__(
        self,
        num_classes: int = 7,
        out_channels: int = 3,
        num_upsamplings: int = 5,
        base_channels: int = 64,
        max_channels: int = 1024,
        noise: NoiseMode = "global",
        z_dim: int = 64,
        spade_hidden: int = 128,
        spade_kernel_size: int = 3,
        norm: ParamFreeNorm = "instance",
        spectral: bool = True,
        use_encoder: bool = False,
        encoder_downsamplings: int = 6,
    ) -> None:
        super().__init__()
        check_choice("noise", noise, get_args(NoiseMode))
        if use_encoder and noise != "global":
            raise ValueError(
                f"use_encoder needs noise='global' (the encoder gives one vector per image), got {noise!r}"
            )
        if num_upsamplings < 0 or base_channels < 1 or max_channels < 1 or z_dim < 1:
            raise ValueError("num_upsamplings must be >= 0 and base_channels, max_channels, z_dim >= 1")
        self.num_classes = num_classes
        self.num_upsamplings = num_upsamplings
        self.noise = noise
        self.z_dim = z_dim
        label_channels = num_classes + (z_dim if noise != "none" else 0)
        #: Output channels of each block, from the start size to the full resolution.
        self.channels = [
            min(max_channels, base_channels * 2 ** (num_upsamplings - i)) for i in range(num_upsamplings + 1)
        ]
        self.fc = nn.Conv2d(label_channels, self.channels[0], 3, padding=1)
        ins = [self.channels[0], *self.channels[:-1]]
        self.blocks = nn.ModuleList(
            SPADEResnetBlock(i, o, label_channels, spade_hidden, spade_kernel_size, norm, spectral)
            for i, o in zip(ins, self.channels, strict=True)
        )
        self.conv_img = nn.Conv2d(self.channels[-1], out_channels, 3, padding=1)
        self.activation = nn.LeakyReLU(0.2)
        self.encoder = (
            ImageEncoder(out_channels, z_dim, num_downsamplings=encoder_downsamplings) if use_encoder else None
        )

    @staticmethod
    def upsamplings_for(image_size: int, start_size: int) -> int:
        """Number of upsamplings, ``log2(image_size / start_size)``, from the first block's side to the output's.

        Raises:
            ValueError: If the ratio is not a power of two.
        """
        ratio, remainder = divmod(image_size, start_size)
        if remainder or ratio < 1 or ratio & (ratio - 1):
            raise ValueError(f"image_size / start_size must be a power of two, got {image_size} / {start_size}")
        return ratio.bit_length() - 1

    def sample_noise(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Draw the noise for a batch of masks.

        Args:
            mask: ``(B, num_classes, H, W)`` one-hot masks (for batch size and device).
            generator: Optional random generator; a CPU one gives the same noise on any device.

        Returns:
            ``(B, z_dim)`` (``global``), ``(B, num_classes, z_dim)`` (``per_class``) or ``None``.
        """
        if self.noise == "none":
            return None
        return _normal(self._noise_shape(mask.shape[0]), generator, mask)

    def _noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.z_dim) if self.noise == "global" else (batch, self.num_classes, self.z_dim)

    def noise_map(self, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(B, z_dim, H, W)`` noise channels: ``z`` (see :meth:`sample_noise`) broadcast or painted by class.

        Raises:
            ValueError: If ``z`` has the wrong shape for the noise mode.
        """
        batch, _, height, width = mask.shape
        if z.shape != self._noise_shape(batch):
            kind, layout = ("global", "z_dim") if self.noise == "global" else ("per-class", "num_classes, z_dim")
            raise ValueError(f"{kind} noise must be (B, {layout}) = {self._noise_shape(batch)}, got {tuple(z.shape)}")
        if self.noise == "global":
            return z[:, :, None, None].expand(batch, self.z_dim, height, width)
        return torch.einsum("bkz,bkhw->bzhw", z, mask)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Style ``(mu, logvar)`` of images (see :class:`ImageEncoder`); sample with :func:`reparameterize`.

        Raises:
            RuntimeError: If the generator was built without an encoder.
        """
        if self.encoder is None:
            raise RuntimeError("this SPADEGenerator has no image encoder; build it with use_encoder=True")
        return self.encoder(image)

    def forward(
        self, mask: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Generate images for one-hot masks.

        Args:
            mask: ``(B, num_classes, H, W)`` one-hot masks (see
                :func:`~aras400k.models.spade.normalization.one_hot_mask`); ``H`` and
                ``W`` must be divisible by ``2**num_upsamplings``.
            z: Noise (see :meth:`sample_noise`), drawn when ``None``; ignored for ``noise="none"``.
            generator: Random generator for the drawn noise.

        Returns:
            ``(B, out_channels, H, W)`` images in ``[-1, 1]``.

        Raises:
            ValueError: If the mask has the wrong number of channels or a size not
                divisible by ``2**num_upsamplings``.
        """
        if mask.ndim != 4 or mask.shape[1] != self.num_classes:
            raise ValueError(f"mask must be one-hot (B, {self.num_classes}, H, W), got {tuple(mask.shape)}")
        height, width = mask.shape[-2:]
        factor = 2**self.num_upsamplings
        if height % factor or width % factor:
            raise ValueError(
                f"mask size {height}x{width} is not divisible by 2**num_upsamplings = {factor}; "
                "crop/pad the mask or change num_upsamplings"
            )
        segmap = mask
        if self.noise != "none":
            if z is None:
                z = self.sample_noise(mask, generator)
            assert z is not None
            segmap = torch.cat([mask, self.noise_map(mask, z.to(mask.dtype))], dim=1)
        x = self.fc(F.interpolate(segmap, size=(height // factor, width // factor), mode="nearest"))
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            # Resize the conditioning once per scale; the block's three SPADE layers share it.
            cond = segmap if x.shape[-2:] == segmap.shape[-2:] else F.interpolate(segmap, size=x.shape[-2:])
            x = block(x, cond)
        return torch.tanh(self.conv_img(self.activation(x)))
