"""2-D embeddings (t-SNE, UMAP) of features from several sources, with silhouette scores.

:func:`embedding_plot` does what the paper's Figure-4 script does, for any number of
sources: standardise the features, run t-SNE (perplexity 30, PCA init) and UMAP (15
neighbours, ``min_dist`` 0.1; skipped with a warning without ``pip install aras400k[umap]``)
and score the source labels' silhouette on the features (``silhouette_features``, the
script's number) and on each embedding, overall and per pair. Near 0 the sources are
mixed (synthetic looks like real); near 1 they are separate clusters.
"""

from __future__ import annotations

import importlib.util
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from aras400k.plotting import pyplot, save_figure

__all__ = ["EmbeddingResult", "embed_2d", "embedding_plot", "pairwise_silhouettes"]

Method = Literal["tsne", "umap"]
_TITLES = {"tsne": "t-SNE", "umap": "UMAP"}
_MARKERS = ("o", "x", "^", "s", "D", "v", "P", "*")


@dataclass
class EmbeddingResult:
    """Numbers and figures of :func:`embedding_plot`.

    Attributes:
        counts: Source -> samples used (after the per-source cap).
        silhouette_features: Silhouette of the source labels on the (standardised) features.
        pairwise_features: ``"a vs b"`` -> silhouette of the two sources on the features.
        silhouette_2d: Method -> silhouette on its 2-D embedding.
        pairwise_2d: Method -> ``"a vs b"`` -> silhouette on the 2-D embedding.
        paths: Method -> written PNG.
        notices: Methods skipped and why (e.g. umap-learn missing).
    """

    counts: dict[str, int]
    silhouette_features: float
    pairwise_features: dict[str, float]
    silhouette_2d: dict[str, float] = field(default_factory=dict)
    pairwise_2d: dict[str, dict[str, float]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


def _stack_groups(
    groups: Mapping[str, torch.Tensor | np.ndarray], max_per_source: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Concatenate the groups (each capped by a seeded draw without replacement); labels are group indices."""
    if len(groups) < 2:
        raise ValueError(f"need at least 2 sources to compare, got {list(groups)}")
    rng = np.random.default_rng(seed)
    arrays, labels, counts = [], [], {}
    dims = set()
    for index, (name, feats) in enumerate(groups.items()):
        array = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        if array.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {array.shape}")
        array = array.astype(np.float64)
        if len(array) < 2:
            raise ValueError(f"source {name!r} has {len(array)} samples; need at least 2")
        if max_per_source is not None and len(array) > max_per_source:
            array = array[np.sort(rng.choice(len(array), max_per_source, replace=False))]
        dims.add(array.shape[1])
        arrays.append(array)
        labels.append(np.full(len(array), index))
        counts[name] = len(array)
    if len(dims) != 1:
        raise ValueError(f"sources have different feature dimensions {sorted(dims)}")
    return np.concatenate(arrays), np.concatenate(labels), counts


def pairwise_silhouettes(points: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``"a vs b"`` -> silhouette score of two sources on their points alone, for every pair.

    ``labels`` gives each of the ``(N, D)`` ``points`` its source index into ``names``.
    """
    from sklearn.metrics import silhouette_score

    result = {}
    for i, j in itertools.combinations(range(len(names)), 2):
        keep = (labels == i) | (labels == j)
        result[f"{names[i]} vs {names[j]}"] = float(silhouette_score(points[keep], labels[keep]))
    return result


def embed_2d(
    features: np.ndarray, method: Method, seed: int = 0, perplexity: float = 30.0, n_neighbors: int = 15
) -> np.ndarray:
    """Project ``(N, D)`` features (standardised first if wanted) to ``(N, 2)`` coordinates.

    ``method`` is ``tsne`` (scikit-learn, PCA init; ``perplexity`` lowered to ``(N - 1) / 3``
    for small sets) or ``umap`` (umap-learn, ``min_dist=0.1``; ``n_neighbors`` lowered to ``N - 1``).

    Raises:
        ImportError: For ``umap`` when umap-learn is not installed.
        ValueError: On an unknown method.
    """
    n = len(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(perplexity, max(1.0, (n - 1) / 3))
        tsne = TSNE(n_components=2, perplexity=perplexity, learning_rate="auto", init="pca", random_state=seed)
        return tsne.fit_transform(features)
    if method == "umap":
        if importlib.util.find_spec("umap") is None:
            raise ImportError("UMAP needs the optional umap-learn package (pip install aras400k[umap])")
        import umap  # pragma: no cover - optional dependency

        reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=0.1, random_state=seed)  # pragma: no cover
        return np.asarray(reducer.fit_transform(features))  # pragma: no cover
    raise ValueError(f"unknown embedding method {method!r}; choose 'tsne' or 'umap'")


def embedding_plot(
    features: Mapping[str, torch.Tensor | np.ndarray],
    out_dir: str | Path,
    methods: Sequence[Method] = ("tsne", "umap"),
    max_per_source: int | None = 2000,
    seed: int = 0,
    standardize: bool = True,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    prefix: str = "embedding",
    feature_name: str = "segmenter features",
    num_threads: int | None = None,
) -> EmbeddingResult:
    """Embed features of several sources in 2-D, plot them and score how separable the sources are.

    Args:
        features: Source name -> ``(N, D)`` features (e.g. from :func:`~aras400k.metrics.fid.features_from_shards`).
        out_dir: Folder for the PNGs (``{prefix}_{method}.png``).
        methods: Projections to draw (``umap`` is skipped with a warning without umap-learn).
        max_per_source: Cap per source (a seeded random subset), for speed.
        seed: Seed of the subsets and the projections.
        standardize: Scale features to zero mean and unit variance first (as the paper's script).
        perplexity: t-SNE perplexity.
        n_neighbors: UMAP neighbours.
        prefix: File name prefix.
        feature_name: What the features are, for the figure title.
        num_threads: Limit OpenMP/BLAS threads (``None``: the defaults; oversubscribed t-SNE is slow).

    Raises:
        ValueError: With fewer than 2 sources or samples, differing dimensions, or an unknown method.
    """
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    unknown = [m for m in methods if m not in _TITLES]
    if unknown:
        raise ValueError(f"unknown embedding methods {unknown}; choose from {list(_TITLES)}")
    points, labels, counts = _stack_groups(features, max_per_source, seed)
    if standardize:
        std = points.std(0)
        points = (points - points.mean(0)) / np.where(std > 0, std, 1.0)
    names = list(features)
    with threadpool_limits(limits=num_threads):
        result = EmbeddingResult(
            counts=counts,
            silhouette_features=float(silhouette_score(points, labels)),
            pairwise_features=pairwise_silhouettes(points, labels, names),
        )
        for method in methods:
            try:
                coords = embed_2d(points, method, seed=seed, perplexity=perplexity, n_neighbors=n_neighbors)
            except ImportError as err:
                notice = f"{_TITLES[method]} skipped: {err}"
                warnings.warn(notice, stacklevel=2)
                result.notices.append(notice)
                continue
            result.silhouette_2d[method] = float(silhouette_score(coords, labels))
            result.pairwise_2d[method] = pairwise_silhouettes(coords, labels, names)
            title = (
                f"{_TITLES[method]} of {feature_name}\nsilhouette {result.silhouette_2d[method]:.3f} (2-D), "
                f"{result.silhouette_features:.3f} (features)"
            )
            path = Path(out_dir) / f"{prefix}_{method}.png"
            result.paths[method] = _scatter(coords, labels, names, counts, path, title)
    return result


def _scatter(
    coords: np.ndarray, labels: np.ndarray, names: Sequence[str], counts: Mapping[str, int], path: Path, title: str
) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=120)
    for index, name in enumerate(names):
        keep = labels == index
        ax.scatter(
            coords[keep, 0],
            coords[keep, 1],
            s=12,
            alpha=0.6,
            color=plt.get_cmap("tab10")(index % 10),
            marker=_MARKERS[index % len(_MARKERS)],
            linewidths=0.8,
            label=f"{name} (n={counts[name]:,})",
        )
    ax.set_title(title, fontsize=10)
    ax.set(xticks=[], yticks=[])
    ax.legend(fontsize=8, frameon=True, markerscale=1.5)
    fig.tight_layout()
    return save_figure(fig, path)
