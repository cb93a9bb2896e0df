"""Remote shard specs: brace lists, pipe: commands and shard sets served over HTTP."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import aras400k.data.datasets as datasets
from aras400k.data import ManifestError, SegmentationDataModule, ShardDataset, ShardSource
from aras400k.data.remote import PipeError, is_url, location_name, parse_spec
from aras400k.data.shards import iter_raw_samples, iter_samples, list_shards, read_manifest, shard_paths
from tests.conftest import serve_directory, write_random_set

NUM_TRAIN = 10  # 3 shards of 4, 4 and 2 samples
SHARDS = "train-{000000..000002}.tar"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny root with train (10 samples, 3 shards) and val (4 samples) shard sets."""
    base = tmp_path_factory.mktemp("remote") / "aras"
    write_random_set(base / "train", NUM_TRAIN, per_shard=4, prefix="t")
    write_random_set(base / "val", 4, split="val", per_shard=4, prefix="v")
    return base


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1; yields the base URL (no trailing slash)."""
    with serve_directory(root) as url:
        yield url


def _raw(spec_shards: list[str]) -> list[dict]:
    """Raw samples of some shard locations, without the location-dependent ``__shard__``."""
    out = []
    for location in spec_shards:
        for raw in iter_raw_samples(location):
            raw.pop("__shard__")
            out.append(raw)
    return out


def _local_raw(root: Path) -> list[dict]:
    return _raw([str(p) for p in shard_paths(root / "train")])


def _keys_per_slot(ds: ShardDataset, monkeypatch: pytest.MonkeyPatch, slots: int = 4) -> list[list[str]]:
    seen = []
    for slot in range(slots):  # e.g. 2 ranks x 2 workers
        monkeypatch.setattr(datasets, "_worker_slot", lambda slot=slot: (slot, slots))
        seen.append([item["key"] for item in ds])
    return seen


# -- parsing -------------------------------------------------------------------------------


def test_parse_spec_tells_folders_from_shard_lists(root: Path) -> None:
    assert parse_spec(root / "train").folder == str(root / "train")
    assert parse_spec(str(root / "train" / "manifest.json")).folder == str(root / "train")
    assert parse_spec("http://h:80/aras/train/").folder == "http://h:80/aras/train"
    assert parse_spec("http://h/aras/train/manifest.json").folder == "http://h/aras/train"
    assert parse_spec("s3://bucket/train").folder == "s3://bucket/train"
    assert parse_spec("d/train-{000000..000002}.tar").shards == tuple(f"d/train-00000{i}.tar" for i in range(3))
    assert parse_spec("https://h/x.tar?sig=1").shards == ("https://h/x.tar?sig=1",)
    piped = parse_spec("pipe:awk '{print}' x-{0..1}.tar")
    assert piped.folder is None and piped.shards == ("pipe:awk '{print}' x-0.tar", "pipe:awk '{print}' x-1.tar")
    with pytest.raises(ValueError, match="empty command"):
        parse_spec("pipe: ")
    with pytest.raises(ValueError, match="expands to folders"):
        parse_spec(f"{root}/{{train,val}}")
    with pytest.raises(ValueError, match="expands to folders"):
        parse_spec("http://h/{train,val}/")
    assert is_url("pipe:cat x") and is_url("s3://b/k") and not is_url("data/train") and not is_url(Path("a"))
    assert location_name("http://h/a/train-000001.tar?x=1") == "train-000001.tar"


def test_local_folders_read_as_before(root: Path) -> None:
    listing = list_shards(root / "train")
    assert listing.locations == tuple(str(p) for p in shard_paths(root / "train"))
    assert listing.names == ("train-000000.tar", "train-000001.tar", "train-000002.tar")
    assert listing.manifest == read_manifest(root / "train")
    with pytest.raises(ManifestError, match="not a folder"):
        read_manifest(root / "missing")
    with pytest.raises(ValueError, match="use list_shards"):
        shard_paths("http://h/train/")


# -- brace lists and pipe: ------------------------------------------------------------------


def test_pipe_spec_reads_the_same_bytes_as_the_local_set(root: Path) -> None:
    spec = f"pipe:cat {root}/train/{SHARDS}"
    listing = list_shards(spec)
    assert listing.manifest is None and len(listing.locations) == 3
    assert _raw(list(listing.locations)) == _local_raw(root)
    local = list(iter_samples(root / "train"))
    piped = list(iter_samples(spec))
    assert [s.key for s in piped] == [s.key for s in local] == [f"t{i:04d}" for i in range(NUM_TRAIN)]
    assert all((a.image == b.image).all() and (a.mask == b.mask).all() for a, b in zip(local, piped, strict=True))


def test_local_brace_list_and_early_stop(root: Path) -> None:
    assert [s.key for s in iter_samples(f"{root}/train/{SHARDS}")] == [f"t{i:04d}" for i in range(NUM_TRAIN)]
    stream = iter_raw_samples(f"pipe:cat {root}/train/train-000000.tar")
    assert next(stream)["__key__"] == "t0000"
    stream.close()  # stops the command; no error for a reader that stopped on purpose
    with pytest.raises(ManifestError, match="lists 3 shard"):
        read_manifest(f"{root}/train/{SHARDS}")


# -- HTTP -------------------------------------------------------------------------------------


def test_http_folder_reads_through_its_manifest(root: Path, server: str) -> None:
    listing = list_shards(f"{server}/train/")
    assert listing.manifest == read_manifest(root / "train") == read_manifest(f"{server}/train")
    assert listing.locations[0] == f"{server}/train/train-000000.tar"
    assert _raw(list(listing.locations)) == _local_raw(root)
    assert [s.key for s in iter_samples(f"{server}/train/", shards=["train-000001.tar"])] == [
        f"t{i:04d}" for i in range(4, 8)
    ]
    braces = list_shards(f"{server}/train/{SHARDS}")
    assert braces.manifest is None and _raw(list(braces.locations)) == _local_raw(root)


@pytest.mark.parametrize("shuffle", [False, True])
def test_http_source_is_split_exactly_over_ranks_and_workers(
    server: str, monkeypatch: pytest.MonkeyPatch, shuffle: bool
) -> None:
    ds = ShardDataset([f"{server}/train/"], shuffle=shuffle)
    assert len(ds) == NUM_TRAIN
    seen = _keys_per_slot(ds, monkeypatch)
    flat = [k for part in seen for k in part]
    assert sorted(flat) == [f"t{i:04d}" for i in range(NUM_TRAIN)]  # every sample exactly once
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def test_shard_list_is_split_by_whole_shards(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = ShardDataset([f"pipe:cat {root}/train/{SHARDS}"])
    assert ds.total is None
    with pytest.raises(TypeError, match="no length"):
        len(ds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = _keys_per_slot(ds, monkeypatch)  # 3 shards, 4 workers
    assert seen == [[f"t{i:04d}" for i in range(0, 4)], [f"t{i:04d}" for i in range(4, 8)], ["t0008", "t0009"], []]
    assert any("3 shards for 4 loader workers" in str(w.message) for w in caught)


def test_shard_list_with_samples_per_epoch_gives_equal_shares(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = ShardDataset([f"{root}/train/{SHARDS}"], samples_per_epoch=8)
    assert len(ds) == 8
    seen = _keys_per_slot(ds, monkeypatch, slots=2)
    assert seen == [["t0000", "t0001", "t0002", "t0003"], ["t0004", "t0005", "t0006", "t0007"]]
    with pytest.raises(ValueError, match="num_samples=5 cannot be cut"):
        ShardDataset([ShardSource(f"{root}/train/{SHARDS}", num_samples=5)])
    with pytest.raises(ValueError, match="give samples_per_epoch"):
        ShardDataset([ShardSource(f"{root}/train/{SHARDS}", weight=1.0), ShardSource(str(root / "val"), weight=1.0)])
    monkeypatch.setattr(datasets, "_worker_slot", lambda: (0, 1))
    mixed = ShardDataset(
        [ShardSource(f"{root}/train/{SHARDS}", weight=1.0), ShardSource(str(root / "val"), weight=1.0)],
        samples_per_epoch=20,
    )
    assert len([item["key"] for item in mixed]) == 20


def test_unreadable_remote_shard_is_skipped_with_a_warning(server: str) -> None:
    ds = ShardDataset([f"{server}/train/train-{{000001,000009}}.tar"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [item["key"] for item in ds]
    assert keys == [f"t{i:04d}" for i in range(4, 8)] and ds.skipped == 1
    assert any("train-000009.tar" in str(w.message) and "404" in str(w.message) for w in caught)


# -- DataModule -------------------------------------------------------------------------------


def test_datamodule_reads_a_url_root(server: str) -> None:
    dm = SegmentationDataModule(root=f"{server}/", batch_size=4, num_workers=0)
    dm.prepare_data()  # never builds a demo set for a URL root
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].dtype == torch.long
    assert [k for b in dm.val_dataloader() for k in b["key"]] == [f"v{i:04d}" for i in range(4)]


def test_datamodule_takes_one_url_train_spec_with_workers(root: Path, server: str) -> None:
    dm = SegmentationDataModule(
        root=str(root), train=f"{server}/train/{SHARDS}", batch_size=3, num_workers=2, demo=False
    )
    assert dm.hparams["train"] == [{"path": f"{server}/train/{SHARDS}", "num_samples": None, "weight": None}]
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 2  # no len() to cap the workers by
    keys = [k for b in loader for k in b["key"]]
    assert sorted(keys) == [f"t{i:04d}" for i in range(NUM_TRAIN)]


# -- errors -----------------------------------------------------------------------------------


def test_failing_pipe_command_names_the_command_and_its_stderr(root: Path) -> None:
    with pytest.raises(PipeError, match=r"'pipe:cat .*nope\.tar' failed with exit status 1: cat: .*nope\.tar"):
        list(iter_raw_samples(f"pipe:cat {root}/nope.tar"))
    with pytest.raises(PipeError, match="exit status 3 .it wrote nothing to stderr"):
        list(iter_raw_samples(f"pipe:cat {root}/train/train-000000.tar; exit 3"))


def test_missing_url_is_a_clear_error(server: str) -> None:
    with pytest.raises(FileNotFoundError, match=r"train/nope\.tar does not exist \(HTTP 404"):
        list(iter_raw_samples(f"{server}/train/nope.tar"))
    with pytest.raises(ManifestError, match=r"/nothing is not a shard set: it has no manifest\.json"):
        ShardDataset([f"{server}/nothing/"])


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_missing_fsspec_backend_names_the_package() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(ImportError, match=r"needs s3fs, which is not installed \(pip install fsspec s3fs"):
        list(iter_raw_samples("s3://bucket/train/train-000000.tar"))


def test_missing_fsspec_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if fsspec were not installed
    with pytest.raises(ImportError, match=r"needs fsspec and gcsfs.*pip install fsspec gcsfs"):
        read_manifest("gs://bucket/train/")
