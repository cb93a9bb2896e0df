"""Images/s of ``aras-data import`` on a release of realistic-entropy PNGs.

Three runs of :func:`aras400k.data.release.import_release` on the same release, in
one process, interleaved ``--repeats`` times (medians are reported):

- the old path: every image decoded and re-encoded as PNG, one process;
- image PNGs copied verbatim, one process;
- image PNGs copied verbatim, ``--workers`` processes (workers read, check and encode
  every sample down to its tar bytes; this process only appends them).

Each run also gives CPU time per image, of this process (with workers: what writing
costs, a small share of a core) and of all processes together. On a machine that other
jobs load, the wall-clock ratio measures the share of the cores the runs got; the CPU
time per image does not depend on it, and gives the ratio expected on idle cores.

Also printed: the limit of one process, reading and decoding the image and the colour
mask (what the import must still do) with nothing encoded or written, and the same
decoding split over ``--workers`` processes that send nothing back: how far the
machine itself scales at the moment, which bounds the import's ratio.

    python benchmarks/bench_import.py --images 2000 --size 256 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from aras400k.classes import index_to_colour
from aras400k.data.release import import_release, importer
from realistic import realistic_sample  # benchmarks/ is on the path when a script here runs


def build(root: Path, images: int, size: int) -> float:
    """Write a ``train`` release folder; return its mean image PNG size in KiB."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    for i in range(images):
        sample = realistic_sample(i, size)
        assert sample.mask is not None
        Image.fromarray(sample.image).save(root / "train" / "images" / f"p{i:06d}.png")
        Image.fromarray(index_to_colour(sample.mask)).save(root / "train" / "masks" / f"p{i:06d}.png")
    return float(np.mean([p.stat().st_size for p in (root / "train" / "images").glob("*.png")])) / 1024


def _children_cpu() -> float:
    """CPU seconds of this process's finished (joined) child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(root: Path, out: Path, workers: int, verbatim: bool) -> tuple[float, float, float]:
    """One import (the output folder is replaced): images/s, and CPU ms per image of this process and of all.

    The workers have ended (and are counted) when :func:`import_release` returns.
    """
    start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    if verbatim:
        report = import_release(root, out, workers=workers, progress=False, overwrite=True)
    else:
        with mock.patch.object(importer, "verbatim_png", lambda path: None):
            report = import_release(root, out, workers=workers, progress=False, overwrite=True)
    images = sum(report.written.values())
    main_ms = 1000.0 * (time.process_time() - cpu) / images
    all_ms = main_ms + 1000.0 * (_children_cpu() - children) / images
    return images / (time.perf_counter() - start), main_ms, all_ms


def _decode(paths: list[Path]) -> None:
    """Read and decode each image and its colour mask."""
    for path in paths:
        np.asarray(Image.open(path).convert("RGB"))
        np.asarray(Image.open(path.parent.parent / "masks" / path.name).convert("RGB"))


def decode_limit(root: Path, processes: int = 1) -> tuple[float, float]:
    """Images/s of reading and decoding each image and colour mask, nothing else, and CPU ms per image.

    With several processes each decodes its share (nothing is sent back): how far
    the machine itself scales with processes at the moment, for the import to be
    compared with.
    """
    paths = sorted((root / "train" / "images").glob("*.png"))
    start, cpu = time.perf_counter(), time.process_time() + _children_cpu()
    if processes == 1:
        _decode(paths)
    else:
        context = multiprocessing.get_context("fork")
        team = [context.Process(target=_decode, args=(paths[i::processes],)) for i in range(processes)]
        for process in team:
            process.start()
        for process in team:
            process.join()
    wall, used = time.perf_counter() - start, time.process_time() + _children_cpu() - cpu
    return len(paths) / wall, 1000.0 * used / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the release (the issue's 2,000)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; medians are printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "release", Path(tmp) / "out"
        kib = build(root, args.images, args.size)
        print(f"release: {args.images} images of {args.size} px, image PNGs {kib:.0f} KiB on average")
        names = (
            "re-encoded, 1 process",
            "verbatim, 1 process",
            f"verbatim, {args.workers} processes",
            "decode limit",
            f"decode limit, {args.workers} processes",
        )
        rates: dict[str, list[float]] = {name: [] for name in names}
        main_cpu: dict[str, list[float]] = {name: [] for name in names[:3]}
        all_cpu: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeats):
            for name, workers, verbatim in ((names[0], 1, False), (names[1], 1, True), (names[2], args.workers, True)):
                rate, main_ms, all_ms = run(root, out, workers, verbatim)
                rates[name].append(rate)
                main_cpu[name].append(main_ms)
                all_cpu[name].append(all_ms)
            for name, processes in ((names[3], 1), (names[4], args.workers)):
                rate, all_ms = decode_limit(root, processes)
                rates[name].append(rate)
                all_cpu[name].append(all_ms)
    med = {name: statistics.median(r) for name, r in rates.items()}
    cpu_main = {name: statistics.median(r) for name, r in main_cpu.items()}
    cpu_all = {name: statistics.median(r) for name, r in all_cpu.items()}
    for name in names:
        cpu = f", CPU ms/image: main {cpu_main[name]:.2f}, all {cpu_all[name]:.2f}" if name in cpu_main else ""
        cpu = cpu or f", CPU ms/image: all {cpu_all[name]:.2f}"
        print(f"{name:28s} {med[name]:8.1f} images/s{cpu}  (runs: {', '.join(f'{r:.1f}' for r in rates[name])})")
    print(f"verbatim / re-encoded (1 process): {med[names[1]] / med[names[0]]:.2f}x")
    print(f"{args.workers} processes / 1 (verbatim):     {med[names[2]] / med[names[1]]:.2f}x")
    machine = med[names[4]] / med[names[3]]
    print(f"{args.workers} processes / 1 (decode limit: how the machine scales now): {machine:.2f}x")
    print(f"verbatim 1 process / decode limit: {med[names[1]] / med[names[3]]:.2f}")
    # What the CPU time says the ratio is on idle cores (the wall ratio needs them idle):
    # the workers share the cores, and the writer alone must keep up.
    share = cpu_all[names[1]] / cpu_all[names[2]]
    bound = min(args.workers * share, cpu_all[names[1]] / max(cpu_main[names[2]], 1e-9))
    decoding = cpu_all[names[4]] / cpu_all[names[3]]
    print(
        f"CPU per image, {args.workers} processes / 1: import {1 / share:.3f} (writer {cpu_main[names[2]]:.2f} "
        f"ms/image), bare decoding {decoding:.3f}"
    )
    print(f"{args.workers} processes / 1 expected on {args.workers} idle cores (from CPU time): {bound:.2f}x")


if __name__ == "__main__":
    main()
