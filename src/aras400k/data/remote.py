"""Shard specs: local shard sets, brace-expanded shard lists, shell pipes and URLs.

Wherever the library reads a shard set it accepts a *spec*, written the webdataset way
(``docs/scaling.md#remote-shards``): a **shard set folder**, local or a URL
(``http://host/train/``, ``s3://bucket/train/``: any fsspec URL, with ``fsspec`` and its
backend), neither ending in ``.tar`` nor holding a brace pattern, read through its
``manifest.json``; or a **list of shards** without a manifest: brace patterns
(``data/train-{000000..000099}.tar``, also of URLs), ``.tar`` names, and ``pipe:`` shell
commands (one per expanded spec) whose stdout is a tar.

This is the transport layer, knowing nothing of the shard format
(:mod:`aras400k.data.shards`); ``fsspec`` is imported only when an fsspec URL is opened.
"""

from __future__ import annotations

import functools
import io
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

from braceexpand import braceexpand

__all__ = [
    "DEADLINE_ENV",
    "DEADLINE_S",
    "HTTP_TIMEOUT_S",
    "ParsedSpec",
    "PipeError",
    "ShardStream",
    "ShardTimeoutError",
    "as_location",
    "expand_braces",
    "is_url",
    "join_location",
    "locate",
    "location_name",
    "open_shard",
    "parse_spec",
    "read_deadline",
    "read_location",
]

#: Seconds an HTTP(S) connection may stay silent before the read fails.
HTTP_TIMEOUT_S = 60.0
#: Extra seconds the socket of a read with a deadline waits beyond the deadline.
_SOCKET_GRACE_S = 5.0
#: Default seconds a remote shard (URL or ``pipe:``) may spend waiting for its bytes.
DEADLINE_S = 600.0
#: Environment variable overriding :data:`DEADLINE_S` (seconds; ``0`` or ``none``: no deadline).
DEADLINE_ENV = "ARAS_REMOTE_TIMEOUT"
#: Seconds a ``pipe:`` command is given to exit once its reader stops early.
_PIPE_GRACE_S = 2.0
#: Characters of a failed command's stderr quoted in the error.
_STDERR_TAIL = 2000
#: Backends of the common fsspec schemes, for the "install it" message.
_FSSPEC_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "hf": "huggingface_hub",
}

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PIPE = "pipe:"
_SHARD_SUFFIX = ".tar"
_MANIFEST = "manifest.json"  # = shards.MANIFEST_NAME (this module does not import shards)


class PipeError(OSError):
    """A ``pipe:`` command exited with an error; the message quotes its stderr."""


class ShardTimeoutError(TimeoutError):
    """A remote shard was not read completely within its deadline; the message names it."""


@dataclass(frozen=True)
class ParsedSpec:
    """What a ``spec`` names: a shard set ``folder``, or a list of ``shards``.

    Attributes:
        folder: The shard set folder (local path, or URL without its trailing slash), or ``None``.
        shards: The shard locations (local paths, URLs or ``pipe:`` commands); empty for a folder.
    """

    spec: str
    folder: str | None
    shards: tuple[str, ...] = ()


def is_url(spec: str | Path) -> bool:
    """Whether ``spec`` is a ``pipe:`` command or a ``scheme://`` URL (``file://`` too); a :class:`Path` is local."""
    return isinstance(spec, str) and (spec.startswith(_PIPE) or _SCHEME_RE.match(spec) is not None)


def expand_braces(spec: str) -> list[str]:
    """The specs a spec's brace patterns expand to, in order, as webdataset expands them (``[spec]`` if none).

    ``{000000..000003}`` is a zero-padded range, ``{a,b}`` a list; other braces
    (``awk '{print}'``) stay.
    """
    return list(braceexpand(spec))


def _url_path(location: str) -> str:
    """The path part of a URL, without query or fragment."""
    return urllib.parse.urlsplit(location).path


