"""The paper's segmentation metrics from one confusion matrix.

:class:`SegmentationMetrics` sums a ``C x C`` confusion matrix across processes and
derives the scores of Tables 3 and 4. Macro averages follow scikit-learn's
``f1_score(..., average="macro", zero_division=0)`` over a split's pixels: the mean runs
over classes in the truth *or* the prediction, an undefined ratio counts as 0, and a
class absent from both has no per-class score (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX

__all__ = ["SegmentationMetrics", "scores_from_confusion"]


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


def scores_from_confusion(confmat: torch.Tensor, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, torch.Tensor]:
    """The paper's scores from a ``(C, C)`` pixel-count confusion matrix (rows = truth, columns = prediction).

    ``f1_macro``, ``iou_macro``, ``precision_macro``, ``recall_macro``, ``accuracy`` and, per
    name of ``class_names``, ``f1_<name>``, ``iou_<name>``, ``precision_<name>``, ``recall_<name>``.
    """
    cm = confmat.double()
    tp = cm.diagonal()
    support = cm.sum(1)  # tp + fn
    predicted = cm.sum(0)  # tp + fp
    present = (support + predicted) > 0
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * tp, support + predicted)
    iou = _safe_divide(tp, support + predicted - tp)
    n_present = present.sum().clamp(min=1)
    per_class = {"f1": f1, "iou": iou, "precision": precision, "recall": recall}
    scores = {f"{kind}_macro": values[present].sum() / n_present for kind, values in per_class.items()}
    scores["accuracy"] = _safe_divide(tp.sum(), cm.sum())
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    for kind, values in per_class.items():
        for i, name in enumerate(class_names):
            scores[f"{kind}_{name}"] = torch.where(present[i], values[i], nan)
    return {k: v.float() for k, v in scores.items()}


def class_names_for(num_classes: int, class_names: Sequence[str] | None) -> tuple[str, ...]:
    """``class_names`` (default: the first ``num_classes`` land-cover classes), checked against ``num_classes``."""
    names = tuple(class_names) if class_names is not None else tuple(CLASS_NAMES[:num_classes])
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for {num_classes} classes")
    return names


class SegmentationMetrics(Metric):
    """Confusion-matrix segmentation metrics: macro and per-class F1/IoU/precision/recall, accuracy.

    One ``bincount`` per batch is the only work on the training path; the state is
    summed across processes, so every rank's result equals a single-process one.

    Args:
        num_classes: Number of classes.
        ignore_index: Target value excluded from every score.
        class_names: Names for per-class keys (default: the land-cover classes).

    Raises:
        ValueError: If ``class_names`` does not have ``num_classes`` entries.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: torch.Tensor

    def __init__(
        self, num_classes: int = 7, ignore_index: int | None = IGNORE_INDEX, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.class_names = class_names_for(num_classes, class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``(B, C, H, W)`` logits/probabilities or ``(B, H, W)`` class indices, and ``(B, H, W)`` targets.

        Target pixels of ``ignore_index`` are skipped.

        Raises:
            ValueError: On mismatched shapes or a target value out of range.
        """
        if preds.ndim == target.ndim + 1:
            preds = preds.max(1).indices
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} differs from target shape {tuple(target.shape)}")
        target = target.reshape(-1).long()
        preds = preds.reshape(-1).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target, preds = target[keep], preds[keep]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            raise ValueError(f"target holds values outside 0..{self.num_classes - 1} (and ignore {self.ignore_index})")
        index = target * self.num_classes + preds
        self.confmat += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def compute(self) -> dict[str, torch.Tensor]:
        """Scores over everything added since the last reset (see :func:`scores_from_confusion`)."""
        return scores_from_confusion(self.confmat, self.class_names)
