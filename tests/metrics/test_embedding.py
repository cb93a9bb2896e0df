import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from aras400k.metrics.embedding import EmbeddingResult, embedding_plot


def _groups(seed=0, n=(30, 25, 20), offsets=(0.0, 0.5, 4.0), dim=6):
    rng = np.random.default_rng(seed)
    names = ["real", "synth_uncond", "synth_cond"]
    return {name: rng.normal(size=(k, dim)) + off for name, k, off in zip(names, n, offsets, strict=True)}


@pytest.fixture
def no_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed


def test_silhouettes_match_sklearn(tmp_path, no_umap):
    groups = _groups()
    groups["synth_uncond"] = torch.from_numpy(groups["synth_uncond"])  # tensors are accepted too
    result = embedding_plot(
        groups, tmp_path, methods=("tsne",), max_per_source=None, seed=3, perplexity=10, num_threads=1
    )
    x = np.concatenate([np.asarray(g) for g in groups.values()])
    labels = np.repeat([0, 1, 2], [30, 25, 20])
    scaled = StandardScaler().fit_transform(x)
    assert result.silhouette_features == pytest.approx(silhouette_score(scaled, labels), abs=1e-9)
    with threadpool_limits(1):  # OpenMP t-SNE is very slow with oversubscribed threads on a busy machine
        tsne = TSNE(n_components=2, perplexity=10, learning_rate="auto", init="pca", random_state=3)
        coords = tsne.fit_transform(scaled)
    assert result.silhouette_2d["tsne"] == pytest.approx(silhouette_score(coords, labels), abs=1e-6)
    names = list(groups)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        keep = (labels == i) | (labels == j)
        key = f"{names[i]} vs {names[j]}"
        assert result.pairwise_features[key] == pytest.approx(silhouette_score(scaled[keep], labels[keep]), abs=1e-9)
        assert result.pairwise_2d["tsne"][key] == pytest.approx(silhouette_score(coords[keep], labels[keep]), abs=1e-6)
    # close sources mix (silhouette near 0), a far one separates (near 1)
    assert result.pairwise_features["real vs synth_uncond"] < 0.3 < 0.6 < result.pairwise_features["real vs synth_cond"]
    assert result.counts == {"real": 30, "synth_uncond": 25, "synth_cond": 20}


def test_umap_missing_is_a_notice_and_png_written(tmp_path, no_umap):
    with pytest.warns(UserWarning, match="UMAP skipped: .*umap-learn") as record:
        result = embedding_plot(_groups(1), tmp_path / "fig", max_per_source=12, seed=0, prefix="feat", num_threads=1)
    assert len(record) == 1 and len(result.notices) == 1 and "\n" not in result.notices[0]
    assert isinstance(result, EmbeddingResult)
    assert set(result.paths) == {"tsne"} and "umap" not in result.silhouette_2d
    assert result.paths["tsne"] == tmp_path / "fig" / "feat_tsne.png"
    with Image.open(result.paths["tsne"]) as img:
        assert img.format == "PNG" and img.width > 300
    assert result.counts == {"real": 12, "synth_uncond": 12, "synth_cond": 12}  # capped, seeded
    again = embedding_plot(_groups(1), tmp_path / "again", methods=("tsne",), max_per_source=12, seed=0, num_threads=1)
    assert again.silhouette_2d == result.silhouette_2d and again.pairwise_features == result.pairwise_features


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 sources"):
        embedding_plot({"real": np.zeros((5, 3))}, "unused")
    with pytest.raises(ValueError, match="different feature dimensions"):
        embedding_plot({"a": np.zeros((5, 3)), "b": np.zeros((5, 4))}, "unused", methods=())
    with pytest.raises(ValueError, match="unknown embedding methods"):
        embedding_plot(_groups(), "unused", methods=("pca",))
    with pytest.raises(ValueError, match="has 1 samples"):
        embedding_plot({"a": np.zeros((5, 3)), "b": np.zeros((1, 3))}, "unused", methods=())
