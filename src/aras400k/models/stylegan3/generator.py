"""The generator of the three configurations of the StyleGAN3 paper, and its factory.

:class:`Generator` has the constructor of the official ``Generator`` classes
(``z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
**synthesis_kwargs``), so the ``init_kwargs`` stored in an official network pickle
build it directly; ``architecture`` picks StyleGAN3's or StyleGAN2's synthesis
network. :func:`build_generator` is the typed entry point with the per-config
defaults of the official ``train.py``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, get_args

from torch import Tensor, nn

from aras400k.models.stylegan3.mapping import MappingNetwork
from aras400k.models.stylegan3.stylegan2 import NoiseMode, StyleGAN2SynthesisNetwork
from aras400k.models.stylegan3.synthesis import SynthesisNetwork

__all__ = ["CONFIGS", "Config", "Generator", "build_generator"]

Config = Literal["stylegan3-t", "stylegan3-r", "stylegan2"]
#: The three configurations of the StyleGAN3 paper (the official ``--cfg`` values).
CONFIGS: tuple[str, ...] = get_args(Config)
Architecture = Literal["stylegan3", "stylegan2"]

# Depth of the mapping network when mapping_kwargs does not say (official defaults).
_DEFAULT_MAP_DEPTH = {"stylegan3": 2, "stylegan2": 8}


class Generator(nn.Module):
    """Mapping network + synthesis network.

    Args:
        z_dim: Latent dimensionality.
        c_dim: Label dimensionality, 0 for unconditional.
        w_dim: Intermediate latent dimensionality.
        img_resolution: Output resolution.
        img_channels: Output channels.
        mapping_kwargs: Arguments of :class:`MappingNetwork` (e.g. ``num_layers``).
        architecture: ``"stylegan3"`` (configs T and R) or ``"stylegan2"``: the synthesis network.
        **synthesis_kwargs: Arguments of the synthesis network (the official names;
            unknown ones raise ``TypeError``); a nested ``synthesis_kwargs`` dict (as in
            StyleGAN2-ADA checkpoints) is merged in.

    Raises:
        ValueError: For an unknown ``architecture``.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        architecture: Architecture = "stylegan3",
        **synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        synthesis_kwargs = {**synthesis_kwargs.pop("synthesis_kwargs", {}), **synthesis_kwargs}
        if architecture not in _DEFAULT_MAP_DEPTH:
            raise ValueError(f"unknown architecture {architecture!r}; choose 'stylegan3' or 'stylegan2'")
        self.init_kwargs: dict[str, Any] = copy.deepcopy(
            dict(
                z_dim=z_dim,
                c_dim=c_dim,
                w_dim=w_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                mapping_kwargs=mapping_kwargs or {},
                architecture=architecture,
                **synthesis_kwargs,
            )
        )
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.architecture: Architecture = architecture
        synthesis_class = SynthesisNetwork if architecture == "stylegan3" else StyleGAN2SynthesisNetwork
        self.synthesis: SynthesisNetwork | StyleGAN2SynthesisNetwork = synthesis_class(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        mapping_kwargs = {"num_layers": _DEFAULT_MAP_DEPTH[architecture], **(mapping_kwargs or {})}
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: Tensor,
        c: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        noise_mode: NoiseMode = "random",
    ) -> Tensor:
        """Generate images ``[N, img_channels, img_resolution, img_resolution]``, roughly in ``[-1, 1]``.

        ``z``, ``c``, ``truncation_psi`` and ``truncation_cutoff`` are those of
        :meth:`MappingNetwork.forward`; ``update_emas`` updates every tracked average
        (training only); ``noise_mode`` is for the StyleGAN2 synthesis (``"random"``,
        ``"const"``, ``"none"``; StyleGAN3 has no noise).
        """
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas)


def build_generator(
    cfg: Config,
    resolution: int = 256,
    channel_base: int = 32768,
    channel_max: int = 512,
    map_depth: int | None = None,
    z_dim: int = 512,
    w_dim: int = 512,
    c_dim: int = 0,
    img_channels: int = 3,
    batch_size: int | None = None,
    synthesis_kwargs: dict[str, Any] | None = None,
) -> Generator:
    """Build the generator of one of the paper's configurations, as the official ``train.py`` does.

    * ``stylegan3-t``: StyleGAN3 synthesis, mapping depth 2.
    * ``stylegan3-r``: as T with 1x1 convolutions, radial downsampling filters and
      ``channel_base`` and ``channel_max`` doubled.
    * ``stylegan2``: StyleGAN2 synthesis, mapping depth 8, fused modulated
      convolutions at inference only.

    Args:
        cfg: ``"stylegan3-t"``, ``"stylegan3-r"`` or ``"stylegan2"``.
        resolution: Output resolution.
        channel_base: Capacity multiplier (the official ``--cbase``).
        channel_max: Maximum channels (``--cmax``).
        map_depth: Mapping depth (``--map-depth``); ``None`` takes the config's.
        z_dim: Latent dimensionality.
        w_dim: Intermediate latent dimensionality.
        c_dim: Label dimensionality (0: unconditional).
        img_channels: Image channels.
        batch_size: Total training batch; for the StyleGAN3 configs it sets the
            magnitude EMA decay to ``0.5 ** (batch_size / 20000)`` (a half-life of
            20k images) as the official training does. ``None`` keeps 0.999.
        synthesis_kwargs: Further synthesis arguments overriding the config's (e.g.
            ``num_layers`` or ``antialias`` for the StyleGAN3 configs).

    Returns:
        The generator, randomly initialised.

    Raises:
        ValueError: For an unknown ``cfg``.
    """
    if cfg not in CONFIGS:
        raise ValueError(f"unknown cfg {cfg!r}; choose one of {', '.join(CONFIGS)}")
    kwargs: dict[str, Any] = {"channel_base": channel_base, "channel_max": channel_max}
    if cfg == "stylegan2":
        architecture: Architecture = "stylegan2"
        kwargs["fused_modconv_default"] = "inference_only"
    else:
        architecture = "stylegan3"
        if batch_size is not None:
            kwargs["magnitude_ema_beta"] = 0.5 ** (batch_size / (20 * 1e3))
        if cfg == "stylegan3-r":
            kwargs.update(
                conv_kernel=1,
                channel_base=channel_base * 2,
                channel_max=channel_max * 2,
                use_radial_filters=True,
            )
    kwargs.update(synthesis_kwargs or {})
    mapping_kwargs = {"num_layers": map_depth if map_depth is not None else _DEFAULT_MAP_DEPTH[architecture]}
    return Generator(
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=resolution,
        img_channels=img_channels,
        mapping_kwargs=mapping_kwargs,
        architecture=architecture,
        **kwargs,
    )
