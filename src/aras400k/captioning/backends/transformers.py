"""The ``transformers`` backend: any local Hugging Face model directory, batched.

Which model and processor classes serve which mode: ``docs/captioning.md``. Sampling in
a batch draws from one stream seeded from all its requests' seeds: reproducible, but a
caption depends on its batch mates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from aras400k.captioning.backends.base import BackendError, CaptionBackend
from aras400k.captioning.requests import CaptionRequest, SamplingSettings

__all__ = ["TransformersBackend"]

DType = Literal["auto", "float32", "float16", "bfloat16"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]


def _merge_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold a system message into the first user turn (for chat templates without a system role)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, user, *rest = messages
    if isinstance(user["content"], str):
        return [{"role": "user", "content": f"{system['content']}\n\n{user['content']}"}, *rest]
    text = " ".join(c["text"] for c in system["content"] if c.get("type") == "text")
    return [{"role": "user", "content": [{"type": "text", "text": text + "\n\n"}, *user["content"]]}, *rest]


def _pad_left(tokenizer: Any) -> None:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


class TransformersBackend(CaptionBackend):
    """Captions with a local Hugging Face model, in batches.

    Args:
        model_path: Local model folder (``config.json``, weights, tokenizer or processor files).
        model_name: Name recorded with the captions (default: the folder name).
        dtype: Weight dtype; ``auto`` takes the checkpoint's.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``, ...
        attn_implementation: ``eager``, ``sdpa`` or ``flash_attention_2``; ``None``: transformers'.
        trust_remote_code: Allow the model folder's own Python code to run.
        chat_template_kwargs: Chat-template variables; the default turns off Qwen3's thinking.
        num_threads: CPU threads for torch (process-wide); ``None`` leaves torch's setting.

    Raises:
        FileNotFoundError: If ``model_path`` is not a folder holding ``config.json``.
    """

    name: ClassVar[str] = "transformers"

    def __init__(
        self,
        model_path: str,
        model_name: str | None = None,
        dtype: DType = "auto",
        device: str = "auto",
        attn_implementation: Attention | None = None,
        trust_remote_code: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> None:
        path = Path(model_path).expanduser()
        hint = (
            "pass the folder of a Hugging Face model saved on this machine (config.json, weights and "
            "tokenizer/processor files) as model_path (--transformers.model_path DIR); nothing is downloaded"
        )
        if not path.is_dir():
            raise FileNotFoundError(f"transformers backend: model folder {path} does not exist; {hint}")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"transformers backend: {path} holds no config.json; {hint}")
        self.model_path = path
        self._model_name = model_name or path.name
        self.dtype = dtype
        self.device = device
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.chat_template_kwargs = {"enable_thinking": False} if chat_template_kwargs is None else chat_template_kwargs
        self.num_threads = num_threads
        self._text: tuple[Any, Any] | None = None  # (model, tokenizer), or (None, None): use the vision stack
        self._vision: tuple[Any, Any] | None = None  # (model, processor)

    @property
    def model_name(self) -> str:
        """Name recorded with every caption."""
        return self._model_name

    def _load_kwargs(self, model: bool = True) -> dict[str, Any]:
        """``from_pretrained`` options: local files only; for a model also its dtype and attention."""
        kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
        if model:
            kwargs["dtype"] = self.dtype
        if model and self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs

    def _place(self, model: Any) -> Any:
        import torch

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device).eval()

    def _text_stack(self) -> tuple[Any, Any]:
        if self._text is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                model = AutoModelForCausalLM.from_pretrained(self.model_path, **self._load_kwargs())
            except ValueError as err:
                if "Unrecognized configuration class" not in str(err):
                    raise ValueError(f"transformers backend: cannot load {self.model_path} ({err})") from err
                self._text = (None, None)  # a vision-language model: text goes through its processor
                return self._text
            tokenizer = AutoTokenizer.from_pretrained(self.model_path, **self._load_kwargs(model=False))
            _pad_left(tokenizer)
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(
                    f"transformers backend: the tokenizer in {self.model_path} has no chat template; "
                    "use an instruction-tuned model (or add chat_template to tokenizer_config.json)"
                )
            self._text = (self._place(model), tokenizer)
        return self._text

    def _vision_stack(self) -> tuple[Any, Any]:
        if self._vision is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            try:
                model = AutoModelForImageTextToText.from_pretrained(self.model_path, **self._load_kwargs())
                processor = AutoProcessor.from_pretrained(self.model_path, **self._load_kwargs(model=False))
            except (ValueError, OSError) as err:
                raise ValueError(
                    f"transformers backend: {self.model_path} cannot be loaded as an image-text-to-text model "
                    f"with a processor ({' '.join(str(err).split())[:300]}); use a vision-language model for "
                    "vision and hybrid captions, or mode text"
                ) from err
            if getattr(processor, "tokenizer", None) is not None:
                _pad_left(processor.tokenizer)
            self._vision = (self._place(model), processor)
        return self._vision

    @staticmethod
    def _messages(request: CaptionRequest, structured: bool) -> list[dict[str, Any]]:
        """Chat messages; ``structured`` (processors) gives content parts, with the image first."""

        def content(text: str, image: bool = False) -> Any:
            return [*([{"type": "image"}] if image else []), {"type": "text", "text": text}] if structured else text

        messages = [{"role": "system", "content": content(request.system_prompt)}] if request.system_prompt else []
        messages.append({"role": "user", "content": content(request.user_prompt, request.image is not None)})
        return messages

    def _render(self, templater: Any, messages: list[dict[str, Any]]) -> str:
        try:
            from jinja2.exceptions import TemplateError
        except ImportError as err:  # transformers renders chat templates with jinja2
            raise ImportError("the transformers backend needs jinja2 for chat templates: pip install jinja2") from err

        # Only the variables the template uses: processors treat any other keyword as a
        # processing option (and warn about it).
        source = str(getattr(templater, "chat_template", "") or "")
        variables = {k: v for k, v in self.chat_template_kwargs.items() if k in source}
        kwargs = {"add_generation_prompt": True, "tokenize": False, **variables}
        try:
            return templater.apply_chat_template(messages, **kwargs)
        except TemplateError:
            # Some templates (e.g. older Gemma) reject a system role: fold it into the user turn.
            return templater.apply_chat_template(_merge_system(messages), **kwargs)

    @staticmethod
    def _batch_seed(requests: Sequence[CaptionRequest]) -> int:
        digest = hashlib.sha256(",".join(str(r.seed) for r in requests).encode()).digest()
        return int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF

    def _generate(self, model: Any, inputs: Mapping[str, Any], sampling: SamplingSettings, seed: int, pad: int) -> Any:
        import torch

        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.do_sample}
        if sampling.do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if pad is not None:
            kwargs["pad_token_id"] = pad
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            return model.generate(**inputs, **kwargs)

    def _run_text(self, requests: Sequence[CaptionRequest]) -> list[str]:
        model, tokenizer = self._text_stack()
        if model is None:
            return self._run_vision(requests)
        texts = [self._render(tokenizer, self._messages(r, structured=False)) for r in requests]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = self._generate(model, inputs, requests[0].sampling, self._batch_seed(requests), tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def _run_vision(self, requests: Sequence[CaptionRequest]) -> list[str]:
        from PIL import Image

        model, processor = self._vision_stack()
        texts = [self._render(processor, self._messages(r, structured=True)) for r in requests]
        images = [[Image.fromarray(np.asarray(r.image, dtype=np.uint8))] for r in requests if r.image is not None]
        if images and len(images) != len(requests):
            raise BackendError("transformers backend: a batch mixes requests with and without images")
        inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True).to(model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        tokenizer = getattr(processor, "tokenizer", processor)
        out = self._generate(model, inputs, requests[0].sampling, self._batch_seed(requests), tokenizer.pad_token_id)
        return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """The decoded new tokens of each request, one ``generate`` call per group of requests.

        A group shares its sampling settings and whether its requests carry an image.

        Raises:
            ValueError: If the model folder cannot be loaded for the requests' kind.
            BackendError: If a batch mixes images and text inside one group.
        """
        groups: dict[tuple[bool, SamplingSettings], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.image is not None, request.sampling), []).append(i)
        out: list[str] = [""] * len(requests)
        for (with_image, _), indices in groups.items():
            batch = [requests[i] for i in indices]
            texts = self._run_vision(batch) if with_image else self._run_text(batch)
            for i, text in zip(indices, texts, strict=True):
                out[i] = text
        return out

    def close(self) -> None:
        """Drop the loaded models."""
        self._text = None
        self._vision = None
