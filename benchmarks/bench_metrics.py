"""Caption redundancy and composition statistics at the paper's scale, each against a plain baseline.

(a) ``CaptionRedundancy`` over 2,000,000 deterministic synthetic captions with about 28%
    repeats (Table 2's rate), against ``len(set(captions))`` on the same list: wall and
    CPU time, captions per second, and peak memory above the starting resident set.
    Each run of a variant is a fresh forked child holding the same caption list (so the
    set hashes strings that have not cached their hash yet); the child first does the
    same work on 1,000 other captions, to fault in the library code it runs, then
    resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5, then ``VmHWM``
    from ``/proc/self/status``), so the figure covers torch and numpy allocations that
    ``tracemalloc`` cannot see and is not masked by an earlier peak. Where the counter
    cannot be reset, ``ru_maxrss`` growth is printed instead, marked as a lower bound.
    The variants run ``--repeats`` rounds, interleaved in a rotating order, and the
    medians are compared. Also printed: what each keeps once done (the metric's hash
    state; the set's table, plus the unique strings it would own when fed batch by
    batch from shards). Targets (issue 17): the metric no slower than the set at no
    more than half its peak memory, and ``normalize='basic'`` within 1.5x of ``'none'``.
(b) Per-image class composition of 100,000 256x256 masks with
    ``aras400k.data.composition.class_counts_batch`` (one comparison per class over a
    chunk of masks, booleans summed as 64-bit word lanes) against a per-class loop
    (``(mask == c).sum()`` for each class) and the previous one-``bincount``-per-mask
    ``class_counts``, on the same masks. The masks stream in chunks drawn from a pool of
    pre-made masks (all at once would be 6.5 GB); only the counting is timed, the
    methods interleaved chunk by chunk, and their totals compared. Target: >= 5x the loop.

The machine's load average is printed with the results: other processes slow the
variants unevenly, so compare ratios from runs at similar load.

    python benchmarks/bench_metrics.py                     # full size, a few minutes
    python benchmarks/bench_metrics.py --captions 200000 --masks 5000   # quick check

Prints each variant and the ratios against the baselines.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import re
import resource
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from aras400k.classes import CLASS_NAMES, NUM_CLASSES
from aras400k.data.composition import class_counts_batch
from aras400k.metrics.captions import CaptionRedundancy

TIME_TARGET = 1.0  # metric 'none' time / set time, at most
MEMORY_TARGET = 0.5  # metric 'none' peak / set peak, at most
BASIC_TARGET = 1.5  # metric 'basic' time / metric 'none' time, at most
MASK_TARGET = 5.0  # per-class loop time / class_counts_batch time, at least

WORDS = {
    "tree": ("tree cover", "forest", "woodland"),
    "shrub": ("shrubland", "scrub"),
    "grass": ("grassland", "meadows", "pasture"),
    "crop": ("cropland", "farmland", "agricultural fields"),
    "built": ("built-up area", "settlements", "a small town"),
    "barren": ("bare ground", "rocky terrain"),
    "water": ("water", "a river", "a lake"),
}
TEMPLATES = (
    "The scene is dominated by {a} ({p:.1f}%), with {b} ({q:.1f}%) and some {c}.",
    "{A} covers {p:.1f}% of the patch, followed by {b} at {q:.1f}%.",
    "A satellite view of {a} and {b}, with {c} covering {q:.1f}% of the area.",
    "Mostly {a} ({p:.1f}%) interspersed with {b}; {c} makes up {q:.1f}%.",
)


def synthetic_captions(n: int, repeat: float = 0.265, seed: int = 0) -> list[str]:
    """``n`` captions, deterministic; a share ``repeat`` of them copies an earlier caption.

    Fresh captions also collide by chance now and then, so 26.5% copies give a
    redundancy of about 28.4% at two million.
    """
    rng = random.Random(seed)
    names = list(CLASS_NAMES)
    captions: list[str] = []
    for i in range(n):
        if i and rng.random() < repeat:
            captions.append(captions[rng.randrange(i)])
            continue
        a, b, c = (rng.choice(WORDS[k]) for k in rng.sample(names, 3))
        p = rng.uniform(30, 90)
        text = rng.choice(TEMPLATES).format(a=a, A=a.capitalize(), b=b, c=c, p=p, q=rng.uniform(1, 100 - p))
        captions.append(text)
    return captions


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else -1


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _measured(fn: Callable[[], tuple[int, int]], warm: Callable[[], object], out: mp.connection.Connection) -> None:
    """Child: run ``warm``, then ``fn``, and send (wall s, CPU s, peak MiB above start, exact?, ``fn``'s result).

    ``warm`` (the same work on a few captions) faults in the library code the child
    touches: a forked child shares the parent's pages but maps file-backed code pages
    afresh, and those would otherwise count as the variant's memory.
    """
    warm()
    gc.collect()
    exact = sys.platform.startswith("linux") and _reset_peak()
    start_rss = _status_kib("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.send((seconds, cpu, max(peak - start_rss, 0) / 1024, exact, result))


def run_in_child(
    fn: Callable[[], tuple[int, int]], warm: Callable[[], object]
) -> tuple[float, float, float, bool, tuple[int, int]]:
    """Run ``warm`` then ``fn`` in a forked child that shares the parent's caption list; return its measurements."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_measured, args=(fn, warm, child))
    process.start()
    result = parent.recv()
    process.join()
    return result


def bench_captions(n: int, batch: int, repeats: int) -> None:
    t0 = time.perf_counter()
    captions = synthetic_captions(n)
    print(f"(a) {n:,} synthetic captions generated in {time.perf_counter() - t0:.1f} s")

    def baseline(texts: list[str]) -> tuple[int, int]:
        unique = set(texts)
        return len(unique), sys.getsizeof(unique)

    def metric(normalize: str, texts: list[str]) -> tuple[int, int]:
        m = CaptionRedundancy(normalize=normalize)
        for i in range(0, len(texts), batch):
            m.update(texts[i : i + batch])
        unique = int(m.compute()["unique"])
        return unique, sum(t.numel() * t.element_size() for t in m.hashes)

    few = synthetic_captions(1000, seed=1)  # other strings: Python caches a string's hash in it
    for normalize in ("none", "basic"):  # once before forking too, so that the children share what it allocates
        metric(normalize, few)
    variants = {
        "len(set(captions))": (partial(baseline, captions), partial(baseline, few)),
        f"CaptionRedundancy(normalize='none'), batches of {batch:,}": (
            partial(metric, "none", captions),
            partial(metric, "none", few),
        ),
        f"CaptionRedundancy(normalize='basic'), batches of {batch:,}": (
            partial(metric, "basic", captions),
            partial(metric, "basic", few),
        ),
    }
    base_name, none_name, basic_name = variants
    # Each round runs every variant once, in a rotated order, each in a fresh forked child
    # (Python caches a string's hash in the string, so the set must not inherit hashed ones).
    runs: dict[str, list[tuple[float, float, float, bool, tuple[int, int]]]] = {name: [] for name in variants}
    names = list(variants)
    loads = []
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(run_in_child(*variants[name]))
        loads.append(os.getloadavg()[0])
    median = {name: [float(np.median([run[k] for run in rows])) for k in range(3)] for name, rows in runs.items()}
    unique = runs[base_name][0][4][0]
    exact = all(run[3] for rows in runs.values() for run in rows)
    label = "peak RSS above start" if exact else "ru_maxrss growth (lower bound)"
    print(f"    unique {unique:,} of {n:,}: redundancy {100 * (1 - unique / n):.2f}%")
    print(f"    median of {repeats} interleaved runs, each in a fresh child process")
    print(f"    {'variant':58s} {'wall':>7s} {'CPU':>7s} {'captions/s':>11s} {label:>22s} {'kept after':>11s}")
    for name, (wall, cpu, mib) in median.items():
        kept = runs[name][0][4][1]
        print(
            f"    {name:58s} {wall:6.2f}s {cpu:6.2f}s {n / wall / 1e6:8.2f} M/s {mib:18.1f} MiB {kept / 2**20:7.1f} MiB"
        )
    for name, rows in runs.items():
        counts = {run[4][0] for run in rows}
        if name == none_name and counts != {unique}:
            raise SystemExit(f"unique counts differ: metric {counts}, set {unique:,}")
    strings = sum(sys.getsizeof(s) for s in set(captions)) / 2**20
    print(f"    (a set fed batch by batch would also own its {unique:,} unique strings: {strings:.1f} MiB more)")
    ratios = {
        "time (metric 'none' / set)": (median[none_name][0] / median[base_name][0], TIME_TARGET),
        "CPU time (metric 'none' / set)": (median[none_name][1] / median[base_name][1], TIME_TARGET),
        "peak memory (metric 'none' / set)": (median[none_name][2] / max(median[base_name][2], 1e-9), MEMORY_TARGET),
        "time (metric 'basic' / metric 'none')": (median[basic_name][0] / median[none_name][0], BASIC_TARGET),
        "CPU time (metric 'basic' / metric 'none')": (median[basic_name][1] / median[none_name][1], BASIC_TARGET),
    }
    for name, (ratio, target) in ratios.items():
        print(f"    ratio {name:42s} {ratio:5.2f}x (target <= {target}x: {'met' if ratio <= target else 'NOT met'})")
    print(
        "    per-round ratio time (metric 'none' / set): "
        + " ".join(f"{a[0] / b[0]:.2f}" for a, b in zip(runs[none_name], runs[base_name], strict=True))
    )
    print(f"    load average {min(loads):.1f}-{max(loads):.1f} (1 min, after each round) on {os.cpu_count()} CPUs")


def mask_pool(pool: int, size: int, seed: int = 0) -> np.ndarray:
    """``pool`` blocky land-cover-like masks (8x8-pixel cells of skewed class draws, a few ignored pixels)."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(NUM_CLASSES, size=(pool, size // 8, size // 8), p=[0.3, 0.03, 0.2, 0.3, 0.07, 0.03, 0.07])
    masks = cells.repeat(8, axis=1).repeat(8, axis=2).astype(np.uint8)
    masks[:, :2, :2] = 255
    return masks


def per_class_loop(mask: np.ndarray) -> np.ndarray:
    """Baseline: one comparison and sum per class."""
    return np.array([(mask == c).sum() for c in range(NUM_CLASSES)], dtype=np.int64)


def per_mask_bincount(mask: np.ndarray) -> np.ndarray:
    """The previous ``class_counts``: one ``bincount`` of the mask's bytes."""
    return np.bincount(mask.ravel(), minlength=256)[:NUM_CLASSES].astype(np.int64)


def bench_masks(n: int, chunk: int, pool_size: int, size: int) -> None:
    pool = mask_pool(pool_size, size)
    rng = np.random.default_rng(1)
    loop_name = "per-class loop (mask == c).sum()"

    def per_mask(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        return lambda masks: np.stack([fn(mask) for mask in masks])

    fns = {
        "class_counts_batch (word lanes)": class_counts_batch,
        "bincount per mask (previous)": per_mask(per_mask_bincount),
        loop_name: per_mask(per_class_loop),
    }
    times = dict.fromkeys(fns, 0.0)
    totals = {name: np.zeros(NUM_CLASSES, dtype=np.int64) for name in fns}
    done = 0
    while done < n:
        masks = pool[rng.integers(0, pool_size, min(chunk, n - done))]  # a fresh (chunk, H, W) array
        for name, fn in fns.items():
            t0 = time.perf_counter()
            per_image = fn(masks)
            times[name] += time.perf_counter() - t0
            totals[name] += per_image.sum(0)
        done += len(masks)
    if any(not np.array_equal(totals[loop_name], total) for total in totals.values()):
        raise SystemExit(f"the methods disagree: {totals}")
    print(f"(b) per-image composition of {n:,} masks of {size}x{size} (chunks of {chunk}, pool of {pool_size})")
    for name, seconds in times.items():
        print(f"    {name:40s} {seconds:7.2f}s {1e6 * seconds / n:8.1f} us/mask")
    base = times[loop_name]
    for name in list(fns)[:2]:
        print(f"    ratio (per-class loop time / {name} time): {base / times[name]:.2f}x")
    ratio = base / times["class_counts_batch (word lanes)"]
    print(f"    target >= {MASK_TARGET}x: {'met' if ratio >= MASK_TARGET else 'NOT met'}")
    print(f"    load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=2_000_000, help="synthetic captions for (a); 0 skips it")
    parser.add_argument("--batch", type=int, default=10_000, help="captions per CaptionRedundancy.update")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each caption variant (median)")
    parser.add_argument("--masks", type=int, default=100_000, help="masks for (b); 0 skips it")
    parser.add_argument("--size", type=int, default=256, help="mask side in pixels")
    parser.add_argument("--chunk", type=int, default=1_000, help="masks materialised at once")
    parser.add_argument("--pool", type=int, default=64, help="distinct pre-made masks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.captions:
        bench_captions(args.captions, args.batch, args.repeats)
    if args.masks:
        bench_masks(args.masks, args.chunk, args.pool, args.size)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
