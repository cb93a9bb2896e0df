"""Ordered work on every core, and progress that suits a terminal and a log file alike.

:func:`ordered_map` runs a function over items in worker processes and yields the
results in the items' order, so a writer fed from it writes the same bytes as one
process would (see ``docs/data.md``). It sends the items in chunks and reads the
results in the calling thread, with no helper threads there, so a reader that only
writes what the workers made stays nearly idle. :func:`progress` is a ``tqdm`` bar on
a terminal and a few plain lines (count, share, rate) on anything else, such as a log
file.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import pickle
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import IO, Any, TypeVar

from tqdm import tqdm

from aras400k.threads import usable_cores

__all__ = ["LineProgress", "RemoteTraceback", "ordered_map", "progress", "resolve_workers"]

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int | None) -> int:
    """Check a worker count; ``None`` means every usable core.

    Args:
        workers: Processes to use, >= 1, or ``None``.

    Returns:
        The count.

    Raises:
        ValueError: If ``workers`` is below 1.
    """
    if workers is None:
        return usable_cores()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return int(workers)


def _context() -> Any:
    """``fork`` where the platform has it (workers start at once), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


#: Bytes asked of the OS for each worker's result pipe (Linux; 64 KiB by default), so a
#: worker can finish a few results ahead of the reader without waiting for it.
_PIPE_BYTES = 1 << 20


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (the ``__cause__`` of the one re-raised)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _portable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling, else a ``RuntimeError`` with its type and message."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # any failure to round-trip (unpicklable state, an __init__ with other arguments)
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


def _serve(fn: Callable[[Any], Any], tasks: Connection, results: Connection) -> None:
    """A worker: apply ``fn`` to each chunk of items in the order sent, sending back ``(values, failure)``.

    ``failure`` is ``None``, or ``(error, traceback text)`` for the item after the last
    value (the rest of that chunk is skipped). Two threads keep the work going whatever
    the reader does: one drains the task pipe into a queue (so the reader never blocks
    sending a task to a worker that is itself blocked sending a result: no deadlock),
    and one writes the pickled answers to the result pipe (so a worker whose answers
    wait for the reader, which reads in item order, goes on with its next chunk). The
    reader's limit on chunks in flight bounds both queues. An empty tuple (or the pipe
    closing) ends the worker, after its answers are sent.
    """
    inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    outbox: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()

    def feed() -> None:
        try:
            while message := tasks.recv():
                inbox.put(message)
        except (EOFError, OSError):
            pass
        inbox.put(())

    def post() -> None:
        try:
            while (answer := outbox.get()) is not None:
                results.send_bytes(answer)
        except OSError:  # the reader is gone (BrokenPipeError) or stopped the run
            pass

    threading.Thread(target=feed, name="ordered_map-feed", daemon=True).start()
    poster = threading.Thread(target=post, name="ordered_map-post", daemon=True)
    poster.start()
    try:
        while message := inbox.get():
            values: list[Any] = []
            failure: tuple[BaseException, str] | None = None
            for item in message[0]:
                try:
                    values.append(fn(item))
                except Exception as err:  # sent back, to be raised at its item
                    failure = (_portable(err), traceback.format_exc())
                    break
            try:
                answer = ForkingPickler.dumps((values, failure))
            except Exception:  # a value does not pickle: send those before it, and the error at it
                answer = ForkingPickler.dumps(_picklable_prefix(values, failure))
            outbox.put(answer)
        outbox.put(None)
        poster.join()
    except KeyboardInterrupt:
        pass  # the reader stops the run (Ctrl-C reaches it too)


def _picklable_prefix(
    values: list[Any], failure: tuple[BaseException, str] | None
) -> tuple[list[Any], tuple[BaseException, str] | None]:
    """The values up to the first that does not pickle, and an error naming it (else ``failure``)."""
    for index, value in enumerate(values):
        try:
            ForkingPickler.dumps(value)
        except Exception as err:
            return values[:index], (RuntimeError(f"result not picklable: {err}"), traceback.format_exc())
    return values, failure


