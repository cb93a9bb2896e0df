"""FID and KID in a pluggable feature space, and features streamed from shard sets.

A feature extractor is any ``nn.Module`` mapping ``(B, 3, H, W)`` images (floats in
``[0, 1]`` or uint8) to ``(B, D)`` features, with an integer ``num_features``: a trained
segmenter's pooled bottleneck (:class:`~aras400k.models.features.SegmenterFeatures`) or
Inception-v3 from a **local** weights file (:class:`InceptionFeatures`; torchvision's
ImageNet weights come close to the standard FID, ``backend="torch-fidelity"`` gives it).
:class:`FeatureFID` and :class:`FeatureKID` are torchmetrics' FID and KID with such a
module (an identity over precomputed features for an ``int``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from tqdm.auto import tqdm

from aras400k._lazy import moved_attributes
from aras400k.checkpoints import load_checkpoint
from aras400k.data.shards import iter_samples, read_manifest
from aras400k.errors import check_at_least

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureExtractor",
    "FeatureFID",
    "FeatureKID",
    "IdentityFeatures",
    "InceptionFeatures",
    "features_from_shards",
    "fid_from_features",
    "kid_from_features",
    "unit_float",
]

#: Names that moved to :mod:`aras400k.models.features` (they load a segmenter, a model),
#: still importable from here with a ``FutureWarning`` until the next release.
_MOVED = {"SegmenterFeatures": "aras400k.models.features", "feature_extractor": "aras400k.models.features"}
__getattr__ = moved_attributes(__name__, _MOVED)

#: Default normalisation, the same as the DataModules' (``aras400k.data.datamodules``).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Default normalisation standard deviation.
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_M = TypeVar("_M", FrechetInceptionDistance, KernelInceptionDistance)
#: The weights file each Inception backend loads.
_INCEPTION_FILES = {
    "torchvision": "inception_v3_google-0cc3c7bd.pth (torchvision's Inception-v3 state dict)",
    "torch-fidelity": "pt_inception-2015-12-05-6726825d.pth (torch-fidelity's FID Inception)",
}


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` images -> float ``[0, 1]``; floats are taken as already in ``[0, 1]``."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class FeatureExtractor(nn.Module):
    """Base of the extractors here: frozen, always in eval mode; subclasses call :meth:`_freeze` last.

    Attributes:
        num_features: Feature dimension (read by torchmetrics' FID instead of probing).
    """

    num_features: int

    def _freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in evaluation mode whatever ``mode`` is (as torchmetrics' own Inception does)."""
        return super().train(False)


class IdentityFeatures(FeatureExtractor):
    """Pass precomputed ``(B, num_features)`` features through, so FID/KID can take features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the features unchanged after checking their shape.

        Raises:
            ValueError: If the input is not ``(B, num_features)``.
        """
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected (B, {self.num_features}) features, got {tuple(features.shape)}")
        return features


class InceptionFeatures(FeatureExtractor):
    """2048-d pool features of Inception-v3 loaded from a local weights file.

    ``torchvision`` resizes images to ``resize`` (bilinear, antialiased) and scales them
    to ``[-1, 1]``, as the Google weights expect; ``torch-fidelity`` is the TF-ported,
    standard FID network (always at 299 px).

    Args:
        weights: Local weights file (``.pth``/``.pt``, weights only, or ``.safetensors``).
        backend: ``torchvision`` or ``torch-fidelity`` (needs the ``torch-fidelity`` package).
        resize: Side images are resized to (299 as in FID); ``None`` keeps it.

    Raises:
        FileNotFoundError: If ``weights`` does not exist (nothing is downloaded).
        ImportError: If ``backend="torch-fidelity"`` and the package is missing.
        ValueError: If the file does not hold the network's weights.
    """

    def __init__(
        self,
        weights: str | Path,
        backend: Literal["torchvision", "torch-fidelity"] = "torchvision",
        resize: int | None = 299,
    ) -> None:
        super().__init__()
        path = Path(weights)
        if not path.is_file():
            hint = _INCEPTION_FILES["torchvision" if backend == "torchvision" else "torch-fidelity"]
            raise FileNotFoundError(
                f"Inception weights file {path} does not exist; aras400k never downloads weights: "
                f"copy {hint} to this machine and give its path"
            )
        if backend not in _INCEPTION_FILES:
            raise ValueError(f"unknown Inception backend {backend!r}; choose 'torchvision' or 'torch-fidelity'")
        self.backend = backend
        self.resize = resize
        self.num_features = 2048
        self.net = _torchvision_inception(path) if backend == "torchvision" else _fidelity_inception(path)
        self._freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 2048)`` pool features of ``(B, 3, H, W)`` images (floats in ``[0, 1]`` or uint8)."""
        x = unit_float(images)
        if self.backend == "torch-fidelity":  # pragma: no cover - needs torch-fidelity
            return self.net((x * 255).round().clamp(0, 255).to(torch.uint8)).reshape(len(x), -1)
        if self.resize is not None and x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True)
        return self.net(2 * x - 1)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a weights-only torch file, unwrapping ``state_dict``/``model``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state: Any = load_checkpoint(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (it holds a {type(state).__name__})")
    return state


def _torchvision_inception(path: Path) -> nn.Module:
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        net.load_state_dict(_load_state_dict(path), strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path} is not a torchvision inception_v3 state dict ({first})") from err
    net.fc = nn.Identity()  # in eval mode the network then returns the 2048-d pool features
    return net


def _fidelity_inception(path: Path) -> nn.Module:  # pragma: no cover - needs torch-fidelity
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as err:
        raise ImportError(f"backend='torch-fidelity' needs torchmetrics' FID module ({err})") from err
    if not _TORCH_FIDELITY_AVAILABLE:
        raise ImportError(
            "backend='torch-fidelity' needs the torch-fidelity package (pip install torch-fidelity); "
            "or use backend='torchvision' with a torchvision inception_v3 state dict"
        )
    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
    )


def _as_module(feature: nn.Module | int) -> nn.Module:
    if isinstance(feature, bool) or not isinstance(feature, (int, nn.Module)):
        raise TypeError(f"feature must be an nn.Module or a feature dimension (int), got {type(feature).__name__}")
    return IdentityFeatures(feature) if isinstance(feature, int) else feature


class FeatureFID(FrechetInceptionDistance):
    """Fréchet distance between Gaussian fits of two feature sets, in any feature space.

    ``update(images, real=...)`` passes images to ``feature`` unchanged; with an
    ``int`` it takes precomputed ``(B, feature)`` features. Statistics are float64 sums.

    Args:
        feature: A feature extractor (probed once without ``num_features``), or a dimension.
        reset_real_features: Clear the real statistics on ``reset()`` (``False``: reuse them).
        input_img_size: Probe image size for an extractor without ``num_features``.
        **kwargs: Passed to torchmetrics' ``Metric`` (e.g. ``sync_on_compute``).

    Raises:
        TypeError: If ``feature`` is neither a module nor an int.
    """

    def __init__(
        self,
        feature: nn.Module | int,
        reset_real_features: bool = True,
        input_img_size: tuple[int, int, int] = (3, 299, 299),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature=_as_module(feature),
            reset_real_features=reset_real_features,
            normalize=True,  # only makes the probe image a [0, 1] float, as the extractors take
            input_img_size=input_img_size,
            **kwargs,
        )


class FeatureKID(KernelInceptionDistance):
    """Kernel (polynomial MMD²) distance between two feature sets, in any feature space.

    As :class:`FeatureFID`, plus, for small sets: the subsets are drawn from a seeded
    generator (the same value every ``compute``) and ``subset_size`` is lowered to the
    smaller set's size (with a warning) instead of failing. KID keeps every feature.

    Args:
        feature: A feature extractor or a feature dimension (precomputed features).
        subsets: Random subsets the MMD is averaged over.
        subset_size: Samples per subset.
        degree: Polynomial kernel degree.
        gamma: Kernel scale (default ``1 / D``).
        coef: Kernel constant.
        reset_real_features: Clear the real features on ``reset()``.
        seed: Subset sampling seed.
        **kwargs: Passed to torchmetrics' ``Metric``.

    Raises:
        TypeError: If ``feature`` is neither a module nor an int.
    """

    def __init__(
        self,
        feature: nn.Module | int,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        gamma: float | None = None,
        coef: float = 1.0,
        reset_real_features: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        with warnings.catch_warnings():  # the "saves all features" notice is documented above
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            super().__init__(
                feature=_as_module(feature),
                subsets=subsets,
                subset_size=subset_size,
                degree=degree,
                gamma=gamma,
                coef=coef,
                reset_real_features=reset_real_features,
                normalize=True,
                **kwargs,
            )
        self.seed = seed

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kid_mean, kid_std)`` over the (seeded) subsets.

        Raises:
            ValueError: If either set has fewer than 2 samples.
        """
        n_real, n_fake = _count(self.real_features), _count(self.fake_features)
        if min(n_real, n_fake) < 2:
            raise ValueError(f"KID needs at least 2 real and 2 fake samples, got {n_real} and {n_fake}")
        requested = self.subset_size
        if requested > min(n_real, n_fake):
            warnings.warn(
                f"KID subset_size {requested} exceeds the samples ({n_real} real, {n_fake} fake); "
                f"using {min(n_real, n_fake)}",
                stacklevel=2,
            )
            self.subset_size = min(n_real, n_fake)
        try:  # torchmetrics draws the subsets with torch.randperm on the CPU generator
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                return super().compute()
        finally:
            self.subset_size = requested


