import copy
import json
import math
import random

import numpy as np
import pytest
import torch

from aras400k.metrics.captions import (
    CaptionRedundancy,
    caption_hashes,
    hash_bytes,
    normalize_caption,
    normalize_captions,
)


def sync_as_ranks(metrics):
    """Run torchmetrics' own ``_sync_dist`` on each metric as if they were the ranks of one group.

    A first pass records, per rank, the tensors ``_sync_dist`` hands to the gather; the
    second answers each rank's k-th gather with every rank's k-th tensor, as
    ``all_gather`` does.
    """
    recorded = []
    for metric in metrics:
        calls = []

        def record(tensor, group=None, calls=calls):
            calls.append(tensor.clone())
            return [tensor]

        copy.deepcopy(metric)._sync_dist(record)
        recorded.append(calls)
    for metric in metrics:
        answers = iter(zip(*recorded, strict=True))
        metric._sync_dist(lambda tensor, group=None, answers=answers: list(next(answers)))


def table2_captions(unique=71_899, total=100_240, seed=0):
    """Captions with exactly ``unique`` distinct strings among ``total``, shuffled."""
    rng = random.Random(seed)
    distinct = [f"scene {i}: tree {i % 97}%, crop {i % 89}%" for i in range(unique)]
    captions = distinct + [rng.choice(distinct) for _ in range(total - unique)]
    rng.shuffle(captions)
    return captions


def test_table2_example_matches_python_set():
    captions = table2_captions()
    metric = CaptionRedundancy()
    start = 0
    for size in [1, 999, 70_000, 13_000, 16_240]:  # uneven batches; the 70k one triggers deduplication
        metric.update(captions[start : start + size])
        start += size
    assert start == len(captions)
    result = metric.compute()
    assert result["total"] == 100_240 and result["unique"] == len(set(captions)) == 71_899
    assert result["redundancy"].item() == pytest.approx(1 - 71_899 / 100_240)
    assert round(100 * result["redundancy"].item(), 2) == 28.27  # the paper's Table 2 figure
    # The state is deduplicated 64-bit hashes, never strings.
    state = torch.cat(metric.hashes)
    assert state.dtype == torch.int64 and state.numel() < 100_240


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A forest.", "a forest"),
        ("  A \t Forest  WITH\na lake!!  ", "a forest with a lake"),
        ("Tree 41.2%, crop 30.5%.", "tree 41.2%, crop 30.5%"),
        ("(forest)", "(forest)"),  # brackets, quotes and % stay
        ("Ärzte…", "ärzte"),
    ],
)
def test_basic_normalization_hand_worked(text, expected):
    assert normalize_caption(text, "basic") == expected
    assert normalize_caption(text, "none") == text


def test_normalize_modes_count_against_sets():
    captions = ["A forest.", "a  forest", "A Forest!", "a forest with a lake", "A forest with a lake .", "Forest"]
    for mode, unique in [("none", 6), ("basic", 3)]:
        metric = CaptionRedundancy(normalize=mode)
        metric.update(captions)
        result = metric.compute()
        assert result["unique"] == unique == len({normalize_caption(c, mode) for c in captions})
        assert result["redundancy"].item() == pytest.approx(1 - unique / 6)


_MASK64 = 2**64 - 1


def reference_hash(data: bytes) -> int:
    """The documented hash of ``hash_bytes``, one byte string at a time in plain Python."""
    h = ((len(data) + 0xC2B2AE3D27D4EB4F) * 0xFF51AFD7ED558CCD) & _MASK64
    for j in range(0, len(data), 8):
        h = ((h ^ int.from_bytes(data[j : j + 8], "little")) * 0x9E3779B97F4A7C15) & _MASK64
        h ^= h >> 32
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return h - (1 << 64) if h >> 63 else h


def test_hashes_equal_the_documented_hash_whatever_the_batch():
    rng = random.Random(3)
    # Every length 0..40 at every alignment in the joined buffer, NUL and multi-byte characters.
    captions = ["".join(rng.choice("ab .\u00e9\u4e2d\0") for _ in range(rng.randrange(41))) for _ in range(3_000)]
    expected = [reference_hash(c.encode("utf-8")) for c in captions]
    assert caption_hashes(captions).tolist() == expected
    without_nul = [c.replace("\0", "") for c in captions]  # the one-buffer path (a NUL sends a batch to the other)
    assert caption_hashes(without_nul).tolist() == [reference_hash(c.encode("utf-8")) for c in without_nul]
    basic = [reference_hash(normalize_caption(c, "basic").encode("utf-8")) for c in without_nul]
    assert caption_hashes(without_nul, "basic").tolist() == basic
    assert caption_hashes(without_nul[::-1][:7], "basic").tolist() == basic[::-1][:7]  # another batch, same hashes
    assert hash_bytes([b"a", b"", bytes(9)]).tolist() == [reference_hash(b) for b in (b"a", b"", bytes(9))]
    assert hash_bytes([b"a"]).tolist() == [-469978495276621279]  # pinned: states from other versions stay comparable
    assert caption_hashes([]).tolist() == []
    long = "x" * 600_000  # more than 2**16 words
    assert caption_hashes([long, "y"]).tolist() == [reference_hash(long.encode()), reference_hash(b"y")]


