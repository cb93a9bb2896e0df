"""Deprecated: this module moved to :mod:`aras400k.synthesis.conditional`; the old path goes in the next release."""

import warnings

from aras400k.synthesis.conditional import (
    SpadeSynthesisReport,
    sample_seed,
    synthesize_conditional,
)

__all__ = ["SpadeSynthesisReport", "sample_seed", "synthesize_conditional"]

warnings.warn(
    "aras400k.synthesis_spade moved to aras400k.synthesis.conditional; "
    "the old path will be removed in the next release",
    FutureWarning,
    stacklevel=2,
)
