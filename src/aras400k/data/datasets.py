"""Streaming datasets over shard sets, split exactly across nodes and loader workers.

:class:`ShardDataset` reads one or more shard sets (*sources*) as a torch
``IterableDataset``. Two ways of combining sources:

* **Every sample once** (no source has a ``weight``): the samples of all sources, in
  a per-epoch shuffled shard order, are cut by the manifests' per-shard counts into
  ``world_size * num_workers`` disjoint contiguous ranges, one per worker.
* **Weighted mixing** (every source has a ``weight``): each worker draws the next
  sample's source with probability proportional to the weights; a source that runs
  out starts over (reshuffled). An epoch has ``samples_per_epoch`` samples.

A *shard list* without a manifest is dealt to the workers by whole shards
(``docs/scaling.md``). Corrupt samples, and samples of another size than the set's, are
skipped with a warning and counted instead of ending a long run.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import tarfile
import warnings
import weakref
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info
from torch.utils.data.dataloader import _BaseDataLoaderIter

from aras400k.data.memory import keep_freed_memory
from aras400k.data.remote import location_name
from aras400k.data.shards import (
    SampleError,
    Size,
    decode_sample,
    iter_raw_samples,
    list_shards,
    manifest_image_size,
)
from aras400k.data.sources import ShardSource, partition_range

# ShardSource and partition_range are defined in aras400k.data.sources (no torch) and re-exported here.
__all__ = ["EpochDataLoader", "ReusingCollate", "ShardDataset", "collate_samples"]

#: Tar members every item is made from (plus ``mask.png`` with masks).
_ITEM_MEMBERS = frozenset({"image.png", "meta.json"})


@dataclass(frozen=True)
class _Segment:
    """A run of samples inside one shard: skip ``start`` samples, then take ``count`` (``None``: to its end)."""

    source: int
    shard: str
    start: int
    count: int | None


def _size(segments: list[_Segment]) -> int | None:
    """Samples in a source's segments; ``None`` if any count is unknown (no manifest)."""
    counts = [seg.count for seg in segments]
    return None if None in counts else sum(count or 0 for count in counts)


def _slice(segments: list[_Segment], lo: int, hi: int) -> list[_Segment]:
    """The runs holding samples ``lo .. hi`` (half-open) of counted ``segments`` laid end to end."""
    runs, offset = [], 0
    for seg in segments:
        assert seg.count is not None
        start, stop = max(lo, offset), min(hi, offset + seg.count)
        if start < stop:
            runs.append(_Segment(seg.source, seg.shard, seg.start + start - offset, stop - start))
        offset += seg.count
    return runs


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker_slot() -> tuple[int, int]:
    """Index and count of this loader worker across all ranks."""
    rank, world = _rank_and_world()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers


_TUNED_PID = 0  # the process _tune_loader_worker last ran in


def _tune_loader_worker() -> None:
    """Once in each loader worker process: keep freed memory for the next samples (:func:`keep_freed_memory`)."""
    global _TUNED_PID
    if get_worker_info() is not None and _TUNED_PID != os.getpid():
        _TUNED_PID = os.getpid()
        keep_freed_memory()


