"""The distribution sections of the report: composition (Figure 3), FID/KID and the embedding (Figure 4).

Each compares every dataset with the reference: the composition from the masks (or the
``meta.json`` compositions of unlabelled samples), FID/KID and the t-SNE/UMAP embedding
in a feature space (a trained segmenter's encoder, as the paper's Figure 4 uses, and/or
Inception-v3 from a local weights file). Features are computed once per feature space
and dataset (:func:`dataset_features`) and shared by FID, KID and the embedding.

Each section function takes the checked datasets (reference first), the settings and,
where it needs them, ``features`` (feature space name -> dataset name -> features) and
the folder the figures go to; it returns its :class:`Section`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch

from aras400k.classes import CLASS_NAMES
from aras400k.data.stats import composition_table, plot_compositions
from aras400k.evaluation.config import DatasetInputs, EvalConfig
from aras400k.evaluation.tables import Section, count, markdown_table, number
from aras400k.metrics import (
    composition_distances,
    composition_from_shards,
    dataset_composition,
    embedding_plot,
    features_from_shards,
    fid_from_features,
    kid_from_features,
    plot_share_distributions,
)
from aras400k.metrics.fid import FeatureExtractor

__all__ = ["composition_section", "dataset_features", "embedding_section", "fid_section"]

#: Figure file names.
COMPOSITION_PNG = "composition.png"
SHARES_PNG = "share_distributions.png"


def composition_section(datasets: Sequence[DatasetInputs], config: EvalConfig, out_dir: Path) -> Section:
    """Per-class composition per dataset, the Figure-3 chart, per-image share distributions and distances."""
    title = "Composition (the paper's Figure 3)"
    dists = {
        d.spec.name: composition_from_shards(d.spec.path, config.num_bins, len(d.keys), config.progress)
        for d in datasets
    }
    records = [dataset_composition(dists[d.spec.name], d.spec.name, str(d.manifest["source"])) for d in datasets]
    figures = {
        "Per-class pixel share per dataset (the reference plain, the others hatched)": plot_compositions(
            records, out_dir / COMPOSITION_PNG, title="Per-class composition (Figure 3)"
        ).name,
        "Per-image share of each class": plot_share_distributions(
            dists, out_dir / SHARES_PNG, title="Per-image class shares"
        ).name,
    }
    body = [composition_table(records)]
    data: dict[str, Any] = {"datasets": [asdict(r) for r in records], "distances": []}
    notes = []
    unlabelled = {name: int(dist.num_unlabelled) for name, dist in dists.items() if int(dist.num_unlabelled)}
    if unlabelled:
        notes.append(
            "Samples with neither a mask nor a meta.json composition (not counted): "
            + ", ".join(f"{name} {n:,}" for name, n in unlabelled.items())
        )
    if len(dists) > 1:
        comparisons = composition_distances(dists, reference=datasets[0].spec.name)
        data["distances"] = [asdict(c) for c in comparisons]
        body += ["", f"Distances to **{datasets[0].spec.name}**:", "", _distance_table(comparisons)]
        notes.append(
            "JS: Jensen-Shannon divergence of the pooled class shares in bits (0 = identical, 1 = disjoint); "
            f"W1: Wasserstein-1 distance of the per-image shares of a class, in percentage points "
            f"(exact to within {100 / config.num_bins:g} pp)."
        )
    else:
        notes.append("Distances skipped: only one dataset.")
    return Section("composition", title, body="\n".join(body), data=data, figures=figures, notes=notes)


def _distance_table(comparisons: Sequence[Any]) -> str:
    header = ["dataset", "JS (bits)", "mean W1 (pp)", *(f"W1 {name}" for name in CLASS_NAMES)]
    cells = [
        [
            c.other,
            number(c.js_divergence, 4),
            number(100 * c.wasserstein_mean),
            *(number(100 * c.wasserstein[name]) for name in CLASS_NAMES),
        ]
        for c in comparisons
    ]
    return markdown_table(header, cells)


def dataset_features(
    datasets: Sequence[DatasetInputs], extractor: FeatureExtractor, config: EvalConfig, device: torch.device
) -> dict[str, torch.Tensor]:
    """Dataset name -> ``(N, D)`` float32 CPU features of its evaluated images, by ``extractor`` on ``device``."""
    extract = partial(features_from_shards, batch_size=config.batch_size, device=device, progress=config.progress)
    return {d.spec.name: extract(d.spec.path, extractor, max_samples=len(d.keys)) for d in datasets}


def _split_half(features: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    half = len(features) // 2
    return features[order[:half]], features[order[half : 2 * half]]


def _distance_row(space: str, name: str, ref: torch.Tensor, other: torch.Tensor, config: EvalConfig) -> dict[str, Any]:
    # Subsets of at most half the smaller set, so that they differ and their spread means something.
    subset = max(2, min(config.kid_subset_size, min(len(ref), len(other)) // 2))
    kid_mean, kid_std = kid_from_features(ref, other, config.kid_subsets, subset, config.seed)
    return {
        "feature_space": space,
        "dataset": name,
        "fid": fid_from_features(ref, other),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": subset,
        "n_reference": len(ref),
        "n_dataset": len(other),
        "dim": int(ref.shape[1]),
    }


#: Settings of :class:`EvalConfig` that are :func:`embedding_plot` arguments of the same name.
_EMBEDDING_OPTIONS = ("seed", "perplexity", "n_neighbors", "num_threads")
_METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def _missing_inputs(
    features: Mapping[str, Mapping[str, torch.Tensor]], datasets: Sequence[DatasetInputs], purpose: str, give: str
) -> str | None:
    """Why a section comparing datasets in a feature space cannot be computed (one line), or ``None``."""
    if len(datasets) < 2:
        return f"only one dataset (nothing to {purpose})"
    if not features:
        return f"no feature space configured (give {give})"
    return None


def fid_section(
    features: Mapping[str, Mapping[str, torch.Tensor]], datasets: Sequence[DatasetInputs], config: EvalConfig
) -> Section:
    """FID and KID of every dataset against the reference, per feature space.

    A row "reference half vs half" compares two random halves of the reference: the
    distance two samples of one distribution show at this sample size (the floor to
    read the other rows against).
    """
    title = "FID and KID against the reference"
    missing = _missing_inputs(
        features, datasets, "compare with the reference", "segmenter: CHECKPOINT and/or inception: WEIGHTS"
    )
    if missing is not None:
        return Section.skip("fid", title, missing)
    ref_name = datasets[0].spec.name
    rows = []
    for space, by_name in features.items():
        ref = by_name[ref_name]
        rows += [_distance_row(space, d.spec.name, ref, by_name[d.spec.name], config) for d in datasets[1:]]
        if len(ref) >= 4:
            rows.append(_distance_row(space, f"{ref_name} half vs half", *_split_half(ref, config.seed), config))
    cells = [
        [
            r["feature_space"],
            r["dataset"],
            number(r["fid"], 3),
            f"{r['kid_mean']:.4g} ± {r['kid_std']:.2g}",
            f"{r['n_reference']:,} / {r['n_dataset']:,}",
            count(r["dim"]),
        ]
        for r in rows
    ]
    header = ["feature space", "dataset", "FID", "KID (mean ± std)", "samples (ref / dataset)", "dim"]
    notes = [
        f"Against **{ref_name}**; FID in squared feature units, so values of different feature spaces do not compare.",
        "FID is biased upward at small sample sizes: compare rows only at equal counts. The half-vs-half row is the "
        "distance between two random halves of the reference, i.e. what two samples of one distribution show "
        "(at half the count, so somewhat higher than at the full count).",
        "KID: unbiased polynomial-kernel MMD², averaged over random subsets of "
        + ", ".join(sorted({f"{r['kid_subset_size']:,}" for r in rows}, key=lambda v: int(v.replace(",", ""))))
        + " samples (at most half the smaller set); its scale follows the features' scale, and a mean within "
        "about one std of 0 means no detectable difference.",
    ]
    small = [r for r in rows if min(r["n_reference"], r["n_dataset"]) < r["dim"]]
    if small:
        where = ", ".join(
            f"{r['dataset']} in {r['feature_space']} ({min(r['n_reference'], r['n_dataset']):,} < {r['dim']:,})"
            for r in small
        )
        notes.append(
            f"Fewer samples than feature dimensions for {where}: the covariances are rank-deficient and FID is "
            "unreliable there; raise max_samples or rely on KID, which is unbiased."
        )
    return Section("fid", title, body=markdown_table(header, cells, 2), data={"rows": rows}, rows=rows, notes=notes)


def _silhouette_table(result: Any) -> str:
    methods = list(result.silhouette_2d)
    header = ["sources", "features", *(f"{_METHOD_NAMES[m]} 2-D" for m in methods)]
    cells = [["all", number(result.silhouette_features, 3), *(number(result.silhouette_2d[m], 3) for m in methods)]]
    for pair, value in result.pairwise_features.items():
        cells.append([pair, number(value, 3), *(number(result.pairwise_2d[m][pair], 3) for m in methods)])
    return markdown_table(header, cells)


def embedding_section(
    features: Mapping[str, Mapping[str, torch.Tensor]],
    datasets: Sequence[DatasetInputs],
    config: EvalConfig,
    out_dir: Path,
) -> Section:
    """t-SNE (and UMAP) of the datasets' features with overall and pairwise silhouettes (the paper's Figure 4).

    Uses the first feature space (the segmenter's when configured, as in the paper).
    """
    title = "Embedding of real and synthetic samples (the paper's Figure 4)"
    missing = _missing_inputs(features, datasets, "separate", "segmenter: CHECKPOINT, as the paper does")
    if missing is not None:
        return Section.skip("embedding", title, missing)
    space, by_name = next(iter(features.items()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*skipped.*")
        result = embedding_plot(
            {d.spec.name: by_name[d.spec.name] for d in datasets},
            out_dir,
            methods=config.embedding_methods,
            max_per_source=config.embedding_max_per_source,
            feature_name=f"{space} features",
            **{name: getattr(config, name) for name in _EMBEDDING_OPTIONS},
        )
    figures = {f"{_METHOD_NAMES[method]} of {space} features": path.name for method, path in result.paths.items()}
    data = {
        "feature_space": space,
        "counts": result.counts,
        "silhouette_features": result.silhouette_features,
        "pairwise_features": result.pairwise_features,
        "silhouette_2d": result.silhouette_2d,
        "pairwise_2d": result.pairwise_2d,
        "figures": {m: p.name for m, p in result.paths.items()},
        "notices": result.notices,
    }
    notes = [
        "Silhouette of the dataset labels (standardised features, and each 2-D embedding): near 0 the datasets are "
        "mixed (synthetic looks like real), near 1 they form separate clusters.",
        "Samples per dataset: " + ", ".join(f"{name} {n:,}" for name, n in result.counts.items()) + ".",
        *result.notices,
    ]
    if not math.isfinite(result.silhouette_features):
        notes.append("The silhouette is undefined (identical features).")
    return Section("embedding", title, body=_silhouette_table(result), data=data, figures=figures, notes=notes)
