"""``aras-caption`` exits within one request timeout of a fatal error, and says what to fix."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.captioning.test_openai_backend import FakeServer

TIMEOUT_S = 1.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _caption_until_exit(demo_root: Path, out: Path, url: str, *options: str) -> tuple[float, str, int]:
    """Run aras-caption in a process; return the seconds from its error line to its exit, the line and the status."""
    args = [
        sys.executable, "-m", "aras400k.cli.caption", "--input", str(demo_root / "val"), "--out", str(out),
        "--limit", "4", "--captions_per_image", "2", "--batch_size", "8", "--progress", "false",
        "--backend", "openai", "--openai.model", "m", "--openai.base_urls", f"[{url}]",
        "--openai.timeout_s", str(TIMEOUT_S), "--openai.max_concurrency", "2", *options,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    line = ""
    while not line.startswith("aras-caption: error:"):
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "aras-caption ended without an error line"
    errored = time.perf_counter()
    status = proc.wait(timeout=60)
    return time.perf_counter() - errored, line.strip(), status


def test_a_server_that_is_down_exits_within_one_timeout(demo_root, tmp_path):
    # Each request spends 2 s in backoff; today the batch's other requests spend theirs
    # after the error is printed, in waves of max_concurrency.
    retry = ["--openai.max_retries", "2", "--openai.backoff_s", "1", "--openai.max_backoff_s", "1"]
    out = tmp_path / "down.jsonl"
    delay, line, status = _caption_until_exit(demo_root, out, f"http://127.0.0.1:{_closed_port()}/v1", *retry)
    assert status == 1
    assert delay < 2 * TIMEOUT_S, f"exited {delay:.1f} s after the error"
    assert "failed 3 times" in line and "rerun to resume" in line  # a server down may be back later


def test_a_wrong_model_name_sends_one_request_and_says_what_to_fix(demo_root, tmp_path):
    server = FakeServer(fail_with=[404] * 100, delay=0.3)
    try:
        out = tmp_path / "missing.jsonl"
        delay, line, status = _caption_until_exit(demo_root, out, server.url)
    finally:
        server.close()
    assert status == 1 and delay < 2 * TIMEOUT_S
    assert len(server.bodies) == 1
    assert "--openai.model" in line and "rerun" not in line
    assert "nothing was written" in line and "by this run" in line