def parse_spec(spec: str | Path) -> ParsedSpec:
    """Tell a shard set folder from a list of shards in a local path or URL spec (see the module docstring).

    ``pipe:`` specs (one command per expanded spec), brace patterns and ``.tar`` names
    list shards; anything else is a folder, and ``.../manifest.json`` names its folder.

    Raises:
        ValueError: On an empty ``pipe:`` command, or a brace pattern that expands to folders.
    """
    text = str(spec)
    if isinstance(spec, str) and spec.startswith(_PIPE):
        commands = expand_braces(spec)
        if any(not c[len(_PIPE) :].strip() for c in commands):
            raise ValueError(f"{spec!r} has an empty command after 'pipe:'")
        return ParsedSpec(spec=text, folder=None, shards=tuple(commands))
    url = is_url(spec)
    if not url and Path(text).is_dir():
        return ParsedSpec(spec=text, folder=text)  # an existing folder, whatever its name holds
    expanded = expand_braces(text)
    last = _url_path(expanded[0]) if url else expanded[0]
    if len(expanded) > 1 or expanded[0] != text or last.rstrip("/").endswith(_SHARD_SUFFIX):
        folders = [e for e in expanded if e.endswith("/") or (not url and Path(e).is_dir())]
        if folders:
            raise ValueError(
                f"{text} expands to folders ({', '.join(folders[:3])}, ...); a brace pattern lists shards, "
                "so give one shard set folder per source instead"
            )
        return ParsedSpec(spec=text, folder=None, shards=tuple(expanded))
    folder = text.rstrip("/") if url else text
    if folder.endswith("/" + _MANIFEST) or (not url and Path(folder).name == _MANIFEST):
        folder = folder[: -len(_MANIFEST)].rstrip("/") if url else str(Path(folder).parent)
    return ParsedSpec(spec=text, folder=folder)


def join_location(folder: str, name: str) -> str:
    """The location of file ``name`` (a shard, ``manifest.json``) in a folder path or URL, as a string."""
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else str(Path(folder) / name)


def location_name(location: str | Path) -> str:
    """A shard location's short name, for messages and to select shards.

    The file name (a URL's last path part, without query), or a whole ``pipe:`` command.
    """
    text = str(location)
    if not is_url(location):
        return Path(text).name
    return text if text.startswith(_PIPE) else _url_path(text).rstrip("/").rsplit("/", 1)[-1]


def as_location(spec: str | Path) -> str | Path:
    """A spec in the form the readers keep: a local one as a :class:`Path`, a URL one unchanged.

    ``Path("http://host/set/")`` would merge the ``//`` into ``/``, so specs go through this instead.
    """
    return spec if is_url(spec) else Path(spec)


def locate(folder: str | Path, name: str) -> str | Path:
    """Like :func:`join_location`, but ``Path(folder) / name`` when the folder is local."""
    return join_location(str(folder), name) if is_url(folder) else Path(folder) / name


def read_deadline(deadline_s: float | None = None) -> float | None:
    """The deadline in seconds of one remote shard: ``deadline_s``, else ``$ARAS_REMOTE_TIMEOUT``, else 600 s.

    ``None`` (returned) means no deadline, as does a ``deadline_s`` of ``0`` or less.

    Raises:
        ValueError: If ``$ARAS_REMOTE_TIMEOUT`` is neither a number nor ``none``.
    """
    if deadline_s is None:
        text = os.environ.get(DEADLINE_ENV, "").strip()
        if not text:
            return DEADLINE_S
        if text.lower() in ("none", "off"):
            return None
        try:
            deadline_s = float(text)
        except ValueError:
            raise ValueError(f"{DEADLINE_ENV}={text!r} must be seconds (e.g. 600) or 'none'") from None
    return deadline_s if deadline_s > 0 else None


