"""Errors that mean "bad input": the commands print their message on one line, no traceback.

The ``check_*`` functions refuse an argument ``name`` whose ``value`` is out of range,
each with the one message every check of its kind gives.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

__all__ = [
    "DISK_FULL_ERRNOS",
    "ConfigError",
    "check_at_least",
    "check_choice",
    "check_positive",
    "check_within",
    "is_disk_full",
]

#: ``OSError.errno`` values that mean the disk (or quota, or file-size limit) is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class ConfigError(ValueError):
    """A configuration the library cannot run: what is wrong and what is valid, in one line."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says that a write failed for lack of space (an ``OSError`` with ``ENOSPC``, ...)."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def check_at_least(name: str, value: float, minimum: float) -> None:
    """Refuse an argument below ``minimum``.

    Raises:
        ValueError: ``NAME must be >= MINIMUM, got VALUE`` when ``value < minimum``.
    """
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value}")


def check_positive(name: str, value: float) -> None:
    """Refuse an argument that is zero or negative (a speed, a scale, a duration).

    Raises:
        ValueError: ``NAME must be positive, got VALUE`` when ``value <= 0``.
    """
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def check_within(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    """Refuse an argument outside the closed interval ``[low, high]`` (by default a probability's).

    Raises:
        ValueError: ``NAME must be within [LOW, HIGH], got VALUE`` when it lies outside.
    """
    if not low <= value <= high:
        raise ValueError(f"{name} must be within [{low:g}, {high:g}], got {value}")


def check_choice(what: str, value: object, choices: Iterable[object]) -> None:
    """Refuse a ``value`` not among the ``choices``, naming them; ``what`` is what it names (``"conditioning"``).

    Raises:
        ValueError: ``unknown WHAT 'VALUE'; choose one of [...]`` when it is not a choice.
    """
    allowed = list(choices)
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {allowed}")
