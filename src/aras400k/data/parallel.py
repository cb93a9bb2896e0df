"""Ordered work on every core, and progress that suits a terminal and a log file alike.

:func:`ordered_map` runs a function over items in worker processes and yields the
results in the items' order, so a writer fed from it writes the same bytes as one
process would (see ``docs/data.md``). :func:`progress` is a ``tqdm`` bar on a terminal
and a few plain lines (count, share, rate) on anything else, such as a log file.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

from aras400k.threads import usable_cores

__all__ = ["LineProgress", "ordered_map", "progress", "resolve_workers"]

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


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1, ahead: int = 8) -> Iterator[R]:
    """Apply ``fn`` to every item, in ``workers`` processes, yielding results in item order.

    With one worker it runs in this process. Otherwise at most ``ahead`` items per
    worker are in flight, so memory stays bounded however slowly the results are
    consumed; stopping the iteration (or an exception) stops the workers.

    Args:
        fn: A picklable (module-level) function.
        items: The inputs, read lazily.
        workers: Processes to use (>= 1).
        ahead: Items in flight per worker.

    Yields:
        ``fn(item)`` for each item, in order. An exception raised by ``fn`` is raised
        here, at its item.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with _context().Pool(workers) as pool:
        pending: deque[Any] = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= workers * ahead:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


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
