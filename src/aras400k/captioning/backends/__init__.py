"""Caption backends behind one interface: ``template``, ``transformers`` and ``openai``.

The ``transformers`` and ``openai`` modules are imported on first use, so the template
backend (the embedded default) never pays for importing ``transformers``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from aras400k._lazy import lazy_attributes
from aras400k.captioning.backends.base import BackendError, CaptionBackend
from aras400k.captioning.backends.template import TemplateBackend

__all__ = [
    "BACKENDS",
    "LAZY_BACKENDS",
    "BackendError",
    "CaptionBackend",
    "OpenAIBackend",
    "TemplateBackend",
    "TransformersBackend",
    "backend_class",
    "build_backend",
]

#: Backend name -> ``module:class`` implementing it.
BACKENDS: dict[str, str] = {
    "template": "aras400k.captioning.backends.template:TemplateBackend",
    "transformers": "aras400k.captioning.backends.transformers:TransformersBackend",
    "openai": "aras400k.captioning.backends.openai:OpenAIBackend",
}


def backend_class(name: str) -> type[CaptionBackend]:
    """Look up a backend class by its short name (``template``, ``transformers`` or ``openai``).

    Raises:
        ValueError: On an unknown name; the message lists the known ones.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown caption backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_backend(name: str, options: Mapping[str, Any] | None = None) -> CaptionBackend:
    """Build the ``template``, ``transformers`` or ``openai`` backend with constructor keyword ``options``.

    Raises:
        ValueError: On an unknown name or option, or a bad option value.
    """
    cls = backend_class(name)
    try:
        return cls(**dict(options or {}))
    except TypeError as err:
        raise ValueError(f"bad options for the {name} caption backend: {err}") from err


#: The backends that import heavy packages, loaded on first access.
LAZY_BACKENDS = {
    "TransformersBackend": "aras400k.captioning.backends.transformers",
    "OpenAIBackend": "aras400k.captioning.backends.openai",
}

__getattr__, __dir__ = lazy_attributes(__name__, LAZY_BACKENDS, __all__)
