"""The interface every caption backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from aras400k.captioning.requests import CaptionRequest

__all__ = ["BackendError", "CaptionBackend"]


class BackendError(RuntimeError):
    """A backend could not produce captions (a server kept failing, a model refused the input).

    Args:
        message: What went wrong and what to fix.
        resumable: Whether rerunning may succeed (a server was down); ``False`` when the
            setup must change first (model name, API key, URL, a rejected request).
    """

    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable


class CaptionBackend(ABC):
    """Turns caption requests into caption texts.

    One raw text per request, in order; the :class:`~aras400k.captioning.Captioner`
    builds the requests, cleans the texts and handles redundancy and files. A new
    backend implements :meth:`generate` and :attr:`model_name` (and :meth:`close`).
    """

    #: Short name used by :func:`~aras400k.captioning.backends.build_backend` and the CLI.
    name: ClassVar[str] = "base"
    #: Called, from any thread, after each retry of a request (the captioner refreshes
    #: its progress bar); ``None`` calls nothing.
    retry_listener: Callable[[], None] | None = None

    @property
    @abstractmethod
    def model_name(self) -> str:
        """Name of the model recorded with every caption (the sidecar's ``model``)."""

    @abstractmethod
    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """The raw generated text of each request, in order (a batch may mix images and text-only prompts).

        Raises:
            BackendError: If the captions cannot be produced.
        """

    def retry_counts(self) -> Mapping[str, int]:
        """Failed tries of requests so far, by cause (a backend without a network has none).

        ``retries`` (tries sent again), ``timeouts``, and one count per cause such as
        ``HTTP 429`` or ``connection``; empty when nothing failed.
        """
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release models, threads or connections (the default holds none)."""

    def __enter__(self) -> CaptionBackend:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()
