"""Building a module or DataModule keeps no frame alive: what the caller held is freed when it returns.

Lightning's ``save_hyperparameters`` keeps a reference cycle through its own frame, which
held every calling frame (and its locals: loaders and their worker processes) until a
cyclic garbage collection; ``aras400k.checkpoints.save_hyperparameters`` avoids it.
"""

from __future__ import annotations

import gc
import multiprocessing
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightning import LightningModule

from aras400k.checkpoints import save_hyperparameters
from aras400k.data.datamodules import SegmentationDataModule
from aras400k.models.segmentation import SegmentationTask
from aras400k.models.spade import SPADEGAN
from aras400k.models.stylegan3 import StyleGAN3
from tests.conftest import write_random_set


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


class _Marker:
    pass


def _built_beside_a_marker(build: Callable[[], Any]) -> tuple[weakref.ref[_Marker], Any]:
    marker = _Marker()
    return weakref.ref(marker), build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: SegmentationDataModule(root="unused", demo=False, num_workers=0),
        lambda: StyleGAN3(resolution=16, cbase=256, cmax=16, z_dim=8, w_dim=8, sample_every_n_steps=0),
        lambda: SegmentationTask(arch="unet", encoder="resnet18"),
        lambda: SPADEGAN(g_num_upsamplings=2, g_base_channels=8, g_max_channels=16, g_spade_hidden=16, z_dim=8),
    ],
    ids=["datamodule", "stylegan3", "segmentation", "spade"],
)
def test_building_keeps_no_caller_frame_alive(no_cyclic_gc: None, build: Callable[[], Any]) -> None:
    marker, built = _built_beside_a_marker(build)
    assert marker() is None  # the caller's frame, and its locals, were freed on return
    assert built.hparams  # and the arguments are saved as before


class _Sub(LightningModule):
    def __init__(self, width: int = 3, depth: int = 2) -> None:
        super().__init__()
        save_hyperparameters(self, ignore=["depth"])


class _SubOneName(LightningModule):
    def __init__(self, width: int = 3, depth: int = 2) -> None:
        super().__init__()
        save_hyperparameters(self, ignore="depth")  # one name, as Lightning takes it


def test_save_hyperparameters_records_the_callers_arguments() -> None:
    assert dict(_Sub(width=5).hparams) == {"width": 5}
    assert dict(_SubOneName(width=4).hparams) == {"width": 4}


def _read_all(root: Path) -> int:
    dm = SegmentationDataModule(root=str(root), batch_size=3, num_workers=2, demo=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    return sum(len(batch["key"]) for batch in loader)


def test_loader_workers_end_when_the_function_that_used_them_returns(tmp_path: Path, no_cyclic_gc: None) -> None:
    write_random_set(tmp_path / "train", 12, size=16)
    write_random_set(tmp_path / "val", 3, size=16, split="val")
    assert _read_all(tmp_path) == 12
    assert not multiprocessing.active_children()  # not left for a collection (5 s per worker) to stop
