"""Fixtures of the captioning tests: tiny random HF models (built offline) and fake backends."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from aras400k.captioning import BackendError, CaptionBackend, CaptionRequest


@pytest.fixture(scope="package")
def one_thread() -> Iterator[None]:
    """Tiny models generate ~50x faster on one torch thread on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A random Qwen2ForCausalLM (hidden 32, 1 layer) with a BPE tokenizer and chat template."""
    from aras400k.captioning.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm") / "tiny-qwen2")


@pytest.fixture(scope="package")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A random Qwen2-VL (hidden 64, 2 layers, vision depth 2) with its processor."""
    from aras400k.captioning.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm") / "tiny-qwen2-vl")


class ScriptedBackend(CaptionBackend):
    """Returns texts from a function of the request; records every batch; can fail after N batches."""

    name = "scripted"

    def __init__(self, answer=None, fail_after: int | None = None, model: str = "scripted") -> None:
        self.answer = answer or (lambda r: f"caption of {r.key} number {r.index} seed {r.seed}")
        self.fail_after = fail_after
        self.batches: list[list[CaptionRequest]] = []
        self._model = model

    @property
    def model_name(self) -> str:
        return self._model

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise BackendError("scripted failure")
        self.batches.append(list(requests))
        return [self.answer(r) for r in requests]
