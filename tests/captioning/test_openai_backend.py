import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from aras400k.captioning import BackendError, Captioner, CaptionRequest
from aras400k.captioning.backends.openai import OpenAIBackend


class FakeServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that records what it gets."""

    def __init__(
        self, fail_with: list[int] | None = None, delay: float = 0.0, stalls: list[float] | None = None
    ) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.fail_with = list(fail_with or [])
        self.delay = delay
        self.stalls = list(stalls or [])  # extra seconds before answering the first requests
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    status = server.fail_with.pop(0) if server.fail_with else 200
                    stall = server.stalls.pop(0) if server.stalls else 0.0
                time.sleep(server.delay + stall)
                with server.lock:
                    server.active -= 1
                if status != 200:
                    self.send_response(status)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                if stall:
                    return  # the client timed out; nobody reads the answer
                text = body["messages"][-1]["content"]
                text = text if isinstance(text, str) else text[-1]["text"]
                answer = {"choices": [{"message": {"role": "assistant", "content": f"{self.path} {text}"}}]}
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started: list[FakeServer] = []

    def start(**kw) -> FakeServer:
        started.append(FakeServer(**kw))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_request_body_image_data_url_and_api_key(servers, monkeypatch):
    server = servers()
    monkeypatch.setenv("ARAS_TEST_KEY", "sekret")
    backend = OpenAIBackend("qwen-vl", base_urls=[server.url], api_key_env="ARAS_TEST_KEY", extra_body={"x": 1})
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    captioner = Captioner("hybrid", backend, captions_per_image=1, temperature=0.5, max_new_tokens=40, progress=False)
    out = captioner.caption(images=[image], compositions=[{"tree": 0.75, "water": 0.25}], keys=["k1"])
    backend.close()
    assert out[0][0].startswith("/v1/chat/completions This satellite image patch")
    body = server.bodies[0]
    assert body["model"] == "qwen-vl" and body["max_tokens"] == 40 and body["temperature"] == 0.5
    assert body["top_p"] == 0.9 and body["x"] == 1 and isinstance(body["seed"], int)
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith("You write captions")
    part_image, part_text = user["content"]
    assert "tree 75.0%, water 25.0%" in part_text["text"]
    url = part_image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.array(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(decoded, image)
    assert server.headers[0]["Authorization"] == "Bearer sekret"
    text_body = OpenAIBackend("m").request_body(CaptionRequest("", "hello"))
    assert text_body["messages"] == [{"role": "user", "content": "hello"}]


def test_retries_after_503_and_gives_up_with_a_clear_error(servers):
    server = servers(fail_with=[503, 429])
    backend = OpenAIBackend("m", base_urls=[server.url], backoff_s=0.01, max_retries=3)
    assert backend.generate([CaptionRequest("", "hi")]) == ["/v1/chat/completions hi"]
    assert len(server.bodies) == 3
    failing = servers(fail_with=[503] * 10)
    backend = OpenAIBackend("m", base_urls=[failing.url], backoff_s=0.01, max_retries=2)
    with pytest.raises(BackendError, match="failed 3 times.*HTTP 503"):
        backend.generate([CaptionRequest("", "hi", key="k9")])
    bad = servers(fail_with=[400])
    with pytest.raises(BackendError, match="HTTP 400"):
        OpenAIBackend("m", base_urls=[bad.url], backoff_s=0.01).generate([CaptionRequest("", "hi")])
    assert len(bad.bodies) == 1  # a 4xx other than 408/429 is not retried
    down = OpenAIBackend("m", base_urls=["http://127.0.0.1:9/v1"], backoff_s=0.01, max_retries=1, timeout_s=2)
    with pytest.raises(BackendError, match="failed 2 times"):
        down.generate([CaptionRequest("", "hi")])


def test_concurrency_limit_and_round_robin(servers):
    slow = servers(delay=0.15)
    backend = OpenAIBackend("m", base_urls=[slow.url], max_concurrency=3)
    out = backend.generate([CaptionRequest("", f"p{i}") for i in range(9)])
    backend.close()
    assert out == [f"/v1/chat/completions p{i}" for i in range(9)]  # answers in request order
    assert 2 <= slow.peak <= 3  # never more than the limit in flight
    first, second = servers(), servers()
    backend = OpenAIBackend("m", base_urls=[first.url, second.url + "/"], max_concurrency=2)
    backend.generate([CaptionRequest("", f"p{i}") for i in range(8)])
    backend.close()
    assert len(first.bodies) == len(second.bodies) == 4


def test_bad_configuration():
    with pytest.raises(ValueError, match="model name"):
        OpenAIBackend("")
    with pytest.raises(ValueError, match="base_urls is empty"):
        OpenAIBackend("m", base_urls=[])
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIBackend("m", max_concurrency=0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_a_fatal_answer_is_sent_once_and_stops_the_batch(servers, status):
    # A wrong model name (404), key (401/403) or body (400/422) fails every request alike:
    # one request finds it out, none is retried and the rest of the batch is never sent.
    bad = servers(fail_with=[status] * 50)
    backend = OpenAIBackend("m", base_urls=[bad.url], backoff_s=0.01, max_concurrency=4)
    with pytest.raises(BackendError, match=f"HTTP {status}") as info:
        backend.generate([CaptionRequest("", f"p{i}", key=f"k{i}") for i in range(8)])
    backend.close()
    assert len(bad.bodies) == 1
    assert not info.value.resumable  # rerunning the same command cannot help


def test_a_fatal_answer_cancels_the_requests_in_flight(servers):
    # After one request succeeded the batch goes out concurrently; a 404 then stops the
    # other requests' retries at once instead of letting them spend their backoff.
    server = servers(fail_with=[200, 503, 503, 503, 404] + [503] * 50)
    backend = OpenAIBackend("m", base_urls=[server.url], backoff_s=2.0, max_backoff_s=2.0, max_concurrency=4)
    assert backend.generate([CaptionRequest("", "first")]) == ["/v1/chat/completions first"]
    start = time.perf_counter()
    with pytest.raises(BackendError, match="HTTP 404"):
        backend.generate([CaptionRequest("", f"p{i}") for i in range(4)])
    backend.close()
    assert time.perf_counter() - start < 1.5  # not after the 2 s backoff of the 503s
    time.sleep(2.5)
    assert len(server.bodies) == 5  # the 503s were not retried after the 404


def test_retries_and_timeouts_are_counted(servers):
    server = servers(fail_with=[503, 429, 200, 503], stalls=[0.0, 0.0, 1.5])
    backend = OpenAIBackend("m", base_urls=[server.url], backoff_s=0.01, timeout_s=0.5, max_retries=5)
    seen = []
    backend.retry_listener = lambda: seen.append(dict(backend.retry_counts()))
    assert backend.generate([CaptionRequest("", "hi")]) == ["/v1/chat/completions hi"]
    backend.close()
    counts = backend.retry_counts()
    assert counts["retries"] == 4 and counts["timeouts"] == 1
    assert counts["HTTP 503"] == 2 and counts["HTTP 429"] == 1
    assert len(seen) == 4 and seen[-1] == counts  # told live, after every retry


def test_409_is_not_retried(servers):
    conflict = servers(fail_with=[409, 200])
    with pytest.raises(BackendError, match="HTTP 409"):
        OpenAIBackend("m", base_urls=[conflict.url], backoff_s=0.01).generate([CaptionRequest("", "hi")])
    assert len(conflict.bodies) == 1


def test_failure_messages_say_what_to_fix(servers, monkeypatch):
    monkeypatch.delenv("ARAS_TEST_KEY", raising=False)
    unauthorized = servers(fail_with=[401])
    backend = OpenAIBackend("m", base_urls=[unauthorized.url], api_key_env="ARAS_TEST_KEY")
    with pytest.raises(BackendError, match=r"ARAS_TEST_KEY.*not set"):
        backend.generate([CaptionRequest("", "hi")])
    missing = servers(fail_with=[404])
    backend = OpenAIBackend("no-such-model", base_urls=[missing.url])
    with pytest.raises(BackendError, match=r"'no-such-model'.*--openai\.model.*--openai\.base_urls"):
        backend.generate([CaptionRequest("", "hi")])
    down = OpenAIBackend("m", base_urls=["http://127.0.0.1:9/v1"], backoff_s=0.01, max_retries=0)
    with pytest.raises(BackendError) as info:
        down.generate([CaptionRequest("", "hi")])
    assert info.value.resumable  # a server that is down may be back on a rerun
