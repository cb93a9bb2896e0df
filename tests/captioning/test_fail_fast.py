"""``aras-caption`` exits within one request timeout of a fatal error, and says what to fix."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aras400k.cli.caption import main
from tests.captioning.test_openai_backend import FakeServer

TIMEOUT_S = 1.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _args(demo_root: Path, out: Path, url: str, *options: str, timeout_s: float = TIMEOUT_S) -> list[str]:
    return [
        "--input", str(demo_root / "val"), "--out", str(out), "--limit", "4", "--captions_per_image", "2",
        "--batch_size", "8", "--progress", "false", "--backend", "openai", "--openai.model", "m",
        "--openai.base_urls", f"[{url}]", "--openai.timeout_s", str(timeout_s), "--openai.max_concurrency", "2",
        *options,
    ]  # fmt: skip


# Each request spends 2 s in backoff against a server that is down; before the fix the
# requests in flight with the first one spent theirs too before the exit (4 s in all).
RETRY = ["--openai.max_retries", "2", "--openai.backoff_s", "1", "--openai.max_backoff_s", "1"]
SHORT_TIMEOUT_S = 0.5  # a refused connection fails at once; the limit is 2 s + 2 timeouts


def _caption(capsys, args: list[str]) -> tuple[float, str, int]:
    """Run aras-caption in this process; return its seconds, its error line and its exit status."""
    start = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        main(args)
    seconds = time.perf_counter() - start
    line = capsys.readouterr().err.strip()
    assert line.startswith("aras-caption: error:") and "\n" not in line, line
    return seconds, line, int(stop.value.code)


def _caption_until_exit(args: list[str]) -> tuple[float, str, int]:
    """Run aras-caption in a process; return the seconds from its error line to its exit, the line and the status."""
    args = [sys.executable, "-m", "aras400k.cli.caption", *args]
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


def test_a_server_that_is_down_fails_within_one_timeout_of_its_error(demo_root, tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    args = _args(demo_root, tmp_path / "down.jsonl", url, *RETRY, timeout_s=SHORT_TIMEOUT_S)
    seconds, line, status = _caption(capsys, args)
    assert status == 1
    assert seconds < 2.0 + 2 * SHORT_TIMEOUT_S, f"returned {seconds:.1f} s after the start; the error came after 2 s"
    assert "failed 3 times" in line and "rerun to resume" in line  # a server down may be back later


def test_a_wrong_model_name_sends_one_request_and_says_what_to_fix(demo_root, tmp_path, capsys):
    server = FakeServer(fail_with=[404] * 100, delay=0.3)
    try:
        seconds, line, status = _caption(capsys, _args(demo_root, tmp_path / "missing.jsonl", server.url))
    finally:
        server.close()
    assert status == 1 and seconds < 2 * TIMEOUT_S
    assert len(server.bodies) == 1
    assert "--openai.model" in line and "rerun" not in line
    assert "nothing was written" in line and "by this run" in line


@pytest.mark.slow
def test_the_process_exits_within_one_timeout_of_its_error_line(demo_root, tmp_path):
    # 4 s of backoff per request: before the fix the exit came 4 s after the error line.
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    retry = ["--openai.max_retries", "2", "--openai.backoff_s", "2", "--openai.max_backoff_s", "2"]
    delay, line, status = _caption_until_exit(_args(demo_root, tmp_path / "down.jsonl", url, *retry))
    assert status == 1 and "rerun to resume" in line
    assert delay < 2 * TIMEOUT_S, f"exited {delay:.1f} s after the error"
    server = FakeServer(fail_with=[404] * 100, delay=0.3)
    try:
        delay, line, status = _caption_until_exit(_args(demo_root, tmp_path / "missing.jsonl", server.url))
    finally:
        server.close()
    assert status == 1 and delay < 2 * TIMEOUT_S and len(server.bodies) == 1
