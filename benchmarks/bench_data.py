"""Samples/s through the segmentation DataModule's train loader versus a PNG-folder baseline.

The baseline is what the paper's published scripts do: a map-style Dataset over a
folder of RGB image PNGs and RGB colour-mask PNGs, converting each mask to indices
with one ``np.all`` comparison per class. Both loaders read the same samples with the
same number of workers and batch size and deliver float images and long masks; the
DataModule's device-side step (scaling, normalisation; no augmentation) is timed too.

    python benchmarks/bench_data.py --samples 512 --size 256 --workers 2 --realistic

``--realistic`` gives the images the entropy of real Sentinel-2 patches (~150 KiB
PNGs at 256 px; the procedural demo images compress far better). Prints both rates
and their ratio (the figure that matters on a noisy machine), the time to the first
batch, and the limit: decoding the image PNG and the index-mask PNG of every sample
straight from the shards' bytes in one process, with nothing else done, times the
number of workers. Each figure is the median of ``--repeats`` interleaved passes.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

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


def rate(batches: object, step: object = None) -> tuple[float, float]:
    """Samples/s of one full pass over ``batches``, and the seconds to its first batch."""
    start, seen, first = time.perf_counter(), 0, 0.0
    for batch in batches:
        if step is not None:
            batch = step(batch)
            seen += batch["image"].shape[0]
        else:
            seen += batch[0].shape[0]
        first = first or time.perf_counter() - start
    return seen / (time.perf_counter() - start), first


def decode_rate(shards: Path) -> float:
    """Samples/s of decoding each image PNG and index-mask PNG from the shard bytes, nothing else."""
    raws = [raw for path in shard_paths(shards) for raw in iter_raw_samples(path)]
    start = time.perf_counter()
    for raw in raws:
        np.asarray(Image.open(io.BytesIO(raw["image.png"])))
        np.asarray(Image.open(io.BytesIO(raw["mask.png"])))
    return len(raws) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes of each loader; medians printed")
    parser.add_argument("--realistic", action="store_true", help="images with real imagery's entropy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base_name, ours_name = "baseline (PNG folder, per-colour np.all)", "SegmentationDataModule (shards)"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kind = "realistic" if args.realistic else "demo"
        print(f"building {args.samples} {kind} samples of {args.size} px ...")
        build(root, args.samples, args.size, args.realistic)
        kib = np.mean([p.stat().st_size for p in (root / "png" / "images").glob("*.png")]) / 1024
        print(f"image PNGs {kib:.0f} KiB on average")
        baseline = DataLoader(
            PngFolderBaseline(root / "png"), batch_size=args.batch, shuffle=True, num_workers=args.workers
        )
        dm = SegmentationDataModule(
            root=str(root / "shards"), demo=False, batch_size=args.batch, num_workers=args.workers, augment=False
        )
        dm.setup("fit")
        ours = dm.train_dataloader()
        rates: dict[str, list[float]] = {base_name: [], ours_name: [], "decode limit (1 process)": []}
        firsts: list[float] = []
        for _ in range(args.repeats):  # interleave to share the machine's noise
            rates[base_name].append(rate(baseline)[0])
            value, first = rate(ours, lambda b: dm.on_after_batch_transfer(b, 0))
            rates[ours_name].append(value)
            firsts.append(first)
            rates["decode limit (1 process)"].append(decode_rate(root / "shards" / "train"))
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, value in med.items():
        print(f"{name:45s} {value:8.1f} samples/s  (runs: {', '.join(f'{r:.1f}' for r in rates[name])})")
    limit = med["decode limit (1 process)"] * args.workers
    print(f"first batch of the DataModule: {statistics.median(firsts):.2f}s")
    print(
        f"ratio (DataModule / baseline), {args.workers} workers, {args.size} px, {kind}: "
        f"{med[ours_name] / med[base_name]:.2f}x"
    )
    print(f"decode limit x {args.workers} workers / DataModule: {limit / med[ours_name]:.2f} (1.00 = at the limit)")


if __name__ == "__main__":
    main()