def _widen(conn: Connection) -> None:
    """Grow a pipe's buffer to :data:`_PIPE_BYTES` where the OS allows (Linux); else leave it."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


class _Team:
    """Worker processes, each with a task pipe and a result pipe, used round-robin."""

    def __init__(self, fn: Callable[[Any], Any], size: int) -> None:
        context = _context()
        self.members: list[tuple[Any, Connection, Connection]] = []
        try:
            for _ in range(size):
                task_out, task_in = context.Pipe(duplex=False)
                result_out, result_in = context.Pipe(duplex=False)
                _widen(result_in)
                process = context.Process(target=_serve, args=(fn, task_out, result_in), daemon=True)
                process.start()
                # Only the worker holds its ends: if it dies, reading its results ends at once.
                task_out.close()
                result_in.close()
                self.members.append((process, task_in, result_out))
        except BaseException:
            self.stop(finished=False)
            raise

    def send(self, index: int, items: list[Any]) -> None:
        """Give a chunk of items to worker ``index``."""
        self.members[index][1].send((items,))

    def receive(self, index: int) -> tuple[list[Any], tuple[BaseException, str] | None]:
        """The next answer of worker ``index``: the values of a chunk, and the failure that cut it short.

        Raises:
            RuntimeError: If the worker died (killed, out of memory) before answering.
        """
        process, _, results = self.members[index]
        try:
            answer: tuple[list[Any], tuple[BaseException, str] | None] = results.recv()
        except EOFError:
            process.join(timeout=5)
            raise RuntimeError(
                f"worker process {process.pid} ended (exit code {process.exitcode}) before returning its result"
            ) from None
        return answer

    def stop(self, finished: bool) -> None:
        """End the workers: politely after a complete run, at once otherwise."""
        for process, tasks, _ in self.members:
            if finished:
                with contextlib.suppress(OSError):
                    tasks.send(())
            else:
                process.terminate()
        for process, tasks, results in self.members:
            process.join(timeout=10 if finished else None)
            if process.is_alive():
                process.terminate()
                process.join()
            tasks.close()
            results.close()
        self.members = []


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 1, ahead: int = 32, chunk: int = 4
) -> Iterator[R]:
    """Apply ``fn`` to every item, in ``workers`` processes, yielding results in item order.

    With one worker it runs in this process. Otherwise the items go out in chunks of
    ``chunk`` consecutive items, chunk ``c`` to worker ``c % workers``, and the results
    are read back in the same order, in this thread (no helper threads here, so the
    caller's own work never holds up the reading of results). Chunks make the cost of
    a message (pickling, a system call, waking a process) a few times smaller per
    item, which is most of what the workers add. At most ``max(ahead, chunk)`` items
    per worker are in flight, so memory stays bounded however slowly the results are
    consumed; stopping the iteration (or an exception) stops the workers, and a worker
    that dies is an error, not a hang.

    Args:
        fn: A function of one item; picklable (module-level) where processes are
            spawned rather than forked.
        items: The inputs, read lazily; each is pickled to its worker.
        workers: Processes to use (>= 1).
        ahead: Items in flight per worker.
        chunk: Items per message to a worker.

    Yields:
        ``fn(item)`` for each item, in order. An exception raised by ``fn`` is raised
        here, at its item (after the results of the items before it), with the
        worker's traceback as its cause.

    Raises:
        RuntimeError: If a worker process dies before returning a result.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    chunk = max(1, chunk)
    in_flight = workers * max(1, ahead // chunk)  # chunks
    team = _Team(fn, workers)
    finished = False
    try:
        pending: deque[int] = deque()  # the worker of each chunk in flight, in item order
        source = iter(items)
        turn = 0
        while True:
            while len(pending) < in_flight and (batch := list(itertools.islice(source, chunk))):
                team.send(turn, batch)
                pending.append(turn)
                turn = (turn + 1) % workers
            if not pending:
                break
            values, failure = team.receive(pending.popleft())
            yield from values
            if failure is not None:
                err, text = failure
                raise err from RemoteTraceback(text)
        finished = True
    finally:
        team.stop(finished)


class LineProgress:
    """Progress for a non-terminal: a few whole lines with the count, share and rate.

    A line at the start, at each tenth of the work (at most one a second), at least
    every ``interval_s`` seconds, and at the end.

    It has the part of ``tqdm``'s interface the library uses (``update``, ``close``,
    ``set_postfix_str``, a context manager).
    """

    def __init__(
        self, total: int | None, desc: str, unit: str, file: IO[str] | None = None, interval_s: float = 10.0
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.interval_s = interval_s
        self.n = 0
        self._start = self._last = time.perf_counter()
        self._step = max(1, (total or 0) // 10) if total else 0
        self._next = self._step
        self._closed = False
        self._write()

    def _write(self) -> None:
        elapsed = time.perf_counter() - self._start
        rate = f", {self.n / elapsed:.1f} {self.unit}s/s" if elapsed > 0 and self.n else ""
        share = f"/{self.total} ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}{share} {self.unit}s in {elapsed:.1f}s{rate}", file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; write a line at each tenth (or each interval without a total)."""
        self.n += n
        now = time.perf_counter()
        due = self.n >= self._next if self._step else False
        if (due and now - self._last >= min(self.interval_s, 1.0)) or now - self._last >= self.interval_s:
            self._write()
            self._last = now
        while self._step and self._next <= self.n:
            self._next += self._step

    def set_postfix_str(self, text: str) -> None:
        """Ignored: a log gets counts and rates only."""

    def close(self) -> None:
        """Write the final line (once)."""
        if not self._closed:
            self._closed = True
            self._write()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str, enabled: bool = True) -> tqdm[Any] | LineProgress:
    """A progress bar with a rate in ``unit``/s: ``tqdm`` on a terminal, :class:`LineProgress` lines on a log.

    Args:
        total: Items expected, or ``None``.
        desc: Label.
        unit: Name of one item (``image``, ``row``).
        enabled: ``False``: a disabled ``tqdm`` (nothing written).

    Returns:
        An object with ``update``, ``close`` and ``set_postfix_str``, usable in ``with``.
    """
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
