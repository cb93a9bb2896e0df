import warnings

import pytest
import torch

import aras400k.data.datasets as datasets
from aras400k.data.datasets import EpochDataLoader, ShardDataset, ShardSource, partition_range
from tests.conftest import write_random_set


def _keys(dataset, num_workers=0, batch_size=3):
    loader = EpochDataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    return [k for batch in loader for k in batch["key"]]


def test_partition_range_covers_exactly():
    for total in (0, 1, 7, 100):
        for parts in (1, 2, 3, 8):
            ranges = [partition_range(total, p, parts) for p in range(parts)]
            covered = [i for a, b in ranges for i in range(a, b)]
            assert covered == list(range(total))


def test_every_sample_once_with_workers(tmp_path):
    a = write_random_set(tmp_path / "a", 10, prefix="a")
    b = write_random_set(tmp_path / "b", 7, prefix="b", per_shard=3)
    ds = ShardDataset([str(a), str(b)], shuffle=True, shuffle_buffer=4)
    assert len(ds) == 17
    for workers in (0, 2):
        keys = _keys(ds, workers)
        assert sorted(keys) == sorted([f"a{i:04d}" for i in range(10)] + [f"b{i:04d}" for i in range(7)])


def test_shuffle_changes_between_epochs_and_is_seeded(tmp_path):
    root = write_random_set(tmp_path / "a", 24)
    ds = ShardDataset([root], shuffle=True, seed=3)
    loader = EpochDataLoader(ds, batch_size=4)
    first = [k for b in loader for k in b["key"]]
    second = [k for b in loader for k in b["key"]]
    assert sorted(first) == sorted(second) and first != second
    again = EpochDataLoader(ShardDataset([root], shuffle=True, seed=3), batch_size=4)
    assert [k for b in again for k in b["key"]] == first


def test_persistent_workers_follow_the_epochs_of_fresh_workers(tmp_path):
    """Workers kept between epochs read the epoch set in the main process: same batches as fresh workers."""
    root = write_random_set(tmp_path / "a", 20, per_shard=6)

    def epochs(persistent):
        ds = ShardDataset([root], shuffle=True, seed=5, shuffle_buffer=4)
        loader = EpochDataLoader(ds, batch_size=3, num_workers=2, persistent_workers=persistent)
        return [[(b["key"], b["image"], b["mask"]) for b in loader] for _ in range(3)]

    fresh, kept = epochs(False), epochs(True)
    for a, b in zip(fresh, kept, strict=True):
        assert [keys for keys, _, _ in a] == [keys for keys, _, _ in b]
        assert all(torch.equal(x[1], y[1]) and torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))
    orders = [[k for keys, _, _ in epoch for k in keys] for epoch in kept]
    assert orders[0] != orders[1] != orders[2] and sorted(orders[0]) == sorted(orders[2])


def test_unshuffled_order_is_manifest_order(tmp_path):
    root = write_random_set(tmp_path / "a", 9)
    assert _keys(ShardDataset([root])) == [f"s{i:04d}" for i in range(9)]


def test_num_samples_takes_a_prefix(tmp_path):
    root = write_random_set(tmp_path / "a", 10, per_shard=4)
    ds = ShardDataset([ShardSource(str(root), num_samples=6)])
    assert _keys(ds) == [f"s{i:04d}" for i in range(6)]
    with pytest.raises(ValueError, match="fewer than num_samples=11"):
        ShardDataset([ShardSource(str(root), num_samples=11)])


def test_weighted_mixing_follows_weights(tmp_path):
    a = write_random_set(tmp_path / "a", 8, prefix="a")
    b = write_random_set(tmp_path / "b", 8, prefix="b")
    ds = ShardDataset([ShardSource(str(a), weight=3.0), ShardSource(str(b), weight=1.0)], samples_per_epoch=400)
    keys = _keys(ds, batch_size=20)
    assert len(keys) == 400
    share_a = sum(k.startswith("a") for k in keys) / len(keys)
    assert 0.65 < share_a < 0.85
    with pytest.raises(ValueError, match="every source or to none"):
        ShardDataset([ShardSource(str(a), weight=1.0), ShardSource(str(b))])


def test_item_layout(tmp_path):
    root = write_random_set(tmp_path / "a", 2, size=16)
    item = next(iter(ShardDataset([root])))
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (16, 16) and item["mask"].dtype == torch.uint8
    assert "mask" not in next(iter(ShardDataset([root], with_mask=False)))