def _count(features: list[torch.Tensor] | torch.Tensor) -> int:
    """Samples in a KID feature state: a list of batches, or one tensor after a gather."""
    return len(features) if isinstance(features, torch.Tensor) else sum(len(f) for f in features)


def _filled(make: Callable[[int], _M], real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> _M:
    """``make(D)`` updated with ``(N, D)`` real and ``(M, D)`` fake features, in chunks of 4096."""
    chunks = {}
    for is_real, features in ((True, real), (False, fake)):
        tensor = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
        if tensor.ndim != 2:
            raise ValueError(f"features must be (N, D), got {tuple(tensor.shape)}")
        chunks[is_real] = tensor.double().split(4096)
    metric = make(chunks[True][0].shape[1])
    for is_real, batches in chunks.items():
        for chunk in batches:
            metric.update(chunk, real=is_real)
    return metric


def fid_from_features(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    """FID of ``(M, D)`` ``fake`` features to ``(N, D)`` ``real`` ones (via :class:`FeatureFID`).

    In squared-distance units of the feature space.

    Raises:
        ValueError: On feature sets that are not 2-D or differ in ``D``.
        RuntimeError: If either set has fewer than 2 samples.
    """
    return float(_filled(FeatureFID, real, fake).compute())


def kid_from_features(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID of ``(M, D)`` ``fake`` features to ``(N, D)`` ``real`` ones (via :class:`FeatureKID`).

    Returns ``(mean, std)`` of the unbiased MMD² estimates over ``subsets`` random subsets
    of ``subset_size`` (lowered to the smaller set's size if needed), drawn with ``seed``.

    Raises:
        ValueError: On bad feature shapes or fewer than 2 samples in a set.
    """
    metric = _filled(lambda dim: FeatureKID(dim, subsets=subsets, subset_size=subset_size, seed=seed), real, fake)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="KID subset_size")
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def features_from_shards(
    shard_dir: str | Path,
    extractor: nn.Module,
    batch_size: int = 32,
    max_samples: int | None = None,
    image_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Stream the images of a shard set (manifest order) through a feature extractor.

    Batches of up to ``batch_size`` images of one size, as ``(B, 3, H, W)`` floats in
    ``[0, 1]``, go through ``image_transform`` (e.g. a resize) if given, then to ``device``
    (default: the extractor's) and the extractor; ``max_samples`` caps the images read.
    Returns ``(N, D)`` float32 features on the CPU.

    Raises:
        aras400k.data.ManifestError: If ``shard_dir`` is not a shard set.
        aras400k.data.SampleError: On a corrupt sample.
        ValueError: If ``batch_size < 1`` or the set holds no images.
    """
    check_at_least("batch_size", batch_size, 1)
    total = int(read_manifest(shard_dir)["num_samples"])
    total = min(total, max_samples) if max_samples is not None else total
    if device is None:
        param = next(iter(extractor.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = extractor.training
    extractor.eval()
    out: list[torch.Tensor] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        images = torch.from_numpy(np.stack(batch)).to(device).permute(0, 3, 1, 2).float() / 255.0
        if image_transform is not None:
            images = image_transform(images)
        out.append(extractor(images).float().cpu())
        batch.clear()

    try:
        with tqdm(total=total, desc=f"features {Path(shard_dir).name}", unit="img", disable=not progress) as bar:
            for i, sample in enumerate(iter_samples(shard_dir, with_mask=False, with_captions=False)):
                if i >= total:
                    break
                if batch and sample.image.shape != batch[0].shape:
                    flush()
                batch.append(sample.image)
                if len(batch) == batch_size:
                    flush()
                bar.update(1)
            if batch:
                flush()
    finally:
        extractor.train(was_training)
    if not out:
        raise ValueError(f"{shard_dir} holds no images to extract features from")
    return torch.cat(out)
