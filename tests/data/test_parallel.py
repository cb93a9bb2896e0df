"""Tests of aras400k.data.parallel: ordered results from worker processes, progress lines for logs."""

from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator

import pytest

from aras400k.data.parallel import LineProgress, RemoteTraceback, ordered_map, resolve_workers


def _square_or_fail(n: int) -> int:
    if n == 7:
        raise KeyError(f"item {n}")
    return n * n


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_in_item_order_and_errors_at_their_item(workers):
    assert list(ordered_map(_square_or_fail, range(7), workers, ahead=2)) == [n * n for n in range(7)]
    seen = []
    with pytest.raises(KeyError, match="item 7"):
        for value in ordered_map(_square_or_fail, range(20), workers, ahead=2):
            seen.append(value)
    assert seen == [n * n for n in range(7)]


def test_resolve_workers():
    assert resolve_workers(3) == 3
    assert resolve_workers(None) >= 1
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        resolve_workers(0)


def test_line_progress_writes_few_whole_lines():
    out = io.StringIO()
    with LineProgress(10_000, "import train", "image", file=out) as bar:
        for _ in range(10_000):
            bar.update(1)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) <= 12
    assert lines[0].startswith("import train: 0/10000 (0%) images")
    assert lines[-1].startswith("import train: 10000/10000 (100%) images in ") and lines[-1].endswith("images/s")


def _die_at_three(n: int) -> int:
    if n == 3:
        os._exit(3)  # a worker killed mid-run (out of memory, a signal)
    return n


class _Stubborn(Exception):
    """An exception that cannot be rebuilt from its pickle (its __init__ takes two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def _raise_stubborn(n: int) -> int:
    if n == 2:
        raise _Stubborn(n, 5)
    return n


def _echo_big(blob: bytes) -> bytes:
    return blob[::-1] * 2


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail (rather than hang) if the block takes longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s (a deadlock?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("chunk", "before"), [(1, [0, 1, 2]), (4, [])])
def test_a_dead_worker_is_an_error_not_a_hang(chunk, before):
    # The chunk the worker died in is lost with it: with chunks of 4, items 0-3.
    seen = []
    with _deadline(60), pytest.raises(RuntimeError, match=r"worker process \d+ ended \(exit code 3\)"):
        for value in ordered_map(_die_at_three, range(10), workers=2, ahead=1, chunk=chunk):
            seen.append(value)
    assert seen == before
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("chunk", [1, 3, 4, 50])
def test_any_chunk_size_keeps_item_order(chunk):
    assert list(ordered_map(_square_or_fail, range(7), workers=3, ahead=5, chunk=chunk)) == [n * n for n in range(7)]
    seen = []
    with pytest.raises(KeyError, match="item 7"):
        for value in ordered_map(_square_or_fail, range(30), workers=2, chunk=chunk):
            seen.append(value)
    assert seen == [n * n for n in range(7)]


def test_worker_errors_carry_their_traceback_and_survive_pickling():
    with pytest.raises(RuntimeError, match=r"_Stubborn: 2/5") as info:
        list(ordered_map(_raise_stubborn, range(5), workers=2))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "_raise_stubborn" in str(info.value.__cause__)
    with pytest.raises(KeyError) as keyed:
        list(ordered_map(_square_or_fail, range(9), workers=2))
    assert "_square_or_fail" in str(keyed.value.__cause__)


def test_large_items_and_results_do_not_deadlock():
    # Items and results far larger than a pipe's buffer, many in flight both ways.
    blobs = [bytes([i]) * (3 << 20) for i in range(12)]
    with _deadline(120):
        out = list(ordered_map(_echo_big, blobs, workers=2, ahead=4))
    assert [len(b) for b in out] == [6 << 20] * 12
    assert [b[0] for b in out] == list(range(12))


def test_stopping_early_ends_the_workers():
    results = ordered_map(_square_or_fail, range(1000), workers=2, ahead=2)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    assert multiprocessing.active_children()
    results.close()
    assert not multiprocessing.active_children()


def _unpicklable_at_one(n: int) -> object:
    return (lambda: n) if n == 1 else n


def test_a_result_that_does_not_pickle_is_an_error_at_its_item():
    seen = []
    with pytest.raises(RuntimeError, match="result not picklable"):
        for value in ordered_map(_unpicklable_at_one, range(4), workers=2):
            seen.append(value)
    assert seen == [0]


def _touch_and_return_big(n: int, folder: str) -> bytes:
    open(os.path.join(folder, str(n)), "w").close()
    return bytes([n]) * (2 << 20)  # larger than a pipe's buffer


def test_workers_go_on_while_their_answers_wait_for_the_reader(tmp_path):
    # The reader reads in item order; a worker must not stall on sending an answer
    # bigger than its pipe while the reader is busy: it computes every chunk it holds.
    touch = functools.partial(_touch_and_return_big, folder=str(tmp_path))
    results = ordered_map(touch, range(20), workers=2, ahead=4, chunk=1)
    assert next(results)[0] == 0
    deadline = time.monotonic() + 30
    while len(list(tmp_path.iterdir())) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(tmp_path.iterdir())) == 8  # every item in flight (2 workers x 4) is done; none beyond
    assert [b[0] for b in results] == list(range(1, 20))
