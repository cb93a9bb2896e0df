"""Report sections and the small formatting helpers their Markdown tables share.

The helpers print ``None`` (and NaN, for :func:`number` and :func:`percent`) as :data:`NA`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NA", "Section", "count", "markdown_table", "number", "percent"]

#: What a table shows for a number that is not available.
NA = "n/a"


@dataclass
class Section:
    """One section of the evaluation report.

    Attributes:
        key: Short identifier, the key in ``report.json`` and the CSV file name.
        title: Heading in ``report.md``.
        body: Markdown under the heading (tables, figure links, notes).
        data: Every number of the section, for ``report.json``.
        rows: Flat table rows written to ``{key}.csv`` (empty: no CSV).
        figures: Figure caption -> PNG file name (relative to the report folder).
        notes: One-line remarks shown under the section and in the headline summary.
        skipped: Why the section was not computed (``None`` when it was).
        seconds: Wall time spent on it.
    """

    key: str
    title: str
    body: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @classmethod
    def skip(cls, key: str, title: str, reason: str) -> Section:
        """A section that was not computed; ``reason`` says in one line why, and how to include it."""
        return cls(key=key, title=title, skipped=reason)

    def markdown(self) -> str:
        """The section as Markdown: heading, then the reason it was skipped or its body."""
        lines = [f"## {self.title}", ""]
        if self.skipped is not None:
            lines += [f"*Skipped: {self.skipped}*", ""]
            return "\n".join(lines)
        if self.body:
            lines += [self.body.rstrip(), ""]
        lines += [f"![{caption}]({name})\n" for caption, name in self.figures.items()]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(fraction: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` decimals (``0.1285 -> "12.85%"``), or ``n/a``."""
    text = number(None if fraction is None else 100 * float(fraction), digits)
    return text if text == NA else f"{text}%"


def number(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or ``n/a``."""
    return NA if _missing(value) else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def count(value: int | None) -> str:
    """An integer with thousands separators, or ``n/a``."""
    return NA if value is None else f"{int(value):,}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """Render a Markdown table of text cells; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
