"""Per-stage throughput of a finished demo pipeline run, and the paper's scale on N GPUs derived from it.

Three parts, each printed as it is computed:

(a) Measured. Reads the demo run (``aras-pipeline --config configs/pipeline_demo.yaml``,
default ``runs/pipeline_demo``): each stage's wall time (``.pipeline/<stage>.json``,
which includes process start-up, validation and test passes) and its amount of work:
training images from the checkpoints (``global_step`` times the batch size; StyleGAN3's
``iterations`` buffer; SPADE's two optimiser steps per iteration; the ablation runs'
CSV logs), images from the shard manifests, captions from the stage record. Prints
throughput and per-unit cost on this CPU.

(b) Counted. Builds every network at the demo's and at the paper's settings from the
two sets of stage configs (the demo run's ``configs/*.yaml`` and those
``aras-pipeline --config configs/pipeline_paper.yaml --dry_run true`` writes) and
counts the FLOPs of the code that runs, with PyTorch's FLOP formulas
(``torch.utils.flop_counter``: matmuls, convolutions, attention; forward *and*
backward, including the double backward of R1 and the path-length penalty;
elementwise ops are not counted). Counting runs on the ``meta`` device, so a
256 px network costs no arithmetic; a demo-size count on real CPU tensors checks
that the meta count is the same. What is counted per sample:

* segmentation training: forward + cross-entropy + backward (one optimiser step's
  work; the optimiser update is elementwise); inference: forward;
* StyleGAN3 training: the module's own ``training_step`` (Gmain, lazy Greg every 4,
  Dmain, lazy R1 every 16) averaged over one full 16-iteration cycle, with the
  optimisers, EMA and ADA replaced by no-ops (ADA filters and resamples the
  3-channel images with depthwise convolutions, a few MFLOP); synthesis: the EMA
  generator's forward;
* SPADE training: ``generate_for_training``, ``discriminator_losses`` (with the
  CutMix consistency pass on the configured share of batches) and
  ``generator_losses`` plus both backwards; synthesis: the generator's forward;
* GAN validation: generator forward + segmenter forward per image (``val_fid``
  features of the samples; SPADE adds ``val_seg_miou`` on samples and real images);
* evaluation: segmenter features, Inception-v3 (299 px) and CLIP ViT-B/32 image
  features per image, CLIP text features (77 tokens) per caption.

Stage FLOPs / stage wall time gives the FLOP rate this CPU achieved in each demo stage,
and paper FLOPs / demo FLOPs the growth of each stage.

(c) Estimated. The paper-scale work comes from the paper's stage configs: 80,182 real
training images (the paper's section 5) and 10,029 each for val and test (the rest of
the 100,240, split evenly: an assumption); StyleGAN3 iterations = ``max_steps`` / 2.31
(2 optimiser steps + R1 every 16 + path length every 4), SPADE = ``max_steps`` / 2;
validation passes as Lightning schedules them from the trainer settings
(``val_check_interval``, ``check_val_every_n_epoch``, ``num_sanity_val_steps``); the
ablation's 36 runs over each configuration's training-set size; captions for every
captioning stage config (set x model x mode) times its ``captions_per_image``, the sets
``real``, ``real_val``, ``real_test`` being the real train, val and test splits; evaluation
over the eval config's datasets and the caption sidecars it lists. Hours on one H100 =
paper FLOPs / an assumed achieved rate, or the host-side floor when that is slower: PNG
decode on the loader cores (``num_workers`` per GPU) for training and eval, PNG encode in the one writer process
of synthesis and labelling, PNG encode of each captioning request's image on the
client; the per-sample PNG costs are measured here at 256 px. The rates are
parameters, printed with their sources:

* GAN code: calibrated on the official StyleGAN2 code's published speed (NVlabs
  stylegan3 ``docs/configs.md``, "Old StyleGAN2-ADA configurations", 256 px, 1 GPU,
  ``--cfg=stylegan2 --batch=16 --cbase=16384 --map-depth=2``: 12.53 s/kimg on an
  A100): that config's counted FLOPs per kimg / 12.53 s is the A100's achieved
  rate, times ``--h100_over_a100`` for the H100;
* segmentation networks, Inception and CLIP: ``--conv_mfu`` of the H100's dense peak
  in the stage's precision (bf16 where the config says ``bf16-mixed``, else TF32,
  which PyTorch's cuDNN convolutions use by default);
* captioning (no model runs here): a roofline of a served model, per request a
  compute-bound prefill (text + image tokens, vision encoder) and a decode that
  reads the weights and KV cache once per step shared by the requests in flight on a
  server: min(``batch_size``, ``openai.max_concurrency``) over the model's ``base_urls``,
  from the caption configs (the client sends a batch and waits for it), or
  ``--concurrency``; the models' shapes are from their published ``config.json`` files.

Totals for N GPUs assume near-linear data-parallel scaling of every stage (the
ablation's 36 runs and the caption servers are independent; GAN training with a
total batch of 32 scales worse beyond 8 GPUs).

    python benchmarks/estimate_scale.py --run_dir runs/pipeline_demo
    python benchmarks/estimate_scale.py --paper_configs /tmp/paper_dry/configs   # reuse a dry run

Prints the tables and the ratios (demo vs paper, ours vs the paper's own figure). Takes
about a minute on a 2-core CPU; nothing is trained.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from aras400k.pipeline.config import STAGE_NAMES

# -- published numbers (assumptions, printed with every run) -----------------------------------

#: NVIDIA H100 SXM5 datasheet, dense (no sparsity): bf16 989.4, TF32 494.7 TFLOP/s; HBM3 3.35 TB/s.
H100_BF16 = 989.4e12
H100_TF32 = 494.7e12
H100_HBM = 3.35e12
#: NVIDIA A100 datasheet, dense TF32 156 TFLOP/s (for the calibration's fraction of peak).
A100_TF32 = 156e12
#: NVlabs/stylegan3 docs/configs.md, "Old StyleGAN2-ADA configurations", 256^2, 1 GPU, A100.
OFFICIAL_S_PER_KIMG = 12.53
OFFICIAL_CONFIG = {"cfg": "stylegan2", "resolution": 256, "cbase": 16384, "cmax": 512, "map_depth": 2, "gamma": 0.8192}
OFFICIAL_BATCH = 16

#: The paper (section 6): one H100, 80 h GANs + synthesis, 20 h segmentation, 300 h captions, ~400 h;
#: "over 3,000 hours" with the ablation study; 1,000 images per hour; 2,001,200 captions (Table 1).
PAPER_HOURS = {"GAN training + synthesis": 80.0, "segmentation training + inference": 20.0, "captions": 300.0}
PAPER_TOTAL_H, PAPER_ALL_H, PAPER_IMAGES, PAPER_CAPTIONS = 400.0, 3000.0, 400_240, 2_001_200
#: Section 5: the fixed training partition; val/test split the rest (100,240 - 80,182) evenly (assumption).
PAPER_REAL_TRAIN, PAPER_REAL_VAL = 80_182, 10_029


@dataclass(frozen=True)
class LanguageModel:
    """Shapes of a served captioning model (from its config.json) for the roofline."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    #: Vision encoder: layers, width, MLP width, patches per 256 px image, image tokens in the LLM.
    vit_layers: int = 0
    vit_hidden: int = 0
    vit_intermediate: int = 0
    vit_patches: int = 0
    image_tokens: int = 0

    @property
    def layer_params(self) -> int:
        """Parameters of the transformer layers (attention and MLP projections)."""
        attn = self.hidden * self.q_heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        return self.layers * (attn + 3 * self.hidden * self.intermediate)

    @property
    def weight_bytes(self) -> float:
        """bf16 weights read once per decode step (layers + LM head)."""
        return 2.0 * (self.layer_params + self.hidden * self.vocab)

    @property
    def kv_bytes_per_token(self) -> float:
        """bf16 keys and values of one token over all layers."""
        return 2.0 * 2 * self.layers * self.kv_heads * self.head_dim

    def vision_flops(self) -> float:
        """Vision encoder forward on one 256 px image (linear layers + attention)."""
        if not self.vit_layers:
            return 0.0
        linear = 2.0 * self.vit_layers * (4 * self.vit_hidden**2 + 2 * self.vit_hidden * self.vit_intermediate)
        attention = 4.0 * self.vit_layers * self.vit_patches * self.vit_hidden
        return self.vit_patches * (linear + attention)


