"""CLIPScore of captions against their images, from a CLIP model in a local directory.

A caption ``c``'s score for an image ``v`` is ``100 * max(cos(E_c, E_v), 0)`` with ``E``
the CLIP embeddings: Hessel et al.'s CLIP-S with torchmetrics' weight 100 (theirs is
2.5), the scale of the paper's Tables 1 and 2. A dataset's score is the mean over its
captions. ``torchmetrics.multimodal.CLIPScore`` (1.9) refuses a local directory by
name, fails with transformers 5 (``get_text_features`` returns a model output), drops
the end-of-text token CLIP pools when it cuts a caption over 77 tokens, and clamps the
*mean* score at 0. So this module loads ``CLIPModel`` and ``CLIPProcessor`` with
``local_files_only=True``, truncates with the tokenizer (keeping the end token), counts
truncated captions and warns once; ``tests/metrics/test_clipscore.py`` checks it
against torchmetrics' formula.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aras400k.errors import check_positive
from aras400k.metrics.captions import CaptionMetric

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

__all__ = ["CLIPScore", "load_clip"]

_NEEDED = (
    "a directory written by CLIPModel.save_pretrained and CLIPProcessor.save_pretrained "
    "(config.json, model.safetensors, the tokenizer files and preprocessor_config.json/processor_config.json), "
    "e.g. a local copy of openai/clip-vit-base-patch32"
)
_COLUMNS = ("score_sum", "captions", "truncated")

ImageBatch = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]


def load_clip(model_path: str | Path) -> tuple[CLIPModel, CLIPProcessor]:
    """Load a CLIP model (eval mode, gradients off) and its processor from a local directory, never the network.

    Raises:
        FileNotFoundError: If the directory, its ``config.json`` or processor files are missing.
    """
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"CLIP model_path {str(path)!r} {what}; pass {_NEEDED}")
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load a CLIP model and processor from {str(path)!r} ({err}); pass {_NEEDED}"
        ) from err
    model.eval().requires_grad_(False)
    return model, processor


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor before transformers 5, a model output since)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _as_uint8_images(images: ImageBatch) -> list[torch.Tensor]:
    """``(3, H, W)`` uint8 tensors from a batch tensor, a list of CHW tensors or HWC arrays."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        images = list(images)
    out = []
    for image in images:
        tensor = torch.as_tensor(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
        if isinstance(image, np.ndarray) and tensor.ndim == 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(2, 0, 1)  # HWC array -> CHW
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(
                f"expected RGB images (3, H, W) tensors or (H, W, 3) arrays, got shape {tuple(image.shape)}"
            )
        if tensor.is_floating_point():
            if tensor.min() < 0 or tensor.max() > 1:
                raise ValueError("float images must be in [0, 1]; pass uint8 images for 0..255")
            tensor = (tensor * 255).round().to(torch.uint8)
        out.append(tensor.to("cpu", torch.uint8))
    return out


class CLIPScore(CaptionMetric):
    """Mean CLIPScore ``100 * max(cos, 0)`` of captions against their images, overall and per group.

    The model is a submodule, so ``metric.to(device)`` moves it.

    Args:
        model_path: Local directory of a CLIP model and processor (see :func:`load_clip`).
        batch_size: Images and captions encoded per forward pass.

    Raises:
        FileNotFoundError: If ``model_path`` holds no loadable CLIP model.
        ValueError: If ``batch_size`` is not positive.
    """

    higher_is_better = True

    def __init__(self, model_path: str | Path, batch_size: int = 64) -> None:
        super().__init__()
        check_positive("batch_size", batch_size)
        self.model, self.processor = load_clip(model_path)
        self.batch_size = batch_size
        limit = int(self.model.config.text_config.max_position_embeddings)  # type: ignore[union-attr]
        self.max_length = int(min(limit, getattr(self.processor.tokenizer, "model_max_length", limit)))
        self._dim = int(self.model.config.projection_dim or 0)
        self._add_group_states(_COLUMNS, self._means)
        self._warned = False

    @torch.no_grad()
    def image_features(self, images: ImageBatch) -> torch.Tensor:
        """``(N, D)`` L2-normalised CLIP image embeddings, on the metric's device.

        ``images``: ``(N, 3, H, W)`` uint8 (or ``[0, 1]`` float) tensor, ``(3, H, W)`` tensors or ``(H, W, 3)`` arrays.

        Raises:
            ValueError: If an image is not RGB or a float image is outside ``[0, 1]``.
        """
        pictures = _as_uint8_images(images)
        chunks = [torch.zeros(0, self._dim, device=self.device)]
        for i in range(0, len(pictures), self.batch_size):
            pixels = self.processor.image_processor(images=pictures[i : i + self.batch_size], return_tensors="pt")
            chunks.append(_features(self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def text_features(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, D)`` L2-normalised CLIP text embeddings (metric's device), ``(N,)`` True where truncated.

        A caption longer than ``max_length`` tokens is truncated.
        """
        tokenizer = self.processor.tokenizer
        chunks = [torch.zeros(0, self._dim, device=self.device)]
        truncated: list[bool] = []
        for i in range(0, len(captions), self.batch_size):
            batch = list(captions[i : i + self.batch_size])
            lengths = [len(ids) for ids in tokenizer(batch, truncation=False, verbose=False)["input_ids"]]
            truncated += [n > self.max_length for n in lengths]
            tokens = tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            output = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
            chunks.append(_features(output))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1), torch.tensor(truncated, dtype=torch.bool)

    def per_caption(
        self, images: ImageBatch, captions: Sequence[str], image_index: Sequence[int] | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N,)`` float64 scores ``100 * max(cos, 0)`` and truncation flags, accumulating nothing.

        ``images`` are as :meth:`image_features` takes them, each encoded once;
        ``image_index`` gives each caption's image (``None``: one to one).

        Raises:
            ValueError: On a count mismatch or an image index out of range.
        """
        if isinstance(captions, str):
            raise ValueError("captions must be a sequence of strings, not one string")
        pictures = _as_uint8_images(images)
        n_images = len(pictures)
        if image_index is None:
            if n_images != len(captions):
                raise ValueError(f"got {n_images} images but {len(captions)} captions; pass image_index to pair them")
            index = torch.arange(len(captions))
        else:
            index = torch.as_tensor(image_index, dtype=torch.long).reshape(-1)
            if index.numel() != len(captions) or (index.numel() and (index.min() < 0 or index.max() >= n_images)):
                raise ValueError(f"image_index must give one index in 0..{n_images - 1} per caption ({len(captions)})")
        if not len(captions):
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
        image_emb = self.image_features(pictures)
        text_emb, truncated = self.text_features(captions)
        cos = (text_emb * image_emb[index.to(image_emb.device)]).sum(-1)
        return (100.0 * cos.clamp(min=0)).double().cpu(), truncated

    def update(
        self,
        images: ImageBatch,
        captions: Sequence[str],
        groups: Sequence[str] | None = None,
        image_index: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """Add a batch of captions with their images and ``image_index`` (see :meth:`per_caption`).

        ``groups`` optionally names each caption's group, e.g. ``f"{model}/{mode}"``.

        Raises:
            ValueError: On mismatched counts or bad images.
        """
        scores, truncated = self.per_caption(images, captions, image_index)
        rows = torch.stack([scores, torch.ones_like(scores), truncated.double()], dim=1)
        self._add_rows(rows, groups)
        n_truncated = int(truncated.sum())
        if n_truncated and not self._warned:
            self._warned = True
            warnings.warn(
                f"{n_truncated} of {len(captions)} captions in this batch are longer than the CLIP text encoder's "
                f"{self.max_length} tokens and were truncated (end token kept); compute()['truncated'] counts them all",
                UserWarning,
                stacklevel=2,
            )

    @staticmethod
    def _means(sums: Mapping[str, float]) -> dict[str, Any]:
        n = sums["captions"]
        return {
            "clip_score": sums["score_sum"] / n if n > 0 else float("nan"),
            "captions": int(n),
            "truncated": int(sums["truncated"]),
        }

    def compute(self) -> dict[str, Any]:
        """Mean score over every caption added (and gathered), overall and per group.

        ``clip_score`` (float64, NaN before any caption), the int64 counts ``captions`` and
        ``truncated``, and ``groups``: name -> those as Python numbers.
        """
        return self._results()
