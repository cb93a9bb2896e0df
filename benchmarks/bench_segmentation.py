"""Training samples/s of ``SegmentationTask`` under the Lightning ``Trainer`` versus a plain PyTorch loop.

The baseline is the paper's published training-script style over the same smp model::

    model.train()
    for images, masks in loader:
        opt.zero_grad(); loss = ce(model(images), masks); loss.backward(); opt.step()

with AdamW (the task's default lr and weight decay) and cross-entropy (the task's
``ignore_index``). Both paths start from the same initial weights (one state dict,
copied), use the same batch size, image size, number of optimisation steps and torch
thread count, and read the same pre-built in-memory batches of demo scenes (already
float-normalised images and long masks, so data loading is not measured; the
DataModule has its own benchmark, ``bench_data.py``). The Lightning path keeps what
``SegmentationTask`` does on every step: the training-metric update (one confusion
matrix ``bincount``), the finite-loss check and ``self.log`` of the loss.

Trainer: CPU, 1 device, ``logger=False`` (or a ``CSVLogger`` with ``--logger csv``), no
checkpointing, progress bar, model summary, sanity check or validation.

Timing: ``--warmup`` steps run first and are not timed in either path; the clock then
covers the next ``--steps`` steps (for Lightning: from the end of the last warm-up
``on_train_batch_end`` to the end of the last step's, measured by a callback, so batch
fetching, hooks, the optimizer closure and logging are inside; the once-per-epoch
metric ``compute`` and Trainer start-up are not). The two paths alternate over
``--repeats`` rounds, a fresh model and optimiser each round. The headline is the
best round of each path (whole-window samples/s); the rate from the median single-step
time over all rounds is printed beside it, being the sturdier figure when other
processes share the CPU (each round line shows the 1-minute load average). Both paths
must end each round on the same loss, a check that they did the same work.

On a machine other jobs are loading, ``--interleave`` alternates step by step instead:
inside one ``Trainer.fit`` a callback runs one plain-loop step (on its own model,
optimiser and loader) after every Lightning step and keeps it out of the Lightning
step's clock, so both paths see the same load from second to second. A note is
printed when the load average shows other processes on the CPU during the run: with
two intra-op threads and one core taken by someone else, every parallel region waits
for the descheduled thread and a round can run 10x slower, whatever path it times.

    python benchmarks/bench_segmentation.py --arch unet --encoder resnet18 --size 64 --batch 16
    python benchmarks/bench_segmentation.py --interleave --threads 1   # on a shared machine

Prints both rates and their ratio (the figure that matters on a noisy machine); the
target is Lightning / plain >= 0.9.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import tempfile
import time
import warnings

import segmentation_models_pytorch as smp
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from aras400k.classes import IGNORE_INDEX
from aras400k.data.datamodules import IMAGENET_MEAN, IMAGENET_STD
from aras400k.data.demo import demo_sample
from aras400k.models.segmentation import SegmentationTask

NUM_CLASSES = 7
PLAIN, OURS = "plain PyTorch loop", "SegmentationTask + Trainer"


def build_batches(count: int, batch: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches of demo scenes: normalised float images ``(B, 3, H, W)`` and long masks ``(B, H, W)``."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    batches = []
    for b in range(count):
        samples = [demo_sample("train", b * batch + i, size) for i in range(batch)]
        images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]).float() / 255.0
        masks = torch.stack([torch.from_numpy(s.mask) for s in samples]).long()
        batches.append((((images - mean) / std).contiguous(), masks))
    return batches


class PlainLoop:
    """The published-script loop over its own copy of the smp model, one step per call."""

    def __init__(
        self, args: argparse.Namespace, init: dict[str, torch.Tensor], batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        self.model = smp.create_model(args.arch, encoder_name=args.encoder, encoder_weights=None, classes=NUM_CLASSES)
        self.model.load_state_dict(init)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.ce = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        self.loader = iter(DataLoader(batches, batch_size=None, shuffle=False))
        self.model.train()

    def step(self) -> torch.Tensor:
        """``opt.zero_grad(); loss = ce(model(images), masks); loss.backward(); opt.step()`` on the next batch."""
        images, masks = next(self.loader)
        self.opt.zero_grad()
        loss = self.ce(self.model(images), masks)
        loss.backward()
        self.opt.step()
        return loss


def plain_loop(
    args: argparse.Namespace, init: dict[str, torch.Tensor], batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[list[float], float]:
    """Seconds of every plain-loop step, and the last step's loss."""
    loop = PlainLoop(args, init, batches)
    durations, last = [], time.perf_counter()
    for _ in batches:
        loss = loop.step()
        now = time.perf_counter()
        durations.append(now - last)
        last = now
    return durations, loss.item()


class StepTimer(Callback):
    """Seconds of every Lightning training step; with ``plain``, one plain step after each, clocked apart.

    A Lightning step's time runs from the end of the previous one (after the plain step, if
    any) to this ``on_train_batch_end``, so every piece of the fit loop is counted once.
    """

    def __init__(self, plain: PlainLoop | None = None) -> None:
        self.plain = plain
        self.durations: list[float] = []
        self.plain_durations: list[float] = []
        self.loss = self.plain_loss = torch.tensor(float("nan"))
        self.last = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: SegmentationTask) -> None:
        """Start the clock (the first step, which includes this, is a warm-up step)."""
        self.last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: SegmentationTask, outputs: dict, batch: object, batch_idx: int
    ) -> None:
        """Clock the Lightning step; keep its loss tensor (read after timing); run a plain step if asked."""
        now = time.perf_counter()
        self.durations.append(now - self.last)
        self.loss = outputs["loss"]
        if self.plain is not None:
            with torch.enable_grad():
                self.plain_loss = self.plain.step().detach()
            self.last = time.perf_counter()
            self.plain_durations.append(self.last - now)
        else:
            self.last = now


