"""A custom loss for ``SegmentationTask``: cross-entropy plus the Lovász-softmax loss.

The Lovász-softmax loss (Berman et al., CVPR 2018) is a smooth surrogate of the
Jaccard index, so adding it to cross-entropy optimises the IoU that the paper's
Table 3 reports, and rare classes (shrub, barren) weigh as much in it as common
ones. Only ``configure_losses`` changes; the network, the metrics and the optimiser
are the parent's.

Train it from the command line (``docs/examples`` must be importable)::

    export PYTHONPATH=docs/examples
    aras-fit --config configs/seg_unet.yaml --model.class_path custom_loss.LovaszTask
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from aras400k.models import SegmentationTask


class WeightedSum(nn.Module):
    """``sum(weight * loss(logits, target))`` over several losses.

    Args:
        losses: Loss name -> ``(loss module, weight)``.
    """

    def __init__(self, losses: dict[str, tuple[nn.Module, float]]) -> None:
        super().__init__()
        self.losses = nn.ModuleDict({name: loss for name, (loss, _) in losses.items()})
        self.weights = {name: weight for name, (_, weight) in losses.items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the losses.

        Args:
            logits: ``(B, C, H, W)`` class logits.
            target: ``(B, H, W)`` class indices (``ignore_index`` pixels are left out).

        Returns:
            The scalar loss.
        """
        return sum(
            (self.weights[name] * loss(logits, target) for name, loss in self.losses.items()),
            torch.zeros((), device=logits.device),
        )


class LovaszTask(SegmentationTask):
    """``SegmentationTask`` trained with its configured loss plus ``lovasz_weight`` x Lovász-softmax."""

    #: Weight of the Lovász-softmax term (a class attribute, so every constructor
    #: argument stays the parent's and existing configs work unchanged).
    lovasz_weight: float = 0.5

    def configure_losses(self) -> None:
        """Build ``self.criterion``: the parent's loss (``loss``, ``class_weights``) plus Lovász-softmax."""
        super().configure_losses()  # sets self.criterion from the `loss` option
        lovasz = smp.losses.LovaszLoss("multiclass", ignore_index=self.hparams["ignore_index"])
        self.criterion = WeightedSum({"base": (self.criterion, 1.0), "lovasz": (lovasz, self.lovasz_weight)})
