"""Shared fixtures: tiny, seeded shard sets built by code (never downloaded)."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import threading
import zlib
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from aras400k.data.demo import make_demo
from aras400k.data.shards import Sample, ShardWriter

# Test models are tiny: one intra-op thread is faster than two, and on a shared
# 2-core machine more threads than cores slows torch down several-fold.
torch.set_num_threads(1)
os.environ.setdefault("ARAS_THREADS", "1")  # what the commands set (aras400k.threads) in-process


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_each_module() -> Iterator[None]:
    """Free a test module's leftovers (loaders and their worker processes) in the main thread when it ends.

    Otherwise they are collected whenever a later collection happens to run, possibly in a
    thread of another test (an HTTP server's), which then waits for the workers to exit.
    """
    yield
    gc.collect()


def write_random_set(
    out: Path,
    n: int,
    size: int = 32,
    split: str = "train",
    source: str = "real",
    per_shard: int = 4,
    masks: bool = True,
    prefix: str = "s",
) -> Path:
    """Write ``n`` random samples keyed ``{prefix}{i:04d}`` as a shard set."""
    # A fixed seed per (folder name, n): the same pixels in every process and tmp folder
    # (hash() of a str changes with PYTHONHASHSEED).
    rng = np.random.default_rng(zlib.crc32(f"{Path(out).name}:{n}:{prefix}".encode()))
    with ShardWriter(out, split=split, source=source, samples_per_shard=per_shard) as writer:
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            mask = rng.integers(0, 7, (size, size), dtype=np.uint8) if masks else None
            writer.write(Sample(key=f"{prefix}{i:04d}", image=image, mask=mask))
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 while the block runs; yields the base URL (no trailing slash)."""
    # Collect what earlier tests left (DataLoader iterators) here, in this thread: a garbage
    # collection that runs in the server's thread would join their worker processes there
    # (torch's DataLoader __del__ waits up to 5 s per worker) and leave a request unanswered.
    gc.collect()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo set (48/16/16 samples of 32 px) shared by the whole session."""
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo(root, (48, 16, 16), image_size=32, samples_per_shard=8, progress=False)
    return root
