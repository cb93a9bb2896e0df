"""Feature extractors built from trained models, for FID/KID and the embedding plots.

:class:`SegmenterFeatures` is the pooled bottleneck of a trained
:class:`~aras400k.models.SegmentationTask` encoder, the paper's remote-sensing
feature space; :func:`feature_extractor` builds it, or an Inception-v3
(:class:`~aras400k.metrics.fid.InceptionFeatures`), from a local file. They live here,
not in :mod:`aras400k.metrics.fid`, because they load models, and metrics sit below
models (see ``docs/architecture.md``, "Layers").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from aras400k.metrics.fid import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, InceptionFeatures, unit_float
from aras400k.models.segmentation import SegmentationTask, load_segmenter

__all__ = ["SegmenterFeatures", "feature_extractor"]


class SegmenterFeatures(FeatureExtractor):
    """Pooled bottleneck features of a trained segmenter's encoder.

    Images in ``[0, 1]`` (or uint8) are normalised as the task was trained and passed to
    :meth:`SegmentationTask.extract_features` (global average pool of the deepest
    encoder stage, as the paper's visualisation script does).

    Args:
        task: A trained segmentation task (put in eval mode and frozen).
        mean: Per-channel normalisation mean the task was trained with (``[0, 1]`` units).
        std: Per-channel normalisation standard deviation.

    Raises:
        ValueError: If ``mean`` and ``std`` lengths differ from the task's input bands.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, task: SegmentationTask, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        bands = int(task.hparams["in_channels"])
        if len(mean) != bands or len(std) != bands:
            raise ValueError(f"mean and std need {bands} values (the task's bands), got {len(mean)} and {len(std)}")
        self.task = task
        self.num_features = int(task.model.encoder.out_channels[-1])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self._freeze()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> SegmenterFeatures:
        """Load the segmenter from a Lightning checkpoint (read with ``weights_only=True``).

        Args:
            path: Checkpoint of a :class:`SegmentationTask` (``aras-fit`` writes them).
            mean: Normalisation mean; default: the checkpoint's, else ImageNet's.
            std: Normalisation std; default as for ``mean``.
            map_location: Where the weights are loaded.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is not a segmentation task checkpoint.
        """
        task, _, recorded = load_segmenter(Path(path), torch.device(map_location))
        default_mean, default_std = recorded or (IMAGENET_MEAN, IMAGENET_STD)
        return cls(task, mean if mean is not None else default_mean, std if std is not None else default_std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_features)`` features of ``(B, C, H, W)`` images, floats in ``[0, 1]`` or uint8."""
        x = (unit_float(images) - self.mean) / self.std
        return self.task.extract_features(x, pooled=True)


def feature_extractor(
    kind: Literal["segmenter", "inception"],
    path: str | Path,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    inception_backend: Literal["torchvision", "torch-fidelity"] = "torchvision",
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """Build a feature extractor from a local file.

    Args:
        kind: ``segmenter`` (a :class:`SegmentationTask` checkpoint) or ``inception``
            (an Inception-v3 weights file).
        path: The checkpoint or weights file.
        mean: Segmenter normalisation mean (default: from the checkpoint, else ImageNet's).
        std: Segmenter normalisation std (default as for ``mean``).
        inception_backend: See :class:`InceptionFeatures`.
        device: Where the network runs.

    Returns:
        A frozen module mapping ``(B, 3, H, W)`` images in ``[0, 1]`` to ``(B, num_features)``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On an unknown ``kind`` or a file of the wrong kind.
    """
    if kind == "segmenter":
        module: FeatureExtractor = SegmenterFeatures.from_checkpoint(path, mean, std, map_location="cpu")
    elif kind == "inception":
        module = InceptionFeatures(path, backend=inception_backend)
    else:
        raise ValueError(f"unknown feature extractor kind {kind!r}; choose 'segmenter' or 'inception'")
    return module.to(device)
