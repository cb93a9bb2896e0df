"""LightningDataModules over shard sets: segmentation, and images (or image + mask) for GANs.

Both read a *root* folder (or URL) holding ``train``, ``val`` and ``test`` shard sets, or
explicit shard sets and weighted training sources (``docs/data.md#datamodules``). With
``demo: true`` and no data at a local ``root``, ``prepare_data`` builds the demo set there.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info

from aras400k.checkpoints import save_hyperparameters
from aras400k.classes import NUM_CLASSES
from aras400k.data.datasets import EpochDataLoader, ShardDataset, ShardSource
from aras400k.data.demo import DEFAULT_DEMO_SAMPLES, demo_is_ready, make_demo
from aras400k.data.memory import ReusedBuffers
from aras400k.data.remote import is_url, join_location
from aras400k.data.transforms import JointAugmentation, Normalize
from aras400k.errors import ConfigError, check_at_least

__all__ = ["GANDataModule", "SegmentationDataModule", "ShardDataModule"]

# ShardDataset partitions samples exactly over ranks and workers, so Lightning's
# caution about __len__ on multi-worker IterableDatasets does not apply to it.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ShardDataModule(LightningDataModule):
    """Shared machinery: the demo set, datasets per stage and device-side transforms.

    Subclasses set ``with_mask`` and choose the transforms in :meth:`configure_transforms`.
    Every shard set below may be a local folder or a remote spec.

    Attributes:
        num_classes: Classes the masks hold (the class table of :mod:`aras400k.classes`);
            a segmenter with another ``num_classes`` is refused before training.

    Args:
        root: Folder (or URL) holding ``train``, ``val`` and ``test`` shard sets.
        train: Training sources (one spec, or a list of specs or :class:`ShardSource`);
            default ``[root/train]``.
        val: Validation shard set; default ``root/val``.
        test: Test shard set; default ``root/test``.
        predict: Shard set for ``predict``; default the test set.
        demo: Build the procedural demo set at a local ``root`` in ``prepare_data`` if it
            holds no data (never for a URL ``root``).
        demo_samples: Demo train/val/test sizes.
        demo_image_size: Demo patch size in pixels.
        batch_size: Samples per batch (per device).
        num_workers: Loader processes per device (kept alive between epochs).
        samples_per_epoch: Training samples per epoch over all devices; default: every
            training sample once (or the summed source sizes with weighted sources).
        shuffle_buffer: Per-worker shuffle buffer of the training stream.
        augment: Apply :class:`JointAugmentation` to training batches.
        mean: Per-channel normalisation mean (``[0, 1]`` units).
        std: Per-channel normalisation std.
        seed: Seed of shuffling (and of the demo set).
    """

    with_mask: bool = True

    def __init__(
        self,
        root: str = "data/demo",
        train: str | list[ShardSource] | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        demo: bool = True,
        demo_samples: tuple[int, int, int] = DEFAULT_DEMO_SAMPLES,
        demo_image_size: int = 64,
        batch_size: int = 16,
        num_workers: int = 2,
        samples_per_epoch: int | None = None,
        shuffle_buffer: int = 512,
        augment: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        save_hyperparameters(self)
        # Checkpoints store these hyperparameters and load with weights_only=True:
        # keep them plain values (dicts), not ShardSource objects.
        if isinstance(train, str):
            train = [ShardSource(train)]
        self.hparams["train"] = [asdict(ShardSource.coerce(s)) for s in train] if train else None
        check_at_least("batch_size", batch_size, 1)
        check_at_least("num_workers", num_workers, 0)
        #: A local ``root`` as a Path; a URL ``root`` stays a string.
        self.root: Path | str = root if is_url(root) else Path(root)
        self.train_sources = (
            [ShardSource.coerce(s) for s in train] if train else [ShardSource(join_location(str(self.root), "train"))]
        )
        self.val_path = val or join_location(str(self.root), "val")
        self.test_path = test or join_location(str(self.root), "test")
        self.predict_path = predict or self.test_path
        self.demo = demo
        self.demo_samples = tuple(demo_samples)
        self.demo_image_size = demo_image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.shuffle_buffer = shuffle_buffer
        self.augment = augment
        self.seed = seed
        self.normalize, self.augmentation = self.configure_transforms(mean, std)
        self.datasets: dict[str, ShardDataset] = {}
        self._host_memory = ReusedBuffers()

    def configure_transforms(
        self, mean: tuple[float, float, float], std: tuple[float, float, float]
    ) -> tuple[Normalize, JointAugmentation | None]:
        """``(normaliser with mean and std, training augmentation or None)``; override to change them."""
        return Normalize(mean, std), JointAugmentation() if self.augment else None

    def prepare_data(self) -> None:
        """Build the demo set at a local ``root`` when asked to and it is missing (runs on one process)."""
        if not self.demo or isinstance(self.root, str) or demo_is_ready(self.root):
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise FileNotFoundError(
                f"{self.root} holds files but no complete train/val/test shard sets; "
                "point root at a shard set folder, or at an empty/new folder for the demo set"
            )
        rank_zero_info(f"Building the procedural demo set in {self.root} (first use only)")
        make_demo(self.root, self.demo_samples, self.demo_image_size, seed=self.seed)

    def setup(self, stage: str) -> None:
        """Open the shard sets the stage (``fit``, ``validate``, ``test`` or ``predict``) needs.

        Raises:
            ConfigError: If a local ``root`` that the stage reads from does not exist.
        """
        self._check_root(stage)
        if stage == "fit":
            self.datasets["train"] = ShardDataset(
                self.train_sources,
                with_mask=self.with_mask,
                shuffle=True,
                shuffle_buffer=self.shuffle_buffer,
                seed=self.seed,
                samples_per_epoch=self.samples_per_epoch,
                even_ranks=True,  # DDP ranks must take the same number of steps
            )
        if stage in ("fit", "validate"):
            self.datasets["val"] = ShardDataset([self.val_path], with_mask=self.with_mask)
        if stage == "test":
            self.datasets["test"] = ShardDataset([self.test_path], with_mask=self.with_mask)
        if stage == "predict":
            # meta: the prediction writer needs each sample's georeference (docs/data.md).
            self.datasets["predict"] = ShardDataset([self.predict_path], with_mask=False, with_meta=True)

    def _check_root(self, stage: str) -> None:
        """Refuse a missing local ``root`` in one line when the stage reads a set under it."""
        if isinstance(self.root, str) or self.root.is_dir():
            return
        under_root = {
            "fit": [s.path for s in self.train_sources] + [self.val_path],
            "validate": [self.val_path],
            "test": [self.test_path],
            "predict": [self.predict_path],
        }[stage]
        if any(str(path).startswith(str(self.root)) for path in under_root):
            hint = "" if self.demo else ", or set demo: true to build the procedural demo set there"
            raise ConfigError(
                f"data root {self.root} does not exist; point root at a folder holding train/val/test shard sets{hint}"
            )

    def _loader(self, name: str) -> EpochDataLoader:
        if name not in self.datasets:
            raise RuntimeError(f"call setup() for the {name} stage before asking for its dataloader")
        dataset = self.datasets[name]
        # No more workers than samples; a shard list without a manifest has no length.
        no_length = dataset.samples_per_epoch is None
        workers = self.num_workers if no_length else min(self.num_workers, max(1, len(dataset)))
        # Persistent workers and reused batch memory: docs/data.md#loader-speed.
        return EpochDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=False,
            persistent_workers=workers > 0,
            reuse_batch_memory=True,
        )

    def train_dataloader(self) -> EpochDataLoader:
        """Shuffled training stream."""
        return self._loader("train")

    def val_dataloader(self) -> EpochDataLoader:
        """Validation set, each sample once, in order."""
        return self._loader("val")

    def test_dataloader(self) -> EpochDataLoader:
        """Test set, each sample once, in order."""
        return self._loader("test")

    def predict_dataloader(self) -> EpochDataLoader:
        """Images to predict on, each once, in order."""
        return self._loader("predict")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Scale, augment (training only) and normalise a batch on its device: a float ``image``, a long ``mask``."""
        # A float copy owned here, scaled and normalised in place: bit for bit (image / 255 - mean) / std,
        # without two more batch-sized allocations (costlier than the arithmetic on a CPU; docs/data.md#loader-speed).
        # On the CPU the copy is made in memory an earlier batch released (ReusedBuffers).
        image = self._host_copy(batch["image"], torch.float32).div_(255.0)
        mask = batch.get("mask")
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        if training and self.augmentation is not None:
            image, mask = self.augmentation(image, mask)  # new tensors: still ours to overwrite
        batch["image"] = self.normalize.to(image.device)(image, inplace=True)
        if mask is not None:
            batch["mask"] = self._host_copy(mask, torch.int64) if mask.dtype != torch.int64 else mask
        return batch

    def _host_copy(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A copy of ``tensor`` as ``dtype`` that the caller owns, on the CPU in :class:`ReusedBuffers` memory."""
        if tensor.device.type != "cpu":
            return tensor.to(dtype, copy=True)
        return self._host_memory.empty(tensor.shape, dtype).copy_(tensor)

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map a normalised batch back to ``[0, 1]`` for display."""
        return self.normalize.to(image.device).denormalize(image)


class SegmentationDataModule(ShardDataModule):
    """Image + mask batches for segmentation, training on one or several sources.

    Batches hold ``image`` (normalised float ``(B, 3, H, W)``), ``mask`` (long
    ``(B, H, W)``, 255 = ignore), ``key`` and ``source``. Validation and test come from
    real data. See :class:`ShardDataModule` for the arguments.
    """

    with_mask = True


class GANDataModule(ShardDataModule):
    """Images (and, for conditional GANs, masks) scaled to ``[-1, 1]`` for GAN training.

    Augmentation is a horizontal flip only (StyleGAN's ``--mirror=1``); ADA-style
    augmentation belongs to the GAN module, not the data.

    Args:
        with_mask: Also return masks (mask-conditioned GANs).
        mirror: Randomly flip training images horizontally.
        **kwargs: The arguments of :class:`ShardDataModule` but ``predict``, ``augment``,
            ``mean`` and ``std``, which this module sets.
    """

    def __init__(self, with_mask: bool = False, mirror: bool = True, **kwargs: Any) -> None:
        self.with_mask = with_mask
        self.mirror = mirror
        super().__init__(predict=None, augment=mirror, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), **kwargs)

    def configure_transforms(
        self, mean: tuple[float, float, float], std: tuple[float, float, float]
    ) -> tuple[Normalize, JointAugmentation | None]:
        """Normalise to ``[-1, 1]``; flip horizontally when ``mirror`` is set."""
        flip = JointAugmentation(hflip=0.5, vflip=0, rotate90=0, brightness=0, contrast=0) if self.mirror else None
        return Normalize(mean, std), flip
