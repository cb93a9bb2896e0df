"""Captions/s: batched versus one-at-a-time generation, and the template backend.

The paper's text-captioning script sends one prompt at a time to the model. This
benchmark measures the ``transformers`` backend on tiny random models built on the
spot (a Qwen2 causal LM for text mode, a Qwen2-VL for vision mode; nothing is
downloaded) at batch size 16 versus batch size 1, and the model-free ``template``
backend end to end over a demo shard set (decoding, captioning, sidecar writes).

    python benchmarks/bench_captioner.py --samples 64 --max_new_tokens 16 --threads 1

Every caption runs to exactly ``--max_new_tokens`` tokens (``min_new_tokens`` is set in
the tiny models' generation config) so both batch sizes do the same work. Prints the
rates and the ratios (the figures that matter on a noisy machine). The tiny models
say how much batching saves in per-call overhead, not what a 4B model does on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aras400k.captioning import Captioner, TemplateBackend
from aras400k.captioning.backends.transformers import TransformersBackend
from aras400k.captioning.tiny import build_tiny_causal_lm, build_tiny_vlm
from aras400k.data.demo import make_demo
from aras400k.data.scenes import generate_scene


def fixed_length(model_dir: Path, tokens: int) -> None:
    from transformers import GenerationConfig

    config = GenerationConfig.from_pretrained(model_dir)
    config.min_new_tokens = tokens
    config.save_pretrained(model_dir)


def transformers_rate(model_dir: Path, mode: str, batch_size: int, images, compositions, tokens: int) -> float:
    backend = TransformersBackend(str(model_dir), device="cpu")
    captioner = Captioner(
        mode, backend, captions_per_image=1, batch_size=batch_size, max_new_tokens=tokens, dedupe="off", progress=False
    )
    warm = min(batch_size, len(compositions))
    captioner.caption(images=images[:warm], compositions=compositions[:warm])  # load + warm up
    start = time.perf_counter()
    out = captioner.caption(images=images, compositions=compositions)
    elapsed = time.perf_counter() - start
    assert len(out) == len(compositions)
    return len(compositions) / elapsed


def template_rate(root: Path, samples: int) -> tuple[float, float]:
    make_demo(root, (samples, 0, 0), image_size=64, samples_per_shard=200, progress=False)
    captioner = Captioner("hybrid", TemplateBackend(), captions_per_image=5, progress=False)
    report = captioner.caption_shards(root / "train", root / "captions.jsonl")
    return report.captions_per_s, report.stats.captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="captions per transformers measurement")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    parser.add_argument("--template_samples", type=int, default=400, help="demo samples (x5 captions)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars between the figures

    rng = np.random.default_rng(0)
    scenes = [generate_scene(rng, 64) for _ in range(args.samples)]
    images = [image for image, _ in scenes]
    compositions = [
        {name: float(share) for name, share in zip(("tree", "crop", "water"), rng.dirichlet([1, 1, 1]), strict=True)}
        for _ in scenes
    ]
    rows: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = {"text": build_tiny_causal_lm(tmp_path / "lm"), "vision": build_tiny_vlm(tmp_path / "vlm")}
        for mode, model_dir in models.items():
            fixed_length(model_dir, args.max_new_tokens)
            batched = transformers_rate(model_dir, mode, args.batch_size, images, compositions, args.max_new_tokens)
            single = transformers_rate(model_dir, mode, 1, images, compositions, args.max_new_tokens)
            rows[mode] = (batched, single)
        template, count = template_rate(tmp_path / "demo", args.template_samples)

    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.samples} captions of {args.max_new_tokens} tokens"
    )
    print(f"| backend | mode | batch {args.batch_size} captions/s | batch 1 captions/s | ratio |")
    print("|---|---|---|---|---|")
    for mode, (batched, single) in rows.items():
        print(f"| transformers (tiny) | {mode} | {batched:.1f} | {single:.1f} | {batched / single:.2f}x |")
    print(f"| template (end to end, {count} captions) | hybrid | {template:.0f} | | |")
    print()
    for mode, (_, single) in rows.items():
        print(f"template / transformers {mode} one at a time: {template / single:.0f}x")
    minutes = 100_000 * 5 / template / 60
    print(f"template backend: 100k samples x 5 captions in about {minutes:.1f} min on this machine")


if __name__ == "__main__":
    main()
