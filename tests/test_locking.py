"""The run lock: one holder per output, released on exit, taken over from a dead process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from aras400k import locking
from aras400k.data.verify import verify_shards
from aras400k.locking import LockedError, RunLock, exclusive_lock, lock_path, read_holder
from tests.conftest import write_random_set

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="uses fork/SIGKILL")

_HOLD = textwrap.dedent(
    """
    import sys, time
    from aras400k.locking import exclusive_lock
    with exclusive_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)
_TRY = textwrap.dedent(
    """
    import sys
    from aras400k.locking import LockedError, exclusive_lock
    try:
        with exclusive_lock(sys.argv[1]):
            print("acquired")
    except LockedError as err:
        print(f"refused: {err}")
    """
)


def _python(code: str, *args: str, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, **kwargs)


def test_lock_file_lies_beside_the_output(tmp_path):
    tmp_path = tmp_path.resolve()
    assert lock_path(tmp_path / "caps.jsonl") == tmp_path / "caps.jsonl.lock"
    assert lock_path(tmp_path / "synth") == tmp_path / "synth.lock"
    assert lock_path(tmp_path / "synth" / ".partial") == tmp_path / "synth" / ".partial.lock"
    if sys.platform != "win32":  # two paths to one output share its lock
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        assert lock_path(tmp_path / "link" / "caps.jsonl") == tmp_path / "real" / "caps.jsonl.lock"
    with pytest.raises(ValueError, match="no name"):
        lock_path("/")


def test_second_holder_in_process_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "sub" / "caps.jsonl"
    with exclusive_lock(out) as held:
        assert held.held and held.lock_file.is_file()
        record = read_holder(held.lock_file)
        assert record is not None and record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(LockedError) as info:
            RunLock(out).acquire()
        message = str(info.value)
        assert message == (
            f"{out} is in use by another run (pid {os.getpid()} on {socket.gethostname()}); wait for it or stop it"
        )
        assert info.value.pid == os.getpid() and "\n" not in message
        with pytest.raises(RuntimeError, match="already held"):
            held.acquire()
    assert not held.held


def test_lock_is_released_on_exit_and_on_exception(tmp_path):
    out = tmp_path / "caps.jsonl"
    with exclusive_lock(out):
        pass
    assert not lock_path(out).exists()  # a finished run leaves no lock file
    with pytest.raises(KeyError), exclusive_lock(out):
        raise KeyError("boom")
    assert not lock_path(out).exists()
    with exclusive_lock(out) as again:
        assert again.held
    again.release()  # releasing twice is harmless


def test_second_process_is_refused_then_gets_the_lock(tmp_path):
    out = tmp_path / "caps.jsonl"
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    with exclusive_lock(out):
        stdout, _ = _python(_TRY, str(out)).communicate(timeout=60)
    assert stdout.strip() == f"refused: {out} is in use by another run ({holder}); wait for it or stop it"
    stdout, _ = _python(_TRY, str(out)).communicate(timeout=60)
    assert stdout.strip() == "acquired"


@posix_only
def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "synth"
    child = _python(_HOLD, str(out))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {child.pid} "):
            exclusive_lock(out).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
    assert json.loads(lock_path(out).read_text())["pid"] == child.pid  # left behind, but unlocked
    with exclusive_lock(out) as lock:
        assert read_holder(lock.lock_file)["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_lock_file_deleted_by_a_releasing_holder_is_not_shared(tmp_path, monkeypatch):
    """A run that opened the lock file just before the holder deleted it retries on a fresh file."""
    out = tmp_path / "caps.jsonl"
    first = exclusive_lock(out).acquire()
    real_try_lock = locking._try_lock

    def release_first_then_lock(fd: int) -> bool:
        first.release()  # deletes the file this fd has open
        return real_try_lock(fd)

    monkeypatch.setattr(locking, "_try_lock", release_first_then_lock)
    second = RunLock(out).acquire()
    monkeypatch.setattr(locking, "_try_lock", real_try_lock)
    try:
        assert lock_path(out).is_file()
        with pytest.raises(LockedError):
            RunLock(out).acquire()  # the file on disk is the one the second run holds
    finally:
        second.release()


def test_verify_ignores_the_lock_of_a_shard_set_in_use(tmp_path):
    shards = write_random_set(tmp_path / "set", 4)
    with exclusive_lock(shards), exclusive_lock(shards / ".partial"):
        report = verify_shards(shards, progress=False)
    assert report.ok and not report.warnings, report.summary()
