"""The mapping network z -> w of StyleGAN (Karras et al. 2019, Sec. 2), shared by all configs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aras400k.models.stylegan3.layers import FullyConnectedLayer

__all__ = ["MappingNetwork", "normalize_2nd_moment"]


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim``: unit mean square (the "normalised z" input)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """Maps a latent ``z`` (and optionally a label ``c``) to intermediate latents ``w``.

    ``z`` is normalised to unit second moment, passed through ``num_layers``
    fully-connected leaky-ReLU layers (StyleGAN, Sec. 2; StyleGAN3 uses 2, StyleGAN2 8)
    and broadcast to the ``num_ws`` layer inputs of the synthesis network. The running
    average ``w_avg`` serves the truncation trick, ``w' = w_avg + psi (w - w_avg)``
    (StyleGAN, Appendix B).

    Args:
        z_dim: Latent dimensionality, 0 for none (a label-only mapping).
        c_dim: Label dimensionality, 0 for an unconditional model.
        w_dim: Intermediate latent dimensionality.
        num_ws: Number of ``w`` copies to output; ``None`` returns ``[N, w_dim]``.
        num_layers: Number of fully-connected layers.
        lr_multiplier: Learning-rate multiplier of the layers.
        w_avg_beta: Decay of the running average of ``w``; ``None`` disables it.
        embed_features: Width of the label embedding (default ``w_dim``).
        layer_features: Width of the hidden layers (default ``w_dim``).

    Raises:
        ValueError: If neither ``z_dim`` nor ``c_dim`` is positive.
    """

    w_avg: Tensor

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
        embed_features: int | None = None,
        layer_features: int | None = None,
    ) -> None:
        super().__init__()
        if z_dim <= 0 and c_dim <= 0:
            raise ValueError("the mapping network needs z_dim > 0 or c_dim > 0")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Tensor | None,
        c: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> Tensor:
        """Map latents to ``w`` ``[N, num_ws, w_dim]`` (``[N, w_dim]`` when ``num_ws`` is ``None``).

        Args:
            z: Latents ``[N, z_dim]`` (ignored when ``z_dim == 0``).
            c: Labels ``[N, c_dim]``; needed only when ``c_dim > 0``.
            truncation_psi: Truncation strength; 1 disables, 0 gives ``w_avg``.
            truncation_cutoff: Truncate only the first this many ``w`` (``None``: all).
            update_emas: Update the running average ``w_avg`` (training only).

        Raises:
            ValueError: If an input the configuration needs is missing or has the wrong width.
        """
        parts = []
        for name, value, dim in (("z", z, self.z_dim), ("c", c, self.c_dim)):
            if dim > 0:
                if value is None or value.ndim != 2 or value.shape[1] != dim:
                    shape = None if value is None else tuple(value.shape)
                    raise ValueError(f"expected {name} of shape [N, {dim}], got {shape}")
                value = value.to(torch.float32)
                parts.append(normalize_2nd_moment(value if name == "z" else self.embed(value)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is None:
            return x if truncation_psi == 1 else self._truncate(x, truncation_psi)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self._truncate(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x

    def _truncate(self, w: Tensor, psi: float) -> Tensor:
        """Pull ``w`` towards the tracked average: ``w_avg + psi * (w - w_avg)``."""
        if not hasattr(self, "w_avg"):
            raise ValueError("truncation needs the tracked w_avg; build with w_avg_beta set and num_ws given")
        return self.w_avg.lerp(w, psi)

    def extra_repr(self) -> str:
        """Summarise the network."""
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"
