import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from aras400k.data import iter_samples
from aras400k.metrics.fid import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureFID,
    FeatureKID,
    InceptionFeatures,
    features_from_shards,
    fid_from_features,
    kid_from_features,
)
from aras400k.models.features import SegmenterFeatures, feature_extractor
from tests.conftest import write_random_set


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run on one thread: on a busy 2-core machine two spinning threads make convs many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyFeatures(nn.Module):
    """A seeded random conv net: (B, 3, H, W) in [0, 1] -> (B, 6)."""

    num_features = 6

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, images):
        images = images.float() / 255 if images.dtype == torch.uint8 else images
        return torch.tanh(self.conv(images)).mean(dim=(2, 3))


def _images(seed, n=48, size=12):
    """Random images in [0, 0.5], so a brightness shift up to 0.5 stays in [0, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.5


def _frechet_scipy(a, b):
    """Independent Fréchet distance of Gaussian fits (numpy + scipy.linalg.sqrtm)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def _mmd2_unbiased(x, y):
    """Independent unbiased MMD^2 with KID's kernel (x.y / d + 1)^3."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    m, n = len(x), len(y)
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.sum() / (m * n)
    )


def test_fid_matches_scipy_frechet_distance():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(80, 6))
    fake = rng.normal(size=(60, 6)) * 1.3 + 0.4
    expected = _frechet_scipy(real, fake)
    assert fid_from_features(real, fake) == pytest.approx(expected, rel=1e-8)
    # through an extractor: the same value as scipy on the extractor's own features
    net = TinyFeatures()
    x, y = _images(1), _images(2) + 0.2
    metric = FeatureFID(net)
    metric.update(x, real=True)
    metric.update(y, real=False)
    with torch.no_grad():
        fx, fy = net(x).double().numpy(), net(y).double().numpy()
    assert metric.compute().item() == pytest.approx(_frechet_scipy(fx, fy), rel=1e-5)


def test_fid_of_a_set_with_itself_is_zero_and_rises_with_shift():
    net = TinyFeatures()
    x = _images(3)
    metric = FeatureFID(net, reset_real_features=False)
    metric.update(x, real=True)
    values = []
    for shift in (0.0, 0.05, 0.1, 0.2, 0.35, 0.5):
        metric.reset()  # keeps the real statistics
        metric.update(x + shift, real=False)
        values.append(metric.compute().item())
    # FID(x, x): float64 statistics, so zero up to eigenvalue round-off (|FID| < 1e-8 of the trace)
    trace = np.trace(np.cov(net(x).detach().double().numpy(), rowvar=False))
    assert abs(values[0]) < 1e-8 * trace
    assert all(b > a for a, b in itertools.pairwise(values)), values


def test_kid_identical_shifted_and_against_numpy():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(400, 5))
    same = rng.normal(size=(400, 5))  # an independent draw of the same distribution
    shifted = rng.normal(size=(400, 5)) + 0.5
    # subset_size = all samples: every subset is the whole set, so KID is the full unbiased MMD^2
    assert kid_from_features(real[:60], shifted[:60], subsets=3, subset_size=60)[0] == pytest.approx(
        _mmd2_unbiased(real[:60], shifted[:60]), rel=1e-9
    )
    # the very same set: exactly -(2/m)(mean k(x, x) - mean k(x, x')) (hand-worked), O(1/m) ~ 0
    x = real[:60]
    k = (x @ x.T / 5 + 1) ** 3
    m = len(x)
    by_hand = -(2 / m) * (np.trace(k) / m - (k.sum() - np.trace(k)) / (m * (m - 1)))
    assert kid_from_features(x, x, subsets=3, subset_size=m)[0] == pytest.approx(by_hand, rel=1e-9)
    # KID ~ 0 for identical sets / distributions, clearly > 0 for a shifted one
    mean_self, _ = kid_from_features(real, real, subsets=50, subset_size=200)
    mean_same, std_same = kid_from_features(real, same, subsets=50, subset_size=200)
    mean_shift, _ = kid_from_features(real, shifted, subsets=50, subset_size=200)
    assert mean_shift > 0.5 and std_same > 0
    assert abs(mean_same) < 0.05 * mean_shift and abs(mean_self) < 0.05 * mean_shift
    # seeded: compute() gives the same value twice
    assert kid_from_features(real, same, subsets=5, subset_size=20) == kid_from_features(
        real, same, subsets=5, subset_size=20
    )


def test_kid_through_an_extractor_and_small_sets():
    net = TinyFeatures()
    metric = FeatureKID(net, subsets=10, subset_size=1000)
    metric.update(_images(5, n=20), real=True)
    metric.update(_images(6, n=16) + 0.4, real=False)
    with pytest.warns(UserWarning, match="using 16"):
        mean, std = metric.compute()
    assert mean.item() > 0 and std.item() > 0 and metric.subset_size == 1000
    tiny = FeatureKID(3)
    tiny.update(torch.zeros(1, 3), real=True)
    tiny.update(torch.zeros(5, 3), real=False)
    with pytest.raises(ValueError, match="at least 2 real"):
        tiny.compute()


def test_precomputed_features_are_checked():
    metric = FeatureFID(4)
    with pytest.raises(ValueError, match=r"expected \(B, 4\) features"):
        metric.update(torch.zeros(2, 5), real=True)
    with pytest.raises(TypeError, match="nn.Module or a feature dimension"):
        FeatureFID("inception")


def test_features_from_shards(tmp_path):
    shards = write_random_set(tmp_path / "set", 11, size=12, per_shard=4)
    net = TinyFeatures()
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in iter_samples(shards)]).float() / 255
    expected = net(images).detach()
    feats = features_from_shards(shards, net, batch_size=4, progress=False)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    capped = features_from_shards(
        shards, net, batch_size=3, max_samples=5, image_transform=lambda x: 1 - x, progress=False
    )
    torch.testing.assert_close(capped, net(1 - images[:5]).detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        features_from_shards(shards, net, batch_size=0)


def test_segmenter_feature_space(tmp_path):
    from aras400k.models.segmentation import SegmentationTask

    task = SegmentationTask(arch="fpn", encoder="resnet18")
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    ckpt = tmp_path / "seg.ckpt"
    torch.save(
        {
            "hyper_parameters": dict(task.hparams),
            "state_dict": task.state_dict(),
            "datamodule_hyper_parameters": {"mean": list(mean), "std": list(std)},
        },
        ckpt,
    )
    features = feature_extractor("segmenter", ckpt)
    assert isinstance(features, SegmenterFeatures) and features.num_features == 512
    torch.testing.assert_close(features.mean.flatten(), torch.tensor(mean))  # taken from the checkpoint
    x = _images(7, n=6, size=32)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(features(x), task.eval().extract_features(normalised), rtol=1e-4, atol=1e-5)
    features.train()
    assert not features.training and not any(p.requires_grad for p in features.parameters())
    fid = FeatureFID(features, reset_real_features=False)
    fid.update(x, real=True)
    fid.update(x, real=False)
    same = fid.compute().item()
    fid.reset()
    fid.update((x + 0.5).clamp(0, 1), real=False)
    assert abs(same) < 1e-6 * fid.compute().item()
    default = SegmenterFeatures(task)
    assert torch.allclose(default.std.flatten(), torch.tensor(IMAGENET_STD))


def test_defaults_follow_the_datamodules():
    from aras400k.data.datamodules import IMAGENET_MEAN as DM_MEAN
    from aras400k.data.datamodules import IMAGENET_STD as DM_STD

    assert (IMAGENET_MEAN, IMAGENET_STD) == (DM_MEAN, DM_STD)


def test_inception_from_a_local_file_only(tmp_path):
    from torchvision.models import inception_v3

    missing = tmp_path / "inception_v3.pth"
    with pytest.raises(FileNotFoundError, match=r"inception_v3\.pth does not exist.*inception_v3_google"):
        feature_extractor("inception", missing)
    torch.manual_seed(0)
    torch.save({"state_dict": inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()}, missing)
    features = InceptionFeatures(missing, resize=80)
    assert features.num_features == 2048
    out = features(torch.rand(2, 3, 40, 40))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    wrong = tmp_path / "wrong.pth"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(ValueError, match="not a torchvision inception_v3 state dict"):
        InceptionFeatures(wrong)
    with pytest.raises(ValueError, match="unknown feature extractor kind"):
        feature_extractor("clip", missing)


def test_moved_names_still_import_from_metrics_with_a_warning():
    import aras400k.metrics
    import aras400k.metrics.fid

    for module in (aras400k.metrics, aras400k.metrics.fid):
        with pytest.warns(FutureWarning, match=r"moved to aras400k\.models\.features\.SegmenterFeatures"):
            assert module.SegmenterFeatures is SegmenterFeatures
    with pytest.raises(AttributeError):
        aras400k.metrics.fid.NoSuchThing  # noqa: B018
