"""Mapping speed (tiles/s) and peak memory of ``aras-map`` by scene size.

Each of ``--sizes`` (default 2048², 4096² and 8192²) is a synthetic blocky 4-band
uint16 scene, mapped with a tiny segmenter (FPN / MobileNetV3-small-0.5, random
weights: neither speed nor memory depends on them) in a fresh subprocess, so that
every size starts from the same memory. The subprocess reports:

* tiles/s: the scene's tiles over the wall time of the prediction loop (reading,
  scaling, predicting, blending, writing, compressing), and the tile predictions
  made (tiles across the edges of the column strips are predicted by both strips);
* the ceiling: the tiles/s of ``aras-map``'s predictor alone (normalise, segmenter,
  softmax times the blending weights, copy to the host), timed around its calls
  within the same map, so under the same load; the ratio of the two is the share
  of the wall time the model takes (reading, scaling, blending, writing and the
  repeated predictions at strip edges take the rest);
* the tracemalloc peak while mapping: every numpy buffer (the accumulator, the
  windows read, the tiles, the labels, the quicklook) and Python object; torch's own
  allocations (the model's activations) and GDAL's are not traced;
* the peak resident memory while mapping (``VmHWM`` of ``/proc/self/status``;
  ``getrusage``'s maxrss would carry over the parent's peak through fork and exec).

A baseline subprocess loads the same model and runs only the predictor on full
batches of tiles already in memory: its peak resident memory is the floor of the
mapping's, and it times the predictor with and without tracemalloc (the cost of
tracing). The table gives each size's
figures and the increment over the baseline, then the ratio of the largest size's
peak memory to the smallest's (flat memory: ~1.0x). Scenes are written to a temporary
folder and deleted afterwards.

    python benchmarks/bench_map.py                      # 2048², 4096², 8192²
    python benchmarks/bench_map.py --skip_large         # without 8192² (the slow one on a CPU)

Timings change with the machine's load: the load average is printed before and after,
and each size's tiles/s is compared with the ceiling measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aras400k.mapping import DEFAULT_STRIP_WIDTH
from aras400k.models.segmentation import SegmentationTask

#: Sizes dropped by ``--skip_large``.
_LARGE = 4096

_FORWARD = """
import time
import numpy as np
import torch
from aras400k.data.transforms import Normalize
from aras400k.mapping import _Predictor, tile_weights
from aras400k.models.segmentation import load_segmentation_task

def forward_rate(args):
    # aras-map's own predictor (uint8 tiles -> normalise, segmenter, softmax x weights, to numpy)
    task = load_segmentation_task(args["ckpt"], map_location=args["device"])
    predict = _Predictor(task, Normalize(), torch.device(args["device"]), tile_weights(args["tile"]))
    tiles = np.random.default_rng(0).integers(0, 256, (args["batch"], args["tile"], args["tile"], 3), np.uint8)
    predict(tiles)  # warm-up
    start, done = time.perf_counter(), 0
    while done < args["forward_tiles"]:
        predict(tiles)
        done += args["batch"]
    return done / (time.perf_counter() - start)

def peak_rss_kb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""

_MAP_CHILD = (
    _FORWARD
    + """
import json, sys, tracemalloc
from aras400k import mapping
args = json.loads(sys.argv[1])
predicting = [0.0]
call = mapping._Predictor.__call__

def timed(self, tiles):  # the model's share of the same run: its ceiling, under the same load
    start = time.perf_counter()
    try:
        return call(self, tiles)
    finally:
        predicting[0] += time.perf_counter() - start

mapping._Predictor.__call__ = timed
tracemalloc.start()
report = mapping.map_scene(args["ckpt"], args["scene"], args["out"], tile_size=args["tile"], stride=args["stride"],
                           batch_size=args["batch"], strip_width=args["strip"], device=args["device"], quicklook=None,
                           overwrite=True, progress=False)
traced, rss_kb = tracemalloc.get_traced_memory()[1], peak_rss_kb()
tracemalloc.stop()
print(json.dumps({"tiles": report.tiles, "predicted": report.predicted, "seconds": report.seconds,
                  "predicting": predicting[0], "traced": traced, "rss_kb": rss_kb}))
"""
)

