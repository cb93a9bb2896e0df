"""The study's data on disk: the procedural sets it builds and the check of every shard set it reads."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from aras400k.ablation.config import AblationConfig
from aras400k.data.demo import demo_is_ready, make_demo
from aras400k.data.shards import read_manifest
from aras400k.data.sources import ShardSource

__all__ = ["build_demo_data", "check_data"]


def build_demo_data(config: AblationConfig) -> list[Path]:
    """Build the procedural data the study's ``config`` asks for and that is missing; return the folders built.

    The real demo set is built at ``root`` when ``demo`` is set and ``root`` is empty or
    absent; each of ``demo_stand_ins`` is built when its folder is. Nothing else is built.

    Raises:
        FileExistsError: If a stand-in's folder holds files but no finished shard sets.
    """
    built = []
    root = Path(config.root)
    if config.demo and not demo_is_ready(root) and not (root.exists() and any(root.iterdir())):
        # A non-empty root is the user's data; check_data says what is missing there.
        print(f"building the procedural real demo set in {root}")
        make_demo(root, progress=False)
        built.append(root)
    for stand_in in config.demo_stand_ins:
        folder = Path(stand_in.out)
        if demo_is_ready(folder):
            continue
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} holds files but no finished train/val/test shard sets; "
                "empty it to rebuild the procedural stand-in, or remove it from demo_stand_ins"
            )
        print(f"building the procedural {stand_in.source} stand-in in {folder} (seed {stand_in.seed}, demo_stand_ins)")
        make_demo(
            folder,
            stand_in.num_samples,
            stand_in.image_size,
            seed=stand_in.seed,
            progress=False,
            source=stand_in.source,
        )
        built.append(folder)
    return built


def _shard_check(sources: Sequence[ShardSource | str], what: str, samples_per_epoch: int | None = None) -> None:
    from aras400k.data.datasets import ShardDataset  # imports torch

    try:
        ShardDataset(list(sources), with_mask=True, samples_per_epoch=samples_per_epoch)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err


def check_data(config: AblationConfig) -> None:
    """Check that every shard set the study's ``config`` reads exists and has masks (manifests only).

    Raises:
        ValueError: Naming the configuration and the path that is not a labelled shard set,
            or a source asked for more samples than it holds.
    """
    _shard_check([config.test_path], "test set")
    if config.validate:
        _shard_check([config.val_path], "validation set")
    for configuration in config.configurations:
        _shard_check(configuration.train, f"configuration {configuration.name!r}", config.samples_per_epoch)
    source = read_manifest(config.test_path).get("source", "real")
    if source != "real":
        warnings.warn(
            f"the test set {config.test_path} holds {source} data; the study is meant to test on real data",
            UserWarning,
            stacklevel=2,
        )
