"""The ``openai`` backend: any OpenAI-compatible chat-completions server, concurrently.

Works with vLLM, SGLang, Ollama, llama.cpp's server and hosted APIs, using only the
standard library. Fleets, retries (counted by :meth:`OpenAIBackend.retry_counts`) and
final errors: ``docs/captioning.md``.
"""

from __future__ import annotations

import base64
import http.client
import io
import itertools
import json
import os
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image

from aras400k.captioning.backends.base import BackendError, CaptionBackend
from aras400k.captioning.requests import CaptionRequest

__all__ = ["RETRY_STATUS", "OpenAIBackend", "image_data_url"]

#: HTTP statuses retried (as is every 5xx); any other error status is final.
RETRY_STATUS = frozenset({408, 429})


def image_data_url(image: np.ndarray, image_format: Literal["png", "jpeg"] = "png") -> str:
    """Encode an ``(H, W, 3)`` uint8 RGB image as a ``data:image/png;base64,...`` URL for a request.

    ``image_format`` is ``png`` (lossless) or ``jpeg`` (smaller, quality 95).
    """
    buffer = io.BytesIO()
    options: dict[str, Any] = {"format": "JPEG", "quality": 95} if image_format == "jpeg" else {"format": "PNG"}
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, **options)
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class _Retryable(Exception):
    """A failed try worth repeating; ``cause`` is what :meth:`OpenAIBackend.retry_counts` counts it as."""

    def __init__(self, message: str, cause: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after = retry_after


class _Cancelled(Exception):
    """Another request of the batch failed for good; this one stopped without sending again."""


class OpenAIBackend(CaptionBackend):
    """Captions from OpenAI-compatible chat-completions servers.

    Args:
        model: Model name the servers know (e.g. ``Qwen/Qwen3-VL-8B-Instruct`` on vLLM).
        base_urls: API roots such as ``http://gpu1:8000/v1``, used round-robin; ``None``: local port 8000.
        api_key_env: Environment variable holding the API key (a bearer token); ``None`` sends no key.
        max_concurrency: Requests in flight at once (over all servers).
        timeout_s: Seconds to wait for one response.
        max_retries: Retries of one request on 408, 429, 5xx, timeouts and connection errors.
        backoff_s: First retry delay, doubled per retry (a ``Retry-After`` is honoured).
        max_backoff_s: Longest delay between retries.
        image_format: Encoding of images in the data URLs.
        extra_body: Extra request fields (e.g. ``chat_template_kwargs`` for Qwen3 on vLLM).
        send_seed: Send each request's seed (servers that support it sample reproducibly).

    Raises:
        ValueError: On an empty model name or URL list, or non-positive limits.
    """

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        model: str,
        base_urls: list[str] | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        image_format: Literal["png", "jpeg"] = "png",
        extra_body: dict[str, Any] | None = None,
        send_seed: bool = True,
    ) -> None:
        if not model:
            raise ValueError("openai backend: give the model name the server serves (--openai.model NAME)")
        urls = list(base_urls) if base_urls is not None else ["http://127.0.0.1:8000/v1"]
        if not urls:
            raise ValueError("openai backend: base_urls is empty; give at least one server, e.g. http://host:8000/v1")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"openai backend: need max_concurrency >= 1, max_retries >= 0, timeout_s > 0; got "
                f"{max_concurrency}, {max_retries}, {timeout_s}"
            )
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"openai backend: image_format must be png or jpeg, got {image_format!r}")
        self.model = model
        self.endpoints = [u.rstrip("/") + "/chat/completions" for u in urls]
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.image_format = image_format
        self.extra_body = dict(extra_body or {})
        self.send_seed = send_seed
        self._cycle = itertools.cycle(self.endpoints)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._counts: Counter[str] = Counter()
        self._answered = False  # one request at a time until a server has answered

    @property
    def model_name(self) -> str:
        """Name recorded with every caption (the served model name)."""
        return self.model

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request_body(self, request: CaptionRequest) -> dict[str, Any]:
        """The chat-completions body of a request: messages (the image's URL first), sampling, seed, ``extra_body``."""
        messages: list[dict[str, Any]] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        if request.image is not None:
            url = image_data_url(request.image, self.image_format)
            content: Any = [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": request.user_prompt},
            ]
        else:
            content = request.user_prompt
        messages.append({"role": "user", "content": content})
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
        }
        if sampling.do_sample:
            body["top_p"] = sampling.top_p
        if self.send_seed:
            body["seed"] = request.seed
        body.update(self.extra_body)
        return body

    def retry_counts(self) -> Mapping[str, int]:
        """Failed tries so far by cause (only causes seen).

        ``retries`` (tries sent again), ``timeouts``, ``connection errors``, ``bad answers``
        (not JSON) and ``HTTP <status>``.
        """
        with self._lock:
            return dict(self._counts)

    def _count(self, cause: str, retried: bool) -> None:
        with self._lock:
            self._counts[cause] += 1
            if retried:
                self._counts["retries"] += 1
        if retried and self.retry_listener is not None:
            self.retry_listener()

    def _served_models(self, url: str) -> str:
        """``; the server serves: a, b`` from ``GET /models``, or ``""`` when it does not say."""
        root = url.removesuffix("/chat/completions")
        request = urllib.request.Request(root + "/models", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout_s, 5.0)) as response:
                names = [str(m["id"]) for m in json.loads(response.read())["data"]]
        except Exception:  # only a hint: any failure means no hint
            return ""
        return f"; the server serves: {', '.join(names[:8])}" if names else ""

    def _fatal(self, url: str, code: int, detail: str) -> BackendError:
        """The error of a status that retrying cannot mend, saying what to fix."""
        root = url.removesuffix("/chat/completions")
        env = self.api_key_env
        if code in (401, 403) and not env:
            fix = "the server wants an API key: name the environment variable holding it (--openai.api_key_env)"
        elif code in (401, 403) and not os.environ.get(env or ""):
            fix = f"${env} is not set: export the server's API key there (--openai.api_key_env names the variable)"
        elif code in (401, 403):
            what = "was refused" if code == 401 else "has no access to this model or endpoint"
            fix = f"the API key in ${env} {what}; check it (--openai.api_key_env names the variable)"
        elif code == 404:
            fix = (
                f"check the model name {self.model!r} (--openai.model){self._served_models(url)} "
                f"and the API root {root} (--openai.base_urls)"
            )
        else:
            fix = (
                "the server rejects the request itself; check --openai.extra_body, --max_new_tokens and, "
                "for vision and hybrid, that the model reads images"
            )
        return BackendError(f"{url} answered HTTP {code}: {detail}; {fix}", resumable=False)

    def _post(self, url: str, payload: bytes) -> dict[str, Any]:
        request = urllib.request.Request(url, data=payload, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace") if err.fp is not None else ""
            detail = " ".join(detail.split())
            if err.code not in RETRY_STATUS and err.code < 500:
                raise self._fatal(url, err.code, detail) from err
            retry_after = err.headers.get("Retry-After") if err.headers else None
            try:
                wait_s = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait_s = None
            raise _Retryable(f"{url} answered HTTP {err.code}: {detail}", f"HTTP {err.code}", wait_s) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            cause = "timeouts" if isinstance(reason, TimeoutError) else "connection errors"
            raise _Retryable(f"{url}: {type(reason).__name__}: {reason}", cause) from err
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _Retryable(f"{url} returned a body that is not JSON ({err})", "bad answers") from err

    @staticmethod
    def _content(response: dict[str, Any], url: str) -> str:
        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise BackendError(
                f"{url} returned no choices[0].message.content: {str(response)[:300]}; is it an OpenAI-compatible "
                "API root (--openai.base_urls ending in /v1)?",
                resumable=False,
            ) from err
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content or ""

    def _complete(self, request: CaptionRequest, cancel: threading.Event) -> str:
        """One request with its retries; stops without sending again once ``cancel`` is set."""
        payload = json.dumps(self.request_body(request)).encode()
        failures: list[str] = []
        for attempt in range(self.max_retries + 1):
            if cancel.is_set():
                raise _Cancelled
            with self._lock:
                url = next(self._cycle)
            try:
                text = self._content(self._post(url, payload), url)
            except _Retryable as err:
                failures.append(str(err))
                last = attempt == self.max_retries
                self._count(err.cause, retried=not last)
                if last:
                    break
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                if err.retry_after is not None:
                    delay = min(max(delay, err.retry_after), self.max_backoff_s)
                if cancel.wait(delay):
                    raise _Cancelled from err
                continue
            self._answered = True
            return text
        raise BackendError(
            f"openai backend: request for sample {request.key or '?'} failed {len(failures)} "
            f"time{'s' if len(failures) != 1 else ''}; "
            f"last error: {failures[-1]}"
        )

    def _complete_all(self, requests: Sequence[CaptionRequest], cancel: threading.Event) -> list[str]:
        """Send requests on the pool; at the first failure cancel the rest and raise it."""
        if not requests:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="aras-caption")
        futures = [self._pool.submit(self._complete, request, cancel) for request in requests]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        if failed:
            cancel.set()
            for future in futures:
                future.cancel()
            raise _first_error(failed)
        return [f.result() for f in futures]

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """Send the requests concurrently and collect the answers in order.

        At the first request that fails for good, queued ones are not sent and none is
        retried, so the error comes back within one ``timeout_s``. A batch of at least
        ``max_concurrency`` keeps every server busy.

        Raises:
            BackendError: If a request fails for good (``resumable`` false) or runs out of retries.
        """
        if not requests:
            return []
        cancel = threading.Event()
        try:
            if self._answered:
                return self._complete_all(requests, cancel)
            first = self._complete(requests[0], cancel)
            return [first, *self._complete_all(requests[1:], cancel)]
        except BaseException:
            cancel.set()  # also on Ctrl-C: nothing is retried behind the user's back
            raise

    def close(self) -> None:
        """Shut the thread pool down without waiting: requests not yet sent are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _first_error(failed: Sequence[Future[str]]) -> BaseException:
    """The error that stopped a batch: the first one that is not another request's cancellation."""
    errors = [error for f in failed if (error := f.exception()) is not None]
    return next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