#: Qwen/Qwen3-4B, google/gemma-3-4b-it (SigLIP at 896 px: 64 x 64 patches -> 256 tokens) and
#: Qwen/Qwen3-VL-8B-Instruct (16 px patches, 2x2 merge: 256 px -> 256 patches -> 64 tokens).
MODELS = {
    "qwen3-4b": LanguageModel("Qwen3-4B", 36, 2560, 9728, 32, 8, 128, 151_936),
    "gemma3-4b": LanguageModel("Gemma3-4B", 34, 2560, 10240, 8, 4, 256, 262_144, 27, 1152, 4304, 4096, 256),
    "qwen3-vl-8b": LanguageModel("Qwen3-VL-8B", 36, 4096, 12288, 32, 8, 128, 151_936, 27, 1152, 4304, 256, 64),
}


# -- FLOP counting ------------------------------------------------------------------------------


class FlopCount(TorchDispatchMode):
    """Sum of ``torch.utils.flop_counter``'s formulas over every op run inside (forward and backward).

    ``FlopCounterMode`` itself tracks modules with hooks that ``torch.autograd.grad``
    (R1, path length) does not support, so this mode keeps only the sum.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count(fn: Callable[[], object]) -> float:
    """FLOPs of one call of ``fn``."""
    with FlopCount() as counter:
        fn()
    return float(counter.flops)


class _NoAugment(nn.Module):
    """Stands in for ADA / the joint flips while counting: identity, no statistics."""

    def forward(self, x: torch.Tensor, *more: torch.Tensor) -> Any:
        return (x, *more) if more else x

    def accumulate(self, *args: object) -> None:
        pass

    def adjust(self, *args: object) -> None:
        pass


def _stub_gan(module: Any) -> None:
    """Make a GAN LightningModule's training step runnable without a Trainer.

    ``optimizers()`` returns the names ``"G"``/``"D"``; ``toggled_optimizer`` freezes the
    other network (as Lightning does); ``_optimise`` is a plain backward (no step: Adam is
    elementwise); EMA, ADA and logging are no-ops. The forward/backward work is the module's.
    """
    nets = {"G": module.generator, "D": module.discriminator}

    @contextlib.contextmanager
    def toggled(name: str) -> Iterator[None]:
        frozen = [p for key, net in nets.items() if key != name for p in net.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def optimise(loss: torch.Tensor, net: nn.Module, optimizer: object, name: str) -> bool:
        net.zero_grad(set_to_none=True)
        loss.backward()
        return True

    module.toggled_optimizer = toggled
    module.optimizers = lambda: ["G", "D"]
    module._optimise = optimise
    module._log_training = lambda *args, **kwargs: None
    module.update_ema = lambda *args, **kwargs: None
    module.augment = _NoAugment()


def seg_flops(init_args: dict[str, Any], size: int, device: str) -> tuple[float, float]:
    """(forward, training step) FLOPs per sample of a ``SegmentationTask``."""
    from aras400k.models.segmentation import SegmentationTask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = SegmentationTask(**init_args).to(device)
    images = torch.randn(2, 3, size, size, device=device)
    masks = torch.randint(0, 7, (2, size, size), device=device)

    def forward() -> None:
        with torch.no_grad():
            task(images)

    def train() -> None:
        task.criterion(task(images), masks).backward()

    task.train()
    return count(forward) / 2, count(train) / 2


def stylegan_flops(init_args: dict[str, Any], batch: int, device: str) -> tuple[float, float]:
    """(training per image, synthesis per image) FLOPs of ``StyleGAN3`` over one lazy-regularisation cycle."""
    from aras400k.models.stylegan3 import StyleGAN3
    from aras400k.models.stylegan3 import module as sg_module

    module = StyleGAN3(**init_args).to(device)
    module.iterations = torch.zeros((), dtype=torch.long)  # on the CPU: the schedules read it
    module.train()
    _stub_gan(module)
    res = int(module.hparams["resolution"])
    real = torch.randn(batch, 3, res, res, device=device)
    cycle = math.lcm(int(module.hparams["r1_interval"]), int(getattr(sg_module, "_PL_INTERVAL", 4)))

    def iterations() -> None:
        for i in range(cycle):
            module.training_step({"image": real}, i)

    train = count(iterations) / (cycle * batch)
    z = torch.randn(1, int(module.hparams["z_dim"]), device=device)
    return train, count(lambda: module.generate(z=z))


def spade_flops(init_args: dict[str, Any], batch: int, size: int, device: str) -> tuple[float, float]:
    """(training per image, synthesis per image) FLOPs of ``SPADEGAN``, past the CutMix warm-up."""
    from aras400k.models.spade.module import SPADEGAN

    kwargs = dict(init_args, segmenter_ckpt=None)  # the frozen val segmenter is counted with val_fid
    module = SPADEGAN(**kwargs).to(device)
    module.train()
    _stub_gan(module)
    module.iterations = torch.tensor(10**9)  # past the CutMix warm-up; on the CPU: the schedules read it
    classes = int(module.hparams["num_classes"])
    real = torch.randn(batch, 3, size, size, device=device)
    onehot = nn.functional.one_hot(torch.randint(0, classes, (batch, size, size), device=device), classes)
    onehot = onehot.permute(0, 3, 1, 2).float()

    def iteration() -> None:  # SPADEGAN.training_step without the mask check (.item() on meta)
        fake, extra = module.generate_for_training(real, onehot)
        d_terms = module.discriminator_losses(real, fake.detach(), onehot)
        module._optimise(d_terms["d_loss"], module.discriminator, "D", "D")
        with module.toggled_optimizer("G"):
            g_terms = module.generator_losses(real, fake, onehot, extra)
            module._optimise(g_terms["g_loss"], module.generator, "G", "G")

    share = float(init_args.get("mix_probability", 0.0)) if init_args.get("mix_mode", "none") != "none" else 0.0
    per_iteration = {}
    for p in (0.0, 1.0):
        module.hparams["mix_probability"] = p
        per_iteration[p] = count(iteration) / batch
    module.hparams["mix_probability"] = share
    train = (1 - share) * per_iteration[0.0] + share * per_iteration[1.0]
    with torch.no_grad():
        gen = count(lambda: module.generator(onehot[:1]))
    return train, gen


def eval_net_flops(device: str) -> dict[str, float]:
    """Per-image Inception-v3 (299 px) and CLIP ViT-B/32 image features; per-caption CLIP text (77 tokens)."""
    from torchvision.models import inception_v3
    from transformers import CLIPConfig, CLIPModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inception = inception_v3(weights=None, aux_logits=False, init_weights=False).eval().to(device)
        clip = CLIPModel(CLIPConfig()).eval().to(device)  # the defaults are ViT-B/32
    pixels = torch.randn(1, 3, 224, 224, device=device)
    tokens = torch.zeros(1, 77, dtype=torch.long, device=device)
    with torch.no_grad():
        return {
            "inception": count(lambda: inception(torch.randn(1, 3, 299, 299, device=device))),
            "clip_image": count(lambda: clip.get_image_features(pixel_values=pixels)),
            "clip_text": count(lambda: clip.get_text_features(input_ids=tokens)),
        }


# -- the two runs' work -------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return yaml.safe_load(fh) or {}


def init_args(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config["model"]["init_args"])


def manifest_count(path: Path) -> int:
    return int(json.loads((path / "manifest.json").read_text())["num_samples"])


def global_step(ckpt: Path) -> tuple[int, dict[str, Any]]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return int(state["global_step"]), state


def paper_configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The paper's merged stage configs, by stage config name (from a dry run of the paper pipeline unless given)."""
    if args.paper_configs:
        folder = Path(args.paper_configs)
        if not (folder / "stylegan3.yaml").is_file():
            sys.exit(f"--paper_configs {folder}: no stylegan3.yaml there (give run_dir/configs of a dry run)")
        return {p.stem: load_yaml(p) for p in folder.glob("*.yaml")}
    exe = shutil.which("aras-pipeline")
    if exe is None:
        sys.exit("aras-pipeline is not on PATH: install the package (pip install -e .) or pass --paper_configs")
    with tempfile.TemporaryDirectory(prefix="aras_paper_dry_") as run_dir:
        cmd = [exe, "--config", args.paper_config, "--dry_run", "true", "--run_dir", run_dir]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return {p.stem: load_yaml(p) for p in (Path(run_dir) / "configs").glob("*.yaml")}