def test_unlabelled_source_rejected_for_masks(tmp_path):
    root = write_random_set(tmp_path / "a", 2, masks=False)
    with pytest.raises(ValueError, match="without a mask"):
        ShardDataset([root])
    assert len(list(ShardDataset([root], with_mask=False))) == 2


def test_corrupt_sample_is_skipped_with_warning(tmp_path):
    from tests.data.test_verify import _rewrite_member

    root = write_random_set(tmp_path / "a", 6, per_shard=6)
    _rewrite_member(root / "train-000000.tar", "s0002.image.png", b"broken")
    ds = ShardDataset([root])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [item["key"] for item in ds]
    assert keys == ["s0000", "s0001", "s0003", "s0004", "s0005"]
    assert ds.skipped == 1
    assert any("s0002" in str(w.message) for w in caught)


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_and_workers_see_disjoint_samples_covering_all(tmp_path, monkeypatch, shuffle):
    import aras400k.data.datasets as datasets

    a = write_random_set(tmp_path / "a", 11, prefix="a", per_shard=3)
    b = write_random_set(tmp_path / "b", 6, prefix="b", per_shard=4)
    ds = ShardDataset([a, b], shuffle=shuffle)
    seen = []
    for slot in range(4):  # e.g. 2 ranks x 2 workers
        monkeypatch.setattr(datasets, "_worker_slot", lambda slot=slot: (slot, 4))
        seen.append([item["key"] for item in ds])
    flat = [k for part in seen for k in part]
    assert len(flat) == len(set(flat)) == 17
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


@pytest.mark.parametrize("num_workers, batch_size", [(0, 4), (2, 4), (3, 5), (2, 1)])
def test_loader_len_counts_each_workers_partial_batch(tmp_path, num_workers, batch_size):
    """Lightning stops an epoch after len(loader) batches, so len() must count every worker's last batch."""
    src = write_random_set(tmp_path / "a", 22, per_shard=5)
    dataset = ShardDataset([src], shuffle=True)
    loader = EpochDataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    batches = list(loader)
    assert len(loader) == len(batches)
    assert sum(len(b["key"]) for b in batches) == 22
    dropping = EpochDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, drop_last=True)
    assert len(dropping) == len(list(dropping))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_even_ranks_gives_every_rank_the_same_share(tmp_path, monkeypatch, world):
    """DDP training: equal samples and batches on every rank, at most world - 1 left out, disjoint."""
    src = write_random_set(tmp_path / "a", 25, per_shard=4)
    dataset = ShardDataset([src], shuffle=True, even_ranks=True)
    keys, lengths, batches = [], [], []
    for rank in range(world):
        monkeypatch.setattr(datasets, "_rank_and_world", lambda rank=rank: (rank, world))
        lengths.append(len(dataset))
        per_rank = []
        for worker in range(2):  # two loader workers per rank, simulated
            monkeypatch.setattr(datasets, "_worker_slot", lambda w=worker, r=rank: (r * 2 + w, world * 2))
            per_rank.append([item["key"] for item in dataset])
        batches.append(sum(-(-len(k) // 3) for k in per_rank))  # batch size 3, per worker
        keys.append([k for part in per_rank for k in part])
    assert len(set(lengths)) == 1 and lengths[0] == 25 // world
    assert len(set(batches)) == 1, batches
    flat = [k for part in keys for k in part]
    assert len(flat) == len(set(flat)) == 25 - 25 % world
    assert [len(k) for k in keys] == lengths
    plain = ShardDataset([src])
    monkeypatch.setattr(datasets, "_rank_and_world", lambda: (0, world))
    assert plain.epoch_samples() == 25  # evaluation keeps every sample


def test_shuffle_buffer_yields_while_it_fills():
    import random

    read = []

    def stream():
        for i in range(200):
            read.append(i)
            yield {"key": i}

    shuffled = ShardDataset._buffer_shuffle(stream(), random.Random(0), 64)
    first = next(shuffled)
    assert len(read) <= 4, f"the first sample waited for {len(read)} reads"
    rest = [first["key"]] + [item["key"] for item in shuffled]
    assert sorted(rest) == list(range(200)) and rest != list(range(200))
    late = rest[100:]
    assert max(abs(k - i - 100) for i, k in enumerate(late)) > 20  # a full buffer mixes widely
