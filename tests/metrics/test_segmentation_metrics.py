import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from aras400k.metrics import SegmentationMetrics


def _sklearn(y_true, y_pred):
    kw = {"average": "macro", "zero_division": 0}
    return {
        "f1_macro": f1_score(y_true, y_pred, **kw),
        "iou_macro": jaccard_score(y_true, y_pred, **kw),
        "precision_macro": precision_score(y_true, y_pred, **kw),
        "recall_macro": recall_score(y_true, y_pred, **kw),
        "accuracy": accuracy_score(y_true, y_pred),
    }


@pytest.mark.parametrize("case", ["all_classes", "class_never_occurs", "predicted_but_absent", "with_ignore"])
def test_matches_sklearn_over_flattened_pixels(case):
    rng = np.random.default_rng(hash(case) % 2**32)
    target = rng.integers(0, 7, (6, 16, 16))
    preds = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 7, target.shape))
    if case == "class_never_occurs":  # class 5 nowhere in truth nor prediction
        target[target == 5] = 0
        preds[preds == 5] = 1
    if case == "predicted_but_absent":  # class 3 predicted, never true; class 6 true, never predicted
        target[target == 3] = 2
        preds[preds == 6] = 4
    if case == "with_ignore":
        target[:, :4] = 255
    metric = SegmentationMetrics()
    for i in range(0, 6, 2):  # several batches
        metric.update(torch.from_numpy(preds[i : i + 2]), torch.from_numpy(target[i : i + 2]))
    ours = metric.compute()
    keep = target.ravel() != 255
    expected = _sklearn(target.ravel()[keep], preds.ravel()[keep])
    for key, value in expected.items():
        assert ours[key].item() == pytest.approx(value, abs=1e-6), key
    per_class = f1_score(
        target.ravel()[keep], preds.ravel()[keep], average=None, labels=list(range(7)), zero_division=0
    )
    for i, name in enumerate(["tree", "shrub", "grass", "crop", "built", "barren", "water"]):
        if case == "class_never_occurs" and i == 5:
            assert math.isnan(ours[f"f1_{name}"].item())
        else:
            assert ours[f"f1_{name}"].item() == pytest.approx(per_class[i], abs=1e-6)


def test_logits_are_argmaxed_and_errors():
    metric = SegmentationMetrics(num_classes=3, class_names=["a", "b", "c"])
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 2] = 1
    metric.update(logits, torch.full((1, 2, 2), 2))
    assert metric.compute()["accuracy"] == 1 and metric.compute()["f1_c"] == 1
    with pytest.raises(ValueError, match="differs from target shape"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="outside 0..2"):
        metric.update(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 5))
    with pytest.raises(ValueError, match="2 class names for 3"):
        SegmentationMetrics(num_classes=3, class_names=["a", "b"])
