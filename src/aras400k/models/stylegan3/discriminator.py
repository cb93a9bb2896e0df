"""The StyleGAN2 residual discriminator, used by all three configs of the StyleGAN3 paper.

``b{res}`` blocks halve the resolution from the input down to 8x8: the first converts
the image with ``fromrgb``, each runs two 3x3 convolutions (the second after an FIR
blur, strided) plus a 1x1 residual ``skip`` path, both scaled by ``sqrt(1/2)``
(StyleGAN2 Sec. 4.1, Fig. 7c). The ``b4`` epilogue appends the minibatch standard
deviation (ProGAN Sec. 3), then a 3x3 convolution, a fully-connected layer and the
output layer. Names and arguments follow the official code: only its default
``architecture="resnet"`` is implemented (others raise ``ValueError``),
``conv_clamp`` clamps activations to ``[-conv_clamp, conv_clamp]`` (``None``: off),
and the fp16 arguments are accepted and ignored (computation runs in the input's dtype).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from aras400k.models.stylegan3.filters import setup_filter
from aras400k.models.stylegan3.layers import Activation, Conv2dLayer, FullyConnectedLayer
from aras400k.models.stylegan3.mapping import MappingNetwork

__all__ = [
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "MinibatchStdLayer",
    "build_discriminator",
]


def _require_resnet(architecture: str) -> None:
    """Raise a one-line error unless ``architecture`` is ``"resnet"``, the only one implemented."""
    if architecture != "resnet":
        raise ValueError(f"only the 'resnet' discriminator architecture is implemented, got {architecture!r}")


class MinibatchStdLayer(nn.Module):
    """Append the standard deviation of features across groups of samples (ProGAN Sec. 3).

    Sample ``i`` joins group ``i mod ceil(N / group_size)`` (the official layout);
    within each group the standard deviation of every feature is averaged over pixels
    and the channels of each of ``num_channels`` channel groups, and appended as
    constant channels. A batch not divisible by ``group_size`` gets groups that differ
    in size by at most one, where the official code fails.

    Args:
        group_size: Samples per group (``None``: the whole batch).
        num_channels: Number of statistics channels appended.
    """

    def __init__(self, group_size: int | None = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` ``[N, C, H, W]`` with ``num_channels`` statistics appended.

        Raises:
            ValueError: If ``C`` is not divisible by ``num_channels``.
        """
        n, c, h, w = x.shape
        f = self.num_channels
        if c % f:
            raise ValueError(f"{c} channels cannot be split into {f} minibatch-std groups")
        group_size = n if self.group_size is None else min(self.group_size, n)
        if n % group_size == 0:
            # The official computation: sample i = j * (N / group_size) + k is member j of group k.
            y = x.reshape(group_size, -1, f, c // f, h, w)
            y = (y - y.mean(dim=0)).square().mean(dim=0)
            y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N / group_size, F]
            y = y.reshape(-1, f, 1, 1).repeat(group_size, 1, h, w)
            return torch.cat([x, y], dim=1)
        num_groups = -(-n // group_size)
        group = torch.arange(n, device=x.device) % num_groups
        one_hot = torch.nn.functional.one_hot(group, num_groups).to(x.dtype)  # [N, G]
        counts = one_hot.sum(dim=0).reshape(-1, 1, 1, 1, 1)

        y = x.reshape(n, f, c // f, h, w)
        y = y - (torch.einsum("ng,nfchw->gfchw", one_hot, y) / counts)[group]
        var = torch.einsum("ng,nfchw->gfchw", one_hot, y.square()) / counts
        std = (var + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [G, F]
        stats = std[group].reshape(n, f, 1, 1).expand(n, f, h, w)
        return torch.cat([x, stats], dim=1)

    def extra_repr(self) -> str:
        """Summarise the layer."""
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual discriminator.

    Args:
        in_channels: Input channels, 0 for the first block (which reads the image).
        tmp_channels: Channels of the first convolution.
        out_channels: Output channels.
        resolution: Input resolution of the block.
        img_channels: Image channels.
        first_layer_idx: Index of the block's first layer (for ``freeze_layers``).
        activation: Activation of the convolutions.
        resample_filter: 1-D taps of the downsampling blur.
        freeze_layers: Freeze-D: layers with an index below this are not trained.

    Raises:
        ValueError: For another architecture, or inconsistent channel counts.
    """

    resample_filter: Tensor

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int = 0,
        architecture: Literal["resnet"] = "resnet",
        activation: Activation = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        super().__init__()
        _require_resnet(architecture)
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def freeze_if_early(layer: nn.Module) -> nn.Module:
            if first_layer_idx + self.num_layers < freeze_layers:
                layer.requires_grad_(False)
            self.num_layers += 1
            return layer

        conv = functools.partial(Conv2dLayer, activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.fromrgb = freeze_if_early(conv(img_channels, tmp_channels, kernel_size=1))
        self.conv0 = freeze_if_early(conv(tmp_channels, tmp_channels, kernel_size=3))
        self.conv1 = freeze_if_early(conv(tmp_channels, out_channels, 3, down=2, resample_filter=resample_filter))
        self.skip = freeze_if_early(
            Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter)
        )

    def forward(self, x: Tensor | None, img: Tensor) -> tuple[Tensor, None]:
        """Run the block on features ``x`` (the first block: on ``img``); returns ``(features, None)``."""
        if self.in_channels == 0:
            x = self.fromrgb(img)
        assert x is not None
        # Both paths scaled by sqrt(1/2) keep the variance (StyleGAN2 Sec. 4.1); the
        # linear 1x1 skip adds the residual branch inside its matrix product.
        y = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return self.skip(x, gain=math.sqrt(0.5), residual=y), None

    def extra_repr(self) -> str:
        """Summarise the block."""
        return f"resolution={self.resolution}, architecture={self.architecture}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end of the discriminator: minibatch stddev, conv, fc and output.

    Args:
        in_channels: Input channels.
        cmap_dim: Dimensionality of the mapped label (projection discriminator), 0: none.
        resolution: Input resolution (4).
        img_channels: Image channels.
        mbstd_group_size: Group size of the minibatch stddev (``None``: the batch).
        mbstd_num_channels: Statistics channels; 0 disables the layer.
        activation: Activation of the hidden layers.

    Raises:
        ValueError: For another architecture.
    """

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: Literal["resnet"] = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: Activation = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        _require_resnet(architecture)
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, cmap: Tensor | None = None) -> Tensor:
        """Map features ``[N, C, 4, 4]`` (and the mapped label) to scores ``[N, 1]``."""
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:
            assert cmap is not None
            # Projection discriminator (Miyato & Koyama 2018).
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        """Summarise the epilogue."""
        return f"resolution={self.resolution}, architecture={self.architecture}"


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator, constructor-compatible with the official one.

    Args:
        c_dim: Label dimensionality, 0 for unconditional.
        img_resolution: Input resolution (a power of two, at least 8).
        img_channels: Image channels.
        channel_base: Overall channel multiplier: ``channels(res) = min(channel_base
            // res, channel_max)``.
        channel_max: Maximum channels per block.
        cmap_dim: Dimensionality of the mapped label (default: the 4x4 channels).
        block_kwargs: Extra :class:`DiscriminatorBlock` arguments (``freeze_layers``).
        mapping_kwargs: Extra :class:`MappingNetwork` arguments of the label mapping.
        epilogue_kwargs: Extra :class:`DiscriminatorEpilogue` arguments (``mbstd_group_size``).

    Raises:
        ValueError: If ``img_resolution`` is not a power of two >= 8.
    """

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: Literal["resnet"] = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        conv_clamp: float | None = 256,
        cmap_dim: int | None = None,
        block_kwargs: dict[str, Any] | None = None,
        mapping_kwargs: dict[str, Any] | None = None,
        epilogue_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.init_kwargs: dict[str, Any] = dict(
            c_dim=c_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            architecture=architecture,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            cmap_dim=cmap_dim,
            block_kwargs=dict(block_kwargs or {}),
            mapping_kwargs=dict(mapping_kwargs or {}),
            epilogue_kwargs=dict(epilogue_kwargs or {}),
        )
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(int(math.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in [*self.block_resolutions, 4]}
        cmap_dim = 0 if c_dim == 0 else channels[4] if cmap_dim is None else cmap_dim

        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                img_channels=img_channels,
                first_layer_idx=layer_idx,
                architecture=architecture,
                conv_clamp=conv_clamp,
                **(block_kwargs or {}),
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **(mapping_kwargs or {})
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4],
            cmap_dim=cmap_dim,
            resolution=4,
            img_channels=img_channels,
            architecture=architecture,
            conv_clamp=conv_clamp,
            **(epilogue_kwargs or {}),
        )

    def forward(self, img: Tensor, c: Tensor | None = None, update_emas: bool = False) -> Tensor:
        """Score images.

        Args:
            img: Images ``[N, img_channels, img_resolution, img_resolution]``.
            c: Labels ``[N, c_dim]``, only for conditional models.
            update_emas: Unused; accepted for interface parity with the generator.

        Returns:
            Logits ``[N, 1]`` (real > fake).
        """
        del update_emas
        # ``fromrgb`` (one matrix product) reads either layout and returns channels-last
        # activations, which the CPU convolutions prefer (docs/stylegan3.md).
        x = None
        for res in self.block_resolutions:
            x, _ = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        assert x is not None
        return self.b4(x, cmap)

    def extra_repr(self) -> str:
        """Summarise the network."""
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


def build_discriminator(
    resolution: int = 256,
    channel_base: int = 32768,
    channel_max: int = 512,
    mbstd_group_size: int | None = 4,
    img_channels: int = 3,
    c_dim: int = 0,
    freeze_layers: int = 0,
) -> Discriminator:
    """Build the discriminator as the official ``train.py`` does for every config.

    Args:
        resolution: Input resolution.
        channel_base: Capacity multiplier (``--cbase``; not doubled for config R).
        channel_max: Maximum channels (``--cmax``).
        mbstd_group_size: Minibatch-stddev group size (``--mbstd-group``).
        img_channels: Image channels.
        c_dim: Label dimensionality (0: unconditional).
        freeze_layers: Freeze-D (``--freezed``).

    Returns:
        The discriminator, randomly initialised.
    """
    return Discriminator(
        c_dim=c_dim,
        img_resolution=resolution,
        img_channels=img_channels,
        channel_base=channel_base,
        channel_max=channel_max,
        block_kwargs={"freeze_layers": freeze_layers},
        epilogue_kwargs={"mbstd_group_size": mbstd_group_size},
    )