_BASELINE_CHILD = (
    _FORWARD
    + """
import json, sys, tracemalloc
args = json.loads(sys.argv[1])
untraced = forward_rate(args)
tracemalloc.start()
traced = forward_rate(args)
tracemalloc.stop()
print(json.dumps({"rss_kb": peak_rss_kb(), "forward": traced, "forward_untraced": untraced}))
"""
)


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


def run_child(code: str, **args: object) -> dict[str, float]:
    """Run ``code`` in a fresh Python with ``args`` as JSON and return the JSON line it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=os.environ, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192], help="sides of the scenes")
    parser.add_argument("--skip_large", action="store_true", help=f"skip sizes above {_LARGE} (slow on a CPU)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--stride", type=int, default=256, help="tile step (256: no overlap, the fewest tiles)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--strip", type=int, default=DEFAULT_STRIP_WIDTH, help="strip width in pixels")
    parser.add_argument("--forward_tiles", type=int, default=64, help="tiles the baseline predicts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    sizes = [s for s in args.sizes if not (args.skip_large and s > _LARGE)]
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} (1, 5 min), {os.cpu_count()} cores, {args.device}; "
          f"tile {args.tile}, stride {args.stride}, batch {args.batch}, strips of {args.strip} px")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_map_", dir="/tmp") as tmp:
        folder = Path(tmp)
        ckpt = str(write_checkpoint(folder / "seg.ckpt"))
        common = {"ckpt": ckpt, "tile": args.tile, "batch": args.batch, "device": args.device}
        common["forward_tiles"] = args.forward_tiles
        base = run_child(_BASELINE_CHILD, **common)
        base_mib = base["rss_kb"] / 1024
        print(
            f"baseline (model + aras-map's predictor on batches of {args.batch} tiles): peak RSS {base_mib:.0f} MiB; "
            f"{base['forward_untraced']:.2f} tiles/s, {base['forward']:.2f} under tracemalloc"
        )
        print(
            f"{'scene':>7} {'tiles':>6} {'predicted':>9} {'seconds':>8} {'tiles/s':>8} {'ceiling':>8} "
            f"{'ratio':>6} {'traced MiB':>10} {'RSS MiB':>8} {'RSS - base':>10}"
        )
        rows: dict[int, dict[str, float]] = {}
        for size in sizes:
            scene = write_scene(folder / f"scene_{size}.tif", size)
            run = run_child(
                _MAP_CHILD, scene=str(scene), out=str(folder / f"map_{size}.tif"), stride=args.stride,
                strip=args.strip, **common,
            )  # fmt: skip
            rows[size] = run
            rate, mib = run["tiles"] / run["seconds"], run["rss_kb"] / 1024
            ceiling = run["predicted"] / run["predicting"]
            print(
                f"{size:>6}² {run['tiles']:>6} {run['predicted']:>9} {run['seconds']:>8.1f} {rate:>8.2f} "
                f"{ceiling:>8.2f} {rate / ceiling:>6.2f} {run['traced'] / 2**20:>10.1f} "
                f"{mib:>8.0f} {mib - base_mib:>+10.0f}",
                flush=True,
            )
            scene.unlink()
            (folder / f"map_{size}.tif").unlink()
        if len(rows) > 1:
            small, large = rows[min(rows)], rows[max(rows)]
            print(
                f"peak memory {max(rows)}² vs {min(rows)}² ({(max(rows) / min(rows)) ** 2:.0f}x the pixels): "
                f"traced {large['traced'] / small['traced']:.2f}x, RSS {large['rss_kb'] / small['rss_kb']:.2f}x "
                f"({(large['rss_kb'] - small['rss_kb']) / 1024:+.0f} MiB)"
            )
    print(f"{time.strftime('%H:%M:%S')} load: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
