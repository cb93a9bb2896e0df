"""One writer per output: an exclusive lock held for the whole run.

Two runs writing the same output at once (a caption sidecar, a synthetic shard set, a
pipeline run folder) would leave duplicates that no resume can untangle, so every
command that writes one holds a :class:`RunLock` on it for the whole run; a second run
stops at once with :class:`LockedError`, whose message names the holder::

    with exclusive_lock("captions/train.text.jsonl"):
        ...  # append captions

    # a second run meanwhile:
    # LockedError: captions/train.text.jsonl is in use by another run (pid 1234 on gpu1);
    # wait for it or stop it

**Where the lock lives.** The lock is a small file *beside* the output, named after it
with ``.lock`` appended (:func:`lock_path`): ``data/synth`` -> ``data/synth.lock``.
Beside, not inside: runs remove and rename what lies inside their outputs (the
``.partial`` work folder, a pipeline's stage outputs), and deleting a held lock file
would let a second run lock a new one; outside the shard set, ``aras-data verify`` and
shard listing never see it. It holds the holder's PID, host and start time (JSON).

**Stale locks recover themselves.** The lock is an OS lock on the open file
(``fcntl.flock`` on Linux and macOS, ``msvcrt.locking`` on Windows), not the file's
existence: the OS drops it when the holding process dies, however it dies, so the next
run takes it over; a run that ends normally also deletes the file. ``flock`` on network
file systems depends on the server (NFSv4 supports it); on a shared file system without
locking, give each machine its own outputs.

The lock is not re-entrant: a second :class:`RunLock` on the same output is refused
even in the same process (another thread, or a nested call), so code that already holds
the lock calls the unlocked internals.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["LOCK_SUFFIX", "LockedError", "RunLock", "exclusive_lock", "lock_path", "read_holder"]

#: Appended to an output's name to name its lock file (beside the output).
LOCK_SUFFIX = ".lock"

# Windows locks a byte range, and a locked range cannot be read by others; lock a byte far
# past the holder record so the record stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 30

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    fcntl: Any = None
else:
    import fcntl

    msvcrt: Any = None


class LockedError(RuntimeError):
    """Another run holds the lock of an output.

    Attributes:
        target: The output that is in use.
        lock_file: Its lock file.
        pid: The holder's process id (``None`` if the lock file does not say).
        host: The holder's host name (``None`` if the lock file does not say).
    """

    def __init__(self, target: str | Path, lock_file: Path, holder: dict[str, Any] | None = None) -> None:
        self.target = Path(target)
        self.lock_file = lock_file
        self.pid: int | None = (holder or {}).get("pid")
        self.host: str | None = (holder or {}).get("host")
        if self.pid is not None:
            who = f"pid {self.pid} on {self.host or 'an unknown host'}"
        else:
            who = f"see {lock_file}"
        super().__init__(f"{target} is in use by another run ({who}); wait for it or stop it")


def lock_path(target: str | Path) -> Path:
    """The lock file of an output (a file or folder, existing or not): resolved ``target`` + :data:`LOCK_SUFFIX`.

    Raises:
        ValueError: If ``target`` has no name (the file system root).
    """
    # Resolved, so two runs naming one output through different paths (symlinks) share its lock.
    absolute = Path(target).resolve()
    if not absolute.name:
        raise ValueError(f"cannot lock {target}: it has no name to put a lock file beside")
    return absolute.with_name(absolute.name + LOCK_SUFFIX)


def read_holder(lock_file: str | Path) -> dict[str, Any] | None:
    """The holder record (``pid``, ``host``, ``started``) of a lock file, or ``None`` if missing or unreadable.

    The record is what the last holder wrote; whether that holder still runs is what the
    OS lock says.
    """
    try:
        with open(lock_file, "rb") as fh:
            data = fh.read(4096)
        record = json.loads(data)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class RunLock:
    """An exclusive, non-blocking lock on ``target``, held from :meth:`acquire` to :meth:`release`.

    As a context manager (:func:`exclusive_lock`) the lock is released and its file
    (``lock_file``, :func:`lock_path`) deleted on leaving the block, also on an exception.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.lock_file = lock_path(target)
        self._fd: int | None = None
        self._owner_pid: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (and return this lock), or fail at once if another run holds it.

        Raises:
            LockedError: If another run (process, or another lock object of this process) holds it.
            RuntimeError: If this object already holds it.
        """
        if self.held:
            raise RuntimeError(f"the lock on {self.target} is already held by this RunLock")
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                raise LockedError(self.target, self.lock_file, _wait_for_holder(self.lock_file))
            if _is_current(fd, self.lock_file):
                break
            # The holder released (and deleted) the file between our open and lock: retry on the new one.
            os.close(fd)
        self._fd, self._owner_pid = fd, os.getpid()
        _write_holder(fd)
        return self

    def release(self) -> None:
        """Release the lock and delete the lock file (a no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._owner_pid != os.getpid():
            os.close(fd)  # a forked child: the parent still holds the lock
            return
        if fcntl is not None:
            # Delete while still locked, so a run that opened this file meanwhile notices
            # (in acquire) that it locked a deleted file and retries on a fresh one.
            if _is_current(fd, self.lock_file):
                self.lock_file.unlink(missing_ok=True)
            os.close(fd)
        else:  # pragma: no cover - Windows cannot delete an open file
            _unlock_windows(fd)
            os.close(fd)
            try:
                self.lock_file.unlink()
            except OSError:
                pass  # opened (and maybe locked) by another run meanwhile: it is theirs now

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.target)!r}, held={self.held})"


def exclusive_lock(target: str | Path) -> RunLock:
    """An exclusive lock on an output (a sidecar, a shard-set folder, a run folder) for a ``with`` block.

    Returns:
        A :class:`RunLock`; entering it takes the lock (raising :class:`LockedError` if
        another run holds it), leaving it releases the lock.
    """
    return RunLock(target)


def _try_lock(fd: int) -> bool:
    """Lock an open file without waiting; return whether the lock was taken."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True
    if msvcrt is not None:  # pragma: no cover - Windows only
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    warnings.warn(  # pragma: no cover - neither fcntl nor msvcrt
        "no file locking on this platform; concurrent runs on one output are not prevented",
        RuntimeWarning,
        stacklevel=3,
    )
    return True  # pragma: no cover


def _unlock_windows(fd: int) -> None:  # pragma: no cover - Windows only
    if msvcrt is not None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _is_current(fd: int, lock_file: Path) -> bool:
    """Whether ``lock_file`` is still the file open as ``fd`` (it was not deleted or replaced)."""
    try:
        on_disk = os.stat(lock_file)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _write_holder(fd: int) -> None:
    """Write this process's record into the (locked) lock file."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)


def _wait_for_holder(lock_file: Path, tries: int = 20, pause_s: float = 0.01) -> dict[str, Any] | None:
    """Read the holder record, giving a holder that has just locked the file a moment to write it."""
    for _ in range(tries):
        holder = read_holder(lock_file)
        if holder is not None:
            return holder
        time.sleep(pause_s)
    return None
