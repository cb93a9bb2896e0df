import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from aras400k.classes import CLASS_NAMES
from aras400k.data import Sample, ShardWriter, read_manifest
from aras400k.data.stats import plot_compositions
from aras400k.metrics.composition import (
    CompositionDistribution,
    compare_compositions,
    composition_distances,
    composition_from_shards,
    dataset_composition,
    jensen_shannon_divergence,
    plot_share_distributions,
    wasserstein_from_histograms,
)


def _masks(seed, n, alpha, size=16):
    """n masks whose per-image class mixture is drawn from Dirichlet(alpha)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(alpha, size=n)
    return np.stack([rng.choice(7, size=(size, size), p=p) for p in probs]).astype(np.uint8)


def _per_image_shares(masks):
    counts = np.stack([np.bincount(m[m < 7].ravel(), minlength=7) for m in masks])
    return counts / counts.sum(1, keepdims=True)


def _filled(masks, num_bins=100, batch=5):
    metric = CompositionDistribution(num_bins=num_bins)
    for i in range(0, len(masks), batch):
        metric.update(torch.from_numpy(masks[i : i + batch]))
    return metric


def test_pooled_shares_and_histograms_match_numpy():
    masks = _masks(0, 23, np.full(7, 0.5), size=32)
    masks[0] = 255  # an all-ignored image: counted apart, left out of per-image statistics
    masks[1, :8] = 255
    result = _filled(masks).compute()
    counts = np.bincount(masks[masks < 7].ravel(), minlength=7)
    np.testing.assert_allclose(result["shares"].numpy(), counts / counts.sum(), rtol=1e-12)
    assert result["num_images"] == 22 and result["num_unlabelled"] == 1
    shares = _per_image_shares(masks[1:])
    np.testing.assert_allclose(result["mean_image_share"].numpy(), shares.mean(0), rtol=1e-12)
    for c in range(7):  # numpy's histogram: [a, b) bins, the last one closed, as ours
        expected, _ = np.histogram(shares[:, c], bins=np.linspace(0, 1, 101))
        np.testing.assert_array_equal(result["histogram"][c].numpy(), expected)


def test_states_are_sums_so_merging_equals_one_pass():
    masks = _masks(1, 12, np.ones(7))
    whole = _filled(masks)
    left, right = _filled(masks[:5]), _filled(masks[5:])
    left.merge_state(right)  # what a distributed sum does
    for key, value in whole.compute().items():
        torch.testing.assert_close(left.compute()[key], value)


def test_update_counts_matches_update_and_rejects_bad_values():
    masks = _masks(2, 6, np.ones(7))
    by_counts = CompositionDistribution()
    by_counts.update_counts(torch.from_numpy(np.stack([np.bincount(m.ravel(), minlength=7) for m in masks])))
    for key, value in _filled(masks).compute().items():
        torch.testing.assert_close(by_counts.compute()[key], value)
    metric = CompositionDistribution()
    bad = torch.zeros(1, 4, 4, dtype=torch.uint8)
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"values \[9\]"):
        metric.update(bad)
    with pytest.raises(ValueError, match="counts must be"):
        metric.update_counts(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="either masks or counts"):
        metric.update()
    # counts go through the wrapped update, so a cached compute() is not returned stale
    metric.update_counts(torch.tensor([[1, 0, 0, 0, 0, 0, 0]]))
    assert metric.compute()["num_images"] == 1
    metric.update_counts(torch.tensor([[0, 0, 0, 0, 0, 0, 3]]))
    assert metric.compute()["num_images"] == 2


def test_jensen_shannon_is_scipy_distance_squared_in_bits():
    rng = np.random.default_rng(3)
    for _ in range(5):
        p, q = rng.random(7), rng.random(7)
        p[rng.integers(7)] = 0  # zero entries are allowed
        assert jensen_shannon_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
        assert jensen_shannon_divergence(p, q, base=math.e) == pytest.approx(jensenshannon(p, q) ** 2, abs=1e-12)
    # hand-worked: disjoint supports are 1 bit apart; identical ones 0
    assert jensen_shannon_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon_divergence([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert math.isnan(jensen_shannon_divergence([0, 0], [1, 0]))


@pytest.mark.parametrize("num_bins", [100, 10])
def test_wasserstein_is_exact_on_bins_and_within_one_bin_of_unbinned(num_bins):
    real = _masks(4, 40, np.full(7, 0.4))
    synth = _masks(5, 30, np.array([2.0, 0.3, 1.0, 1.0, 0.2, 0.2, 0.5]))
    a, b = _filled(real, num_bins), _filled(synth, num_bins)
    comparison = compare_compositions(a, b, "real", "synth")
    sa, sb = _per_image_shares(real), _per_image_shares(synth)
    centres = a.bin_centres
    errors = []
    for c, name in enumerate(CLASS_NAMES):
        ha, hb = a.compute()["histogram"][c].numpy(), b.compute()["histogram"][c].numpy()
        binned = wasserstein_distance(centres, centres, ha, hb)
        assert comparison.wasserstein[name] == pytest.approx(binned, abs=1e-12)
        exact = wasserstein_distance(sa[:, c], sb[:, c])
        errors.append(abs(comparison.wasserstein[name] - exact))
    # documented tolerance: every share moves at most half a bin, so |error| <= 1 / num_bins
    assert max(errors) <= 1 / num_bins + 1e-12
    assert comparison.wasserstein_mean == pytest.approx(np.mean(list(comparison.wasserstein.values())))
    pooled_a = np.bincount(real.ravel(), minlength=7)
    pooled_b = np.bincount(synth.ravel(), minlength=7)
    assert comparison.js_divergence == pytest.approx(jensenshannon(pooled_a, pooled_b, base=2) ** 2, abs=1e-12)
    assert comparison.js_distance == pytest.approx(jensenshannon(pooled_a, pooled_b, base=2), abs=1e-12)
    assert comparison.num_images == {"real": 40, "synth": 30}


def test_same_pooled_shares_but_different_per_image_mixtures():
    # A: every image half tree, half crop. B: half the images all tree, half all crop.
    a = np.zeros((4, 8, 8), np.uint8)
    a[:, :, 4:] = 3
    b = np.zeros((4, 8, 8), np.uint8)
    b[2:] = 3
    comparison = compare_compositions(_filled(a), _filled(b))
    assert comparison.js_divergence == pytest.approx(0.0, abs=1e-15)
    # shares 0.5 vs {0, 1}: every image's share moves by 0.5 (0.495 vs 0.5/0.005 on bin centres)
    assert comparison.wasserstein["tree"] == pytest.approx(0.495, abs=1e-12)
    assert math.isnan(wasserstein_from_histograms([0, 0], [1, 0]))


def test_distances_against_reference_and_errors():
    dists = {k: _filled(_masks(i, 6, np.ones(7))) for i, k in enumerate(["real", "uncond", "cond"])}
    results = composition_distances(dists)
    assert [(r.reference, r.other) for r in results] == [("real", "uncond"), ("real", "cond")]
    assert [r.other for r in composition_distances(dists, reference="cond")] == ["real", "uncond"]
    with pytest.raises(KeyError, match="nope"):
        composition_distances(dists, reference="nope")
    with pytest.raises(ValueError, match="different classes or bin counts"):
        compare_compositions(dists["real"], CompositionDistribution(num_bins=10))


def test_from_shards_figures(tmp_path):
    labelled = tmp_path / "real"
    masks = _masks(6, 7, np.ones(7))
    masks[0, 0] = 255
    with ShardWriter(labelled, split="train", source="real", samples_per_shard=3) as writer:
        for i, mask in enumerate(masks):
            writer.write(Sample(key=f"r{i}", image=np.zeros((16, 16, 3), np.uint8), mask=mask))
    unlabelled = tmp_path / "synth"
    with ShardWriter(unlabelled, split="train", source="synth_uncond") as writer:
        image = np.zeros((10, 10, 3), np.uint8)
        writer.write(Sample(key="u0", image=image, meta={"composition": {"tree": 0.3, "water": 0.7}}))
        writer.write(Sample(key="u1", image=image))  # neither mask nor composition
    real = composition_from_shards(labelled, progress=False)
    pixels = read_manifest(labelled)["class_pixels"]
    np.testing.assert_array_equal(real.pixels.numpy(), [pixels[n] for n in CLASS_NAMES])
    synth = composition_from_shards(unlabelled, progress=False)
    result = synth.compute()
    assert result["num_images"] == 1 and result["num_unlabelled"] == 1
    assert result["shares"][0] == pytest.approx(0.3) and result["shares"][6] == pytest.approx(0.7)
    assert composition_from_shards(labelled, max_samples=4, progress=False).compute()["num_images"] == 4

    records = [dataset_composition(real, "real", "real"), dataset_composition(synth, "synth", "synth_uncond")]
    assert records[1].num_samples == 2 and records[1].shares["water"] == pytest.approx(0.7)
    bars = plot_compositions(records, tmp_path / "fig" / "bars.png")
    panels = plot_share_distributions({"real": real, "synth": synth}, tmp_path / "fig" / "shares.png", title="t")
    for path in (bars, panels):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300
    with pytest.raises(ValueError, match="must divide"):
        plot_share_distributions({"real": real}, tmp_path / "x.png", bins=7)