def check_run(run_dir: Path) -> None:
    needed = [
        ".pipeline",
        "configs",
        "segmenter/checkpoints/last.ckpt",
        "stylegan3/checkpoints/last.ckpt",
        "spade/checkpoints/last.ckpt",
        "ablate/runs",
    ]
    missing = [n for n in needed if not (run_dir / n).exists()]
    records = list((run_dir / ".pipeline").glob("*.json")) if (run_dir / ".pipeline").is_dir() else []
    if missing or len(records) < 10:
        sys.exit(
            f"{run_dir} is not a finished demo pipeline run (missing: {', '.join(missing) or 'stage records'}); "
            "make one with `aras-pipeline --config configs/pipeline_demo.yaml` (about 10 minutes on 2 cores) "
            "or pass --run_dir"
        )


# -- host-side floor ----------------------------------------------------------------------------


def host_costs(size: int, samples: int) -> dict[str, float]:
    """Seconds per sample on one core to PNG-encode / decode an image and a mask at ``size`` px (best of 2 passes)."""
    from aras400k.data.demo import demo_sample
    from aras400k.data.shards import decode_image, decode_mask, encode_png

    items = [demo_sample("train", i, size) for i in range(samples)]
    images = [encode_png(s.image) for s in items]
    masks = [encode_png(s.mask) for s in items]
    jobs: dict[str, Callable[[int], object]] = {
        "encode_image": lambda i: encode_png(items[i].image),
        "encode_mask": lambda i: encode_png(items[i].mask),
        "decode_image": lambda i: decode_image(images[i]),
        "decode_mask": lambda i: decode_mask(masks[i]),
    }
    costs = {}
    for name, job in jobs.items():
        best = math.inf
        for _ in range(2):
            start = time.perf_counter()
            for i in range(samples):
                job(i)
            best = min(best, (time.perf_counter() - start) / samples)
        costs[name] = best
    return costs


# -- captioning roofline --------------------------------------------------------------------------


def prompt_tokens(mode: str) -> int:
    """Text tokens of one request: the library's prompts with a five-class composition, ~4 characters a token."""
    from aras400k.captioning.prompts import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PROMPTS

    composition = "grass 41.2%, crop 30.5%, tree 15.1%, built 9.0%, water 4.2%"
    user = DEFAULT_USER_PROMPTS[mode].replace("{composition}", composition)
    template = 20  # chat-template tokens (role markers, image delimiters)
    return math.ceil((len(DEFAULT_SYSTEM_PROMPT) + len(user)) / 4) + template


def caption_seconds(model: LanguageModel, mode: str, args: argparse.Namespace, concurrency: float) -> float:
    """GPU-seconds per caption on one H100 serving ``concurrency`` requests at once."""
    image = mode != "text"
    tokens_in = prompt_tokens(mode) + (model.image_tokens if image else 0)
    prefill = 2.0 * model.layer_params * tokens_in + 2.0 * model.hidden * model.vocab
    prefill += model.vision_flops() if image else 0.0
    prefill_s = prefill / (H100_BF16 * args.llm_mfu)
    context = tokens_in + args.out_tokens / 2
    step_bytes = model.weight_bytes + concurrency * context * model.kv_bytes_per_token
    step_flops = concurrency * 2.0 * (model.layer_params + model.hidden * model.vocab)
    step_s = max(step_bytes / (H100_HBM * args.hbm_eff), step_flops / (H100_BF16 * args.llm_mfu))
    return prefill_s + args.out_tokens * step_s / concurrency


# -- the stages: demo work, paper work, FLOPs -------------------------------------------------------

STAGES = STAGE_NAMES  # the pipeline's stages, in run order


@dataclass
class Stage:
    """One pipeline stage: what it did in the demo run and what it does at the paper's scale."""

    name: str
    unit: str = ""  # what ``work`` counts: training images, images, captions, samples
    seconds: float = 0.0  # demo wall time
    work: float = 0.0  # demo units done
    demo_flops: float = 0.0
    paper_work: float = 0.0
    paper_flops: float = 0.0
    rate: float = 0.0  # assumed achieved H100 FLOP/s
    host_s: float = 0.0  # host-side floor at the paper's scale (one GPU's share of cores)
    gpu_hours: float = 0.0
    bound: str = ""

    @property
    def demo_rate(self) -> float:
        """FLOP/s this CPU achieved over the stage's wall time."""
        return self.demo_flops / self.seconds if self.demo_flops else 0.0


