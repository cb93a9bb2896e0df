"""Samples/s through the segmentation DataModule's train loader versus a PNG-folder baseline.

The baseline is what the paper's published scripts do: a map-style Dataset over a
folder of RGB image PNGs and RGB colour-mask PNGs, converting each mask to indices
with one ``np.all`` comparison per class. Both loaders read the same samples with the
same number of workers and batch size and deliver float images and long masks; the
DataModule's device-side step (scaling, normalisation; no augmentation) is timed too.

    python benchmarks/bench_data.py --samples 512 --size 256 --workers 2

Prints both rates and their ratio (the figure that matters on a noisy machine).
"""

from __future__ import annotations

import argparse
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
from aras400k.data.shards import ShardWriter
from aras400k.data.splits import SPLIT_NAMES


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


def build(root: Path, samples: int, size: int) -> None:
    """Write the same samples as a PNG folder and as a shard set root (train/val/test)."""
    (root / "png" / "images").mkdir(parents=True)
    (root / "png" / "masks").mkdir(parents=True)
    writers = {s: ShardWriter(root / "shards" / s, split=s, samples_per_shard=128) for s in SPLIT_NAMES}
    for i in range(samples):
        sample = demo_sample("train", i, size)
        Image.fromarray(sample.image).save(root / "png" / "images" / f"{sample.key}.png")
        Image.fromarray(index_to_colour(sample.mask)).save(root / "png" / "masks" / f"{sample.key}.png")
        writers["train"].write(sample)
        if i < 4:
            writers["val"].write(sample)
            writers["test"].write(sample)
    for writer in writers.values():
        writer.close()


def rate(batches: object, step: object = None) -> tuple[float, int]:
    """Samples/s of one full pass over ``batches``."""
    start, seen = time.perf_counter(), 0
    for batch in batches:
        if step is not None:
            batch = step(batch)
            seen += batch["image"].shape[0]
        else:
            seen += batch[0].shape[0]
    return seen / (time.perf_counter() - start), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="passes of each loader; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"building {args.samples} samples of {args.size} px ...")
        build(root, args.samples, args.size)
        baseline = DataLoader(
            PngFolderBaseline(root / "png"), batch_size=args.batch, shuffle=True, num_workers=args.workers
        )
        dm = SegmentationDataModule(
            root=str(root / "shards"), demo=False, batch_size=args.batch, num_workers=args.workers, augment=False
        )
        dm.setup("fit")
        ours = dm.train_dataloader()
        results = {"baseline (PNG folder, per-colour np.all)": [], "SegmentationDataModule (shards)": []}
        for _ in range(args.repeats):  # interleave to share the machine's noise
            results["baseline (PNG folder, per-colour np.all)"].append(rate(baseline)[0])
            results["SegmentationDataModule (shards)"].append(rate(ours, lambda b: dm.on_after_batch_transfer(b, 0))[0])
    best = {name: max(r) for name, r in results.items()}
    for name, value in best.items():
        print(f"{name:45s} {value:8.1f} samples/s")
    base, new = best.values()
    print(f"ratio (DataModule / baseline), {args.workers} workers, {args.size} px: {new / base:.2f}x")


if __name__ == "__main__":
    main()