def test_hash_bits_look_uniform_on_near_identical_captions():
    # 2**16 captions differing in a few digits: any 24 of the 64 bits must collide about as often
    # as random values would (2**32 / 2**25 = 128 pairs expected, sd ~11); a hash whose low bits
    # depended on the low bits of its input only would collide far more often.
    captions = [f"Tree cover ({i % 1000 / 10:.1f}%), cropland ({i // 1000}%)." for i in range(1 << 16)]
    keys = caption_hashes(captions).numpy().view("u8")
    assert len(set(keys.tolist())) == len(captions)
    for shift in (0, 20, 40):
        bits = (keys >> shift) & ((1 << 24) - 1)
        assert 80 <= len(captions) - len(set(bits.tolist())) <= 180, shift


def _random_captions(n, seed, alphabet="ab. ", max_len=6):
    """Many short captions over a tiny alphabet: plenty of exact repeats, and near misses."""
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(max_len + 1))) for _ in range(n)]


def _count_in_batches(captions, sizes, normalize="none"):
    metric, start = CaptionRedundancy(normalize=normalize), 0
    for size in sizes:
        metric.update(captions[start : start + size])
        start += size
    metric.update(captions[start:])
    return metric


def test_counting_is_exact_in_the_key_domain_under_heavy_collisions(monkeypatch):
    # With the hash cut to 4 bits every key repeats thousands of times; sorting, merging
    # and deduplicating (incrementally, in sorted runs) must still count each key once.
    from aras400k.metrics import captions as module

    digest = module._hash_ranges
    monkeypatch.setattr(module, "_hash_ranges", lambda *ranges: digest(*ranges) & np.uint64(15))
    captions = _random_captions(200_000, seed=4, alphabet="abcdefgh", max_len=5)
    keys = set(module.caption_hashes(captions).tolist())
    metric = _count_in_batches(captions, [70_000, 1, 65_535, 10])  # merges a sorted state with runs
    assert metric.compute()["unique"] == len(keys) == 16


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize("normalize", ["none", "basic"])
def test_random_captions_equal_the_set_in_one_run_and_across_ranks(normalize):
    captions = _random_captions(150_000, seed=5, alphabet="aAbB .!\t\u00e9", max_len=8)
    reference = len({normalize_caption(c, normalize) for c in captions})
    single = _count_in_batches(captions, [999, 70_001, 3], normalize).compute()
    assert single["unique"] == reference and single["total"] == len(captions)
    ranks = [CaptionRedundancy(normalize=normalize) for _ in range(3)]
    ranks[0].update(captions[:80_000])  # deduplicated early on this rank
    ranks[0].update(captions[80_000:90_000])
    ranks[1].update(captions[90_000:])
    sync_as_ranks(ranks)
    assert all(rank.compute()["unique"] == reference for rank in ranks)
    merged = CaptionRedundancy(normalize=normalize)
    merged.update(captions[:50_000])
    other = CaptionRedundancy(normalize=normalize)
    other.update(captions[50_000:])
    merged.merge_state(other)
    assert merged.compute()["unique"] == reference


def test_batched_basic_normalization_equals_the_per_caption_one():
    alphabet = ["a", "B", " ", "  ", "\t", "\n", ".", "!", ",", "\u2026", "\u212a", "\u0130", "e\u0301", "\x1c", "\xa0"]
    rng = random.Random(6)
    captions = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(8))) for _ in range(5_000)]
    assert normalize_captions(captions) == [normalize_caption(c, "basic") for c in captions]
    with_nul = ["a\x00b. ", " A  c!"]  # a caption holding the join separator is normalised alone
    assert normalize_captions(with_nul) == ["a\x00b", "a c"] and normalize_captions([]) == []


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_ranks_gather_equals_single_process():
    captions = table2_captions(unique=3_000, total=5_000, seed=1)
    ranks = [CaptionRedundancy(), CaptionRedundancy(), CaptionRedundancy()]
    ranks[0].update(captions[:2_000])
    ranks[0].update(captions[2_000:2_500])
    ranks[1].update(captions[2_500:])
    # ranks[2] saw nothing: it must still gather an int64 tensor, or the hashes become float32.
    sync_as_ranks(ranks)
    for metric in ranks:
        assert metric.hashes.dtype == torch.int64
        result = metric.compute()
        assert result["unique"] == len(set(captions)) == 3_000 and result["total"] == 5_000


