"""Mapping speed (tiles/s) and peak memory of ``aras-map`` by scene size.

Speed: a synthetic ``--size`` x ``--size`` scene is mapped with a tiny segmenter
(FPN / MobileNetV3-small-0.5, random weights: speed does not depend on them) and the
tiles/s are compared with a baseline measured in the same run: the bare forward pass
(normalise, segmenter, softmax) on the same number of tiles already in memory. The
ratio is the share of the model's speed that survives reading, scaling, blending and
writing.

Memory: each of ``--memory_sizes`` is mapped (with full batches: pick ``--batch`` no
larger than the smallest size's tiles per row) in a fresh subprocess and its peak
resident memory is printed (``VmHWM`` of ``/proc/self/status``: Linux carries
``getrusage``'s maxrss over from the parent through fork and exec, so a child of this
process would report this process's peak) beside a baseline
subprocess that loads the same model and maps one row of tiles (one full batch). The increments over the
baseline show that peak memory follows the scene's width (one band of tile rows), not
its area. Scenes are written to a temporary folder and deleted afterwards.

    python benchmarks/bench_map.py --size 4096 --memory_sizes 2048 8192

Print ``uptime`` beside the figures: the machine's load changes the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aras400k.data.transforms import Normalize
from aras400k.mapping import map_scene, tile_starts
from aras400k.models.segmentation import SegmentationTask


def write_checkpoint(path: Path) -> Path:
    """Save a tiny random segmenter as a checkpoint."""
    torch.manual_seed(0)
    task = SegmentationTask(arch="fpn", encoder="tu-mobilenetv3_small_050")
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, path)
    return path


def write_scene(path: Path, size: int, width: int | None = None) -> Path:
    """Write a blocky 4-band uint16 ``size`` x ``width`` scene, 512 rows at a time (bounded memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    height, size = size, width or size
    profile = {
        "driver": "GTiff", "width": size, "height": height, "count": 4, "dtype": "uint16", "crs": "EPSG:32635",
        "transform": from_origin(500000.0, 4200000.0, 10.0, 10.0), "tiled": True, "blockxsize": 256,
        "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, height, 512):
            h = min(512, height - y)
            blocks = rng.integers(1, 4000, size=(4, -(-h // 16), size // 16 + 1), dtype=np.uint16)
            dst.write(np.kron(blocks, np.ones((1, 16, 16), np.uint16))[:, :h, :size], window=Window(0, y, size, h))
    return path


def forward_baseline(ckpt: Path, tiles: int, tile: int, batch: int, device: str) -> float:
    """Tiles/s of the bare forward pass on tiles already in memory."""
    from aras400k.models.segmentation import load_segmentation_task

    task = load_segmentation_task(ckpt, map_location=device)
    norm = Normalize().to(device)
    images = torch.randint(0, 256, (batch, 3, tile, tile), dtype=torch.uint8, device=device)
    with torch.no_grad():
        task(norm(images.float() / 255.0))  # warm-up
        start, done = time.perf_counter(), 0
        while done < tiles:
            task(norm(images.float() / 255.0)).softmax(1).cpu()
            done += batch
    return done / (time.perf_counter() - start)


def peak_rss_mib(ckpt: Path, scene: Path, out: Path, tile: int, stride: int, batch: int) -> float:
    """Map a scene in a fresh subprocess and return its peak resident memory in MiB."""
    code = (
        "from aras400k.mapping import map_scene\n"
        f"map_scene({str(ckpt)!r}, {str(scene)!r}, {str(out)!r}, tile_size={tile}, stride={stride}, "
        f"batch_size={batch}, device='cpu', quicklook=None, overwrite=True, progress=False)\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    return int(result.stdout.strip().splitlines()[-1]) / 1024.0  # kB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the speed scene")
    parser.add_argument("--memory_sizes", type=int, nargs="*", default=[2048, 8192], help="sides for the memory runs")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128, help="stride of the speed run")
    parser.add_argument("--memory_stride", type=int, default=256, help="stride of the memory runs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min), {os.cpu_count()} cores, {args.device}")
    with tempfile.TemporaryDirectory(prefix="bench_map_", dir="/tmp") as tmp:
        folder = Path(tmp)
        ckpt = write_checkpoint(folder / "seg.ckpt")
        if args.size:
            scene = write_scene(folder / "speed.tif", args.size)
            report = map_scene(
                ckpt, scene, folder / "speed_map.tif", tile_size=args.tile, stride=args.stride,
                batch_size=args.batch, device=args.device, quicklook=None, progress=False,
            )  # fmt: skip
            base = forward_baseline(ckpt, min(report.tiles, 64), args.tile, args.batch, args.device)
            print(
                f"speed {args.size}^2, tile {args.tile}, stride {args.stride}: {report.tiles} tiles in "
                f"{report.seconds:.1f}s = {report.tiles_per_second:.1f} tiles/s; bare forward {base:.1f} tiles/s; "
                f"ratio {report.tiles_per_second / base:.2f}"
            )
            scene.unlink()
        if args.memory_sizes:
            width = args.tile + (args.batch - 1) * args.memory_stride  # one row of tiles: one full batch
            small = write_scene(folder / "base.tif", args.tile, width)
            base_mib = peak_rss_mib(ckpt, small, folder / "base_map.tif", args.tile, args.memory_stride, args.batch)
            print(f"memory baseline (model + one full batch: a {args.tile}x{width} scene): peak {base_mib:.0f} MiB")
            for size in args.memory_sizes:
                scene = write_scene(folder / f"mem_{size}.tif", size)
                start = time.perf_counter()
                mib = peak_rss_mib(
                    ckpt, scene, folder / f"mem_{size}_map.tif", args.tile, args.memory_stride, args.batch
                )
                tiles = len(tile_starts(size, args.tile, args.memory_stride)) ** 2
                print(
                    f"memory {size}^2 ({tiles} tiles, {time.perf_counter() - start:.0f}s): peak {mib:.0f} MiB, "
                    f"+{mib - base_mib:.0f} MiB over the baseline; bound: one band of tile rows = "
                    f"{7 * args.tile * size * 4 / 2**20:.0f} MiB of float32 probabilities "
                    f"+ {3 * args.tile * size * 2 / 2**20:.0f} MiB read"
                )
                scene.unlink()
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
