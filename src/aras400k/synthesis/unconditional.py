"""Unconditional synthesis: sample a trained StyleGAN3 into a new shard set.

:func:`synthesize_unconditional` draws one image per seed with the EMA generator of a
:class:`~aras400k.models.stylegan3.StyleGAN3` checkpoint (or the ``G_ema`` of an official
NVlabs ``.pkl``) and writes it as sample ``sg3_{seed:08d}``::

    report = synthesize_unconditional("runs/gan_stylegan3/checkpoints/last.ckpt", "data/synth_uncond",
                                      seeds=range(1000), truncation=0.7)
    print(report.summary())

Guarantees:

- **Sample i uses seed i.** Its latent depends on ``i`` alone, so a split run (``0-3``
  then ``4-7``) or a resumed run gives the same images as one run over all seeds. Two
  conventions turn a seed into a latent (``latents``, see ``docs/stylegan3.md`` and
  :func:`seed_latents`): ``"nvlabs"``, the default for official ``.pkl`` snapshots,
  gives NVlabs' ``gen_images.py`` image ``i``; ``"torch"``, the default for Lightning
  checkpoints, is :meth:`StyleGAN3.latents`'. The convention is recorded in each
  sample's ``meta.json``, the run record and the manifest.
- **Resumable, locked, splittable** (:mod:`aras400k.synthesis.jobs`). Each chunk of
  ``chunk_size`` seeds is one part; a worker makes its run of whole batches, formed as
  the single run forms them (:func:`worker_chunks`), so it computes the same images.

Lightning checkpoints are read tensors-only (:func:`~aras400k.checkpoints.read_checkpoint`),
``.pkl`` files with the restricted unpickler of :mod:`aras400k.models.stylegan3.official`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from aras400k.checkpoints import (
    checkpoint_sha256,
    generator_from_module,
    is_url,
    load_prefixed_weights,
    read_checkpoint,
    resolve_device,
)
from aras400k.data.composition import format_composition
from aras400k.data.merge import check_worker
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    ShardWriter,
    write_json_atomic,
)
from aras400k.data.sources import partition_range
from aras400k.models.stylegan3.generator import Generator, build_generator
from aras400k.models.stylegan3.module import StyleGAN3
from aras400k.synthesis.jobs import RUN_RECORD, ShardJob, summary_head, to_uint8_images
from aras400k.synthesis.label import assemble_parts

__all__ = [
    "LATENT_CONVENTIONS",
    "LatentConvention",
    "StyleGAN3SynthesisReport",
    "load_stylegan3_generator",
    "parse_seeds",
    "resolve_latents",
    "sample_key",
    "seed_latents",
    "synthesize_unconditional",
    "worker_chunks",
]

_RUN_FORMAT = 1
_SPLIT = "train"
_SOURCE: Final = "synth_uncond"

#: How a seed becomes a latent: ``nvlabs`` (NVlabs' ``gen_images.py``) or ``torch`` (:meth:`StyleGAN3.latents`).
LatentConvention = Literal["nvlabs", "torch"]
LATENT_CONVENTIONS: Final = ("nvlabs", "torch")


def resolve_latents(latents: str, checkpoint: str | Path) -> LatentConvention:
    """The latent convention of a run: ``auto`` is ``nvlabs`` for a ``.pkl`` snapshot, else ``torch``.

    Args:
        latents: ``auto``, ``nvlabs`` or ``torch``.
        checkpoint: The generator's file or URL.

    Returns:
        ``nvlabs`` or ``torch``.

    Raises:
        ValueError: On another value.
    """
    if latents == "auto":
        return "nvlabs" if str(checkpoint).lower().endswith(".pkl") else "torch"
    if latents not in LATENT_CONVENTIONS:
        raise ValueError(f"latents must be auto, nvlabs or torch, got {latents!r}")
    return cast(LatentConvention, latents)


def seed_latents(seeds: Sequence[int], z_dim: int, latents: LatentConvention = "torch") -> torch.Tensor:
    """The latent of each seed, on the CPU; each row depends on its own seed only.

    ``nvlabs`` draws ``np.random.RandomState(seed).randn(1, z_dim)`` as NVlabs'
    ``gen_images.py`` does (float64; the mapping network's first step makes it float32,
    as NVlabs' does); ``torch`` draws ``torch.randn(z_dim)`` from a ``torch.Generator``
    seeded with ``seed`` (:meth:`StyleGAN3.latents`).

    Returns:
        ``(len(seeds), z_dim)`` latents (float64 for ``nvlabs``, float32 for ``torch``).
    """
    if latents == "nvlabs":
        rows = [np.random.RandomState(seed).randn(1, z_dim) for seed in seeds]
        return torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, z_dim)))
    if not seeds:
        return torch.zeros(0, z_dim)
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(seed)) for seed in seeds])


def sample_key(seed: int) -> str:
    """The key of the sample drawn from ``seed`` (``sg3_{seed:08d}``)."""
    return f"sg3_{seed:08d}"


def parse_seeds(spec: str) -> list[int]:
    """Parse a seed list, in the order given: ranges and single seeds separated by commas (``"0-3,9"``).

    Raises:
        ValueError: On a malformed item, a negative seed, an empty or reversed range, or a repeated seed.
    """
    seeds: list[int] = []
    for item in (part.strip() for part in str(spec).split(",")):
        first, sep, last = item.partition("-")
        if not first.strip().isdigit() or (sep and not last.strip().isdigit()):
            raise ValueError(f"seeds must be non-negative integers or ranges like '0-99' or '1,5,7', got {spec!r}")
        low, high = int(first), int(last) if sep else int(first)
        if high < low:
            raise ValueError(f"seed range {item!r} is reversed (write low-high)")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {spec!r} name a seed more than once")
    return seeds


@dataclass
class StyleGAN3SynthesisReport:
    """What :func:`synthesize_unconditional` wrote.

    Attributes:
        out_dir: The new shard set.
        manifest: Path of its ``manifest.json``.
        num_samples: Images written (one per seed).
        num_shards: Tar shards written.
        first_seed: Smallest seed written (``None`` for a worker left without seeds).
        last_seed: Largest seed written (``None`` for a worker left without seeds).
        truncation: Truncation psi.
        checkpoint: The generator checkpoint or pickle.
        checkpoint_sha256: Its sha256 (first 16 hex digits).
        resumed_parts: Seed chunks kept from an earlier, interrupted run.
        composition: Class name -> pixel fraction of the predicted masks (when labelled).
        labelled_with: Segmenter checkpoint whose predictions are the masks, if any.
        equivariance: ``{"eqt_int", "eqt_frac", "eqr"}`` PSNRs in dB, if asked for and available.
        equivariance_note: Why no equivariance figures were computed, if asked for and unavailable.
        worker: ``(shard_index, num_shards)`` of a worker of a split run; ``None`` for a single run.
        latents: How seeds became latents: ``nvlabs`` or ``torch`` (see :func:`seed_latents`).
    """

    out_dir: str
    manifest: str
    num_samples: int
    num_shards: int
    first_seed: int | None
    last_seed: int | None
    truncation: float
    checkpoint: str
    checkpoint_sha256: str
    resumed_parts: int = 0
    composition: dict[str, float] = field(default_factory=dict)
    labelled_with: str | None = None
    equivariance: dict[str, float] | None = None
    equivariance_note: str | None = None
    worker: tuple[int, int] | None = None
    latents: LatentConvention = "torch"

    def summary(self) -> str:
        """Render the report for a terminal: what was generated, where, and any labels or equivariance figures."""
        seeds = f"seeds {self.first_seed}..{self.last_seed}" if self.num_samples else "no seeds"
        done = (
            f"generated {self.num_samples} images ({seeds}, truncation "
            f"{self.truncation:g}) with {self.checkpoint} (sha256 {self.checkpoint_sha256}, {self.latents} latents)"
        )
        lines = summary_head(self, done, "seed chunks")
        if self.labelled_with is not None:
            lines.append(f"masks are the predictions of {self.labelled_with}")
            lines.append(f"composition: {format_composition(self.composition) or 'empty'}")
        if self.equivariance is not None:
            eq = self.equivariance
            lines.append(
                f"equivariance: EQ-T {eq['eqt_int']:.2f} dB, EQ-T (sub-pixel) {eq['eqt_frac']:.2f} dB, "
                f"EQ-R {eq['eqr']:.2f} dB"
            )
        if self.equivariance_note is not None:
            lines.append(f"equivariance: {self.equivariance_note}")
        return "\n".join(lines)


def load_stylegan3_generator(
    path: str | Path,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    module_class: type[StyleGAN3] | None = None,
) -> Generator:
    """Load the (EMA) generator of a StyleGAN3 Lightning checkpoint or an official ``.pkl``, safely.

    Args:
        path: A :class:`~aras400k.models.stylegan3.StyleGAN3` checkpoint, or an official
            NVlabs snapshot (``.pkl``; its ``G_ema`` is rebuilt without running its code).
        use_ema: Load the EMA weights rather than the trained ones (checkpoints only).
        map_location: Where the weights are loaded.
        module_class: The StyleGAN3 subclass that trained the checkpoint, when its
            ``configure_models`` builds a generator of its own (``None``: the ``cfg``'s).

    Returns:
        The unconditional generator in eval mode, without gradients.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a StyleGAN3 checkpoint or snapshot, or the generator is conditional.
        TypeError: If ``module_class`` is not a StyleGAN3 subclass.
    """
    path = path if is_url(str(path)) else Path(path)
    if str(path).lower().endswith(".pkl"):
        from aras400k.models.stylegan3.official import load_official

        if not Path(path).is_file():
            raise FileNotFoundError(f"official snapshot {path} must be a local file (download it first)")
        official = load_official(Path(path), which=("G_ema",)).G_ema
        assert official is not None
        generator: Generator = official
    else:
        checkpoint = read_checkpoint(path, map_location)
        hp, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
        if not isinstance(hp, Mapping) or not isinstance(state, Mapping) or not {"cfg", "cbase"} <= hp.keys():
            raise ValueError(
                f"{path} is not a StyleGAN3 checkpoint (it lacks the GAN's hyper_parameters or state_dict)"
            )
        prefix = "ema.shadow." if use_ema else "generator."
        if module_class is not None:
            if not (isinstance(module_class, type) and issubclass(module_class, StyleGAN3)):
                raise TypeError(f"module_class must be a StyleGAN3 subclass, got {module_class!r}")
            built = generator_from_module(module_class, checkpoint, prefix, str(path))
            if not isinstance(built, Generator):
                raise ValueError(f"{module_class.__name__}'s generator is not a StyleGAN generator")
            generator = built
        else:
            generator = build_generator(
                hp["cfg"],
                resolution=hp["resolution"],
                channel_base=hp["cbase"],
                channel_max=hp["cmax"],
                map_depth=hp.get("map_depth", hp.get("map")),  # "map": checkpoints before 0.2
                z_dim=hp["z_dim"],
                w_dim=hp["w_dim"],
                batch_size=hp.get("batch"),
            )
            load_prefixed_weights(generator, state, prefix, str(path))
    if generator.c_dim:
        raise ValueError(f"{path}: the generator is conditional (c_dim={generator.c_dim}); only unconditional ones")
    return generator.to(map_location).eval().requires_grad_(False)


@dataclass
class _Run:
    """Settings of one synthesis run, shared by its steps."""

    generator: Generator
    device: torch.device
    truncation: float
    batch_size: int
    generator_meta: dict[str, Any]
    latents: LatentConvention


def synthesize_unconditional(
    checkpoint: str | Path,
    out_dir: str | Path,
    seeds: Iterable[int] | None = None,
    n: int | None = None,
    truncation: float = 1.0,
    batch_size: int = 16,
    label_with: str | Path | None = None,
    equivariance: bool = False,
    equivariance_samples: int = 64,
    device: str = "auto",
    use_ema: bool = True,
    samples_per_shard: int = 1000,
    chunk_size: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    module_class: type[StyleGAN3] | None = None,
    latents: str = "auto",
) -> StyleGAN3SynthesisReport:
    """Generate one image per seed and write them as a new ``synth_uncond`` shard set.

    Each sample has ``image.png`` (uint8, from the generator's ``[-1, 1]``) and a
    ``meta.json`` with ``source: synth_uncond``, ``split: train``, ``composition: {}``
    (unknown without a mask) and ``generator``
    (``checkpoint``, ``checkpoint_sha256``, ``latents``, ``seed``, ``truncation``); with
    ``label_with``, also the segmenter's ``mask.png``, ``composition`` and
    ``labelled_by``. Samples follow the order of ``seeds``. See the module docstring for
    resuming and workers.

    Args:
        checkpoint: StyleGAN3 Lightning checkpoint, or official snapshot (``.pkl``).
        out_dir: Folder of the new shard set.
        seeds: Seeds, one image each (default ``range(n)``).
        n: Number of images when ``seeds`` is not given (if both are, it must equal their number).
        truncation: Truncation psi (1: none).
        batch_size: Images per generator forward pass.
        label_with: Segmenter checkpoint; its predictions become the masks (pseudo-labels).
        equivariance: Also compute EQ-T/EQ-R (StyleGAN3 T/R configs; for others the report says why not).
        equivariance_samples: Latents used for the equivariance metrics.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        use_ema: Sample from the EMA generator (checkpoints only).
        samples_per_shard: Samples per output tar.
        chunk_size: Seeds per resumable part.
        overwrite: Replace a finished shard set at ``out_dir``, or an unfinished run with other settings.
        progress: Show a progress bar.
        shard_index: This worker's part of a split run, ``0 .. num_shards - 1``.
        num_shards: Workers the run is split over (1: this call does everything).
        module_class: As for :func:`load_stylegan3_generator`.
        latents: How seed ``s`` becomes a latent (:func:`seed_latents`): ``nvlabs``, ``torch``,
            or ``auto`` (:func:`resolve_latents`).

    Returns:
        A :class:`StyleGAN3SynthesisReport`.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        FileExistsError: If ``out_dir`` (a worker's part) holds a shard set and ``overwrite`` is off.
        ValueError: On bad seeds or numbers, a file that is not a StyleGAN3 checkpoint, or
            an unfinished run at ``out_dir`` with other settings.
        LockedError: If another run is writing ``out_dir`` (a worker's part).
    """
    seed_list = _check_inputs(seeds, n, truncation, batch_size, samples_per_shard, chunk_size)
    convention = resolve_latents(latents, checkpoint)
    job = ShardJob(out_dir, shard_index, num_shards)
    with job.lock():
        job.refuse_finished(overwrite)
        torch_device = resolve_device(device)
        generator = load_stylegan3_generator(
            checkpoint, use_ema=use_ema, map_location=torch_device, module_class=module_class
        )
        digest = checkpoint_sha256(checkpoint)[:16]
        meta = {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": digest,
            "latents": convention,
            "truncation": float(truncation),
        }
        run = _Run(generator, torch_device, float(truncation), batch_size, meta, convention)
        seeds_sha256 = hashlib.sha256(",".join(map(str, seed_list)).encode()).hexdigest()
        record = {
            "format": _RUN_FORMAT,
            "generator": meta | {"use_ema": use_ema},
            "seeds_sha256": seeds_sha256,
            "num_seeds": len(seed_list),
            "chunk_size": chunk_size,
            "batch_size": batch_size,
            "device": torch_device.type,
        }
        extra: dict[str, Any] = {"generator": meta | {"num_seeds": len(seed_list)}}
        extra |= job.worker_fields({"seeds_sha256": seeds_sha256, "chunk_size": chunk_size, "batch_size": batch_size})
        if job.worker:
            record["worker"] = list(job.worker)
        _adopt_older_record(job.work)
        job.open(record, overwrite)
        chunks = dict(worker_chunks(seed_list, chunk_size, batch_size, shard_index, num_shards))
        resumed = job.write_parts(
            [(index, len(chunk)) for index, chunk in chunks.items()],
            lambda writer, index, bar: _write_part(run, chunks[index], writer, bar),
            _SPLIT, _SOURCE, "stylegan3", progress,
        )  # fmt: skip
        mine = [seed for chunk in chunks.values() for seed in chunk]
        written, _ = assemble_parts(
            job, label_with, _SPLIT, _SOURCE, samples_per_shard, extra, overwrite, batch_size, torch_device, progress,
            with_mask=False,
        )  # fmt: skip
        job.finish()
        report = StyleGAN3SynthesisReport(
            out_dir=str(job.out_dir),
            manifest=str(job.out_dir / MANIFEST_NAME),
            num_samples=int(written["num_samples"]),
            num_shards=len(written["shards"]),
            first_seed=min(mine, default=None),
            last_seed=max(mine, default=None),
            truncation=float(truncation),
            checkpoint=str(checkpoint),
            checkpoint_sha256=digest,
            resumed_parts=resumed,
            composition=dict(written.get("composition") or {}),
            labelled_with=str(label_with) if label_with is not None else None,
            worker=job.worker,
            latents=convention,
        )
        if equivariance:
            report.equivariance, report.equivariance_note = _equivariance(generator, equivariance_samples, batch_size)
        return report


def _check_inputs(
    seeds: Iterable[int] | None, n: int | None, truncation: float, batch_size: int, spp: int, chunk_size: int
) -> list[int]:
    """Check the numbers; return the seed list."""
    if batch_size < 1 or spp < 1 or chunk_size < 1:
        raise ValueError(
            f"batch_size, samples_per_shard and chunk_size must be >= 1, got {batch_size}, {spp} and {chunk_size}"
        )
    if not np.isfinite(truncation):
        raise ValueError(f"truncation must be a finite number, got {truncation}")
    if seeds is None:
        if n is None or n < 1:
            raise ValueError(f"pass n >= 1 (--n) or a list of seeds (--seeds), got n={n}")
        return list(range(n))
    seed_list = [int(s) for s in seeds]
    if not seed_list or min(seed_list) < 0 or len(set(seed_list)) != len(seed_list):
        raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
    if n is not None and n != len(seed_list):
        raise ValueError(f"n={n} does not match the {len(seed_list)} seeds given; pass one or make them agree")
    return seed_list


def worker_chunks(
    seeds: Sequence[int], chunk_size: int, batch_size: int, shard_index: int = 0, num_shards: int = 1
) -> list[tuple[int, list[int]]]:
    """The seed chunks one worker of a split run generates, as ``(chunk number, seeds)``.

    A single run cuts ``seeds`` into chunks of ``chunk_size`` (its resumable parts) and
    each chunk into batches of ``batch_size``. The batches are dealt out to the workers
    as ``num_shards`` contiguous runs (:func:`~aras400k.data.sources.partition_range`),
    so a worker forms exactly the single run's batches.

    Returns:
        The worker's chunks in order, numbered as in the single run (all of them for one worker).
    """
    check_worker(shard_index, num_shards)
    total = len(seeds)
    batches = [
        (chunk, start)
        for chunk, first in enumerate(range(0, total, chunk_size))
        for start in range(first, min(first + chunk_size, total), batch_size)
    ]
    low, high = partition_range(len(batches), shard_index, num_shards)
    chunks: dict[int, list[int]] = {}
    for chunk, start in batches[low:high]:
        stop = min(start + batch_size, (chunk + 1) * chunk_size, total)
        chunks.setdefault(chunk, []).extend(seeds[start:stop])
    return list(chunks.items())


def _write_part(run: _Run, chunk: Sequence[int], writer: ShardWriter, bar: tqdm) -> None:
    """Generate one image per seed of ``chunk`` into its part, in batches."""
    for start in range(0, len(chunk), run.batch_size):
        batch = chunk[start : start + run.batch_size]
        images = _generate_batch(run.generator, batch, run.truncation, run.device, run.latents)
        for seed, image in zip(batch, images, strict=True):
            # No mask, so no known composition: {} (label_shards fills it in from its prediction).
            generator = run.generator_meta | {"seed": seed}
            meta = {"source": _SOURCE, "split": _SPLIT, "composition": {}, "generator": generator}
            writer.write(Sample(key=sample_key(seed), image=image, meta=meta))
        bar.update(len(batch))


def _adopt_older_record(work: Path) -> None:
    """Record ``torch`` latents in a run record written before the convention was recorded (so it resumes)."""
    path = work / RUN_RECORD
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    generator = previous.get("generator") if isinstance(previous, dict) else None
    if isinstance(generator, dict) and "latents" not in generator:
        previous["generator"] = generator | {"latents": "torch"}
        write_json_atomic(path, previous)


@torch.no_grad()
def _generate_batch(
    generator: Generator,
    seeds: Sequence[int],
    truncation: float,
    device: torch.device,
    latents: LatentConvention = "torch",
) -> np.ndarray:
    """Generate one ``(H, W, 3)`` uint8 image per seed, its latent drawn by :func:`seed_latents`.

    For ``nvlabs`` the pixels are ``gen_images.py``'s ``(x * 127.5 + 128).clamp(0, 255)``
    truncated to ``uint8``, which differs from :func:`to_uint8_images` only where
    ``(x + 1) * 127.5`` ends in exactly ``.5``.
    """
    z = seed_latents(seeds, generator.z_dim, latents).to(torch.float32)
    images = generator(z.to(device), truncation_psi=truncation, noise_mode="const").float()
    if latents != "nvlabs":
        return to_uint8_images(images)
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _equivariance(
    generator: Generator, num_samples: int, batch_size: int
) -> tuple[dict[str, float] | None, str | None]:
    """EQ-T/EQ-R of the generator, or ``None`` and why not."""
    from aras400k.models.stylegan3.equivariance import compute_equivariance

    transform = getattr(getattr(generator.synthesis, "input", None), "transform", None)
    if not isinstance(transform, torch.Tensor) or transform.shape != (3, 3):
        return None, (
            "not computed: EQ-T/EQ-R need a generator with Fourier input features "
            "(a stylegan3-t or stylegan3-r config); this one has none (stylegan2)"
        )
    equivariance = compute_equivariance(generator, num_samples=num_samples, batch_size=batch_size)  # type: ignore[arg-type]
    return equivariance, None