def test_merge_state_and_forward():
    a, b = CaptionRedundancy(), CaptionRedundancy()
    a.update(["x", "y", "x"])
    batch = b(["y", "z", "z", "z"])  # forward: this batch only
    assert batch["unique"] == 2 and batch["total"] == 4
    assert a.compute()["unique"] == 2  # cached by torchmetrics; merge_state must drop it
    a.merge_state(b)
    result = a.compute()
    assert result["unique"] == 3 and result["total"] == 7
    a.reset()
    a.update(["q"])
    assert a.compute()["redundancy"].item() == 0.0


def test_errors_and_empty():
    metric = CaptionRedundancy()
    with pytest.raises(TypeError, match="not one string"):
        metric.update("a caption")
    with pytest.raises(TypeError, match="must be strings, got int"):
        metric.update(["ok", 3])
    with pytest.raises(ValueError, match="'none' or 'basic'"):
        CaptionRedundancy(normalize="lower")
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(CaptionRedundancy().compute()["redundancy"].item())


def _gloo_worker(rank, world, store, out):
    import torch.distributed as dist

    from aras400k.metrics.captions import CaptionRedundancy
    from aras400k.metrics.consistency import CompositionConsistency

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    redundancy, consistency = CaptionRedundancy(), CompositionConsistency()
    if rank == 0:  # rank 1 sees nothing
        redundancy.update(["a", "b", "a", "c"])
        consistency.update(["tree 40%", "a lake"], [{"tree": 0.5, "water": 0.5}, {"water": 1.0}], ["m/x", "m/y"])
    red, con = redundancy.compute(), consistency.compute()
    if rank == 1:
        out.write_text(json.dumps({"unique": int(red["unique"]), "groups": con["groups"]}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_real_gloo_process_group_with_an_empty_rank(tmp_path):
    torch.multiprocessing.spawn(_gloo_worker, args=(2, tmp_path / "store", tmp_path / "out.json"), nprocs=2)
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["unique"] == 3
    assert result["groups"]["m/x"]["percent_mae"] == pytest.approx(10.0)
    assert result["groups"]["m/y"]["recall"] == 1.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize("normalize", ["none", "basic"])
def test_small_updates_are_held_back_and_every_reader_sees_them(normalize):
    captions = _random_captions(30_000, seed=8, alphabet="aAb .!\u00e9", max_len=7)
    reference = len({normalize_caption(c, normalize) for c in captions})
    metric, start, rng = CaptionRedundancy(normalize=normalize), 0, random.Random(9)
    while start < len(captions):  # batches of 0..60 captions: all held back until HOLD wait
        size = rng.randrange(61)
        metric.update(captions[start : start + size])
        start += size
        if start > 20_000 and metric._held:
            break
    assert len(metric._held) > 0  # some captions are still held back...
    copied = copy.deepcopy(metric)
    assert int(metric.total) == start and not metric._held  # ...until the state is read
    assert torch.cat(_chunks(metric.hashes)).numel() <= start
    metric.update(captions[start:])
    assert metric.compute()["unique"] == reference
    # A copy holding captions back, merged into another metric, brings them along.
    copied.update(captions[start:])
    other = CaptionRedundancy(normalize=normalize)
    other.merge_state(copied)
    assert other.compute()["unique"] == reference and other.compute()["total"] == len(captions)
    # A gather (here of one rank) and forward see the held-back captions too.
    ranks = [CaptionRedundancy(normalize=normalize), CaptionRedundancy(normalize=normalize)]
    ranks[0].update(captions[:100])
    ranks[1].update(captions[100:250])
    sync_as_ranks(ranks)
    assert ranks[1].compute()["unique"] == len({normalize_caption(c, normalize) for c in captions[:250]})
    running = CaptionRedundancy(normalize=normalize)
    running.update(captions[:10])
    assert running(captions[10:20])["total"] == 10
    assert running.compute()["total"] == 20
    running.reset()  # drops held-back captions with the rest
    running.update(captions[:3])
    assert running.compute()["total"] == 3


def test_a_caption_holding_the_separator_is_counted_alone():
    metric = CaptionRedundancy()
    metric.update(["a\x00b", "a", "b"])  # the NUL batch is hashed at once, one caption at a time
    metric.update(["a\x00b", "a\x00", "\x00"])
    result = metric.compute()
    assert result["unique"] == 5 and result["total"] == 6


def _chunks(state):
    return list(state) if isinstance(state, list) else [state]
