"""Deprecated: this module moved to :mod:`aras400k.synthesis.unconditional`; the old path goes in the next release."""

import warnings

from aras400k.synthesis.unconditional import (
    LATENT_CONVENTIONS,
    LatentConvention,
    StyleGAN3SynthesisReport,
    load_stylegan3_generator,
    parse_seeds,
    resolve_latents,
    sample_key,
    seed_latents,
    synthesize_unconditional,
    worker_chunks,
)

__all__ = [
    "LATENT_CONVENTIONS",
    "LatentConvention",
    "StyleGAN3SynthesisReport",
    "load_stylegan3_generator",
    "parse_seeds",
    "resolve_latents",
    "sample_key",
    "seed_latents",
    "synthesize_unconditional",
    "worker_chunks",
]

warnings.warn(
    "aras400k.synthesis_stylegan3 moved to aras400k.synthesis.unconditional; "
    "the old path will be removed in the next release",
    FutureWarning,
    stacklevel=2,
)
