"""Metric modules (torchmetrics ``Metric`` subclasses) and report builders."""

from aras400k.metrics.segmentation import SegmentationMetrics, scores_from_confusion

__all__ = ["SegmentationMetrics", "scores_from_confusion"]
