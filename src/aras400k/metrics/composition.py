"""Composition distributions of datasets and distances between them (the paper's Figure 3).

:class:`CompositionDistribution` sums, from masks, the per-class pixel counts (pooled
shares, as Figure 3 shows) and per-class histograms of the *per-image* share, which tell
apart datasets with the same pooled composition but different per-image mixtures. Two
datasets are compared by:

* the Jensen-Shannon **divergence** of their pooled shares in **bits** (``[0, 1]``),
  with its square root, the JS *distance* (scipy's ``jensenshannon``), next to it;
* per class, the Wasserstein-1 distance between their per-image shares, in share units
  (0.01 = one percentage point). Shares sit at bin centres, so it is within
  ``1 / num_bins`` of the exact distance (:func:`scipy.stats.wasserstein_distance`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchmetrics import Metric
from tqdm.auto import tqdm

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from aras400k.data.composition import class_counts
from aras400k.data.shards import (
    SampleError,
    decode_mask,
    iter_raw_samples,
    list_shards,
    read_image_size,
    read_manifest,
)
from aras400k.data.stats import DatasetComposition
from aras400k.errors import check_at_least
from aras400k.metrics.segmentation import class_names_for
from aras400k.plotting import pyplot, save_figure

__all__ = [
    "CompositionComparison",
    "CompositionDistribution",
    "compare_compositions",
    "composition_distances",
    "composition_from_shards",
    "dataset_composition",
    "jensen_shannon_divergence",
    "plot_share_distributions",
    "wasserstein_from_histograms",
]


class CompositionDistribution(Metric):
    """Pooled class shares and per-image share histograms of a set of masks.

    Args:
        num_classes: Number of classes.
        num_bins: Equal-width bins over ``[0, 1]`` of the per-image share histograms.
        ignore_index: Mask value that is not counted.
        class_names: Names for per-class keys (default: the land-cover classes).

    Raises:
        ValueError: If ``num_bins < 1`` or ``class_names`` does not have ``num_classes`` entries.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    pixels: torch.Tensor
    histogram: torch.Tensor
    share_sum: torch.Tensor
    num_images: torch.Tensor
    num_unlabelled: torch.Tensor

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        num_bins: int = 100,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.class_names = class_names_for(num_classes, class_names)
        check_at_least("num_bins", num_bins, 1)
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.ignore_index = ignore_index
        self.add_state("pixels", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("histogram", torch.zeros(num_classes, num_bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("share_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_unlabelled", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, masks: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> None:
        """Add ``(B, H, W)`` (or one ``(H, W)``) class-index ``masks``, or ``(B, num_classes)`` pixel ``counts``.

        An image without labelled pixels is counted in ``num_unlabelled`` only.

        Raises:
            ValueError: Unless exactly one of ``masks`` and ``counts`` is given, or on a mask
                value that is no class nor ``ignore_index``, or counts of a wrong shape or negative.
        """
        if (masks is None) == (counts is None):
            raise ValueError("give either masks or counts")
        self._add_counts(self._mask_counts(masks) if masks is not None else counts)

    def update_counts(self, counts: torch.Tensor) -> None:
        """``update(counts=counts)``: add ``(B, num_classes)`` per-image pixel counts."""
        self.update(counts=counts)

    def _mask_counts(self, masks: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes)`` per-image pixel counts of a mask batch (one ``bincount``)."""
        if masks.ndim == 2:
            masks = masks.unsqueeze(0)
        flat = masks.reshape(masks.shape[0], -1).long()
        labelled = (flat >= 0) & (flat < self.num_classes)
        bad = ~labelled if self.ignore_index is None else ~labelled & (flat != self.ignore_index)
        if bool(bad.any()):
            values = sorted(set(flat[bad].unique().tolist()))[:5]
            raise ValueError(
                f"masks hold values {values} that are neither classes 0-{self.num_classes - 1} "
                f"nor the ignore index {self.ignore_index}"
            )
        rows = torch.arange(flat.shape[0], device=flat.device).unsqueeze(1).expand_as(flat)
        index = (rows * self.num_classes + flat)[labelled]
        return torch.bincount(index, minlength=flat.shape[0] * self.num_classes).reshape(-1, self.num_classes)

    def _add_counts(self, counts: torch.Tensor | None) -> None:
        assert counts is not None
        if counts.ndim != 2 or counts.shape[1] != self.num_classes:
            raise ValueError(f"counts must be (B, {self.num_classes}), got {tuple(counts.shape)}")
        counts = counts.to(self.pixels.device).long()
        if bool((counts < 0).any()):
            raise ValueError("counts must not be negative")
        totals = counts.sum(1)
        keep = totals > 0
        self.num_unlabelled += (~keep).sum()
        counts, totals = counts[keep], totals[keep]
        self.pixels += counts.sum(0)
        self.num_images += counts.shape[0]
        self.share_sum += (counts.double() / totals.unsqueeze(1).double()).sum(0)
        # Integer arithmetic puts a share exactly on a bin edge into the upper bin (and
        # a share of 1 into the last bin) without floating-point rounding.
        bins = torch.clamp(counts * self.num_bins // totals.unsqueeze(1), max=self.num_bins - 1)
        offsets = torch.arange(self.num_classes, device=bins.device) * self.num_bins
        flat = torch.bincount((bins + offsets).reshape(-1), minlength=self.num_classes * self.num_bins)
        self.histogram += flat.reshape(self.num_classes, self.num_bins)

    def compute(self) -> dict[str, torch.Tensor]:
        """The distribution: ``shares``, ``mean_image_share``, ``histogram``, ``num_images``, ``num_unlabelled``.

        ``(C,)`` pooled shares (zeros before any pixel) and mean per-image shares, ``(C, num_bins)``
        images per share bin, and the images with and without labelled pixels.
        """
        total = self.pixels.sum()
        shares = self.pixels.double() / total if total > 0 else torch.zeros_like(self.share_sum)
        mean = self.share_sum / self.num_images if self.num_images > 0 else torch.zeros_like(self.share_sum)
        return {
            "shares": shares,
            "mean_image_share": mean,
            "histogram": self.histogram.clone(),
            "num_images": self.num_images.clone(),
            "num_unlabelled": self.num_unlabelled.clone(),
        }

    @property
    def bin_edges(self) -> np.ndarray:
        """The ``num_bins + 1`` histogram bin edges over ``[0, 1]``."""
        return np.linspace(0.0, 1.0, self.num_bins + 1)

    @property
    def bin_centres(self) -> np.ndarray:
        """The ``num_bins`` histogram bin centres, where binned shares are placed."""
        return (np.arange(self.num_bins) + 0.5) / self.num_bins


def jensen_shannon_divergence(
    p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray, base: float = 2.0
) -> float:
    """Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``, of normalised inputs.

    ``p`` and ``q`` are non-negative weights (e.g. pooled class shares) of one length; ``base``
    is the logarithm's (2: bits, ``e``: nats). The square of scipy's ``jensenshannon``
    distance; in base 2 it lies in ``[0, 1]``. NaN if either input sums to zero.

    Raises:
        ValueError: On different lengths or negative weights.
    """
    p_arr, q_arr = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p_arr.shape != q_arr.shape:
        raise ValueError(f"distributions have different shapes {p_arr.shape} and {q_arr.shape}")
    if (p_arr < 0).any() or (q_arr < 0).any():
        raise ValueError("distributions must not hold negative weights")
    if p_arr.sum() <= 0 or q_arr.sum() <= 0:
        return math.nan
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p_arr, q_arr, base=base)) ** 2  # scipy gives the distance, its square root


def wasserstein_from_histograms(hist_p: Sequence[float] | np.ndarray, hist_q: Sequence[float] | np.ndarray) -> float:
    """Wasserstein-1 distance, in units of ``[0, 1]``, between two equal-width histograms over ``[0, 1]``.

    Each bin's count (or weight) sits at its centre: within one bin width of the unbinned
    distance. NaN if either histogram is empty.

    Raises:
        ValueError: On different numbers of bins.
    """
    p, q = np.asarray(hist_p, dtype=np.float64), np.asarray(hist_q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"histograms must be 1-D with equal bins, got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    from scipy.stats import wasserstein_distance

    centres = (np.arange(len(p)) + 0.5) / len(p)
    return float(wasserstein_distance(centres, centres, p, q))


@dataclass
class CompositionComparison:
    """Distances between the compositions of a reference dataset and another (see the module docstring).

    Attributes:
        reference: Label of the reference dataset (e.g. the real data).
        other: Label of the compared dataset.
        js_divergence: Jensen-Shannon divergence of the pooled class shares, in bits.
        js_distance: Its square root.
        wasserstein: Class name -> Wasserstein-1 distance of the per-image shares.
        wasserstein_mean: Mean of the per-class Wasserstein distances.
        num_images: Label -> images with labelled pixels.
    """

    reference: str
    other: str
    js_divergence: float
    js_distance: float
    wasserstein: dict[str, float]
    wasserstein_mean: float
    num_images: dict[str, int] = field(default_factory=dict)


def compare_compositions(
    reference: CompositionDistribution,
    other: CompositionDistribution,
    reference_label: str = "reference",
    other_label: str = "other",
) -> CompositionComparison:
    """Compare distribution ``other`` with ``reference`` (e.g. real data), named by the labels in the result.

    Raises:
        ValueError: If the two were built with different classes or bins.
    """
    if reference.class_names != other.class_names or reference.num_bins != other.num_bins:
        raise ValueError(
            f"cannot compare {reference_label} and {other_label}: built with different classes or bin counts "
            f"({reference.num_bins} and {other.num_bins} bins)"
        )
    ref, oth = reference.compute(), other.compute()
    jsd = jensen_shannon_divergence(ref["shares"].numpy(), oth["shares"].numpy())
    w1 = {
        name: wasserstein_from_histograms(ref["histogram"][i].numpy(), oth["histogram"][i].numpy())
        for i, name in enumerate(reference.class_names)
    }
    finite = [v for v in w1.values() if not math.isnan(v)]
    return CompositionComparison(
        reference=reference_label,
        other=other_label,
        js_divergence=jsd,
        js_distance=math.sqrt(jsd) if not math.isnan(jsd) else math.nan,
        wasserstein=w1,
        wasserstein_mean=float(np.mean(finite)) if finite else math.nan,
        num_images={reference_label: int(ref["num_images"]), other_label: int(oth["num_images"])},
    )


def composition_distances(
    distributions: Mapping[str, CompositionDistribution], reference: str | None = None
) -> list[CompositionComparison]:
    """Compare every dataset of ``{"real": ..., "synth_uncond": ...}`` with the ``reference`` (default: the first).

    Returns one comparison per other dataset, in the mapping's order.

    Raises:
        KeyError: If ``reference`` is not a label of ``distributions``.
        ValueError: If ``distributions`` is empty.
    """
    if not distributions:
        raise ValueError("no distributions to compare")
    ref_label = reference if reference is not None else next(iter(distributions))
    if ref_label not in distributions:
        raise KeyError(f"reference {ref_label!r} is not one of {list(distributions)}")
    ref = distributions[ref_label]
    return [
        compare_compositions(ref, dist, ref_label, label) for label, dist in distributions.items() if label != ref_label
    ]


def composition_from_shards(
    shard_dir: str | Path, num_bins: int = 100, max_samples: int | None = None, progress: bool = True
) -> CompositionDistribution:
    """Accumulate the composition distribution of a shard set.

    A sample without a mask counts its ``meta.json`` composition as that many pixels of
    its image (as :class:`~aras400k.data.ShardWriter` does); one with neither is unlabelled.
    ``num_bins`` bins the per-image shares; ``max_samples`` stops after that many samples.

    Raises:
        aras400k.data.ManifestError: If the folder is not a shard set.
        aras400k.data.SampleError: On a corrupt sample.
    """
    total = int(read_manifest(shard_dir)["num_samples"])
    total = min(total, max_samples) if max_samples is not None else total
    metric = CompositionDistribution(num_bins=num_bins)
    rows: list[np.ndarray] = []
    with tqdm(total=total, desc=f"composition {Path(shard_dir).name}", unit="img", disable=not progress) as bar:
        seen = 0
        for path in list_shards(shard_dir).locations:
            for raw in iter_raw_samples(path):
                if seen >= total:
                    break
                rows.append(_raw_counts(raw))
                if len(rows) == 256:
                    metric.update_counts(torch.from_numpy(np.stack(rows)))
                    rows.clear()
                seen += 1
                bar.update(1)
    if rows:
        metric.update_counts(torch.from_numpy(np.stack(rows)))
    return metric


def _raw_counts(raw: Mapping[str, Any]) -> np.ndarray:
    """Per-class pixel counts of one raw sample, from its mask or else its meta composition (image not decoded)."""
    key = raw.get("__key__", "?")
    try:
        if "mask.png" in raw:
            return class_counts(decode_mask(raw["mask.png"]))
        meta = json.loads(raw.get("meta.json", b"{}"))
        comp = meta.get("composition") if isinstance(meta, dict) else None
        if not isinstance(comp, Mapping) or "image.png" not in raw:
            return np.zeros(NUM_CLASSES, dtype=np.int64)
        height, width = read_image_size(raw["image.png"])
    except (SampleError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise SampleError(f"{raw.get('__shard__', '?')}: sample {key}: {err}") from err
    shares = np.array([float(comp.get(name, 0.0)) for name in CLASS_NAMES])
    return np.rint(shares * width * height).astype(np.int64)


def dataset_composition(metric: CompositionDistribution, label: str, source: str) -> DatasetComposition:
    """A :class:`~aras400k.data.stats.DatasetComposition` record, for the Figure-3 bar chart and table.

    ``source`` is ``real``, ``synth_uncond`` or ``synth_cond``; the record holds the pooled
    shares of ``metric``, and ``num_samples`` counts labelled and unlabelled images. Draw
    them with :func:`aras400k.data.stats.plot_compositions` and ``composition_table``.
    """
    result = metric.compute()
    return DatasetComposition(
        label=label,
        source=source,
        num_samples=int(result["num_images"] + result["num_unlabelled"]),
        shares={name: float(s) for name, s in zip(metric.class_names, result["shares"].tolist(), strict=True)},
    )


#: Line styles and markers of the datasets in :func:`plot_share_distributions`, in order.
_LINE_STYLES: tuple[Literal["-", "--", ":", "-."], ...] = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _look(j: int) -> dict[str, Any]:
    """Colour, width, style and marker of dataset ``j``'s line.

    Earlier datasets are drawn wider and later ones dashed on top, with a marker per
    bin, so a line that coincides with another stays visible.
    """
    return {
        "color": pyplot().get_cmap("tab10")(j % 10),
        "linewidth": max(1.0, 3.2 - 0.7 * j),
        "linestyle": _LINE_STYLES[j % len(_LINE_STYLES)],
        "marker": _MARKERS[j % len(_MARKERS)],
    }


def plot_share_distributions(
    distributions: Mapping[str, CompositionDistribution],
    path: str | Path,
    title: str | None = None,
    bins: int = 20,
) -> Path:
    """Draw per-class panels of the per-image share distributions, one colour per dataset.

    A panel per class: the fraction of images (log scale) per share bin, a step line per
    dataset (same classes and bins), with each dataset's mean share in the legend. The
    distributions' ``num_bins`` are merged into ``bins``, which must divide it. Returns ``path``.

    Raises:
        ValueError: If there is nothing to draw or ``bins`` does not divide ``num_bins``.
    """
    plt = pyplot()
    if not distributions:
        raise ValueError("no distributions to draw")
    first = next(iter(distributions.values()))
    if first.num_bins % bins:
        raise ValueError(f"bins={bins} must divide the distributions' num_bins={first.num_bins}")
    names = first.class_names
    ncols = 4
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows), dpi=110, squeeze=False)
    edges = np.linspace(0, 100, bins + 1)
    results = {label: dist.compute() for label, dist in distributions.items()}
    # the y axis reaches down to one image of the largest dataset
    floor = 0.5 / max(1, *(int(r["num_images"]) for r in results.values()))
    for i, name in enumerate(names):
        ax = axes.flat[i]
        for j, result in enumerate(results.values()):
            hist = result["histogram"][i].numpy().reshape(bins, -1).sum(1).astype(np.float64)
            frac = hist / hist.sum() if hist.sum() > 0 else hist
            mean = 100 * float(result["mean_image_share"][i])
            values = np.where(frac > 0, frac, np.nan)
            look = _look(j)
            marker = look.pop("marker")
            ax.stairs(values, edges, **look, label=f"mean {mean:.1f}%")
            centres = (edges[:-1] + edges[1:]) / 2
            ax.plot(centres, values, marker, color=look["color"], markersize=3.5)
        ax.set(yscale="log", ylim=(floor, 1.5), xlim=(0, 100))
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="upper right")
        ax.grid(alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel("fraction of images")
        if i >= len(names) - ncols:
            ax.set_xlabel("share of the image (%)")
    legend_ax = axes.flat[len(names)] if len(names) < nrows * ncols else None
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    if legend_ax is not None:
        handles = [
            plt.Line2D([], [], **_look(j), markersize=4, label=f"{label} (n={int(r['num_images']):,})")
            for j, (label, r) in enumerate(results.items())
        ]
        legend_ax.legend(handles=handles, loc="center", frameon=False, title="dataset")
    fig.suptitle(title or "Per-image class shares")
    fig.tight_layout()
    return save_figure(fig, path)