class _Deadline:
    """A budget of seconds that a remote shard may spend waiting for its bytes.

    Only time inside reads counts. Once the budget is spent a watchdog thread calls
    ``abort`` (shut the socket, kill the command), which wakes a blocked read.
    """

    def __init__(self, location: str, seconds: float, abort: Callable[[], None]) -> None:
        self.location = location
        self.seconds = seconds
        self.expired = False
        self._abort = abort
        self._spent = 0.0
        self._since: float | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._watch, name=f"deadline {location_name(location)}", daemon=True)
        self._thread.start()

    def error(self) -> ShardTimeoutError:
        """The error that names the shard and the deadline."""
        return ShardTimeoutError(
            f"{self.location}: no complete read within {self.seconds:g} s (deadline; "
            f"set {DEADLINE_ENV} to allow more seconds per shard)"
        )

    def start(self) -> None:
        """A read begins; raises :class:`ShardTimeoutError` if the budget is already spent."""
        with self._cond:
            if self.expired:
                raise self.error()
            self._since = time.monotonic()
            self._cond.notify()

    def stop(self) -> None:
        """A read ended."""
        with self._cond:
            if self._since is not None:
                self._spent += time.monotonic() - self._since
                self._since = None

    def close(self) -> None:
        """Stop the watchdog."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._since is None:
                    self._cond.wait()
                    continue
                left = self.seconds - self._spent - (time.monotonic() - self._since)
                if left <= 0:
                    self.expired = True
                    break
                self._cond.wait(left)
        if self.expired:
            self._abort()


class _TimedReader(io.RawIOBase):
    """A binary stream whose reads are charged to a :class:`_Deadline`."""

    def __init__(self, inner: IO[bytes], deadline: _Deadline) -> None:
        super().__init__()
        self._inner = inner
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        self._deadline.start()
        try:
            data = self._inner.read(-1 if size is None else size)
        except Exception as err:
            if self._deadline.expired:
                raise self._deadline.error() from err
            if isinstance(err, TimeoutError):  # the socket gave up waiting for the next bytes
                raise ShardTimeoutError(f"{self._deadline.location}: the server stopped sending ({err})") from err
            raise
        finally:
            self._deadline.stop()
        if self._deadline.expired:
            raise self._deadline.error()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._deadline.close()
            self._inner.close()
        super().close()


class ShardStream:
    """A readable binary stream of one shard (local path, URL or ``pipe:`` command); a context manager.

    Local paths and ``file://`` URLs open as files, ``http(s)://`` URLs with :mod:`urllib`,
    ``pipe:`` commands through the shell (stdout is the stream, stderr kept for the error)
    and other URLs with fsspec. A remote shard's read fails with :class:`ShardTimeoutError`
    once its reads have waited ``deadline_s`` seconds in all (``None``: :func:`read_deadline`;
    ``0``: no deadline; ``docs/scaling.md#remote-shards``); an HTTP(S) connection silent for
    :data:`HTTP_TIMEOUT_S` fails sooner.

    A ``pipe:`` command is checked when the stream closes: after a complete read a non-zero
    exit status raises :class:`PipeError`; a reader that stopped early stops the command,
    and only a reader stopped by an error (an empty or truncated tar from a failed ``cat``
    or ``curl``) gets :class:`PipeError` raised from that error.

    Raises:
        FileNotFoundError: If the file or URL does not exist (HTTP 404).
        OSError: If a URL cannot be reached or answers with another HTTP error.
        ShardTimeoutError: Past the deadline.
        ImportError: If the URL needs fsspec or a backend that is not installed.
        PipeError: See above.
    """

    def __init__(self, location: str | Path, deadline_s: float | None = None) -> None:
        self.location = str(location)
        self.deadline_s = deadline_s
        self._stream: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        location = self.location
        scheme = location.split("://", 1)[0].lower() if not location.startswith(_PIPE) else "pipe"
        if not is_url(location) or scheme == "file":
            local = urllib.request.url2pathname(_url_path(location)) if is_url(location) else location
            self._stream = Path(local).open("rb")
            return self._stream
        seconds = read_deadline(self.deadline_s)
        abort: Callable[[], None] = _do_nothing
        if scheme == "pipe":
            stream = self._start_pipe(location[len(_PIPE) :])
            abort = self._kill_pipe
        elif scheme in ("http", "https"):
            # The socket waits a little longer than the deadline, so the deadline's own
            # watchdog (which names the shard) ends a stalled read first, even on a busy machine.
            socket_s = HTTP_TIMEOUT_S if seconds is None else min(HTTP_TIMEOUT_S, seconds + _SOCKET_GRACE_S)
            stream = _open_http(location, socket_s)
            abort = functools.partial(_shut_down, stream)
        else:
            stream = _open_fsspec(location, scheme)
        if seconds is not None:
            stream = cast(IO[bytes], _TimedReader(stream, _Deadline(location, seconds, abort)))
        self._stream = stream
        return stream

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._finish_pipe(exc)
        elif self._stream is not None:
            self._stream.close()

    def _start_pipe(self, command: str) -> IO[bytes]:
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty command cannot block on it
        # shell=True on purpose: a pipe: spec is a shell command line, as in webdataset. A session
        # of its own, so that stopping it stops every process of the line (curl | zcat, sleep, ...).
        self._proc = subprocess.Popen(
            command, shell=True, stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True
        )
        assert self._proc.stdout is not None
        return self._proc.stdout

    def _kill_pipe(self) -> None:
        """Kill the command and everything it started (its stdout then ends)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()

    def _finish_pipe(self, exc: BaseException | None) -> None:
        proc, stderr, stream = self._proc, self._stderr, self._stream
        assert proc is not None and stream is not None and stderr is not None
        try:
            if exc is None:
                # The reader got to the end of the tar: drain the padding so the command can exit.
                while stream.read(1 << 16):
                    pass
                stream.close()
                status = proc.wait()
                if status != 0:
                    raise self._pipe_error(status)
                return
            stream.close()  # a command still writing gets SIGPIPE
            try:
                status = proc.wait(timeout=_PIPE_GRACE_S)
            except subprocess.TimeoutExpired:
                self._kill_pipe()
                proc.wait()
                return
            # A reader that stopped on purpose (GeneratorExit), the command's SIGPIPE, or the
            # deadline (which killed the command) is no failure of the command.
            if isinstance(exc, Exception) and not isinstance(exc, ShardTimeoutError) and status not in (0, -13, 141):
                raise self._pipe_error(status) from exc
        finally:
            stderr.close()

    def _pipe_error(self, status: int) -> PipeError:
        assert self._stderr is not None
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        if len(text) > _STDERR_TAIL:
            text = "..." + text[-_STDERR_TAIL:]
        said = f": {text}" if text else " (it wrote nothing to stderr)"
        return PipeError(f"shard command {self.location!r} failed with exit status {status}{said}")


def open_shard(location: str | Path, deadline_s: float | None = None) -> ShardStream:
    """Open one shard (a file, URL or ``pipe:`` command, braces expanded) as a binary stream in a ``with`` block.

    See :class:`ShardStream`, which it returns, for ``deadline_s``.
    """
    return ShardStream(location, deadline_s)


def read_location(location: str | Path, deadline_s: float | None = None) -> bytes:
    """Read a whole file (e.g. a manifest) from a local path, URL or ``pipe:`` command.

    ``deadline_s``: of a remote read (see :class:`ShardStream`).

    Raises:
        FileNotFoundError: If it does not exist.
        OSError: If it cannot be read (:class:`ShardTimeoutError` past the deadline).
        ImportError: If the URL needs a package that is not installed.
    """
    with open_shard(location, deadline_s) as stream:
        return stream.read()


def _do_nothing() -> None:
    pass


def _shut_down(response: IO[bytes]) -> None:
    """Shut an HTTP response's socket down, from another thread: a read blocked on it returns."""
    try:
        with socket.socket(fileno=os.dup(response.fileno())) as sock:  # a duplicate: shutdown acts on both
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):
        pass  # already closed


