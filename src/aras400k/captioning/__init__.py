"""Captioning: text, vision and hybrid captions over a template, local HF models or HTTP servers.

The :class:`Captioner` sends :class:`CaptionRequest` objects to a backend and writes
keyed JSONL sidecars (:mod:`aras400k.captioning.sidecar`); ``aras-caption`` runs it on shard sets.
"""

from __future__ import annotations

from aras400k._lazy import lazy_attributes
from aras400k.captioning.backends import (
    BACKENDS,
    LAZY_BACKENDS,
    BackendError,
    CaptionBackend,
    TemplateBackend,
    backend_class,
    build_backend,
)
from aras400k.captioning.captioner import Captioner, CaptionInput, CaptionReport, CaptionStats
from aras400k.captioning.prompts import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PROMPTS, prompt_hash
from aras400k.captioning.redundancy import DuplicateFilter, normalize_caption
from aras400k.captioning.requests import MODES, CaptionRequest, Mode, SamplingSettings
from aras400k.captioning.shards import write_captioned_shards
from aras400k.captioning.sidecar import (
    CaptionSidecarWriter,
    RepairReport,
    read_caption_records,
    read_captions,
    repair_sidecar,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_USER_PROMPTS",
    "MODES",
    "BackendError",
    "CaptionBackend",
    "CaptionInput",
    "CaptionReport",
    "CaptionRequest",
    "CaptionSidecarWriter",
    "CaptionStats",
    "Captioner",
    "DuplicateFilter",
    "Mode",
    "OpenAIBackend",
    "RepairReport",
    "SamplingSettings",
    "TemplateBackend",
    "TransformersBackend",
    "backend_class",
    "build_backend",
    "normalize_caption",
    "prompt_hash",
    "read_caption_records",
    "read_captions",
    "repair_sidecar",
    "write_captioned_shards",
]


# The transformers and openai backends load on first use (importing transformers is slow).
__getattr__, __dir__ = lazy_attributes(__name__, LAZY_BACKENDS, __all__)
