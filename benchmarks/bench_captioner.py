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

The ``openai`` backend is measured at concurrency 1, 8 and 32 in the same run against
an OpenAI-compatible server: one given with ``--openai_url URL --openai_model NAME``,
or a vLLM server this script starts on 127.0.0.1 over the tiny causal LM when vLLM is
installed (``--openai auto``, the default; it says so and skips the case otherwise).
Every answer runs to ``--max_new_tokens`` tokens (``ignore_eos``).
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from aras400k.captioning import Captioner, TemplateBackend
from aras400k.captioning.backends.openai import OpenAIBackend
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def vllm_server(model_dir: Path, log: Path, start_timeout_s: float = 600.0) -> Iterator[str | None]:
    """Serve ``model_dir`` with vLLM on 127.0.0.1 under the name ``tiny``; yield its API root (``None`` if it died)."""
    port = _free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout_s
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(url + "/models", timeout=2):
                        break
                except OSError:
                    time.sleep(1)
            alive = server.poll() is None and time.monotonic() < deadline
            if not alive:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                print(f"the vLLM server did not start; skipping the openai case ({' | '.join(tail)})")
            yield url if alive else None
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def openai_rates(url: str, model: str, compositions, tokens: int, levels=(1, 8, 32)) -> dict[int, tuple[float, int]]:
    """Captions/s and retried requests of the openai backend at each concurrency (one batch size for all)."""
    rates = {}
    for concurrency in levels:
        backend = OpenAIBackend(
            model, [url], max_concurrency=concurrency, timeout_s=300, extra_body={"ignore_eos": True}
        )
        captioner = Captioner(
            "text", backend, captions_per_image=1, batch_size=max(levels), max_new_tokens=tokens, dedupe="off",
            progress=False,
        )  # fmt: skip
        captioner.caption(compositions=compositions[: max(levels)])  # warm up
        start = time.perf_counter()
        captioner.caption(compositions=compositions)
        rates[concurrency] = (len(compositions) / (time.perf_counter() - start), captioner.stats.retries)
        backend.close()
    return rates


def openai_case(
    args: argparse.Namespace, compositions, tmp_path: Path
) -> tuple[str, dict[int, tuple[float, int]]] | None:
    """Measure the openai backend on the given server, or on a vLLM server started here; ``None`` when skipped."""
    if args.openai_url:
        return f"{args.openai_url} ({args.openai_model})", openai_rates(
            args.openai_url, args.openai_model, compositions, args.max_new_tokens
        )
    if args.openai == "off":
        return None
    if importlib.util.find_spec("vllm") is None:
        print("vLLM is not installed: skipping the openai (OpenAI-compatible server) case; pip install vllm, or")
        print("give a running server with --openai_url http://host:8000/v1 --openai_model NAME")
        return None
    model_dir = build_tiny_causal_lm(tmp_path / "served-lm")
    with vllm_server(model_dir, tmp_path / "vllm.log") as url:
        if url is None:
            return None
        return "vLLM on 127.0.0.1 (tiny Qwen2)", openai_rates(url, "tiny", compositions, args.max_new_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="captions per transformers measurement")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    parser.add_argument("--template_samples", type=int, default=400, help="demo samples (x5 captions)")
    parser.add_argument("--openai", choices=["auto", "off"], default="auto", help="start vLLM when installed")
    parser.add_argument("--openai_url", default=None, help="measure this OpenAI-compatible server instead")
    parser.add_argument("--openai_model", default="tiny", help="model name the --openai_url server serves")
    parser.add_argument("--openai_samples", type=int, default=256, help="captions per concurrency level")
    parser.add_argument("--skip_transformers", action="store_true", help="only the template and openai cases")
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
        served = openai_case(
            args, (compositions * (args.openai_samples // len(compositions) + 1))[: args.openai_samples], tmp_path
        )
        models = (
            {}
            if args.skip_transformers
            else {"text": build_tiny_causal_lm(tmp_path / "lm"), "vision": build_tiny_vlm(tmp_path / "vlm")}
        )
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
    if served is not None:
        where, rates = served
        print()
        print(f"openai backend against {where}, {args.openai_samples} captions of {args.max_new_tokens} tokens")
        print("| concurrency | captions/s | ratio to concurrency 1 | requests retried |")
        print("|---|---|---|---|")
        for concurrency, (rate, retries) in rates.items():
            print(f"| {concurrency} | {rate:.1f} | {rate / rates[1][0]:.2f}x | {retries} |")


if __name__ == "__main__":
    main()