@dataclass
class Costs:
    """FLOPs per sample of every network, at one setting (demo or paper)."""

    res: int
    seg_fwd: float
    seg_train: float
    sg_train: float
    sg_gen: float
    spade_train: float
    spade_gen: float
    #: Per ablation architecture: (forward, training step).
    archs: dict[str, tuple[float, float]]


def count_costs(stage_cfgs: dict[str, dict[str, Any]], device: str = "meta") -> Costs:
    """Count every network's FLOPs at the settings of one set of stage configs."""
    res = int(stage_cfgs["stylegan3"]["model"]["init_args"]["resolution"])
    seg_fwd, seg_train = seg_flops(init_args(stage_cfgs["segmenter"]), res, device)
    sg = stage_cfgs["stylegan3"]
    sg_train, sg_gen = stylegan_flops(init_args(sg), int(sg["data"]["init_args"]["batch_size"]), device)
    sp = stage_cfgs["spade"]
    spade_train, spade_gen = spade_flops(init_args(sp), int(sp["data"]["init_args"]["batch_size"]), res, device)
    ab = stage_cfgs["ablate"]
    common = {k: ab[k] for k in ("encoder", "encoder_weights", "loss", "lr", "weight_decay")}
    archs = {arch: seg_flops(dict(common, arch=arch), res, device) for arch in ab["archs"]}
    return Costs(res, seg_fwd, seg_train, sg_train, sg_gen, spade_train, spade_gen, archs)


def last_train_step(metrics_csv: Path) -> int:
    """Last logged training step of a Lightning CSV log (rows with a ``train_loss_step``)."""
    lines = metrics_csv.read_text().splitlines()
    header = lines[0].split(",")
    step, loss = header.index("step"), header.index("train_loss_step")
    return max(int(r.split(",")[step]) for r in lines[1:] if r.split(",")[loss])


def validations(log_dir: Path) -> int:
    """Validation passes a GAN run logged (rows with a ``val_fid``) over its ``version_*`` folders."""
    count = 0
    for metrics in log_dir.glob("version_*/metrics.csv"):
        with metrics.open() as fh:
            count += sum(1 for row in csv.DictReader(fh) if row.get("val_fid"))
    return count


def demo_stages(run_dir: Path, cfg: dict[str, dict[str, Any]], costs: Costs) -> dict[str, Stage]:
    """Wall time, work and FLOPs of every stage of the demo run."""
    records = {name: json.loads((run_dir / ".pipeline" / f"{name}.json").read_text()) for name in STAGES}
    st = {name: Stage(name, seconds=float(records[name]["seconds"])) for name in STAGES}
    data = run_dir / "data"
    n_train, n_val, n_test = (manifest_count(data / "real" / split) for split in ("train", "val", "test"))
    n_uncond, n_cond = manifest_count(data / "synth_uncond"), manifest_count(data / "synth_cond")
    c = costs

    st["data"].unit, st["data"].work = "samples", n_train + n_val + n_test

    seg_steps, _ = global_step(run_dir / "segmenter/checkpoints/last.ckpt")
    seg_images = seg_steps * int(cfg["segmenter"]["data"]["init_args"]["batch_size"])
    epochs = int(cfg["segmenter"]["trainer"]["max_epochs"])
    st["segmenter"].unit, st["segmenter"].work = "training images", seg_images
    st["segmenter"].demo_flops = seg_images * c.seg_train + (epochs * n_val + n_test) * c.seg_fwd

    _, sg_state = global_step(run_dir / "stylegan3/checkpoints/last.ckpt")
    sg_images = int(sg_state["state_dict"]["iterations"]) * int(cfg["stylegan3"]["data"]["init_args"]["batch_size"])
    st["stylegan3"].unit, st["stylegan3"].work = "training images", sg_images
    sg_batch = int(cfg["stylegan3"]["data"]["init_args"]["batch_size"])
    sg_val_images = validations(run_dir / "stylegan3/logs") * int(cfg["stylegan3"]["trainer"]["limit_val_batches"])
    st["stylegan3"].demo_flops = sg_images * c.sg_train + sg_val_images * sg_batch * (c.sg_gen + c.seg_fwd)

    sp = cfg["spade"]
    spade_steps, _ = global_step(run_dir / "spade/checkpoints/last.ckpt")
    spade_iterations = spade_steps // 2  # one D and one G optimiser step per iteration
    spade_batch = int(sp["data"]["init_args"]["batch_size"])
    val_images = validations(run_dir / "spade/logs") * int(sp["trainer"]["limit_val_batches"]) * spade_batch
    st["spade"].unit, st["spade"].work = "training images", spade_iterations * spade_batch
    st["spade"].demo_flops = spade_iterations * spade_batch * c.spade_train + val_images * (c.spade_gen + 3 * c.seg_fwd)

    for name, n, per_image in (
        ("synth_uncond", n_uncond, c.sg_gen),
        ("synth_cond", n_cond, c.spade_gen),
        ("label", n_uncond, c.seg_fwd),
    ):
        st[name].unit, st[name].work, st[name].demo_flops = "images", n, n * per_image
    st["captions"].unit, st["captions"].work = "captions", sum(records["captions"]["work"].values())
    most = cfg["eval"].get("max_samples") or math.inf
    eval_samples = sum(min(most, n) for n in (n_train, n_uncond, n_cond))
    st["eval"].unit, st["eval"].work, st["eval"].demo_flops = "samples", eval_samples, eval_samples * c.seg_fwd

    ab = cfg["ablate"]
    runs = sorted((run_dir / "ablate/runs").glob("*/*/logs/metrics.csv"))
    st["ablate"].unit = "training images"
    for metrics in runs:
        arch = metrics.parent.parent.name
        images = (last_train_step(metrics) + 1) * int(ab["batch_size"])
        fwd, train = c.archs[arch]
        st["ablate"].work += images
        st["ablate"].demo_flops += images * train + (n_val * int(ab["max_epochs"]) + n_test) * fwd
    return st


def val_batches(trainer: dict[str, Any], iterations: int, batches_per_epoch: int) -> tuple[int, int]:
    """(validation passes, validation batches incl. the sanity check) of a GAN run, as Lightning schedules them.

    An integer ``val_check_interval`` counts training batches (one per GAN iteration): across
    epochs when ``check_val_every_n_epoch`` is null, else within each epoch; otherwise one pass
    at the end of every ``check_val_every_n_epoch``-th epoch.
    """
    interval = trainer.get("val_check_interval", 1.0)
    every = trainer.get("check_val_every_n_epoch", 1)
    if isinstance(interval, int) and every is None:
        passes = iterations // interval
    elif isinstance(interval, int):
        if interval > batches_per_epoch:
            sys.exit(f"val_check_interval {interval} exceeds the {batches_per_epoch} batches of an epoch")
        passes = iterations // batches_per_epoch // every * (batches_per_epoch // interval)
    else:
        passes = iterations // batches_per_epoch // every * round(1 / float(interval))
    sanity = int(trainer.get("num_sanity_val_steps", 2))
    return passes, passes * int(trainer["limit_val_batches"]) + sanity


