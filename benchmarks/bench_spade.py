"""SPADE GAN training-step time: eager vs channels_last vs torch.compile, measured in one run.

One step is what ``SPADEGAN.training_step`` does without Lightning around it: a
generator forward, a discriminator step (adversarial loss on both U-Net heads plus the
CutMix consistency term on a mixed batch) and a generator step (adversarial + feature
matching), then the EMA update. Defaults: 256 px, batch 2, generator 16...256 channels
from 8 px (SPADE hidden 32, z 32), U-Net discriminator 16...256 channels down to 4 px,
``oasis`` conditioning.

Variants: ``eager``; ``channels_last`` (networks and images in NHWC); ``compile``
(``Module.compile()`` on generator and discriminator); ``compile_g`` (the generator
only: with torch 2.14 compiling the discriminator fails, because its spectral-norm
parametrizations run several times before one backward and the compiled in-place update
of the power-iteration vectors breaks autograd's version check); ``compile_g+channels_last``.

Every variant runs in its own subprocess (same settings, same seed), so a variant that
fails or takes too long (``torch.compile`` needs a C++ compiler on CPU and can take
minutes) is reported, not fatal::

    python benchmarks/bench_spade.py                  # CPU, 1 warm-up + 3 timed steps each
    python benchmarks/bench_spade.py --device cuda --batch 8 --steps 20

The ratios are ``eager time / variant time`` (above 1: the variant is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

VARIANTS = ("eager", "channels_last", "compile", "compile_g", "compile_g+channels_last")
#: Why compiling the discriminator fails with torch 2.x (see the module docstring).
_SPECTRAL_NOTE = (
    "torch.compile + spectral-norm parametrization: the discriminator runs several times before one backward, "
    "and the compiled in-place power-iteration update of u/v trips autograd's version check (eager clones u/v)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--g_base", type=int, default=16, help="generator channels at full resolution")
    parser.add_argument("--g_max", type=int, default=256, help="generator channel cap")
    parser.add_argument("--spade_hidden", type=int, default=32)
    parser.add_argument("--z_dim", type=int, default=32)
    parser.add_argument("--d_base", type=int, default=16, help="discriminator channels of the first block")
    parser.add_argument("--d_max", type=int, default=256, help="discriminator channel cap")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens here)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds allowed per variant (subprocess)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set in the subprocesses
    return parser.parse_args(argv)


def build(args: argparse.Namespace, device: str, channels_last: bool, compiled: tuple[str, ...]):
    import torch

    from aras400k.models.spade import SPADEGAN

    torch.manual_seed(0)
    upsamplings = (args.size // 8).bit_length() - 1  # start at 8 px
    downsamplings = (args.size // 4).bit_length() - 1  # bottleneck at 4 px
    model = SPADEGAN(
        g_num_upsamplings=upsamplings, g_base_channels=args.g_base, g_max_channels=args.g_max,
        g_spade_hidden=args.spade_hidden, z_dim=args.z_dim, d_num_downsamplings=downsamplings,
        d_base_channels=args.d_base, d_max_channels=args.d_max, mix_warmup_steps=0, mix_probability=1.0,
    ).to(device)  # fmt: skip
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    for name in compiled:
        getattr(model, name).compile()  # in place: parameter names (and the EMA's view of them) unchanged
    opt_g, opt_d = model.configure_optimizers()
    real = (torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1).to(memory_format=memory_format)
    mask = torch.randint(0, 7, (args.batch, args.size, args.size), device=device)
    return model, opt_g, opt_d, real, mask


def train_step(model, opt_g, opt_d, real, mask) -> None:
    """One D step and one G step, as ``SPADEGAN.training_step`` runs them."""
    from aras400k.models.spade import one_hot_mask

    onehot = one_hot_mask(mask, model.num_classes)
    fake, extra = model.generate_for_training(real, onehot)
    d_terms = model.discriminator_losses(real, fake.detach(), onehot)
    opt_d.zero_grad(set_to_none=True)
    d_terms["d_loss"].backward()
    opt_d.step()
    model.discriminator.requires_grad_(False)
    g_terms = model.generator_losses(real, fake, onehot, extra)
    opt_g.zero_grad(set_to_none=True)
    g_terms["g_loss"].backward()
    opt_g.step()
    model.discriminator.requires_grad_(True)
    model.update_ema(len(real))
    model.iterations += 1


def run_variant(args: argparse.Namespace) -> dict:
    """Time one variant in this process; returns seconds per step and the first (compiling) step."""
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    variant = args.variant
    compiled = {"compile": ("generator", "discriminator"), "compile_g": ("generator",)}.get(variant.split("+")[0], ())
    model, opt_g, opt_d, real, mask = build(args, device, "channels_last" in variant, compiled)

    def synced_step() -> None:
        train_step(model, opt_g, opt_d, real, mask)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(args.warmup):
        synced_step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        synced_step()
    per_step = (time.perf_counter() - start) / args.steps
    return {"variant": variant, "seconds_per_step": per_step, "warmup_seconds": first, "device": device,
            "threads": torch.get_num_threads()}  # fmt: skip


def spawn(args: argparse.Namespace, variant: str, argv: list[str]) -> dict:
    """Run a variant in a subprocess; report failures and timeouts instead of raising."""
    command = [sys.executable, __file__, *argv, "--variant", variant]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"did not finish within {args.timeout:.0f} s (--timeout)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = errors[-1] if errors else f"exit status {done.returncode}"
        return {"variant": variant, "error": reason[:300]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.variant is not None:
        print(json.dumps(run_variant(args)), flush=True)
        return
    print(
        f"SPADE GAN training step at {args.size} px, batch {args.batch}: generator {args.g_base}..{args.g_max} ch "
        f"(SPADE hidden {args.spade_hidden}, z {args.z_dim}), U-Net discriminator {args.d_base}..{args.d_max} ch; "
        f"{args.warmup} warm-up + {args.steps} timed steps per variant, each in its own process",
        flush=True,
    )
    results = []
    for variant in args.variants:
        result = spawn(args, variant, argv)
        results.append(result)
        if "error" in result:
            note = f"\n      ({_SPECTRAL_NOTE})" if "inplace operation" in result["error"] else ""
            print(f"  {variant:<24} FAILED: {result['error']}{note}", flush=True)
        else:
            print(
                f"  {variant:<24} {result['seconds_per_step']:8.3f} s/step   "
                f"(first steps {result['warmup_seconds']:.1f} s; {result['device']}, {result['threads']} threads)",
                flush=True,
            )
    baseline = next((r for r in results if r["variant"] == "eager" and "error" not in r), None)
    if baseline is None:
        print("no eager baseline; no ratios")
        return
    print("speed-up over eager (eager s/step / variant s/step):")
    for result in results:
        if result["variant"] == "eager":
            continue
        if "error" in result:
            print(f"  {result['variant']:<24} n/a ({result['error'][:120]})")
        else:
            print(f"  {result['variant']:<24} {baseline['seconds_per_step'] / result['seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