def _open_http(url: str, timeout: float = HTTP_TIMEOUT_S) -> IO[bytes]:
    try:
        response: IO[bytes] = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise FileNotFoundError(f"{url} does not exist (HTTP 404 Not Found)") from err
        raise OSError(f"{url} answered HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise OSError(f"cannot reach {url} ({err.reason})") from err
    except TimeoutError as err:
        raise ShardTimeoutError(f"{url}: no answer within {timeout:g} s") from err
    return response


def _open_fsspec(url: str, scheme: str) -> IO[bytes]:
    backend = _FSSPEC_PACKAGES.get(scheme)
    needs = f"fsspec and {backend}" if backend else "fsspec (and its backend for this scheme)"
    hint = f"pip install fsspec {backend}" if backend else "pip install fsspec"
    try:
        import fsspec
    except ImportError as err:
        raise ImportError(f"reading {url} needs {needs}, which are not installed ({hint})") from err
    try:
        opened: Any = fsspec.open(url, "rb").open()
    except ImportError as err:
        missing = backend or f"the fsspec backend for {scheme}://"
        raise ImportError(
            f"reading {url} needs {missing}, which is not installed ({hint}; fsspec says: {err})"
        ) from err
    except ValueError as err:  # fsspec: "Protocol not known"
        raise ValueError(f"cannot read {url}: fsspec does not know the scheme {scheme}:// ({err})") from err
    return opened  # type: ignore[no-any-return]
