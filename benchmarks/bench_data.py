"""Samples/s through the segmentation DataModule's train loader versus the published PNG-folder loader.

The baseline is what the paper's published scripts do: a map-style Dataset over a
folder of RGB image PNGs and RGB colour-mask PNGs, converting each mask to indices
with one ``np.all`` comparison per class, normalising in the workers. Both loaders
read the same samples with the same number of workers and batch size and deliver
float images and long masks; the DataModule's device-side step (scaling,
normalisation; no augmentation) runs in the main process and is timed too.

    python benchmarks/bench_data.py --samples 512 --size 256 --workers 0,1,2 --realistic

``--realistic`` gives the images the entropy of real Sentinel-2 patches (~140 KiB
PNGs at 256 px; the procedural demo images compress far better). One run prints, for
every worker count: both loaders' samples/s and their ratio, the CPU time each spends
per sample (main process plus workers: the figure a busy machine disturbs least), the
DataModule's distance to the *decode limit* (decoding the image PNG and the
index-mask PNG of every sample from bytes in memory, one process, nothing else done),
the time to the first batch of a fresh loader, and the targets with the machine's
load. Under the 2-worker scaling target it also prints the scaling that the CPU
figures imply on two idle cores (:func:`idle_rate`), the figure to read on a shared
machine. Rates are medians of ``--repeats`` interleaved passes; the DataModule's passes
are epochs of one loader whose workers persist, as in training.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aras400k.classes import CLASSES, index_to_colour
from aras400k.data import SegmentationDataModule
from aras400k.data.demo import demo_sample
from aras400k.data.shards import ShardWriter, iter_raw_samples, shard_paths
from aras400k.data.splits import SPLIT_NAMES
from realistic import realistic_sample  # benchmarks/ is on the path when a script here runs

PUBLISHED = "published loader (PNG folder, np.all)"
OURS = "SegmentationDataModule (shards)"
_TICKS = os.sysconf("SC_CLK_TCK")


class PngFolderBaseline(Dataset):
    """The published scripts' loader: image PNG + colour mask PNG, per-colour np.all."""

    def __init__(self, root: Path) -> None:
        self.images = sorted((root / "images").glob("*.png"))
        self.masks = root / "masks"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.images[i]
        image = np.array(Image.open(path).convert("RGB"))
        rgb = np.array(Image.open(self.masks / path.name).convert("RGB"))
        mask = np.zeros(rgb.shape[:2], dtype=np.int64)
        for c in CLASSES:
            mask[np.all(rgb == np.array(c.colour), axis=-1)] = c.index
        image_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        return (image_t - 0.45) / 0.225, torch.from_numpy(mask)


def build(root: Path, samples: int, size: int, realistic: bool = False) -> None:
    """Write the same samples as a PNG folder and as a shard set root (train/val/test)."""
    (root / "png" / "images").mkdir(parents=True)
    (root / "png" / "masks").mkdir(parents=True)
    writers = {s: ShardWriter(root / "shards" / s, split=s, samples_per_shard=128) for s in SPLIT_NAMES}
    for i in range(samples):
        sample = realistic_sample(i, size) if realistic else demo_sample("train", i, size)
        Image.fromarray(sample.image).save(root / "png" / "images" / f"{sample.key}.png")
        Image.fromarray(index_to_colour(sample.mask)).save(root / "png" / "masks" / f"{sample.key}.png")
        writers["train"].write(sample)
        if i < 4:
            writers["val"].write(sample)
            writers["test"].write(sample)
    for writer in writers.values():
        writer.close()


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _cpu(loader: DataLoader) -> float:
    """CPU seconds of this process, its finished children, and ``loader``'s live (persistent) workers."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []
    live = sum(_process_cpu(w.pid) for w in workers if w.is_alive())
    return time.process_time() + children.ru_utime + children.ru_stime + live


def one_pass(loader: DataLoader, step: Callable[[Any], Any] | None = None) -> tuple[float, float, float, float]:
    """Samples/s of one full pass, seconds to its first batch, CPU ms per sample (all processes, main process)."""
    cpu, main, start, seen, first = _cpu(loader), time.process_time(), time.perf_counter(), 0, 0.0
    for batch in loader:
        if step is not None:
            batch = step(batch)
            seen += batch["image"].shape[0]
        else:
            seen += batch[0].shape[0]
        first = first or time.perf_counter() - start
    wall = time.perf_counter() - start
    return seen / wall, first, (_cpu(loader) - cpu) / seen * 1e3, (time.process_time() - main) / seen * 1e3


def idle_rate(workers: int, cpu_ms: float, main_ms: float, cores: int = 2) -> float:
    """Samples/ms a loader could reach on ``cores`` idle cores, from its CPU per sample.

    The main process does ``main_ms`` per sample, the workers ``cpu_ms - main_ms``
    between them, each its share; no process can be faster than one core, and all
    together no faster than ``cores``. On a shared machine this estimates what the wall
    figures need idle cores to show.
    """
    work = max(cpu_ms - main_ms, 1e-9)
    if workers == 0:
        return 1 / cpu_ms
    return min(1 / max(main_ms, 1e-9), workers / work, cores / cpu_ms)


def first_batch(make: Callable[[], Iterable[Any]]) -> float:
    """Seconds from a fresh loader's ``iter()`` to its first batch (workers started included)."""
    loader = make()
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    elapsed = time.perf_counter() - start
    del iterator, loader
    return elapsed


