"""Host memory reused by the loader: ReusedBuffers in the device step, keep_freed_memory in the workers."""

import copy
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader

import aras400k.data.datasets as datasets
from aras400k.data import SegmentationDataModule, ShardDataset
from aras400k.data.memory import ReusedBuffers, keep_freed_memory
from tests.conftest import write_random_set

GLIBC = "CS_GNU_LIBC_VERSION" in getattr(os, "confstr_names", {}) and bool(os.confstr("CS_GNU_LIBC_VERSION"))


def test_memory_is_handed_out_again_only_when_no_tensor_holds_it():
    buffers = ReusedBuffers()
    first = buffers.empty((4, 3, 8, 8), torch.float32)
    assert first.shape == (4, 3, 8, 8) and first.dtype == torch.float32 and first.is_contiguous()
    address = first.data_ptr()
    view = first[1:3]
    del first
    second = buffers.empty((4, 3, 8, 8), torch.float32)
    assert second.data_ptr() != address  # a view of the first is still alive
    del view
    third = buffers.empty((4, 3, 8, 8), torch.float32)
    assert third.data_ptr() == address
    second.fill_(1.0)
    third.fill_(2.0)
    assert second.eq(1.0).all() and third.eq(2.0).all()  # two tensors alive, two memories


def test_each_shape_and_dtype_has_its_own_memory_and_the_kept_memory_is_bounded():
    buffers = ReusedBuffers(per_shape=2, shapes=2)
    as_long = buffers.empty((2, 8), torch.int64)
    address = as_long.data_ptr()
    del as_long
    as_float = buffers.empty((2, 8), torch.float32)  # another key: not the int64 memory, free as it is
    assert as_float.dtype == torch.float32 and as_float.data_ptr() != address
    assert buffers.empty((2, 8), torch.int64).data_ptr() == address
    buffers = ReusedBuffers(per_shape=2, shapes=2)
    held = [buffers.empty((3, 5), torch.uint8) for _ in range(4)]  # two kept, two plain torch.empty
    assert len({t.data_ptr() for t in held}) == 4
    assert {key: len(kept) for key, kept in buffers._kept.items()} == {((3, 5), torch.uint8): 2}
    buffers.empty((7,), torch.int16)
    buffers.empty((9,), torch.int16)  # a third shape: the least recently asked for is forgotten
    assert list(buffers._kept) == [((7,), torch.int16), ((9,), torch.int16)]
    assert all(t.shape == (3, 5) and t.dtype == torch.uint8 for t in held)


def test_an_empty_shape_gives_an_empty_tensor():
    buffers = ReusedBuffers()
    for dtype in (torch.float32, torch.int64, torch.uint8):
        tensor = buffers.empty((0, 3, 8, 8), dtype)
        assert tensor.shape == (0, 3, 8, 8) and tensor.dtype == dtype


def test_a_held_batch_keeps_its_values_while_later_batches_are_made(demo_root):
    dm = SegmentationDataModule(root=str(demo_root), batch_size=4, num_workers=0, augment=False)
    dm.setup("validate")
    raws = [dict(b) for b in dm.val_dataloader()]
    mean, std = dm.normalize.mean, dm.normalize.std
    held = dm.on_after_batch_transfer(dict(raws[0]), 0)
    kept_image, kept_mask = held["image"].clone(), held["mask"].clone()
    address = held["image"].data_ptr()
    for raw in raws[1:]:
        batch = dm.on_after_batch_transfer(dict(raw), 0)
        assert torch.equal(batch["image"], (raw["image"].float() / 255.0 - mean) / std)
        assert torch.equal(batch["mask"], raw["mask"].long())
        assert batch["image"].data_ptr() != address
    assert torch.equal(held["image"], kept_image) and torch.equal(held["mask"], kept_mask)
    del held, batch
    again = dm.on_after_batch_transfer(dict(raws[0]), 0)
    assert again["image"].data_ptr() == address  # dropped: its memory serves the next batch
    assert torch.equal(again["image"], kept_image)


def test_a_datamodule_with_kept_memory_copies_and_pickles(demo_root):
    # ddp_spawn pickles the DataModule; a copied weak reference would be freed twice (or read in another process).
    dm = SegmentationDataModule(root=str(demo_root), batch_size=4, num_workers=0, augment=False)
    dm.setup("validate")
    raw = next(iter(dm.val_dataloader()))
    dm.on_after_batch_transfer(dict(raw), 0)
    assert dm._host_memory._kept
    for copied in (copy.deepcopy(dm), pickle.loads(pickle.dumps(dm))):
        assert not copied._host_memory._kept
        batch = copied.on_after_batch_transfer(dict(raw), 0)
        assert torch.equal(batch["image"], dm.on_after_batch_transfer(dict(raw), 0)["image"])
    assert dm._host_memory._kept


def _record_pid(folder):
    def record() -> bool:
        (folder / str(os.getpid())).touch()
        return True

    return record


def test_every_loader_worker_keeps_freed_memory_once(tmp_path, monkeypatch):
    root = write_random_set(tmp_path / "set", 12, per_shard=3)
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setattr(datasets, "keep_freed_memory", _record_pid(calls))
    monkeypatch.setattr(datasets, "_TUNED_PID", 0)
    dataset = ShardDataset([root], with_mask=True)
    list(DataLoader(dataset, batch_size=4, num_workers=0))
    assert not any(calls.iterdir())  # the main process's allocator is the user's
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    for _ in range(3):
        assert sum(len(b["key"]) for b in loader) == 12
    pids = {int(p.name) for p in calls.iterdir()}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_stops_the_page_faults_of_a_workers_allocations():
    # In a fresh process, as a worker's epochs do: a shuffle buffer of 512 images of 256 px (96 MiB) filled,
    # then freed; counting minor page faults per round.
    script = textwrap.dedent(
        """
        import resource, sys
        import numpy as np
        from aras400k.data.memory import keep_freed_memory

        def faults_per_round(rounds=4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(rounds):
                buffer = [np.ones(3 * 256 * 256, np.uint8) for _ in range(512)]
                del buffer
            return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

        faults_per_round(2)
        plain = faults_per_round()
        assert keep_freed_memory()
        faults_per_round(2)
        print(plain, faults_per_round())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    plain, kept = map(float, out.split())
    assert plain > 10_000  # every round faults the buffer's pages in afresh (24,576 pages)
    assert kept < 100


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(os, "confstr", lambda name: None)
    assert keep_freed_memory() is False
