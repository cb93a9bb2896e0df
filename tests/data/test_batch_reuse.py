"""ReusingCollate: batches packed into reused shared memory equal collate_samples' bit for bit."""

import pytest
import torch

import aras400k.data.datasets as datasets
from aras400k.data.datasets import EpochDataLoader, ReusingCollate, ShardDataset, collate_samples
from tests.conftest import write_random_set


def _epochs(root, reuse, epochs=3, keep=False, **dataset_args):
    ds = ShardDataset([root], shuffle=True, seed=7, shuffle_buffer=4, **dataset_args)
    loader = EpochDataLoader(ds, batch_size=3, num_workers=2, persistent_workers=True, reuse_batch_memory=reuse)
    out = []
    for _ in range(epochs):
        for batch in loader:
            # keep=False: only copies survive the step, so slots are freed and refilled.
            out.append(batch if keep else {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
    return loader, out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert list(x) == list(y)
        for key in x:
            if torch.is_tensor(x[key]):
                assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape
                assert torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


@pytest.mark.parametrize("with_mask", [True, False])
def test_reused_batches_equal_collate_samples(tmp_path, with_mask):
    root = write_random_set(tmp_path / "a", 40, per_shard=7)
    loader, reused = _epochs(root, True, with_mask=with_mask)
    assert isinstance(loader.collate_fn, ReusingCollate)
    _, plain = _epochs(root, False, with_mask=with_mask)
    _assert_same(reused, plain)
    assert ("mask" in reused[0]) is with_mask and reused[0]["source"].dtype == torch.int64


def test_kept_batches_are_never_overwritten(tmp_path):
    """Batches the main process still holds keep their slots: later batches get other memory."""
    root = write_random_set(tmp_path / "a", 40, per_shard=7)
    _, kept = _epochs(root, True, keep=True)  # 42 batches held at once, far more than the slots
    _, plain = _epochs(root, False)
    _assert_same(kept, plain)


def test_slots_are_reused_and_freed(tmp_path):
    root = write_random_set(tmp_path / "a", 40, per_shard=7)
    loader, _ = _epochs(root, True, epochs=2)
    table = loader.collate_fn.table
    datasets._release_expired()
    assert int((table != 0).sum()) == 0  # every batch dropped: every slot free again
    ds = ShardDataset([root], shuffle=False)
    loader = EpochDataLoader(ds, batch_size=4, num_workers=1, reuse_batch_memory=True)
    pointers = {b["image"].untyped_storage().data_ptr() for b in loader}
    assert len(pointers) < 10  # 10 batches share at most a few slots' mappings


def test_meta_and_main_process_batches_fall_back(tmp_path):
    root = write_random_set(tmp_path / "a", 6)
    collate = ReusingCollate(1)
    items = list(ShardDataset([root], with_meta=True))[:3]
    _assert_same([collate(items)], [collate_samples(items)])  # outside a worker: collate_samples
    loader = EpochDataLoader(ShardDataset([root], with_meta=True), batch_size=3, num_workers=1, reuse_batch_memory=True)
    batches = list(loader)
    assert [len(b["meta"]) for b in batches] == [3, 3]
    assert EpochDataLoader(ShardDataset([root]), batch_size=3, reuse_batch_memory=True).collate_fn is collate_samples


def test_a_loader_made_under_inference_mode_works_outside_it(tmp_path):
    """Lightning builds and first iterates validation loaders under inference mode, then trains outside it."""
    root = write_random_set(tmp_path / "a", 24, per_shard=6)
    with torch.inference_mode():
        ds = ShardDataset([root], shuffle=False)
        loader = EpochDataLoader(ds, batch_size=4, num_workers=1, reuse_batch_memory=True)
        first = [b["image"].clone() for b in loader]
    ds.set_epoch(1)
    again = [b["image"].clone() for b in loader]  # frees the slots lent under inference mode
    datasets._release_expired()
    assert int((loader.collate_fn.table != 0).sum()) == 0
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("persistent", [True, False])
def test_slot_segments_reach_the_main_process_once(tmp_path, persistent):
    """Each slot's memory is passed once (fresh workers every epoch pass theirs again); batches stay identical."""
    root = write_random_set(tmp_path / "a", 40, per_shard=7)
    sent = []
    real = ReusingCollate._segment

    def counting(self, packed):
        sent.append(packed.store is not None)
        return real(self, packed)

    ds = ShardDataset([root], shuffle=True, seed=7, shuffle_buffer=4)
    loader = EpochDataLoader(ds, batch_size=3, num_workers=2, persistent_workers=persistent, reuse_batch_memory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReusingCollate, "_segment", counting)
        reused = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for _ in range(3) for b in loader]
    _, plain = _epochs(root, False)
    _assert_same(reused, plain)
    assert len(sent) == len(reused) == 42
    # Batches are dropped at once, so each worker cycles through a few slots: a few segments per worker
    # (per epoch with fresh workers), not one per batch.
    assert sum(sent) <= 2 * datasets.BATCH_SLOTS * (1 if persistent else 3)
    assert len(loader.collate_fn._received) <= 2 * datasets.BATCH_SLOTS


def test_a_slot_batch_without_its_segment_is_a_clear_error():
    collate = ReusingCollate(1)
    layout = [("image", torch.uint8, 0, (1, 2), 2)]
    packed = datasets._PackedBatch(None, layout, ["k"], ["image", "key"], collate.token, 0, 0, 1, 123)
    with pytest.raises(RuntimeError, match="never received"):
        datasets._unpack(*packed)
    orphan = datasets._PackedBatch(None, layout, ["k"], ["image", "key"], -5, 0, 0, 1, 123)
    with pytest.raises(RuntimeError, match="outside the loader's process"):
        datasets._unpack(*orphan)


def test_a_spawned_worker_gets_the_collation_without_segments(tmp_path):
    """Pickled for a spawned worker, the collation carries its table, not the segments any process holds."""
    import pickle

    collate = ReusingCollate(2)
    collate._received[(0, 0)] = (1, torch.zeros(8, dtype=torch.uint8))
    copy = pickle.loads(pickle.dumps(collate))
    assert copy._received == {} and copy._slots == [None] * datasets.BATCH_SLOTS
    assert copy.token == collate.token and copy.table.shape == (2, datasets.BATCH_SLOTS)
    root = write_random_set(tmp_path / "a", 12, per_shard=4)
    ds = ShardDataset([root], shuffle=False)
    spawned = EpochDataLoader(ds, batch_size=4, num_workers=1, reuse_batch_memory=True, multiprocessing_context="spawn")
    _assert_same([dict(b) for b in spawned], list(EpochDataLoader(ds, batch_size=4)))
