"""Problems with single files of the release: their kinds, the error, and the log that collects them.

Every problem's reason reads ``"<kind>: <details>"``; what ``on_error`` does with them,
and with the warning kinds, is in :mod:`aras400k.data.release`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["ReleaseImportError"]

_SKIP_HINT = "pass --on-error skip (on_error='skip') to skip such files and list them in the report"

# Problem kinds: every problem's reason starts with one of these, then ": ".
IMAGE_WITHOUT_MASK = "image without mask"
MASK_WITHOUT_IMAGE = "mask without image"
SIZE_MISMATCH = "size mismatch"
UNKNOWN_COLOUR = "unknown mask colour"
UNREADABLE = "unreadable file"
KEY_COLLISION = "key collision"
BAD_CSV = "bad csv"
CSV_ROW_WITHOUT_FILE = "csv row for missing file"
CSV_DIFFERS = "csv composition differs"
CSV_SUM = "csv percentages do not sum to 100"
CSV_DUPLICATE = "duplicate csv row"
CSV_COLUMN_IGNORED = "csv column ignored"
EMPTY_CAPTION = "empty caption"
UNEXPECTED_FILE = "unexpected file"
#: Kinds that are reported but never stop the import nor skip a sample.
WARNING_KINDS = frozenset(
    {
        CSV_ROW_WITHOUT_FILE,
        CSV_DIFFERS,
        CSV_SUM,
        CSV_DUPLICATE,
        CSV_COLUMN_IGNORED,
        EMPTY_CAPTION,
        UNEXPECTED_FILE,
    }
)


class ReleaseImportError(ValueError):
    """The release folder cannot be imported (missing, empty, or a file with a problem)."""


def kind_of(reason: str) -> str:
    """Return the kind a problem reason starts with."""
    return reason.split(": ", 1)[0]


class Problem(Exception):
    """A problem with one file, raised by the readers and recorded by :class:`ProblemLog`."""

    def __init__(self, kind: str, detail: str, path: Path | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.path = path


class ProblemLog:
    """Collects problems; raises on the first real one when ``on_error="fail"``."""

    def __init__(self, on_error: Literal["skip", "fail"]) -> None:
        self.on_error = on_error
        self.items: list[tuple[str, str]] = []

    def add(self, path: Path, kind: str, detail: str) -> None:
        """Record a problem with ``path``; raise :class:`ReleaseImportError` if it is real and ``on_error="fail"``."""
        reason = " ".join(f"{kind}: {detail}".split())  # one line, whatever the detail holds
        self.items.append((str(path), reason))
        if self.on_error == "fail" and kind not in WARNING_KINDS:
            raise ReleaseImportError(f"{path}: {reason}; {_SKIP_HINT}")

    def add_problem(self, problem: Problem, path: Path | None = None) -> None:
        """Record a :class:`Problem`, at its own path unless ``path`` is given."""
        self.add(path or problem.path or Path("?"), problem.kind, problem.detail)
