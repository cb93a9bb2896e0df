"""FID and KID in a pluggable feature space, and features streamed from shard sets.

The paper reports FID of its synthetic sets (16 unconditional, 72 conditional) and
compares real and synthetic samples in its trained segmenter's feature space (Figure 4).
Both need a feature extractor; here it is any ``nn.Module`` that maps a batch of
images, ``(B, 3, H, W)`` floats in ``[0, 1]`` (or uint8 in ``[0, 255]``), to ``(B, D)``
features and has an integer ``num_features`` attribute:

* :class:`~aras400k.models.features.SegmenterFeatures` (in :mod:`aras400k.models.features`,
  since it loads a model): the pooled bottleneck of a trained
  :class:`~aras400k.models.SegmentationTask` encoder, a remote-sensing feature space;
  inputs are normalised the way the task was trained, ``(x - mean) / std``.
* :class:`InceptionFeatures`: the 2048-d pool features of torchvision's Inception-v3
  from a **local** weights file (nothing downloads). With torchvision's ImageNet
  weights the numbers are close to, but not the same as, the standard FID of the
  TF-ported network; install ``torch-fidelity`` and pass its weights file with
  ``backend="torch-fidelity"`` for that.

:class:`FeatureFID` and :class:`FeatureKID` are torchmetrics'
``FrechetInceptionDistance`` and ``KernelInceptionDistance`` with such a module (or
with an identity over precomputed features when given an ``int``), so they keep
torchmetrics' distributed state handling. :func:`features_from_shards` computes the
features of a shard set once, for FID, KID and the embedding plot alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

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


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float ``[0, 1]``; floats are taken as already in ``[0, 1]``.

    Args:
        images: A uint8 or float tensor.

    Returns:
        Float images in ``[0, 1]``.
    """
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


class FeatureExtractor(nn.Module):
    """Base of the extractors here: frozen, always in eval mode, with ``num_features``.

    Subclasses map ``(B, C, H, W)`` images (floats in ``[0, 1]`` or uint8) to
    ``(B, num_features)`` features and call :meth:`_freeze` at the end of ``__init__``.

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
    """Pass precomputed ``(B, num_features)`` features through, so FID/KID can take features.

    Args:
        num_features: Feature dimension.
    """

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

    ``backend="torchvision"`` builds ``torchvision.models.inception_v3(weights=None,
    aux_logits=True, init_weights=False)`` and loads a torchvision state dict (e.g. the
    file ``inception_v3_google-0cc3c7bd.pth`` torchvision itself would download, copied
    by hand); images are resized to ``resize`` (bilinear, antialiased) and scaled to
    ``[-1, 1]``, the input the Google weights expect (what torchvision's
    ``transform_input`` produces from ImageNet-normalised input). ``backend="torch-fidelity"``
    uses torchmetrics' wrapper of torch-fidelity's TF-ported FID Inception with its
    weights file (``pt_inception-2015-12-05-6726825d.pth``): the standard FID network.

    Args:
        weights: Local weights file (``.pth``/``.pt`` via ``torch.load(weights_only=True)``,
            or ``.safetensors``).
        backend: ``torchvision`` or ``torch-fidelity`` (needs the ``torch-fidelity`` package).
        resize: Side images are resized to (299 as in FID); ``None`` keeps the input size
            (at least 75 px). The torch-fidelity backend always resizes to 299.

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
            hint = (
                "inception_v3_google-0cc3c7bd.pth (torchvision's Inception-v3 state dict)"
                if backend == "torchvision"
                else "pt_inception-2015-12-05-6726825d.pth (torch-fidelity's FID Inception)"
            )
            raise FileNotFoundError(
                f"Inception weights file {path} does not exist; aras400k never downloads weights: "
                f"copy {hint} to this machine and give its path"
            )
        self.backend = backend
        self.resize = resize
        self.num_features = 2048
        if backend == "torchvision":
            self.net = _torchvision_inception(path)
        elif backend == "torch-fidelity":
            self.net = _fidelity_inception(path)
        else:
            raise ValueError(f"unknown Inception backend {backend!r}; choose 'torchvision' or 'torch-fidelity'")
        self._freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool features of a batch.

        Args:
            images: ``(B, 3, H, W)`` floats in ``[0, 1]`` or uint8.

        Returns:
            ``(B, 2048)`` features.
        """
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

    torchmetrics' ``FrechetInceptionDistance`` with a custom extractor: ``update(images,
    real=...)`` passes images to ``feature`` unchanged, so give what the extractor takes
    (the extractors here take ``[0, 1]`` floats or uint8). With an ``int``, the metric
    takes precomputed ``(B, feature)`` feature batches instead. Means and covariances are
    accumulated in float64 and summed across processes.

    Args:
        feature: A feature extractor with a ``num_features`` attribute (otherwise it is
            probed once with a random ``input_img_size`` image), or a feature dimension.
        reset_real_features: Clear the real statistics on ``reset()`` (set ``False`` to
            reuse them for several fake sets).
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

    torchmetrics' ``KernelInceptionDistance`` with a custom extractor (see
    :class:`FeatureFID`), plus two changes for small evaluation sets: the random subsets
    are drawn from a seeded generator (the same value every ``compute``), and
    ``subset_size`` is lowered to the smaller set's size (with a warning) instead of
    failing. KID keeps every feature in memory (``B x D`` floats per batch).

    Args:
        feature: A feature extractor or a feature dimension (precomputed features).
        subsets: Number of random subsets the MMD is averaged over.
        subset_size: Samples per subset.
        degree: Polynomial kernel degree.
        gamma: Kernel scale (default ``1 / D``).
        coef: Kernel constant.
        reset_real_features: Clear the real features on ``reset()``.
        seed: Seed of the subset sampling.
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
        """KID mean and standard deviation over the subsets (seeded).

        Returns:
            ``(kid_mean, kid_std)``.

        Raises:
            ValueError: If either set has fewer than 2 samples.
        """
        n_real = sum(len(f) for f in self.real_features) if isinstance(self.real_features, list) else 0
        n_fake = sum(len(f) for f in self.fake_features) if isinstance(self.fake_features, list) else 0
        if isinstance(self.real_features, torch.Tensor):
            n_real = len(self.real_features)
        if isinstance(self.fake_features, torch.Tensor):
            n_fake = len(self.fake_features)
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


