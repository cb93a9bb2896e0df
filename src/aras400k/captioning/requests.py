"""What a caption backend is asked for: the mode, the sampling settings and one request.

A :class:`CaptionRequest` also carries the inputs its prompts were rendered from, so a
backend without a model (:class:`~aras400k.captioning.backends.TemplateBackend`) captions
the same requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from aras400k.errors import check_at_least

__all__ = ["MODES", "CaptionRequest", "Mode", "SamplingSettings", "check_mode"]

#: How a caption is made: from the composition, from the image, or from both.
Mode = Literal["text", "vision", "hybrid"]
#: The valid values of :data:`Mode`.
MODES: tuple[str, ...] = ("text", "vision", "hybrid")


def check_mode(mode: str) -> Mode:
    """Check a captioning mode and return it unchanged.

    Raises:
        ValueError: If ``mode`` is not one of :data:`MODES`; the message names them.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return cast(Mode, mode)


@dataclass(frozen=True)
class SamplingSettings:
    """Decoding settings of one request.

    Attributes:
        temperature: Softmax temperature; ``0`` means greedy decoding.
        top_p: Nucleus-sampling probability mass.
        max_new_tokens: Longest caption, in tokens.
    """

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 96

    def __post_init__(self) -> None:
        check_at_least("temperature", self.temperature, 0)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        check_at_least("max_new_tokens", self.max_new_tokens, 1)

    @property
    def do_sample(self) -> bool:
        """Whether decoding samples (``temperature > 0``) rather than taking the argmax."""
        return self.temperature > 0


@dataclass
class CaptionRequest:
    """One caption to generate.

    Attributes:
        system_prompt: Rendered system prompt (may be empty).
        user_prompt: Rendered user prompt.
        image: ``(H, W, 3)`` uint8 RGB image for the vision and hybrid modes, else ``None``.
        seed: Seed of this caption (the same caption again on deterministic backends).
        sampling: Decoding settings.
        mode: The mode the prompts were built for.
        key: Sample key (for messages and backends that vary text by sample).
        index: Caption index, ``0 .. captions_per_image - 1``.
        composition: Class name -> fraction, when known.
        mask: ``(H, W)`` uint8 class-index mask, when known.
    """

    system_prompt: str
    user_prompt: str
    image: np.ndarray | None = None
    seed: int = 0
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    mode: Mode = "text"
    key: str = ""
    index: int = 0
    composition: Mapping[str, float] | None = None
    mask: np.ndarray | None = None
