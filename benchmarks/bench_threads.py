"""Training speed by torch thread count, on an idle machine and beside CPU-bound jobs.

Why ``aras400k.threads`` sizes torch's pool to the usable cores less the loader workers:
on a machine that is busy with other work, a pool that asks for every core spends its
time waiting for descheduled threads. This benchmark trains a U-Net (resnet18, 64 px,
batch 16, one loader worker, as ``configs/seg_unet.yaml``) for a fixed number of steps
with each thread count, first alone, then beside ``--load`` busy-loop processes that
it starts itself (and stops when each measurement ends), and prints steps/s and the
ratios against the one-thread run of the same condition::

    python benchmarks/bench_threads.py --steps 30 --load 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time

_WORKER = r"""
import sys, time, torch
import segmentation_models_pytorch as smp
torch.set_num_threads(int(sys.argv[1]))
steps = int(sys.argv[2])
torch.manual_seed(0)
model = smp.create_model("unet", encoder_name="resnet18", encoder_weights=None, classes=7)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 7, (16, 64, 64))
loss_fn = torch.nn.CrossEntropyLoss()
for _ in range(3):  # warm-up
    opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
start = time.perf_counter()
for _ in range(steps):
    opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
print(steps / (time.perf_counter() - start))
"""


def _busy(deadline: float) -> None:
    while time.monotonic() < deadline:
        pass


def measure(threads: int, steps: int, load: int, limit_s: float) -> float:
    """Steps/s of one training run with ``threads`` torch threads beside ``load`` busy processes."""
    deadline = time.monotonic() + limit_s
    hogs = [mp.Process(target=_busy, args=(deadline,), daemon=True) for _ in range(load)]
    for hog in hogs:
        hog.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ARAS_THREADS")}
        out = subprocess.run(
            [sys.executable, "-c", _WORKER, str(threads), str(steps)],
            capture_output=True, text=True, check=True, env=env, timeout=limit_s,
        )  # fmt: skip
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes for the loaded condition")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1..cores)")
    parser.add_argument("--limit_s", type=float, default=600.0, help="longest one measurement may take")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts = args.threads or list(range(1, cores + 1))
    print(f"{cores} usable cores; load average before: {os.getloadavg()[0]:.2f}; {args.steps} steps per run")
    print("| condition | threads | steps/s | vs 1 thread |")
    print("|---|---:|---:|---:|")
    for load in (0, args.load):
        rates = {n: measure(n, args.steps, load, args.limit_s) for n in counts}
        for n, rate in rates.items():
            condition = "idle" if load == 0 else f"{load} busy processes"
            print(f"| {condition} | {n} | {rate:.2f} | {rate / rates[counts[0]]:.2f}x |")


if __name__ == "__main__":
    main()