def decode_limit(raws: list[dict[str, Any]], decode: Callable[[bytes], Any]) -> tuple[float, float]:
    """Samples/s and CPU ms per sample of decoding each image PNG and index-mask PNG from memory, nothing else."""
    cpu, start = time.process_time(), time.perf_counter()
    for raw in raws:
        decode(raw["image.png"])
        decode(raw["mask.png"])
    wall = time.perf_counter() - start
    return len(raws) / wall, (time.process_time() - cpu) / len(raws) * 1e3


def pil_decode(data: bytes) -> np.ndarray:
    """Pillow, as the loader decodes."""
    return np.asarray(Image.open(io.BytesIO(data)))


def torchvision_decoder() -> Callable[[bytes], Any] | None:
    """``torchvision.io.decode_png``, when torchvision is installed (measured only; the loader does not use it)."""
    try:
        from torchvision.io import decode_png
    except ImportError:
        return None
    return lambda data: decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated loader worker counts to measure")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes of each loader; medians printed")
    parser.add_argument("--realistic", action="store_true", help="images with real imagery's entropy")
    parser.add_argument("--data", type=Path, help="build the samples here once and reuse them (default: a temp folder)")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)
    kind = "realistic" if args.realistic else "demo"
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        if not (root / "shards" / "train" / "manifest.json").is_file():
            print(f"building {args.samples} {kind} samples of {args.size} px in {root} ...")
            build(root, args.samples, args.size, args.realistic)
        kib = np.mean([p.stat().st_size for p in (root / "png" / "images").glob("*.png")]) / 1024
        raws = [raw for path in shard_paths(root / "shards" / "train") for raw in iter_raw_samples(path)]
        print(f"{len(raws)} samples, image PNGs {kib:.0f} KiB on average; {load_before} before")

        def datamodule(workers: int) -> SegmentationDataModule:
            dm = SegmentationDataModule(
                root=str(root / "shards"), demo=False, batch_size=args.batch, num_workers=workers, augment=False
            )
            dm.setup("fit")
            return dm

        def published(workers: int) -> DataLoader:
            dataset = PngFolderBaseline(root / "png")
            return DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers)

        modules = {w: datamodule(w) for w in worker_counts}
        loaders = {w: dm.train_dataloader() for w, dm in modules.items()}
        for w in worker_counts:  # start the persistent workers: passes below are steady-state epochs
            one_pass(loaders[w], lambda b, dm=modules[w]: dm.on_after_batch_transfer(b, 0))
        tv_decode = torchvision_decoder()
        runs: dict[str, list[tuple[float, ...]]] = {}
        for _ in range(args.repeats):  # interleave to share the machine's noise
            runs.setdefault("decode PIL", []).append(decode_limit(raws, pil_decode))
            if tv_decode is not None:
                runs.setdefault("decode torchvision", []).append(decode_limit(raws, tv_decode))
            for w in worker_counts:
                dm = modules[w]
                runs.setdefault(f"{PUBLISHED} w{w}", []).append(one_pass(published(w)))
                step = dm.on_after_batch_transfer
                runs.setdefault(f"{OURS} w{w}", []).append(one_pass(loaders[w], lambda b, step=step: step(b, 0)))
                fresh = first_batch(lambda w=w: datamodule(w).train_dataloader())
                runs.setdefault(f"first w{w}", []).append((fresh,))
    load_after = _load()

    def med(name: str, field: int = 0) -> float:
        return statistics.median(run[field] for run in runs[name])

    def listed(name: str) -> str:
        return ", ".join(f"{run[0]:.0f}" for run in runs[name])

    print(f"\n{args.size} px, {kind} images, batch {args.batch}, {args.repeats} interleaved passes")
    print("(medians; the passes' samples/s in brackets)")
    decode_rate, decode_cpu = med("decode PIL"), med("decode PIL", 1)
    row = f"{decode_rate:7.0f} samples/s  {decode_cpu:5.2f} CPU ms/sample"
    print(f"{'decode limit, Pillow (1 process)':46s} {row}  [{listed('decode PIL')}]")
    if "decode torchvision" in runs:
        print(
            f"{'decode limit, torchvision.io (1 process)':46s} {med('decode torchvision'):7.0f} samples/s  "
            f"{med('decode torchvision', 1):5.2f} CPU ms/sample  (not used: crashes on a corrupt PNG, see docs/data.md)"
        )
    for w in worker_counts:
        for name in (PUBLISHED, OURS):
            key = f"{name} w{w}"
            row = f"{med(key):7.0f} samples/s  {med(key, 2):5.2f} CPU ms/sample"
            print(f"{name + f', {w} workers':46s} {row}  [{listed(key)}]")
    print()
    targets: list[str] = []
    for w in worker_counts:
        ours, base, fresh = med(f"{OURS} w{w}"), med(f"{PUBLISHED} w{w}"), med(f"first w{w}")
        limit = decode_rate * max(1, w)
        cpu_ratio = med(f"{OURS} w{w}", 2) / decode_cpu
        print(
            f"{w} workers: DataModule / published {ours / base:5.2f}x; decode limit x {max(1, w)} / DataModule "
            f"{limit / ours:4.2f} (1.00 = at the limit); CPU per sample {cpu_ratio:4.2f}x the decode's; "
            f"first batch {fresh:.2f}s fresh, {med(f'{OURS} w{w}', 1):.2f}s with persistent workers"
        )
        if args.realistic:
            speedup = ours / base
            targets.append(f"  >= 6x the published loader ({w} workers): {speedup:.2f}x {_verdict(speedup >= 6)}")
        targets.append(f"  first batch < 0.5 s ({w} workers, fresh loader): {fresh:.2f}s {_verdict(fresh < 0.5)}")
        if w == 1:
            gap = limit / ours
            targets.append(f"  1 worker within 1.3x of the decode limit: {gap:.2f}x {_verdict(gap <= 1.3)}")
    if 1 in worker_counts and 2 in worker_counts:
        scaling = med(f"{OURS} w2") / med(f"{OURS} w1")
        targets.append(f"  2 workers >= 1.7x one: {scaling:.2f}x {_verdict(scaling >= 1.7)} (needs 2 idle cores)")
        rates = [idle_rate(w, med(f"{OURS} w{w}", 2), med(f"{OURS} w{w}", 3)) for w in (1, 2)]
        targets.append(
            f"    from CPU per sample, on 2 idle cores: {rates[1] / rates[0]:.2f}x "
            f"(main process {med(f'{OURS} w1', 3):.2f} / {med(f'{OURS} w2', 3):.2f} ms per sample, "
            f"all processes {med(f'{OURS} w1', 2):.2f} / {med(f'{OURS} w2', 2):.2f} ms, 1 / 2 workers; an estimate)"
        )
    print("targets:\n" + "\n".join(targets))
    print(f"machine: {load_before} before, {load_after} after")


if __name__ == "__main__":
    main()