def _chunks(features: torch.Tensor | np.ndarray, size: int = 4096) -> list[torch.Tensor]:
    tensor = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if tensor.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(tensor.shape)}")
    return list(tensor.double().split(size))


def fid_from_features(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    """FID between two precomputed feature sets (via :class:`FeatureFID`).

    Args:
        real: ``(N, D)`` features of the reference set.
        fake: ``(M, D)`` features of the compared set.

    Returns:
        The Fréchet distance (squared-distance units of the feature space).

    Raises:
        ValueError: On feature sets that are not 2-D or differ in ``D``.
        RuntimeError: If either set has fewer than 2 samples.
    """
    real_chunks, fake_chunks = _chunks(real), _chunks(fake)
    dim = real_chunks[0].shape[1]
    metric = FeatureFID(dim)
    for chunk in real_chunks:
        metric.update(chunk, real=True)
    for chunk in fake_chunks:
        metric.update(chunk, real=False)
    return float(metric.compute())


def kid_from_features(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two precomputed feature sets (via :class:`FeatureKID`).

    Args:
        real: ``(N, D)`` features of the reference set.
        fake: ``(M, D)`` features of the compared set.
        subsets: Random subsets averaged over.
        subset_size: Samples per subset (lowered to the smaller set's size if needed).
        seed: Subset sampling seed.

    Returns:
        ``(mean, std)`` of the unbiased MMD² estimates over the subsets.

    Raises:
        ValueError: On bad feature shapes or fewer than 2 samples in a set.
    """
    real_chunks, fake_chunks = _chunks(real), _chunks(fake)
    metric = FeatureKID(real_chunks[0].shape[1], subsets=subsets, subset_size=subset_size, seed=seed)
    for chunk in real_chunks:
        metric.update(chunk, real=True)
    for chunk in fake_chunks:
        metric.update(chunk, real=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="KID subset_size")
        mean, std = metric.compute()
    return float(mean), float(std)


# -- features of a shard set -------------------------------------------------------------------


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
    """Stream the images of a shard set through a feature extractor.

    Images are read in manifest order (the first ``max_samples``), turned into
    ``(B, 3, H, W)`` floats in ``[0, 1]``, passed through ``image_transform`` if given,
    and then through ``extractor`` in batches of images of one size.

    Args:
        shard_dir: Shard set folder.
        extractor: Module mapping image batches to ``(B, D)`` features (e.g. from
            :func:`feature_extractor`).
        batch_size: Images per forward pass.
        max_samples: Use at most this many images (default: all).
        image_transform: Optional batch transform applied before the extractor (e.g. a
            resize); it receives and returns ``(B, 3, H, W)`` floats.
        device: Where the batches go (default: the extractor's device).
        progress: Show a progress bar.

    Returns:
        ``(N, D)`` float32 features on the CPU.

    Raises:
        aras400k.data.ManifestError: If ``shard_dir`` is not a shard set.
        aras400k.data.SampleError: On a corrupt sample.
        ValueError: If ``batch_size < 1`` or the set holds no images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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

    desc = f"features {Path(shard_dir).name}"
    try:
        with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
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
