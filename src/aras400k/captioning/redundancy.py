"""Caption redundancy: normalising captions and rejecting repeats during a run.

:class:`DuplicateFilter` remembers every caption kept so far, so the
:class:`~aras400k.captioning.Captioner` can regenerate a repeat with another seed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Literal

__all__ = ["DedupeLevel", "DuplicateFilter", "normalize_caption"]

#: ``off``: keep repeats (still counted); ``exact``: reject identical strings;
#: ``normalized``: reject strings equal after :func:`normalize_caption`.
DedupeLevel = Literal["off", "exact", "normalized"]
_DEDUPE_LEVELS = ("off", "exact", "normalized")

# Punctuation other than '.' and ',' (and "_") becomes a space; '.' and ',' do too unless
# they sit between two digits ("41.2" keeps its point).
_PUNCTUATION = re.compile(r"[^\w\s.,]|_")
_POINT = re.compile(r"(?<!\d)[.,]|[.,](?!\d)")


def normalize_caption(text: str) -> str:
    """Normalise a caption for comparison: case, whitespace and punctuation are ignored.

    Unicode is put in NFC form; decimal points between digits are kept (``41.2%`` and
    ``4.12%`` differ). Captions equal under :func:`aras400k.metrics.captions.normalize_caption`
    (``basic``) are equal here too.
    """
    folded = unicodedata.normalize("NFC", text).casefold()
    return " ".join(_POINT.sub(" ", _PUNCTUATION.sub(" ", folded)).split())


class DuplicateFilter:
    """Remembers the captions kept so far and says whether a new one repeats one of them.

    Args:
        level: How repeats are recognised; ``off`` never rejects (:meth:`is_repeat` still reports).
        seen: Captions already kept (e.g. read back from a sidecar when resuming).

    Raises:
        ValueError: On an unknown ``level``.
    """

    def __init__(self, level: DedupeLevel = "normalized", seen: Iterable[str] = ()) -> None:
        if level not in _DEDUPE_LEVELS:
            raise ValueError(f"dedupe must be one of {', '.join(_DEDUPE_LEVELS)}; got {level!r}")
        self.level = level
        self._seen: Counter[str] = Counter()
        self._last = ("", "")  # (text, key) of the latest lookup: a caption is checked, then added
        for text in seen:
            self.add(text)

    def _key(self, text: str) -> str:
        if self.level == "exact":
            return text
        if self._last[0] != text:
            self._last = (text, normalize_caption(text))
        return self._last[1]

    def is_repeat(self, text: str) -> bool:
        """Whether ``text`` repeats a kept caption (compared the way ``level`` says; normalised when off)."""
        return self._key(text) in self._seen

    def count(self, text: str) -> int:
        """How many kept captions ``text`` repeats (compared as :meth:`is_repeat` does)."""
        return self._seen[self._key(text)]

    def rejects(self, text: str) -> bool:
        """Whether ``text`` should be regenerated: a repeat while deduplication is on."""
        return self.level != "off" and self.is_repeat(text)

    def add(self, text: str) -> None:
        """Remember a kept caption."""
        self._seen[self._key(text)] += 1

    def __len__(self) -> int:
        return len(self._seen)
