"""Captioning: text, vision and hybrid captions over a template, local HF models or HTTP servers.

The :class:`Captioner` turns samples into :class:`CaptionRequest` objects and sends
them to a backend (:class:`TemplateBackend`, ``TransformersBackend``,
``OpenAIBackend``); :mod:`aras400k.captioning.sidecar` reads and writes the keyed JSONL
caption files. ``aras-caption`` (:mod:`aras400k.cli.caption`) runs it on shard sets.
"""

from __future__ import annotations

from typing import Any

from aras400k._lazy import public_dir
from aras400k.captioning.backends import (
    BACKENDS,
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


def __getattr__(name: str) -> Any:
    # The transformers and openai backends load on first use (importing transformers is slow).
    if name == "TransformersBackend":
        return backend_class("transformers")
    if name == "OpenAIBackend":
        return backend_class("openai")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return public_dir(__name__, __all__)
