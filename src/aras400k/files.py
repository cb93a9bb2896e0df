"""Writing files safely: whole or not at all, and a full disk that names the file.

Every file aras400k writes for a reader to find (manifests, records, reports, tables,
indexes) goes through :func:`write_atomic`: the bytes go to ``NAME.tmp`` beside the
destination, which is then renamed over it, so a crash or a full disk never leaves a
half-written file under the real name. Files that a library writes itself (a PNG from
PIL or matplotlib, a GeoTIFF, a zip, a CSV) are written to the path that
:func:`atomic_path` yields, with the same guarantee. Streams written piece by piece
(shards, caption sidecars) wrap their writes in :func:`naming_path` instead, so that a
full disk says which file it was writing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aras400k.errors import is_disk_full

__all__ = ["atomic_path", "naming_path", "sha256_file", "write_atomic", "write_json_atomic"]


@contextmanager
def naming_path(path: str | Path) -> Iterator[None]:
    """Wrap writes to ``path``: re-raise a disk-full ``OSError`` that names no file as one that names ``path``.

    Raises:
        OSError: ``ENOSPC`` / ``EDQUOT`` / ``EFBIG`` with ``filename`` set to ``path``.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or not is_disk_full(err):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


@contextmanager
def atomic_path(path: str | Path, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; rename it over ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` is left as it was::

        with atomic_path(out / "figure.png", tmp_name=".figure.tmp.png") as tmp:
            fig.savefig(tmp)

    Args:
        path: Destination file (its folder must exist).
        tmp_name: Name of the temporary file in the same folder (default ``NAME.tmp``;
            give one with the right suffix when the writer picks its format from it).

    Raises:
        OSError: If the write fails; a full disk names ``path``.
    """
    path = Path(path)
    tmp = path.with_name(tmp_name or f"{path.name}.tmp")
    try:
        with naming_path(path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes, tmp_name: str | None = None) -> Path:
    """Write text (as UTF-8) or bytes to ``path`` with :func:`atomic_path`; return ``path`` as a ``Path``.

    Raises:
        OSError: If the write fails; a full disk names ``path``.
    """
    with atomic_path(path, tmp_name) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` with :func:`write_atomic`; return ``path``."""
    return write_atomic(path, json.dumps(obj, indent=indent) + "\n")


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """The hex sha256 of a file, read ``block`` bytes at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()
