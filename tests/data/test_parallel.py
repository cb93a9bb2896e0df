"""Tests of aras400k.data.parallel: ordered results from worker processes, progress lines for logs."""

from __future__ import annotations

import io

import pytest

from aras400k.data.parallel import LineProgress, ordered_map, resolve_workers


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
