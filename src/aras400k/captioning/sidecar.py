"""The caption sidecar: a keyed JSONL file with one caption per line.

Each line is a JSON object of the :data:`SIDECAR_FIELDS` (format: ``docs/captioning.md``);
each ``(key, index)`` occurs at most once. A writer appends and flushes whole batches, so
a killed run leaves at most a partial last line, which readers ignore and
:class:`CaptionSidecarWriter` cuts off before appending.

An open writer holds the sidecar's run lock, so a second run on it stops at once;
:func:`repair_sidecar` (``aras-caption --repair true``) mends one two runs wrote at once.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aras400k.captioning.requests import MODES
from aras400k.files import atomic_path, naming_path
from aras400k.locking import RunLock, lock_path

__all__ = [
    "SIDECAR_FIELDS",
    "CaptionSidecarWriter",
    "RepairReport",
    "check_record",
    "read_caption_records",
    "read_captions",
    "repair_sidecar",
]

#: Field name -> type of a sidecar record.
SIDECAR_FIELDS: dict[str, type] = {
    "key": str,
    "index": int,
    "text": str,
    "model": str,
    "mode": str,
    "prompt_hash": str,
    "seed": int,
}


def check_record(record: Mapping[str, Any], where: str = "record") -> dict[str, Any]:
    """Check a sidecar record's fields and types; a dict of them in :data:`SIDECAR_FIELDS` order, then extras.

    Error messages start with ``where`` (e.g. ``"file.jsonl line 3"``).

    Raises:
        ValueError: On a missing field, a wrong type, a negative index or an unknown mode.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a caption record must be a JSON object, got {type(record).__name__}")
    for name, kind in SIDECAR_FIELDS.items():
        if name not in record:
            raise ValueError(f"{where}: caption record lacks the field {name!r}")
        value = record[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{where}: field {name!r} must be {kind.__name__}, got {value!r}")
    if record["index"] < 0:
        raise ValueError(f"{where}: caption index must be >= 0, got {record['index']}")
    if record["mode"] not in MODES:
        raise ValueError(f"{where}: mode must be one of {', '.join(MODES)}, got {record['mode']!r}")
    extra = {name: value for name, value in record.items() if name not in SIDECAR_FIELDS}
    return {name: record[name] for name in SIDECAR_FIELDS} | extra


def _iter_complete(path: Path, data: bytes) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """``(line number, line, record)`` of a sidecar's complete, non-blank lines."""
    end = data.rfind(b"\n") + 1
    for number, line in enumerate(data[:end].splitlines(keepends=True), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{where} is not valid JSON ({err}); the sidecar is corrupt") from err
        yield number, line, check_record(record, where)


def _read_complete(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a sidecar's complete lines, and where a partial tail starts."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for number, _, record in _iter_complete(path, data):
        ident = (record["key"], record["index"])
        if ident in seen:
            raise ValueError(
                f"{path} line {number}: a second caption for key {ident[0]!r} index {ident[1]} (two runs wrote "
                f"this file at once?); keep the first caption of each with aras-caption --repair true --out {path} "
                "(the file is backed up first)"
            )
        seen.add(ident)
        records.append(record)
    return records, data.rfind(b"\n") + 1


def read_caption_records(path: str | Path) -> list[dict[str, Any]]:
    """Read every complete record of a ``.jsonl`` sidecar, in file order (a partial last line is ignored).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On a malformed line or a repeated ``(key, index)`` (naming file and line).
    """
    return _read_complete(_existing(path))[0]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption sidecar {path} does not exist")
    return path


def read_captions(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read a ``.jsonl`` sidecar as key -> its records by ``index``, keys in order of first appearance.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On a malformed line or a repeated ``(key, index)``.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in read_caption_records(path):
        grouped.setdefault(record["key"], []).append(record)
    for records in grouped.values():
        records.sort(key=lambda r: r["index"])
    return grouped


class CaptionSidecarWriter:
    """Append caption records to a sidecar, resuming a file a killed run left behind.

    Opening takes the run lock, reads an existing file's records into :attr:`records`
    and cuts off a partial last line; :meth:`close` releases the lock.

    Args:
        path: The ``.jsonl`` sidecar; its folder is created.
        overwrite: Start a new file instead of resuming an existing one.
        fsync: Also ``fsync`` after each batch (survives a power cut, not just a kill).
        lock: The sidecar's lock, if the caller holds it (and releases it); ``None``: taken here.

    Raises:
        LockedError: If another run holds the sidecar's lock.
        ValueError: If an existing file is malformed (see :func:`read_caption_records`),
            or ``lock`` is not a held lock of this sidecar.
    """

    def __init__(
        self, path: str | Path, overwrite: bool = False, fsync: bool = False, lock: RunLock | None = None
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        #: Bytes of a partial last line cut off when resuming.
        self.discarded_bytes = 0
        if lock is not None and not (lock.held and lock.lock_file == lock_path(self.path)):
            raise ValueError(f"{lock!r} is not a held lock of the sidecar {self.path}")
        self._own_lock = RunLock(self.path).acquire() if lock is None else None
        try:
            self._open(overwrite)
        except BaseException:
            self._release()
            raise

    def _open(self, overwrite: bool) -> None:
        if self.path.exists() and not overwrite:
            self.records, end = _read_complete(self.path)
            self.discarded_bytes = self.path.stat().st_size - end
            if self.discarded_bytes:
                with self.path.open("r+b") as fh:
                    fh.truncate(end)
        self._done = {(r["key"], r["index"]) for r in self.records}
        self._fh = self.path.open("ab" if not overwrite else "wb")

    def _release(self) -> None:
        if self._own_lock is not None:
            self._own_lock.release()

    @property
    def done(self) -> frozenset[tuple[str, int]]:
        """The ``(key, index)`` pairs already in the file."""
        return frozenset(self._done)

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append a batch of records (the fields of :data:`SIDECAR_FIELDS`) and flush it.

        Raises:
            ValueError: On a malformed record or a ``(key, index)`` already written (nothing is written).
        """
        batch = [check_record(r) for r in records]
        idents = [(r["key"], r["index"]) for r in batch]
        in_batch: set[tuple[str, int]] = set()
        repeated = []
        for ident in idents:
            if ident in self._done or ident in in_batch:
                repeated.append(ident)
            in_batch.add(ident)
        if repeated:
            raise ValueError(f"{self.path}: captions for (key, index) {repeated[:3]} are already written")
        if not batch:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch).encode()
        with naming_path(self.path):
            self._fh.write(payload)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        self.records.extend(batch)
        self._done.update(idents)

    def close(self) -> None:
        """Close the file and release the lock taken on opening."""
        if not self._fh.closed:
            self._fh.close()
        self._release()

    def __enter__(self) -> CaptionSidecarWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


@dataclass
class RepairReport:
    """What :func:`repair_sidecar` did.

    Attributes:
        path: The sidecar.
        kept: Captions kept (the first of each ``(key, index)``).
        dropped: Later captions of a ``(key, index)`` already kept, left out.
        dropped_ids: The ``(key, index)`` of the dropped captions, in file order.
        discarded_bytes: Bytes of a partial last line cut off.
        backup: Where the file as it was is kept (``None``: nothing was changed).
    """

    path: Path
    kept: int = 0
    dropped: int = 0
    dropped_ids: list[tuple[str, int]] = field(default_factory=list)
    discarded_bytes: int = 0
    backup: Path | None = None

    def summary(self) -> str:
        """One line saying what was repaired."""
        if self.backup is None:
            return f"{self.path}: {self.kept} captions, no (key, index) twice; nothing to repair"
        first = ", ".join(f"{key} index {index}" for key, index in self.dropped_ids[:3])
        dropped = f"dropped {self.dropped} repeated captions (first: {first})" if self.dropped else "dropped none"
        cut = f", cut a partial last line of {self.discarded_bytes} bytes" if self.discarded_bytes else ""
        return f"{self.path}: kept {self.kept} captions, {dropped}{cut}; the old file is kept as {self.backup}"


def repair_sidecar(path: str | Path) -> RepairReport:
    """Keep the first caption of each ``(key, index)`` of a sidecar that two runs wrote at once.

    Later repeats and a partial last line are dropped (kept lines unchanged) and the
    file replaced atomically, the original kept as ``OUT.jsonl.bak`` (``.bak.1``, ...
    if taken). A sidecar without repeats is left untouched. The run lock is held throughout.

    Raises:
        FileNotFoundError: If the file does not exist.
        LockedError: If a run is writing the sidecar.
        ValueError: If a line is not a valid caption record (the file is left as it is).
    """
    path = _existing(path)
    with RunLock(path):
        data = path.read_bytes()
        report = RepairReport(path, discarded_bytes=len(data) - (data.rfind(b"\n") + 1))
        kept: list[bytes] = []
        seen: set[tuple[str, int]] = set()
        for _, line, record in _iter_complete(path, data):
            ident = (record["key"], record["index"])
            if ident in seen:
                report.dropped_ids.append(ident)
            else:
                seen.add(ident)
                kept.append(line)
        report.kept, report.dropped = len(kept), len(report.dropped_ids)
        if report.dropped or report.discarded_bytes:
            report.backup = _replace_keeping_backup(path, b"".join(kept))
    return report


def _replace_keeping_backup(path: Path, data: bytes) -> Path:
    """Write ``data`` to a synced temporary file, keep ``path`` as a backup, then rename the file over it."""
    with atomic_path(path, f"{path.name}.repair.tmp") as tmp:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        backup = path.with_name(path.name + ".bak")
        number = 0
        while backup.exists():
            number += 1
            backup = path.with_name(f"{path.name}.bak.{number}")
        try:
            os.link(path, backup)  # the same bytes under a second name: no copy
        except OSError:
            shutil.copy2(path, backup)
    return backup