def lightning_loop(
    args: argparse.Namespace,
    init: dict[str, torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    plain: PlainLoop | None = None,
) -> StepTimer:
    """Fit ``SegmentationTask`` for one step per batch; the timer holds step times and losses."""
    task = SegmentationTask(arch=args.arch, encoder=args.encoder, num_classes=NUM_CLASSES, loss="ce")
    task.model.load_state_dict(init)
    if (task.hparams["lr"], task.hparams["weight_decay"]) != (args.lr, args.weight_decay):
        raise RuntimeError("SegmentationTask's AdamW defaults changed; update lr/weight_decay here")
    loader = DataLoader([{"image": i, "mask": m} for i, m in batches], batch_size=None, shuffle=False)
    timer = StepTimer(plain)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=len(batches),
            max_epochs=1,
            logger=CSVLogger(tmp) if args.logger == "csv" else False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
            default_root_dir=tmp,
        )
        trainer.fit(task, train_dataloaders=loader)
    if trainer.global_step != len(batches) or len(timer.durations) != len(batches):
        raise RuntimeError(f"Lightning ran {trainer.global_step} steps, expected {len(batches)}")
    return timer


def run_round(
    args: argparse.Namespace, init: dict[str, torch.Tensor], batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, tuple[list[float], float]]:
    """One round of both paths: ``{path: (seconds of every step, last loss)}``."""
    if args.interleave:
        timer = lightning_loop(args, init, batches, PlainLoop(args, init, batches))
        return {PLAIN: (timer.plain_durations, float(timer.plain_loss)), OURS: (timer.durations, float(timer.loss))}
    plain = plain_loop(args, init, batches)
    timer = lightning_loop(args, init, batches)
    return {PLAIN: plain, OURS: (timer.durations, float(timer.loss))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed optimisation steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones (>= 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of both paths; the best is kept")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--logger", choices=("none", "csv"), default="none", help="Trainer logger (none: False)")
    parser.add_argument("--interleave", action="store_true", help="alternate step by step inside one fit per round")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    args.lr, args.weight_decay = 1e-3, 1e-4  # SegmentationTask's AdamW defaults
    warnings.filterwarnings("ignore", module="lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    print(f"building {args.warmup + args.steps} batches of {args.batch} demo scenes at {args.size} px ...")
    batches = build_batches(args.warmup + args.steps, args.batch, args.size)
    init = copy.deepcopy(SegmentationTask(arch=args.arch, encoder=args.encoder).model.state_dict())

    rounds: dict[str, list[float]] = {PLAIN: [], OURS: []}  # whole-window samples/s per round
    steps: dict[str, list[float]] = {PLAIN: [], OURS: []}  # every timed step's seconds
    loads = []
    for r in range(args.repeats):  # alternate so the machine's noise hits both paths
        torch.set_num_threads(args.threads)
        result = run_round(args, init, batches)
        if torch.get_num_threads() != args.threads:
            raise RuntimeError(f"the Trainer changed the torch thread count to {torch.get_num_threads()}")
        for name, (durations, _) in result.items():
            timed = durations[args.warmup :]
            rounds[name].append(args.steps * args.batch / sum(timed))
            steps[name].extend(timed)
        rates = ", ".join(f"{name} {values[-1]:.1f}" for name, values in rounds.items())
        # Same weights, data and optimiser: both paths must end on (nearly) the same loss.
        loss = " vs ".join(f"{value:.4f}" for _, value in result.values())
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}: {rates} samples/s; last loss {loss}; load {loads[-1]:.1f}/{os.cpu_count()} CPUs")

    if max(loads) > args.threads + 0.5:  # this run alone puts about `threads` runnable threads on the CPUs
        print(
            f"note: other processes were using the CPU (load up to {max(loads):.1f} on {os.cpu_count()} CPUs, "
            f"this run {args.threads}); {'' if args.interleave else 'use --interleave or '}rerun on a quiet machine"
        )
    logger = "CSVLogger" if args.logger == "csv" else "False"
    mode = "step-interleaved" if args.interleave else "alternating"
    print(f"best of {args.repeats} {mode} rounds of {args.steps} timed steps, {args.threads} threads, logger={logger}:")
    best = {name: max(values) for name, values in rounds.items()}
    by_step = {name: args.batch / statistics.median(values) for name, values in steps.items()}
    for name in (PLAIN, OURS):
        print(f"{name:28s} {best[name]:8.1f} samples/s   (median step: {by_step[name]:.1f} samples/s)")
    print(
        f"ratio (Lightning / plain), {args.arch}-{args.encoder}, {args.size} px, batch {args.batch}: "
        f"{best[OURS] / best[PLAIN]:.2f}x   (median steps: {by_step[OURS] / by_step[PLAIN]:.2f}x)"
    )


if __name__ == "__main__":
    main()