class ShardDataset(IterableDataset):
    """Stream decoded samples from one or more shard sets.

    Each item is a dict with ``image`` (``(3, H, W)`` uint8 tensor), ``key`` (str),
    ``source`` (index into ``sources``), when ``with_mask`` is set ``mask``
    (``(H, W)`` uint8 tensor, 255 = ignore), and when ``with_meta`` is set ``meta``
    (the sample's ``meta.json`` as a dict; batch such items with :func:`collate_samples`).

    Args:
        sources: Shard sets (paths or :class:`ShardSource`).
        with_mask: Decode masks and require every selected sample to have one.
        with_meta: Add each sample's ``meta.json`` (e.g. its georeference, for prediction files).
        shuffle: Shuffle shard order per epoch and samples through a buffer.
        shuffle_buffer: Samples each worker holds for shuffling (it yields while it fills).
        seed: Base seed; epoch ``e`` uses ``seed + e``.
        samples_per_epoch: Epoch length over all ranks and workers (default: the sum
            of the sources' sizes; required with weights when a source has no manifest).
        even_ranks: Cut the epoch to a multiple of the number of processes, so every rank
            takes as many steps, as DDP *training* needs (``docs/scaling.md``); off for evaluation.

    Raises:
        ValueError: On weights given to some sources only or not positive, a bad
            ``num_samples``, weighted shard lists without ``samples_per_epoch``, or
            sources of different image sizes.
        aras400k.data.ManifestError: If a source is not a shard set.
        OSError: If a URL source cannot be reached.
        ImportError: If a URL source needs fsspec or a backend that is not installed.
    """

    def __init__(
        self,
        sources: Sequence[ShardSource | str | Path | dict],
        with_mask: bool = True,
        shuffle: bool = False,
        shuffle_buffer: int = 256,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        even_ranks: bool = False,
        with_meta: bool = False,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("ShardDataset needs at least one source")
        self.sources = [ShardSource.coerce(s) for s in sources]
        self.with_mask = with_mask
        self.with_meta = with_meta
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.seed = seed
        self.even_ranks = even_ranks
        # The epoch lives in shared memory: loader workers forked from this process (kept
        # alive between epochs with persistent_workers) read what set_epoch wrote here.
        with torch.inference_mode(False):  # written by set_epoch whatever mode the dataset was made in
            self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.passes = 0  # epochs started through an EpochDataLoader (counted in the main process)
        weights = [s.weight for s in self.sources]
        if any(w is not None for w in weights) and any(w is None for w in weights):
            raise ValueError("give a weight to every source or to none")
        if any(w is not None and w <= 0 for w in weights):
            raise ValueError(f"source weights must be positive, got {weights}")
        self.weighted = weights[0] is not None
        self._recorded_sizes: list[Size | None] = []
        self._segments = [self._source_segments(i, s) for i, s in enumerate(self.sources)]
        #: ``(height, width)`` of every sample: the manifests' ``image_size``, else the first
        #: sample read. Samples of another size are skipped: a batch holds one size.
        self.image_size = self._common_size()
        #: Samples per source, ``None`` for a source without a manifest.
        self.sizes: list[int | None] = [_size(segs) for segs in self._segments]
        #: Samples over all sources, ``None`` when a source has no manifest (split by shards).
        self.total: int | None = None if None in self.sizes else sum(size or 0 for size in self.sizes)
        #: Samples per epoch over all ranks and workers; ``None`` when unknown (no ``len()``).
        self.samples_per_epoch = samples_per_epoch if samples_per_epoch is not None else self.total
        if self.weighted and self.samples_per_epoch is None:
            unknown = [s.path for s, size in zip(self.sources, self.sizes, strict=True) if size is None]
            raise ValueError(
                f"weighted sources without a manifest ({', '.join(unknown)}) have no known size: give samples_per_epoch"
            )
        self.skipped = 0

    def _common_size(self) -> Size | None:
        """The one image size the sources' manifests record; batches cannot mix sizes."""
        recorded = {size: s.path for s, size in zip(self.sources, self._recorded_sizes, strict=True) if size}
        if len(recorded) > 1:
            found = ", ".join(f"{path}: {w}x{h}" for (h, w), path in recorded.items())
            raise ValueError(f"the sources hold images of different sizes ({found}); a batch needs one size")
        return next(iter(recorded), None)

    def _source_segments(self, index: int, source: ShardSource) -> list[_Segment]:
        listing = list_shards(source.path)
        manifest = listing.manifest
        self._recorded_sizes.append(manifest_image_size(manifest))
        if manifest is None:
            if source.num_samples is not None:
                raise ValueError(
                    f"{source.path} lists shards without a manifest, so num_samples={source.num_samples} cannot "
                    "be cut; point at the shard set folder (the one holding manifest.json) instead"
                )
            return [_Segment(index, location, 0, None) for location in listing.locations]
        available = int(manifest["num_samples"])
        wanted = available if source.num_samples is None else int(source.num_samples)
        if wanted > available:
            raise ValueError(f"{source.path} holds {available} samples, fewer than num_samples={wanted}")
        if self.with_mask and manifest.get("num_masks", available) < available:
            raise ValueError(
                f"{source.path} has {available - manifest.get('num_masks', 0)} samples without a mask; "
                "label them first (aras-synth label) or use it as an image-only source"
            )
        pairs = zip(manifest["shards"], listing.locations, strict=True)
        return _slice([_Segment(index, where, 0, int(shard["num_samples"])) for shard, where in pairs], 0, wanted)

    @property
    def epoch(self) -> int:
        """The epoch that seeds shuffling (zero-based), as this process and its loader workers see it."""
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Set the zero-based epoch that seeds shuffling, in memory loader workers share (:class:`EpochDataLoader`)."""
        self._epoch[0] = epoch

    def _epoch_rng(self, slot: int = 0) -> random.Random:
        return random.Random(f"{self.seed}-{self.epoch}-{slot}")

    def __len__(self) -> int:
        """Samples this rank yields in one epoch (summed over its loader workers).

        Raises:
            TypeError: If the length is unknown: a source has no manifest and
                ``samples_per_epoch`` is not set.
        """
        return self.worker_lengths(1)[0]  # the rank's share

    def epoch_samples(self, world: int | None = None) -> int:
        """Samples per epoch over all ranks: ``samples_per_epoch``, cut to a multiple of ``world`` with ``even_ranks``.

        ``world`` is the number of processes (default: torch.distributed's, else 1).

        Raises:
            TypeError: If the length is unknown (see :meth:`__len__`).
        """
        if self.samples_per_epoch is None:
            raise TypeError(
                "this ShardDataset has no length: a source lists shards without a manifest "
                "(set samples_per_epoch for a fixed length)"
            )
        if not self.even_ranks:
            return self.samples_per_epoch
        world = _rank_and_world()[1] if world is None else world
        return self.samples_per_epoch - self.samples_per_epoch % world

    def worker_lengths(self, num_workers: int) -> list[int]:
        """Samples each of the ``num_workers`` loader workers of this rank yields in one epoch (one count for 0)."""
        rank, world = _rank_and_world()
        workers = max(1, num_workers)
        total = self.epoch_samples(world)
        spans = (partition_range(total, rank * workers + w, world * workers) for w in range(workers))
        return [stop - start for start, stop in spans]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's samples for the current epoch."""
        _tune_loader_worker()
        slot, slots = _worker_slot()
        if self.weighted:
            stream = self._weighted_stream(slot, slots)
        elif self.total is None:
            stream = self._shard_split_stream(slot, slots)
        else:
            stream = self._once_stream(slot, slots)
        if self.shuffle:
            stream = self._buffer_shuffle(stream, self._epoch_rng(slot + 1), self.shuffle_buffer)
        yield from stream

    # -- every sample once -------------------------------------------------------------

    def _epoch_segments(self) -> list[_Segment]:
        segments = [seg for segs in self._segments for seg in segs]
        if self.shuffle:
            self._epoch_rng().shuffle(segments)
        return segments

    def _once_stream(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        start, stop = partition_range(self.epoch_samples(), slot, slots)
        segments = self._epoch_segments()
        total = _size(segments)  # every source has a manifest
        if not total:
            return
        # Repeat the (shuffled) data when samples_per_epoch exceeds it.
        for base in range(0, stop, total):
            for seg in _slice(segments, start - base, stop - base):
                yield from self._read(seg)

    # -- split by shards (a source without a manifest) ------------------------------------

    def _shard_split_stream(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        segments = self._epoch_segments()
        mine = segments[slot::slots]
        if len(segments) < slots and slot == 0:
            warnings.warn(
                f"{len(segments)} shards for {slots} loader workers over all ranks: "
                f"{slots - len(segments)} workers get no shard"
                + (" and yield nothing" if self.samples_per_epoch is None else " and reread all shards")
                + "; use fewer workers, smaller shards, or the shard set folder (with its manifest) for an exact split",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.samples_per_epoch is None:  # every shard once; lengths may differ between workers
            for seg in mine:
                yield from self._read(seg)
            return
        start, stop = partition_range(self.epoch_samples(), slot, slots)
        with closing(self._repeat(mine or segments, "the shards")) as stream:
            for _ in range(stop - start):
                yield next(stream)

    def _repeat(
        self, segments: list[_Segment], what: str, rng: random.Random | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """Read ``segments`` over and over (the caller stops), reordered by ``rng``; a pass without a sample raises."""
        while True:
            produced = 0
            order = list(segments)
            if rng is not None:
                rng.shuffle(order)
            for seg in order:
                for item in self._read(seg):
                    produced += 1
                    yield item
            if produced == 0:
                raise RuntimeError(f"{what} yielded no readable sample")

    # -- weighted mixing -----------------------------------------------------------------

    def _weighted_stream(self, slot: int, slots: int) -> Iterator[dict[str, Any]]:
        assert self.samples_per_epoch is not None  # checked in __init__
        start, stop = partition_range(self.epoch_samples(), slot, slots)
        rng = self._epoch_rng(slot)
        weights = [float(s.weight or 0.0) for s in self.sources]
        streams = [self._cycle_source(i, slot, slots, rng) for i in range(len(self.sources))]
        for _ in range(stop - start):
            pick = rng.choices(range(len(streams)), weights=weights)[0]
            yield next(streams[pick])

    def _cycle_source(self, index: int, slot: int, slots: int, rng: random.Random) -> Iterator[dict[str, Any]]:
        segments = list(self._segments[index])
        size = self.sizes[index]
        if size is None:  # no manifest: whole shards; fewer shards than workers: share them all
            mine = segments[slot::slots] or segments
        else:
            lo, hi = partition_range(size, slot, slots)
            if hi <= lo:  # more workers than samples in this source: share the whole source
                lo, hi = 0, size
            if hi <= lo:
                raise ValueError(f"source {self.sources[index].path} has no samples to draw from")
            mine = _slice(segments, lo, hi)
        yield from self._repeat(mine, f"source {self.sources[index].path}", rng if self.shuffle else None)

    # -- reading ---------------------------------------------------------------------------

    def _read(self, seg: _Segment) -> Iterator[dict[str, Any]]:
        """Decode samples ``start .. start+count`` of one shard, skipping corrupt ones."""
        position = 0
        end = None if seg.count is None else seg.start + seg.count
        try:
            # closing(): a stream stopped early (a pipe: command, a download) ends now, not at GC.
            with closing(iter_raw_samples(seg.shard, members=self._members)) as raws:
                for raw in raws:
                    if end is not None and position >= end:
                        return
                    position += 1
                    if position <= seg.start:
                        continue
                    item = self._decode(raw, seg)
                    if item is not None:
                        yield item
        except (tarfile.TarError, OSError, EOFError) as err:
            self._skip(f"skipping the rest of shard {seg.shard}: it is corrupt or cannot be read ({err})")

    def _skip(self, message: str) -> None:
        """Count a skipped sample (or rest of a shard) and warn, as the reader's caller."""
        self.skipped += 1
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    @property
    def _members(self) -> frozenset[str]:
        """The tar members an item is made from; the others (captions, ...) are skipped unread."""
        return _ITEM_MEMBERS | {"mask.png"} if self.with_mask else _ITEM_MEMBERS

    def _decode(self, raw: dict[str, Any], seg: _Segment) -> dict[str, Any] | None:
        try:
            # channels_first: (3, H, W) planes copied straight out of Pillow's memory (docs/data.md#loader-speed).
            sample = decode_sample(
                raw, with_mask=self.with_mask, with_captions=False, size=self.image_size, channels_first=True
            )
            if self.with_mask and sample.mask is None:
                raise SampleError(f"sample {sample.key}: member mask.png is missing")
        except SampleError as err:
            where = location_name(seg.shard)
            self._skip(f"skipping corrupt sample in {where} ({err}); {self.skipped + 1} skipped so far in this worker")
            return None
        if self.image_size is None:
            self.image_size = (sample.image.shape[1], sample.image.shape[2])
        item: dict[str, Any] = {"image": torch.from_numpy(sample.image), "key": sample.key, "source": seg.source}
        if self.with_mask:
            assert sample.mask is not None
            item["mask"] = torch.from_numpy(sample.mask)
        if self.with_meta:
            item["meta"] = sample.meta
        return item

    @staticmethod
    def _buffer_shuffle(stream: Iterator[dict[str, Any]], rng: random.Random, size: int) -> Iterator[dict[str, Any]]:
        """Shuffle through a buffer of up to ``size`` samples that yields while it fills (holding half those read)."""
        buffer: list[dict[str, Any]] = []
        for seen, item in enumerate(stream, start=1):
            buffer.append(item)
            if len(buffer) > min(size, (seen + 1) // 2):
                index = rng.randrange(len(buffer))
                buffer[index], buffer[-1] = buffer[-1], buffer[index]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer


def collate_samples(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`ShardDataset` items: tensors stacked, keys listed, ``meta`` (if any) a list of one dict per sample.

    (``default_collate`` would turn ``meta`` numbers into tensors and fail on differing fields.)
    """
    metas = [item.get("meta") for item in items]
    batch: dict[str, Any] = default_collate([{k: v for k, v in item.items() if k != "meta"} for item in items])
    if any(meta is not None for meta in metas):
        batch["meta"] = [meta or {} for meta in metas]
    return batch


#: Shared-memory slots each loader worker keeps for its batches (prefetched ones, the
#: one in use and a margin); when all are lent out a batch gets a fresh segment.
BATCH_SLOTS = 6
_ALIGN = 64  # bytes; every tensor of a packed batch starts at a multiple of this
_TOKENS = itertools.count(1)
#: ``token -> ReusingCollate`` of this process's loaders (see _unpack); gone with their loader.
_COLLATES: weakref.WeakValueDictionary[int, ReusingCollate] = weakref.WeakValueDictionary()
#: Batches this (main) process holds from loader workers: (storage ref, token, worker, slot, lend number).
_LENT: list[tuple[StorageWeakRef, int, int, int, int]] = []


class ReusingCollate:
    """Batch :class:`ShardDataset` items into shared memory that loader workers reuse.

    A batch is packed into one segment of a per-worker ring of :data:`BATCH_SLOTS` (a
    fresh one when all are lent out), sent to the main process once per slot; a shared
    table sized by ``num_workers`` tracks who owns which (``docs/data.md#loader-speed``).
    One rule: tensors forwarded to *another* process must be ``clone()``-d before the main
    process drops them, as the slot may then be refilled. Batches equal
    :func:`collate_samples`'s bit for bit; other items, and batches made outside a worker,
    go through it.
    """

    def __init__(self, num_workers: int) -> None:
        self.token = next(_TOKENS) + (os.getpid() << 20)
        #: ``[worker, slot]``: 0 = free, else the number of the lend holding the slot.
        with torch.inference_mode(False):  # a loader made under inference (validation) is also iterated outside it
            self.table = torch.zeros(max(1, num_workers), BATCH_SLOTS, dtype=torch.int64).share_memory_()
        _COLLATES[self.token] = self
        self._lends = itertools.count(1)
        # In a worker: its segments, each with a random id, and whether it was sent once.
        self._pid = os.getpid()
        self._slots: list[tuple[int, torch.Tensor] | None] = [None] * BATCH_SLOTS
        self._sent = [False] * BATCH_SLOTS
        #: In the main process: ``(worker, slot) -> (segment id, segment)`` received from workers.
        self._received: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """What a worker started by pickling (``spawn``, ``forkserver``) needs: not the segments of any process."""
        state = dict(self.__dict__)
        state.update(_slots=[None] * BATCH_SLOTS, _sent=[False] * BATCH_SLOTS, _received={})
        return state

    def __call__(self, items: Sequence[dict[str, Any]]) -> Any:
        """Collate one batch (in a worker: into a reused segment; else as :func:`collate_samples`)."""
        info = get_worker_info()
        layout = _layout(items) if info is not None and info.id < self.table.shape[0] else None
        if layout is None:
            return collate_samples(items)
        assert info is not None
        if self._pid != os.getpid():  # a fresh worker: nothing of its parent's slots is its own
            self._pid, self._slots, self._sent = os.getpid(), [None] * BATCH_SLOTS, [False] * BATCH_SLOTS
        nbytes = layout[-1][4]
        slot, lend, segment_id = -1, 0, 0
        for index, entry in enumerate(self._slots):
            if int(self.table[info.id, index]) == 0:
                if entry is None or entry[1].numel() < nbytes:
                    entry = self._slots[index] = (
                        secrets.randbits(63),  # not the global random: its stream is the user's
                        torch.empty(nbytes, dtype=torch.uint8).share_memory_(),
                    )
                    self._sent[index] = False
                slot = index
                segment_id, store = entry
                break
        if slot < 0:  # every slot lent out: a fresh segment, as default_collate would
            store = torch.empty(nbytes, dtype=torch.uint8).share_memory_()
        else:
            lend = (os.getpid() << 32) + next(self._lends)
            self.table[info.id, slot] = lend
        tensors = _views(store, layout)
        for (name, *_), out in zip(layout, tensors, strict=True):
            if name == "source":
                out.copy_(torch.tensor([item["source"] for item in items], dtype=torch.int64))
            else:
                torch.stack([item[name] for item in items], out=out)
        keys = [item["key"] for item in items]
        send = slot < 0 or not self._sent[slot]
        if slot >= 0:
            self._sent[slot] = True
        return _PackedBatch(
            store if send else None, layout, keys, list(items[0]), self.token, info.id, slot, lend, segment_id
        )

    def _segment(self, packed: _PackedBatch) -> torch.Tensor:
        """The memory of a batch received in the main process, as a storage of its own (its lifetime is the batch's)."""
        key = (packed.worker, packed.slot)
        if packed.store is not None:
            self._received[key] = (packed.segment, packed.store)
        segment_id, segment = self._received.get(key, (None, None))
        if segment is None or segment_id != packed.segment:
            raise RuntimeError(f"loader worker {packed.worker} sent a batch in a shared-memory slot never received")
        # A new storage over the same memory: a weak reference to it expires when the batch is dropped,
        # while the segment stays mapped here for the next batch in the slot.
        return torch.from_numpy(segment.numpy())


#: (name, dtype, start byte, shape, end byte) of each tensor in a packed batch; the last
#: entry's end is the size it needs.
_Layout = list[tuple[str, torch.dtype, int, tuple[int, ...], int]]


def _layout(items: Sequence[dict[str, Any]]) -> _Layout | None:
    """Where each tensor of the packed batch lies, or ``None`` if the items are not plain ShardDataset items."""
    first = items[0]
    if set(first) not in ({"image", "key", "source"}, {"image", "key", "source", "mask"}):  # not with meta
        return None
    out: _Layout = []
    offset = 0
    for name in first:
        if name == "key":
            continue
        if name == "source":
            if not all(type(item["source"]) is int for item in items):
                return None
            shape, dtype = (len(items),), torch.int64
        else:
            tensor = first[name]
            if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
                return None
            if not all(
                isinstance(other, torch.Tensor) and other.dtype == tensor.dtype and other.shape == tensor.shape
                for other in (item[name] for item in items)
            ):
                return None
            shape, dtype = (len(items), *tensor.shape), tensor.dtype
        size = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
        out.append((name, dtype, offset, shape, offset + size))
        offset = -(-(offset + size) // _ALIGN) * _ALIGN
    return out


def _views(store: torch.Tensor, layout: _Layout) -> list[torch.Tensor]:
    """The batch's tensors as views of one uint8 segment."""
    return [store[start:end].view(dtype).view(shape) for _, dtype, start, shape, end in layout]


class _PackedBatch(NamedTuple):
    """A batch made in a worker; unpickled in the main process it becomes the batch dict (:func:`_unpack`).

    ``store`` is sent with a fresh segment (``slot`` -1) or a slot's first batch, else
    ``None``: the main process holds the slot's segment, checked by its id ``segment``.
    """

    store: torch.Tensor | None
    layout: _Layout
    keys: list[str]
    order: list[str]
    token: int
    worker: int
    slot: int
    lend: int
    segment: int

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _unpack, tuple(self)


def _release_expired() -> None:
    """Free the slots of lent batches this process no longer holds any tensor of."""
    kept = []
    for ref, token, worker, slot, lend in _LENT:
        if not ref.expired():
            kept.append((ref, token, worker, slot, lend))
            continue
        collate = _COLLATES.get(token)
        if collate is not None and int(collate.table[worker, slot]) == lend:
            collate.table[worker, slot] = 0
    _LENT[:] = kept


def _unpack(*fields: Any) -> dict[str, Any]:
    """Rebuild a :class:`_PackedBatch` as the dict :func:`collate_samples` makes; track its slot until it is dropped."""
    packed = _PackedBatch(*fields)
    _release_expired()
    collate = _COLLATES.get(packed.token)
    if packed.slot >= 0 and collate is not None:
        store = collate._segment(packed)
    elif packed.store is not None:  # a fresh segment, or one sent with this batch
        store = packed.store
    else:  # not the loader's process (or the loader is gone): only a sent segment is readable
        raise RuntimeError("a batch packed by a loader worker was read outside the loader's process")
    tensors = dict(zip((entry[0] for entry in packed.layout), _views(store, packed.layout), strict=True))
    batch = {name: packed.keys if name == "key" else tensors[name] for name in packed.order}
    if packed.slot >= 0 and collate is not None:
        _LENT.append((StorageWeakRef(store.untyped_storage()), packed.token, packed.worker, packed.slot, packed.lend))
    return batch


class EpochDataLoader(DataLoader):
    """A ``DataLoader`` that tells its :class:`ShardDataset` the epoch before each pass.

    The epoch is set in memory the loader workers share, so each epoch gets its own
    shuffle with ``persistent_workers=True`` too (``docs/data.md#loader-speed``). It takes
    ``DataLoader``'s arguments. Batches are made by :func:`collate_samples` unless a
    ``collate_fn`` is given; with ``reuse_batch_memory=True`` and workers, by
    :class:`ReusingCollate` (mind its one rule).
    """

    def __init__(self, *args: Any, reuse_batch_memory: bool = False, **kwargs: Any) -> None:
        batch_size = args[1] if len(args) > 1 else kwargs.get("batch_size", 1)
        # collate_fn is DataLoader's seventh positional argument; without batching it is not a collation.
        if len(args) < 7 and kwargs.get("collate_fn") is None and batch_size is not None:
            workers = args[5] if len(args) > 5 else kwargs.get("num_workers", 0)
            reuse = reuse_batch_memory and workers > 0
            kwargs["collate_fn"] = ReusingCollate(workers) if reuse else collate_samples
        super().__init__(*args, **kwargs)

    def __len__(self) -> int:
        """Batches in one epoch of this rank: the sum over its workers of ``ceil(share / batch_size)``.

        Each worker batches its own share (``floor`` with ``drop_last``), which gives more
        batches than the rank's share would when several workers end on a partial batch;
        Lightning stops an epoch after ``len()`` batches, so the count must be exact.
        """
        dataset = self.dataset
        if not isinstance(dataset, ShardDataset) or self.batch_size is None:
            return super().__len__()
        lengths = dataset.worker_lengths(self.num_workers)
        if self.drop_last:
            return sum(n // self.batch_size for n in lengths)
        return sum(-(-n // self.batch_size) for n in lengths)

    def __iter__(self) -> _BaseDataLoaderIter:
        """Start an epoch."""
        if isinstance(self.dataset, ShardDataset):
            self.dataset.set_epoch(self.dataset.passes)
            self.dataset.passes += 1
        return super().__iter__()