def requests_per_server(config: dict[str, Any]) -> float:
    """Requests a caption stage keeps in flight per server.

    The client sends ``batch_size`` requests at a time on ``openai.max_concurrency`` threads
    (over all ``base_urls``, round-robin) and waits for the whole batch.
    """
    openai = config["openai"]
    return min(int(config["batch_size"]), int(openai["max_concurrency"])) / len(openai["base_urls"])


def paper_stages(
    st: dict[str, Stage],
    pcfg: dict[str, dict[str, Any]],
    c: Costs,
    evalnets: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Fill in each stage's paper-scale work and FLOPs; returns the counts the report quotes."""
    train, val = PAPER_REAL_TRAIN, PAPER_REAL_VAL
    n_uncond = int(pcfg["synth_uncond"]["n"])
    n_cond = train * int(pcfg["synth_cond"]["per_mask"])
    st["data"].paper_work = train + 2 * val

    epochs = int(pcfg["segmenter"]["trainer"]["max_epochs"])
    st["segmenter"].paper_work = epochs * train
    st["segmenter"].paper_flops = epochs * train * c.seg_train + (epochs * val + val) * c.seg_fwd

    sg = pcfg["stylegan3"]
    sg_batch = int(sg["data"]["init_args"]["batch_size"])
    sg_iterations = round(int(sg["trainer"]["max_steps"]) / 2.31)  # 2 + 1/16 + 1/4 optimiser steps per iteration
    sg_vals, sg_val_batches = val_batches(sg["trainer"], sg_iterations, math.ceil(train / sg_batch))
    sg_val_images = sg_val_batches * sg_batch
    st["stylegan3"].paper_work = sg_iterations * sg_batch
    st["stylegan3"].paper_flops = sg_iterations * sg_batch * c.sg_train + sg_val_images * (c.sg_gen + c.seg_fwd)

    sp = pcfg["spade"]
    sp_batch = int(sp["data"]["init_args"]["batch_size"])
    sp_iterations = int(sp["trainer"]["max_steps"]) // 2
    sp_vals, sp_val_batches = val_batches(sp["trainer"], sp_iterations, math.ceil(train / sp_batch))
    sp_val_images = sp_val_batches * sp_batch
    st["spade"].paper_work = sp_iterations * sp_batch
    st["spade"].paper_flops = sp_iterations * sp_batch * c.spade_train + sp_val_images * (c.spade_gen + 3 * c.seg_fwd)

    for name, n, per_image in (
        ("synth_uncond", n_uncond, c.sg_gen),
        ("synth_cond", n_cond, c.spade_gen),
        ("label", n_uncond, c.seg_fwd),
    ):
        st[name].paper_work, st[name].paper_flops = n, n * per_image

    # captions as configured: one stage config per set x (model, mode), each with its captions_per_image;
    # the set names map to shard sets as RunLayout.caption_input does (real = the real train split)
    set_size = {"real": train, "real_val": val, "real_test": val, "synth_uncond": n_uncond, "synth_cond": n_cond}
    jobs: list[tuple[str, str, str, int]] = []  # (set, model, mode, captions)
    in_flight: dict[str, set[float]] = {}  # per model: requests in flight per server
    for name, config in sorted(pcfg.items()):
        if name.startswith("captions."):
            _, set_name, mode, model = name.split(".")
            jobs.append((set_name, model, mode, set_size[set_name] * int(config["captions_per_image"])))
            in_flight.setdefault(model, set()).add(requests_per_server(config))
    if any(len(values) > 1 for values in in_flight.values()):
        sys.exit(f"caption configs of one model differ in requests per server: {in_flight}")
    captions = sum(n for *_, n in jobs)
    st["captions"].paper_work = captions

    # evaluation: the eval config's datasets (every sample: max_samples null) and their caption sidecars
    eval_sets = {d["name"]: d for d in pcfg["eval"]["datasets"]}
    eval_images = sum(set_size[name] for name in eval_sets)
    listed = {Path(f).name for d in eval_sets.values() for f in d.get("captions") or []}
    eval_captions = sum(n for set_name, model, mode, n in jobs if f"{set_name}.{mode}.{model}.jsonl" in listed)
    st["eval"].paper_work = eval_images
    st["eval"].paper_flops = eval_images * (c.seg_fwd + evalnets["inception"] + evalnets["clip_image"])
    st["eval"].paper_flops += eval_captions * evalnets["clip_text"]

    ab = pcfg["ablate"]
    sizes = {"train": train, "synth_uncond": n_uncond, "synth_cond": n_cond}  # by folder name
    config_sizes = []
    for conf in ab["configurations"]:
        n = 0
        for source in conf["train"]:
            full = sizes[Path(source["path"]).name]
            n += min(full, int(source["num_samples"])) if source.get("num_samples") else full
        config_sizes.append(n)
    ab_epochs = int(ab["max_epochs"])
    per_run_eval = ab_epochs * val + val  # validation every epoch, then the test split
    st["ablate"].paper_work = ab_epochs * sum(config_sizes) * len(c.archs)
    st["ablate"].paper_flops = sum(
        ab_epochs * sum(config_sizes) * train_flops + len(config_sizes) * per_run_eval * fwd
        for fwd, train_flops in c.archs.values()
    )
    return {
        "images": train + 2 * val + n_uncond + n_cond,
        "eval_captions": eval_captions,
        "captions": captions,
        "jobs": jobs,
        "in_flight": {model: values.pop() for model, values in in_flight.items()},
        "sets": sorted({set_name for set_name, *_ in jobs}, key=list(set_size).index),
        "set_size": set_size,
        "sg_vals": sg_vals,
        "sp_vals": sp_vals,
        "epochs": epochs,
        "ab_runs": len(config_sizes) * len(c.archs),
        "ab_eval": per_run_eval,
        "config_sizes": config_sizes,
        "sg_kimg": sg_iterations * sg_batch / 1000,
    }


def estimate(
    st: dict[str, Stage],
    pcfg: dict[str, dict[str, Any]],
    official_train: float,
    host: dict[str, float],
    facts: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Assumed H100 rates, host floors and hours per stage; returns the rates the report quotes."""
    gan_rate = official_train * 1000 / OFFICIAL_S_PER_KIMG * args.h100_over_a100
    bf16 = str(pcfg["segmenter"]["trainer"].get("precision", "32")).startswith("bf16")
    seg_rate = args.conv_mfu * (H100_BF16 if bf16 else H100_TF32)
    tf32_rate = args.conv_mfu * H100_TF32  # 32-bit stages: TF32 convolutions (cuDNN's default)
    workers = args.loader_workers or int(pcfg["segmenter"]["data"]["init_args"]["num_workers"])
    pair, image = host["decode_image"] + host["decode_mask"], host["decode_image"]
    val = PAPER_REAL_VAL
    rates = {
        "segmenter": seg_rate,
        "stylegan3": gan_rate,
        "spade": gan_rate,
        "synth_uncond": gan_rate,
        "synth_cond": gan_rate,
        "label": tf32_rate,
        "eval": tf32_rate,
        "ablate": tf32_rate,
    }
    # host floors: `workers` loader cores per GPU decode; synthesis / labelling encode in their one process
    image_requests = sum(n for _, _, mode, n in facts["jobs"] if mode != "text")
    host_s = {
        "segmenter": (st["segmenter"].paper_work + (facts["epochs"] + 1) * val) * pair / workers,
        "stylegan3": st["stylegan3"].paper_work * image / workers,  # unconditional: no masks
        "spade": st["spade"].paper_work * pair / workers,
        "synth_uncond": st["synth_uncond"].paper_work * host["encode_image"],
        "synth_cond": st["synth_cond"].paper_work * host["encode_image"],  # masks copied verbatim
        "label": st["label"].paper_work * (host["decode_image"] + host["encode_mask"]),  # images copied verbatim
        "eval": st["eval"].paper_work * pair / workers,
        "ablate": (st["ablate"].paper_work + facts["ab_runs"] * facts["ab_eval"]) * pair / workers,
        "captions": image_requests * host["encode_image"] / workers,  # one PNG per request with an image
    }
    in_flight = {m: args.concurrency or facts["in_flight"][m] for _, m, _, _ in facts["jobs"]}
    per_caption = {(m, mode): caption_seconds(MODELS[m], mode, args, in_flight[m]) for _, m, mode, _ in facts["jobs"]}
    caption_s = sum(per_caption[(m, mode)] * n for _, m, mode, n in facts["jobs"])
    for name, s in st.items():
        s.rate, s.host_s = rates.get(name, 0.0), host_s.get(name, 0.0)
        if name == "data":
            s.bound = "host CPU"
            continue
        compute_s, kind = (caption_s, "LLM roofline") if name == "captions" else (s.paper_flops / s.rate, "GPU FLOPs")
        s.gpu_hours = max(compute_s, s.host_s) / 3600
        s.bound = kind if compute_s >= s.host_s else "host PNG"
    return {
        "gan": gan_rate,
        "seg": seg_rate,
        "tf32": tf32_rate,
        "bf16": float(bf16),
        "workers": workers,
        "per_caption": per_caption,
        "in_flight": in_flight,
    }


def totals(st: dict[str, Stage]) -> tuple[float, float]:
    """One-H100 hours of the pipeline (without the ablation) and of the ablation."""
    return sum(s.gpu_hours for s in st.values() if s.name not in ("data", "ablate")), st["ablate"].gpu_hours


def report_sensitivity(
    st: dict[str, Stage],
    pcfg: dict[str, dict[str, Any]],
    official_train: float,
    host: dict[str, float],
    facts: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """One-H100 totals with one assumption changed at a time (the stages are recomputed, then restored)."""
    print("## Sensitivity (one H100, one assumption changed at a time)\n")
    variants: list[tuple[str, dict[str, Any]]] = [
        ("as assumed", {}),
        ("H100/A100 for the GAN code 1.6 (HBM ratio)", {"h100_over_a100": 1.6}),
        ("H100/A100 for the GAN code 3.2 (dense-peak ratio)", {"h100_over_a100": 3.2}),
        (f"conv_mfu {args.conv_mfu / 2:g}", {"conv_mfu": args.conv_mfu / 2}),
    ]
    # the threads a model's config allows per server (openai.max_concurrency over its base_urls)
    threads = {
        int(c["openai"]["max_concurrency"]) / len(c["openai"]["base_urls"])
        for name, c in pcfg.items()
        if name.startswith("captions.")
    }
    configured = {args.concurrency} if args.concurrency else set(facts["in_flight"].values())
    for n in sorted({16.0, 256.0} | threads):
        if {n} != configured:
            note = " (max_concurrency over base_urls: batch_size raised to it)" if n in threads else ""
            variants.append((f"captions: {n:g} in flight per server{note}", {"concurrency": n}))
    variants.append(("captions: hbm_eff 0.3, llm_mfu 0.2", {"hbm_eff": 0.3, "llm_mfu": 0.2}))
    rows = []
    for label, change in variants:
        estimate(st, pcfg, official_train, host, facts, argparse.Namespace(**{**vars(args), **change}))
        pipeline_h, ablate_h = totals(st)
        rows.append([label, f"{pipeline_h:,.1f}", f"{ablate_h:,.1f}", f"{pipeline_h + ablate_h:,.1f}"])
    estimate(st, pcfg, official_train, host, facts, args)
    table(["assumption", "pipeline h", "ablation h", "all h"], rows)


# -- output --------------------------------------------------------------------------------------


def si(value: float, unit: str = "FLOP") -> str:
    """``1.23e15`` -> ``1.23 PFLOP``."""
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def duration(seconds: float) -> str:
    """Seconds as h, d or years, whichever reads best."""
    hours = seconds / 3600
    if hours < 48:
        return f"{hours:,.1f} h"
    return f"{hours / 24:,.0f} d" if hours < 24 * 730 else f"{hours / 24 / 365:,.0f} y"


def table(header: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table (first column left-aligned)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def report_demo(st: dict[str, Stage]) -> None:
    print("## (a) Measured: the demo run on this CPU\n")
    rows = [
        [
            s.name,
            f"{s.work:,.0f} {s.unit}",
            f"{s.seconds:.1f}",
            f"{s.work / s.seconds:,.1f}",
            f"{1000 * s.seconds / s.work:.2f}",
            si(s.demo_flops) if s.demo_flops else "-",
            si(s.demo_rate, "FLOP/s") if s.demo_rate else "-",
        ]
        for s in st.values()
    ]
    table(["stage", "work", "wall s", "units/s", "ms/unit", "FLOPs", "CPU achieved"], rows)


def report_costs(
    demo: Costs, paper: Costs, evalnets: dict[str, float], official_train: float, cpu_check: float
) -> None:
    print(f"## (b) Counted: FLOPs per sample ({demo.res} px demo, {paper.res} px paper)\n")
    pairs = [
        ("segmenter train / forward", (demo.seg_train, demo.seg_fwd), (paper.seg_train, paper.seg_fwd)),
        ("StyleGAN3 train per image / synthesis", (demo.sg_train, demo.sg_gen), (paper.sg_train, paper.sg_gen)),
        ("SPADE train per image / synthesis", (demo.spade_train, demo.spade_gen), (paper.spade_train, paper.spade_gen)),
    ]
    rows = [
        [name, f"{si(d[0])} / {si(d[1])}", f"{si(p[0])} / {si(p[1])}", f"{p[0] / d[0]:,.0f}x"] for name, d, p in pairs
    ]
    for arch, (_, train) in paper.archs.items():
        demo_train = demo.archs[arch][1] if arch in demo.archs else 0.0
        rows.append(
            [
                f"ablation {arch} train",
                si(demo_train) if demo_train else "-",
                si(train),
                f"{train / demo_train:,.0f}x" if demo_train else "-",
            ]
        )
    rows.append(
        [
            "Inception-v3 / CLIP image / CLIP text",
            "-",
            f"{si(evalnets['inception'])} / {si(evalnets['clip_image'])} / {si(evalnets['clip_text'])}",
            "-",
        ]
    )
    table(["network", "demo", "paper", "paper / demo (train)"], rows)
    print(
        f"Calibration config (official StyleGAN2, 256 px, cbase 16384, map 2, batch 16): {si(official_train)} per "
        f"training image. The meta-device count equals the count on real CPU tensors (demo segmenter forward: "
        f"{si(cpu_check)}).\n"
    )


def report_assumptions(
    rates: dict[str, Any],
    host: dict[str, float],
    facts: dict[str, Any],
    args: argparse.Namespace,
    res: int,
) -> None:
    official = rates["gan"] / args.h100_over_a100
    print("## (c) Assumed rates\n")
    print(
        f"- GAN code: official StyleGAN2 at {OFFICIAL_S_PER_KIMG} s/kimg on one A100 = {si(official, 'FLOP/s')} "
        f"counted ({official / A100_TF32:.0%} of the A100's dense TF32 peak); H100 = {args.h100_over_a100}x "
        f"= {si(rates['gan'], 'FLOP/s')} ({rates['gan'] / H100_TF32:.0%} of its dense TF32 peak)"
    )
    peak = H100_BF16 if rates["bf16"] else H100_TF32
    print(
        f"- segmenter stage ({'bf16-mixed' if rates['bf16'] else '32-bit'}): {args.conv_mfu:.0%} of "
        f"{si(peak, 'FLOP/s')} = {si(rates['seg'], 'FLOP/s')}; ablation, labelling, eval (32-bit, TF32 "
        f"convolutions): {args.conv_mfu:.0%} of {si(H100_TF32, 'FLOP/s')} = {si(rates['tf32'], 'FLOP/s')}"
    )
    print(
        f"- host, measured here at {res} px on demo scenes, ms per sample and core: PNG decode image "
        f"{1000 * host['decode_image']:.2f}, mask {1000 * host['decode_mask']:.2f}; encode image "
        f"{1000 * host['encode_image']:.2f}, mask {1000 * host['encode_mask']:.2f}; {rates['workers']:.0f} host "
        "cores per GPU decode for training, eval and the caption client; synthesis and labelling write "
        "in one process"
    )
    print(
        f"- captions: bf16 {si(H100_BF16, 'FLOP/s')} x {args.llm_mfu:.0%} in prefill and the vision encoder, HBM "
        f"{H100_HBM / 1e12:.2f} TB/s x {args.hbm_eff:.0%} in decode (weights + KV cache once per step), "
        f"{in_flight_note(rates, args)}, {args.out_tokens} output tokens per caption, prompt tokens = "
        "characters / 4 + 20, no prefix cache across a sample's requests"
    )
    print(
        f"- paper-scale validation as the trainer settings schedule it: StyleGAN3 {facts['sg_vals']:,} passes, "
        f"SPADE {facts['sp_vals']:,} passes"
    )
    sets = ", ".join(f"{name} {facts['set_size'][name]:,}" for name in facts["sets"])
    print(
        f"- captioned sets (images): {sets}; {len(facts['jobs'])} sidecars, {facts['captions']:,} captions; "
        f"evaluation reads {facts['eval_captions']:,} of them\n"
    )
    rows = []
    for (model, mode), seconds in sorted(rates["per_caption"].items()):
        tokens = prompt_tokens(mode) + (MODELS[model].image_tokens if mode != "text" else 0)
        rows.append(
            [
                f"{model} {mode}",
                f"{tokens}",
                f"{rates['in_flight'][model]:g}",
                f"{1000 * seconds:.1f}",
                f"{3600 / seconds:,.0f}",
                f"{caption_seconds(MODELS[model], mode, args, 1):.2f}",
            ]
        )
    table(
        [
            "model, mode",
            "prompt tokens",
            "in flight per server",
            "ms/caption",
            "captions/h per GPU",
            "s/caption (1 in flight)",
        ],
        rows,
    )


def in_flight_note(rates: dict[str, Any], args: argparse.Namespace) -> str:
    """How many requests each caption server has in flight, and where the number comes from."""
    values = sorted(set(rates["in_flight"].values()))
    if args.concurrency:
        return f"{args.concurrency:g} requests in flight per server (--concurrency)"
    counts = "/".join(f"{v:g}" for v in values)
    return (
        f"{counts} requests in flight per server as the caption configs allow: min(batch_size, "
        "openai.max_concurrency) over the model's base_urls (the client waits for each batch)"
    )


def report_estimate(st: dict[str, Stage], demo_res: int, paper_res: int, args: argparse.Namespace) -> float:
    print("## The estimate: this CPU at demo settings -> H100s at the paper's scale\n")
    data = st["data"]
    data_cpu_h = data.seconds / data.work * data.paper_work * (paper_res / demo_res) ** 2 / 3600
    rows = []
    for s in st.values():
        per_sample = (s.paper_flops / s.paper_work) / (s.demo_flops / s.work) if s.demo_flops else 0
        rows.append(
            [
                s.name,
                f"{s.work / s.seconds:,.1f}",
                f"{1000 * s.seconds / s.work:.2f} ms",
                si(s.demo_rate, "FLOP/s") if s.demo_rate else "-",
                f"{per_sample:,.0f}x" if per_sample else "-",
                f"{float(f'{s.paper_flops / s.demo_flops:.3g}'):,.0f}x" if s.demo_flops else "-",
                f"{s.paper_work:,.0f} {s.unit}",
                si(s.paper_flops) if s.paper_flops else "-",
                duration(s.paper_flops / s.demo_rate) if s.demo_rate else "-",
                f"{s.gpu_hours:,.1f}" if s.name != "data" else f"({data_cpu_h:,.1f} CPU h)",
                s.bound,
            ]
        )
    table(
        [
            "stage",
            "CPU demo units/s",
            "CPU per unit",
            "CPU achieved",
            "FLOPs/unit paper÷demo",
            "stage FLOPs paper÷demo",
            "paper work",
            "paper FLOPs",
            "this CPU at paper scale",
            "H100 hours",
            "bound by",
        ],
        rows,
    )
    pipeline_h, ablate_h = totals(st)
    rows = [
        [
            f"{n}",
            f"{pipeline_h / n:,.1f} h ({pipeline_h / n / 24:,.1f} d)",
            f"{ablate_h / n:,.1f} h",
            f"{(pipeline_h + ablate_h) / n:,.1f} h ({(pipeline_h + ablate_h) / n / 24:,.1f} d)",
        ]
        for n in args.gpus
    ]
    table(["H100s", "pipeline (no ablation)", "ablation (36 runs)", "all"], rows)
    print(
        f"Near-linear data-parallel scaling assumed. Data import ({data_cpu_h:,.1f} CPU h: the demo's data stage "
        "per sample times the pixel ratio) runs on the host and is not in the GPU totals.\n"
    )
    return pipeline_h


def report_paper(
    st: dict[str, Stage],
    facts: dict[str, Any],
    per_caption: dict[tuple[str, str], float],
    rates_in_flight: dict[str, float],
    pipeline_h: float,
    args: argparse.Namespace,
) -> None:
    print("## Beside the paper's figure (one H100)\n")
    gan_h = sum(st[n].gpu_hours for n in ("stylegan3", "spade", "synth_uncond", "synth_cond"))
    seg_h = st["segmenter"].gpu_hours + st["label"].gpu_hours
    pairs = sorted(per_caption)
    batched = sum(per_caption[p] for p in pairs) / len(pairs)
    in_flight = "/".join(f"{v:g}" for v in sorted(set(rates_in_flight.values())))
    one = sum(caption_seconds(MODELS[m], mode, args, 1) for m, mode in pairs) / len(pairs)
    seg_images = st["segmenter"].paper_work + st["label"].paper_work
    ab_hours = PAPER_ALL_H - PAPER_TOTAL_H
    paper_s = 3600 * PAPER_HOURS["captions"] / PAPER_CAPTIONS
    rows = [
        [
            "GAN training + synthesis",
            f"{PAPER_HOURS['GAN training + synthesis']:.0f}",
            f"{gan_h:,.1f}",
            "stylegan3 + spade + synth_uncond + synth_cond",
        ],
        [
            "segmentation training + inference",
            f"{PAPER_HOURS['segmentation training + inference']:.0f}",
            f"{seg_h:,.1f}",
            f"segmenter + label; the paper's 20 h is {seg_images / 72000:,.0f} images/s",
        ],
        [
            f"captions, {PAPER_CAPTIONS:,} (one per image and model/mode)",
            f"{PAPER_HOURS['captions']:.0f}",
            f"{PAPER_CAPTIONS * batched / 3600:,.1f} / {PAPER_CAPTIONS * one / 3600:,.1f}",
            f"{in_flight} in flight per server / one at a time; the paper's is {paper_s:.2f} s/caption",
        ],
        [
            f"captions as pipeline_paper.yaml asks, {facts['captions']:,}",
            "-",
            f"{st['captions'].gpu_hours:,.1f}",
            f"{len(facts['jobs'])} sidecars ({len(facts['sets'])} sets x {len(per_caption)} model/modes) "
            "x captions_per_image",
        ],
        ["evaluation report", "-", f"{st['eval'].gpu_hours:,.1f}", "aras-eval over every sample"],
        ["total without the ablation", f"~{PAPER_TOTAL_H:.0f}", f"{pipeline_h:,.1f}", "the pipeline rows above"],
        [
            "ablation study",
            f"~{ab_hours:,.0f}",
            f"{st['ablate'].gpu_hours:,.1f}",
            f"'over 3,000 hours' in all; {st['ablate'].paper_work / (ab_hours * 3600):,.0f} training images/s",
        ],
        [
            "images per hour",
            f"{PAPER_IMAGES / PAPER_TOTAL_H:,.0f}",
            f"{facts['images'] / pipeline_h:,.0f}",
            f"{facts['images']:,} images (every real split + synthetic) / pipeline hours",
        ],
    ]
    table(["part", "paper h", "estimate h", "note"], rows)
    kimg = (
        PAPER_HOURS["GAN training + synthesis"]
        * 3600
        * st["stylegan3"].rate
        / (st["stylegan3"].paper_flops / st["stylegan3"].paper_work)
        / 1000
    )
    print(
        f"At the assumed GAN rate the paper's 80 h would buy about {kimg:,.0f} kimg of StyleGAN3 alone "
        f"(pipeline_paper.yaml asks for {facts['sg_kimg']:,.0f} kimg).\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/pipeline_demo", help="a finished demo pipeline run")
    parser.add_argument("--paper_config", default="configs/pipeline_paper.yaml")
    parser.add_argument("--paper_configs", default=None, help="reuse the configs/ folder of a paper dry run")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32], help="GPU counts of the totals")
    parser.add_argument(
        "--h100_over_a100",
        type=float,
        default=2.0,
        help="H100/A100 speed of the GAN code (HBM ratio 1.6 .. dense-peak ratio 3.2)",
    )
    parser.add_argument(
        "--conv_mfu",
        type=float,
        default=0.15,
        help="achieved share of the H100's dense peak for segmentation / Inception / CLIP",
    )
    parser.add_argument("--llm_mfu", type=float, default=0.4, help="achieved share of the bf16 peak in prefill")
    parser.add_argument("--hbm_eff", type=float, default=0.6, help="achieved share of HBM bandwidth in decode")
    parser.add_argument(
        "--concurrency",
        type=float,
        default=0,
        help="requests in flight per caption server (0: as the paper's caption configs allow)",
    )
    parser.add_argument("--out_tokens", type=int, default=60, help="generated tokens per caption")
    parser.add_argument(
        "--loader_workers", type=int, default=0, help="host cores decoding per GPU (0: the paper config's num_workers)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    check_run(run_dir)
    pcfg = paper_configs(args)
    cfg = {p.stem: load_yaml(p) for p in (run_dir / "configs").glob("*.yaml")}
    finished = json.loads((run_dir / ".pipeline" / "ablate.json").read_text()).get("finished", "?")
    print(f"# Estimates at the paper's scale ({dt.date.today().isoformat()})\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads). Demo run {run_dir} (finished {finished}); paper configs from "
        f"{args.paper_configs or args.paper_config}.\n"
    )

    demo, paper = count_costs(cfg), count_costs(pcfg)
    cpu_check, _ = seg_flops(init_args(cfg["segmenter"]), demo.res, "cpu")
    if abs(cpu_check - demo.seg_fwd) > 1e-6 * cpu_check:
        sys.exit(f"meta-device FLOP count {demo.seg_fwd} differs from the CPU count {cpu_check}")
    official_train, _ = stylegan_flops(dict(OFFICIAL_CONFIG, z_dim=512, w_dim=512), OFFICIAL_BATCH, "meta")
    evalnets = eval_net_flops("meta")
    host = host_costs(paper.res, 16)

    st = demo_stages(run_dir, cfg, demo)
    facts = paper_stages(st, pcfg, paper, evalnets, args)
    rates = estimate(st, pcfg, official_train, host, facts, args)
    report_demo(st)
    report_costs(demo, paper, evalnets, official_train, cpu_check)
    report_assumptions(rates, host, facts, args, paper.res)
    pipeline_h = report_estimate(st, demo.res, paper.res, args)
    report_paper(st, facts, rates["per_caption"], rates["in_flight"], pipeline_h, args)
    report_sensitivity(st, pcfg, official_train, host, facts, args)
    print(f"Done in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
