"""The ``openai`` backend: any OpenAI-compatible chat-completions server, concurrently.

Works with vLLM, SGLang, Ollama, llama.cpp's server and hosted APIs. Requests go out
on a thread pool of ``max_concurrency`` workers, round-robin over ``base_urls`` so
captioning scales out to a fleet of servers; a request that fails with 429, a 5xx
status, a timeout or a dropped connection is retried with exponential backoff on the
next server. Images travel as base64 PNG (or JPEG) data URLs. Only the standard
library is used.
"""

from __future__ import annotations

import base64
import http.client
import io
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image

from aras400k.captioning.backends.base import BackendError, CaptionBackend
from aras400k.captioning.requests import CaptionRequest

__all__ = ["OpenAIBackend", "image_data_url"]

_RETRY_STATUS = frozenset({408, 409, 429})


def image_data_url(image: np.ndarray, image_format: Literal["png", "jpeg"] = "png") -> str:
    """Encode an image as a ``data:`` URL for a chat-completions request.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        image_format: ``png`` (lossless) or ``jpeg`` (smaller, quality 95).

    Returns:
        ``data:image/png;base64,...``.
    """
    buffer = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if image_format == "jpeg":
        pil.save(buffer, format="JPEG", quality=95)
    else:
        pil.save(buffer, format="PNG")
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend(CaptionBackend):
    """Captions from OpenAI-compatible chat-completions servers.

    Args:
        model: Model name the servers know (e.g. ``Qwen/Qwen3-VL-8B-Instruct`` on vLLM).
        base_urls: API roots such as ``http://gpu1:8000/v1``; requests are spread
            round-robin over them. ``None`` means ``http://127.0.0.1:8000/v1``.
        api_key_env: Environment variable holding the API key (sent as a bearer
            token when set); ``None`` sends no key.
        max_concurrency: Requests in flight at once (over all servers).
        timeout_s: Seconds to wait for one response.
        max_retries: Retries of one request on 429, 5xx, timeouts and connection errors.
        backoff_s: First retry delay; it doubles per retry up to ``max_backoff_s``
            (a server's ``Retry-After`` is honoured within that cap).
        max_backoff_s: Longest delay between retries.
        image_format: Encoding of images in the data URLs.
        extra_body: Extra request fields, e.g. ``{"chat_template_kwargs":
            {"enable_thinking": false}}`` for a Qwen3 model on vLLM.
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
        self._cycle = itertools.cycle(range(len(self.endpoints)))
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def model_name(self) -> str:
        """Name recorded with every caption (the served model name)."""
        return self.model

    def _next_endpoint(self) -> str:
        with self._lock:
            return self.endpoints[next(self._cycle)]

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request_body(self, request: CaptionRequest) -> dict[str, Any]:
        """Build the chat-completions body of one request.

        Args:
            request: The request.

        Returns:
            The JSON body: system message, user message (with the image as a data URL
            first when there is one), sampling settings, seed and ``extra_body``.
        """
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

    def _post(self, url: str, payload: bytes) -> dict[str, Any]:
        request = urllib.request.Request(url, data=payload, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace") if err.fp is not None else ""
            message = f"{url} answered HTTP {err.code}: {' '.join(detail.split())}"
            if err.code in _RETRY_STATUS or err.code >= 500:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                try:
                    wait = float(retry_after) if retry_after is not None else None
                except ValueError:
                    wait = None
                raise _Retryable(message, wait) from err
            raise BackendError(message) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise _Retryable(f"{url}: {type(reason).__name__}: {reason}") from err
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _Retryable(f"{url} returned a body that is not JSON ({err})") from err

    @staticmethod
    def _content(response: dict[str, Any], url: str) -> str:
        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise BackendError(f"{url} returned no choices[0].message.content: {str(response)[:300]}") from err
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content or ""

    def _complete(self, request: CaptionRequest) -> str:
        payload = json.dumps(self.request_body(request)).encode()
        failures: list[str] = []
        for attempt in range(self.max_retries + 1):
            url = self._next_endpoint()
            try:
                return self._content(self._post(url, payload), url)
            except _Retryable as err:
                failures.append(str(err))
                if attempt == self.max_retries:
                    break
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                if err.retry_after is not None:
                    delay = min(max(delay, err.retry_after), self.max_backoff_s)
                time.sleep(delay)
        raise BackendError(
            f"openai backend: request for sample {request.key or '?'} failed {len(failures)} "
            f"time{'s' if len(failures) != 1 else ''}; "
            f"last error: {failures[-1]}"
        )

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """Send the requests concurrently and collect the answers in order.

        Args:
            requests: The batch (use a batch size of at least ``max_concurrency`` to
                keep every server busy).

        Returns:
            The message contents, in order.

        Raises:
            BackendError: If a request fails with a non-retryable status or runs out of retries.
        """
        if not requests:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="aras-caption")
        return list(self._pool.map(self._complete, requests))

    def close(self) -> None:
        """Shut the thread pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
