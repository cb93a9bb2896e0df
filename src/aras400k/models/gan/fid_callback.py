"""Deprecated: the FID callback moved to :mod:`aras400k.callbacks.fid` (this path goes in the next release)."""

import warnings

from aras400k.callbacks.fid import FIDSampler, GeneratorFID

__all__ = ["FIDSampler", "GeneratorFID"]

warnings.warn(
    "aras400k.models.gan.fid_callback is deprecated and will be removed in the next release; "
    "import GeneratorFID and FIDSampler from aras400k.callbacks",
    FutureWarning,
    stacklevel=2,
)
