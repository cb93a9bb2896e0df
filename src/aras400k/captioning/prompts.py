"""Default prompts of the three captioning modes, prompt rendering and the prompt hash.

The defaults follow the paper: one or two sentences about land use, spatial layout and
the dominant classes, the composition rendered as ``"tree 41.2%, crop 30.5%"``.

User prompts are :meth:`str.format` templates with these fields:

=================  ==============================================================
``{composition}``  the rendered composition (text and hybrid modes only)
``{key}``          the sample key
``{dominant}``     the name of the largest class (text and hybrid modes only)
=================  ==============================================================
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from functools import lru_cache

from aras400k.captioning.requests import Mode, check_mode
from aras400k.data.composition import format_composition

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_USER_PROMPTS",
    "PROMPT_FIELDS",
    "check_user_prompt",
    "prompt_hash",
    "render_composition",
    "render_prompt",
]

#: The system prompt shared by the three modes.
DEFAULT_SYSTEM_PROMPT = (
    "You write captions for true-colour satellite image patches. Describe the scene in one or two "
    "sentences, focusing on land use, spatial layout and the dominant land-cover classes. "
    "Answer with the caption only."
)

#: The default user prompt of each mode.
DEFAULT_USER_PROMPTS: dict[str, str] = {
    "text": (
        "A satellite image patch has this land-cover composition: {composition}. Write a caption describing the scene."
    ),
    "vision": "Write a caption for this satellite image patch.",
    "hybrid": (
        "This satellite image patch has this land-cover composition: {composition}. "
        "Write a caption describing what you see, using the composition for the land-cover classes."
    ),
}

#: Placeholders a user prompt may hold.
PROMPT_FIELDS: frozenset[str] = frozenset({"composition", "key", "dominant"})
_COMPOSITION_FIELDS = frozenset({"composition", "dominant"})


@lru_cache(maxsize=64)
def _fields(template: str) -> frozenset[str]:
    try:
        return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name is not None)
    except ValueError as err:
        raise ValueError(
            f"prompt {template!r} is not a valid format template ({err}); write braces as {{{{ }}}}"
        ) from err


def check_user_prompt(template: str, mode: Mode) -> str:
    """Check that a user prompt ``template`` only uses known fields that ``mode`` provides; return it unchanged.

    Raises:
        ValueError: On an unknown mode or field, a malformed template, or composition in vision mode.
    """
    check_mode(mode)
    fields = _fields(template)
    unknown = fields - PROMPT_FIELDS
    if unknown:
        raise ValueError(f"user prompt uses unknown fields {sorted(unknown)}; the fields are {sorted(PROMPT_FIELDS)}")
    if mode == "vision" and fields & _COMPOSITION_FIELDS:
        raise ValueError(
            "vision mode captions from the image alone, but the user prompt uses "
            f"{sorted(fields & _COMPOSITION_FIELDS)}; use mode hybrid to give the model the composition"
        )
    return template


def render_composition(composition: Mapping[str, float], digits: int = 1) -> str:
    """Render class name -> fraction as the prompts show it, by decreasing share: ``"tree 41.2%, crop 30.5%"``.

    Absent classes are dropped; percentages have ``digits`` decimal places.
    """
    return format_composition(composition, digits=digits)


def render_prompt(template: str, key: str = "", composition: Mapping[str, float] | None = None) -> str:
    """Fill a template's :data:`PROMPT_FIELDS` from the sample ``key`` and ``composition`` (class name -> fraction).

    Raises:
        ValueError: If the template needs a composition and none is given.
    """
    fields = _fields(template)
    values: dict[str, str] = {"key": key}
    if fields & _COMPOSITION_FIELDS:
        if composition is None:
            raise ValueError(f"sample {key or '?'}: the prompt needs a composition but the sample has none")
        values["composition"] = render_composition(composition)
        values["dominant"] = max(composition.items(), key=lambda kv: kv[1])[0] if composition else ""
    return template.format(**values)


def prompt_hash(system_prompt: str, user_prompt: str) -> str:
    """Hash of a system + user prompt template pair, stored with every caption: 16 hex digits of a SHA-256."""
    payload = json.dumps([system_prompt, user_prompt], ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
