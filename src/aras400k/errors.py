"""Errors that mean "bad input": the commands print their message on one line, no traceback."""

from __future__ import annotations

import errno

__all__ = ["DISK_FULL_ERRNOS", "ConfigError", "is_disk_full"]

#: ``OSError.errno`` values that mean the disk (or quota, or file-size limit) is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class ConfigError(ValueError):
    """A configuration the library cannot run: what is wrong and what is valid, in one line."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says that a write failed for lack of space.

    Args:
        err: Any exception.

    Returns:
        True for an ``OSError`` with ``ENOSPC``, ``EDQUOT`` or ``EFBIG``.
    """
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS
