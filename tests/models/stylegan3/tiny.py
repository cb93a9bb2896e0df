"""Tiny, seeded StyleGAN generators for the tests (16-32 px, 8-64 channels)."""

from __future__ import annotations

import torch

from aras400k.models.stylegan3 import Generator, build_generator

Z_DIM = 32
W_DIM = 32


def tiny_generator(cfg: str, resolution: int = 16, seed: int = 0, **synthesis_kwargs: object) -> Generator:
    """A randomly initialised generator in eval mode with 8-64 channels per layer."""
    torch.manual_seed(seed)
    # Config R doubles channel_base and channel_max, so it starts from half of them.
    base, cmax = (128, 32) if cfg == "stylegan3-r" else (256, 64)
    return build_generator(
        cfg,  # type: ignore[arg-type]
        resolution=resolution,
        channel_base=base,
        channel_max=cmax,
        z_dim=Z_DIM,
        w_dim=W_DIM,
        synthesis_kwargs=synthesis_kwargs or None,
    ).eval()
