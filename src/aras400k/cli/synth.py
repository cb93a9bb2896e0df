"""``aras-synth``: make synthetic shard sets and label them with a trained segmenter.

Subcommands::

    aras-synth label --ckpt SEG.ckpt --input DIR --out DIR    pseudo-label a shard set
    aras-synth spade --ckpt GAN.ckpt --masks DIR --out DIR --per-mask K
                                                              images from real masks (SPADE GAN)
    aras-synth stylegan3 --ckpt G.ckpt --n N --out DIR     unconditional images (StyleGAN3; seed i -> sample i)

Every subcommand takes ``--config FILE.yaml`` with the same option names, and
``--shard_index K --num_shards N`` to run as worker ``K`` of ``N`` (e.g. a cluster job
array): each worker writes its part into ``OUT/part-K-of-N``, and ``aras-data merge OUT
--out OUT`` joins the parts into the shard set one worker would have written. A
subcommand is one :class:`Subcommand` entry in ``SUBCOMMANDS``: a function adding its
options to a parser and a function running it on the parsed options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from aras400k.cli import add_worker_arguments, import_class, run_command

if TYPE_CHECKING:
    from aras400k.models.spade import SPADEGAN
    from aras400k.models.stylegan3 import StyleGAN3

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

PROGRAM = "aras-synth"


@dataclass(frozen=True)
class Subcommand:
    """One ``aras-synth`` subcommand.

    Attributes:
        help: One line shown in ``aras-synth --help``.
        description: Text shown in ``aras-synth NAME --help``.
        add_arguments: Adds the subcommand's options to its parser (``--config`` is already there).
        run: Does the work on the parsed options; returns the exit status.
    """

    help: str
    description: str
    add_arguments: Callable[[ArgumentParser], None]
    run: Callable[[Namespace], int]


def _worker_arguments(parser: ArgumentParser) -> None:
    add_worker_arguments(parser, "each writes OUT/part-K-of-N (join them with aras-data merge)")


def _label_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--ckpt", type=str, required=True, help="segmenter checkpoint (aras-fit / Lightning .ckpt)")
    parser.add_argument("--input", type=str, required=True, help="shard set to label (with or without masks)")
    parser.add_argument("--out", type=str, required=True, help="folder of the new, labelled shard set")
    parser.add_argument("--batch_size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--mean",
        type=tuple[float, float, float] | None,
        default=None,
        help="normalisation mean if the checkpoint records none (default: ImageNet's)",
    )
    parser.add_argument(
        "--std",
        type=tuple[float, float, float] | None,
        default=None,
        help="normalisation std if the checkpoint records none (default: ImageNet's)",
    )
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing shard set at --out")
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    _worker_arguments(parser)


def _label(cfg: Namespace) -> int:
    from aras400k.synthesis.label import label_shards

    normalisation: dict[str, Any] = {k: cfg[k] for k in ("mean", "std") if cfg[k] is not None}
    report = label_shards(
        cfg.ckpt,
        cfg.input,
        cfg.out,
        batch_size=cfg.batch_size,
        device=cfg.device,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        shard_index=cfg.shard_index,
        num_shards=cfg.num_shards,
        **normalisation,
    )
    print(report.summary())
    return 0


def _spade_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--ckpt", type=str, required=True, help="SPADEGAN checkpoint (aras-fit / Lightning .ckpt)")
    parser.add_argument("--masks", type=str, required=True, help="shard set whose masks condition the generator")
    parser.add_argument("--out", type=str, required=True, help="folder of the new shard set")
    parser.add_argument("--per_mask", "--per-mask", type=int, default=1, help="images generated per mask")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (the same seed gives the same images)")
    parser.add_argument("--batch_size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--force_split", type=bool, default=False, help="accept masks from a split other than train (leakage risk)"
    )
    parser.add_argument(
        "--label_with",
        type=str | None,
        default=None,
        help="segmenter checkpoint: store its predictions as the masks (pseudo-labels) and report their IoU",
    )
    parser.add_argument("--use_ema", type=bool, default=True, help="sample from the EMA generator")
    parser.add_argument(
        "--module_class",
        type=str | None,
        default=None,
        help="the SPADEGAN subclass that trained --ckpt, as module.Class, when it builds its own generator",
    )
    parser.add_argument(
        "--samples_per_shard", type=int | None, default=None, help="samples per output tar (default: input's x K)"
    )
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="replace a finished set at --out (an unfinished one resumes)"
    )
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    _worker_arguments(parser)


def _spade(cfg: Namespace) -> int:
    from aras400k.synthesis.conditional import synthesize_conditional

    report = synthesize_conditional(
        cfg.ckpt,
        cfg.masks,
        cfg.out,
        per_mask=cfg.per_mask,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        force_split=cfg.force_split,
        label_with=cfg.label_with,
        device=cfg.device,
        use_ema=cfg.use_ema,
        samples_per_shard=cfg.samples_per_shard,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        shard_index=cfg.shard_index,
        num_shards=cfg.num_shards,
        module_class=_spade_class(cfg.module_class),
    )
    print(report.summary())
    return 0


def _spade_class(path: str | None) -> type[SPADEGAN] | None:
    if path is None:
        return None
    from aras400k.models.spade import SPADEGAN

    found: type[SPADEGAN] = import_class(path, SPADEGAN, "--module_class")
    return found


def _stylegan3_class(path: str | None) -> type[StyleGAN3] | None:
    if path is None:
        return None
    from aras400k.models.stylegan3 import StyleGAN3

    found: type[StyleGAN3] = import_class(path, StyleGAN3, "--module_class")
    return found


def _stylegan3_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--ckpt", type=str, required=True, help="StyleGAN3 checkpoint (.ckpt) or official snapshot (.pkl)"
    )
    parser.add_argument("--out", type=str, required=True, help="folder of the new shard set")
    parser.add_argument("--n", type=int | None, default=None, help="number of images (seeds 0..n-1 unless --seeds)")
    parser.add_argument(
        "--seeds",
        type=str | None,
        default=None,
        help="seeds, a range or a list: '0-99', '1,5,7' (sample i uses seed i)",
    )
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi (1: none)")
    parser.add_argument(
        "--latents",
        choices=["auto", "nvlabs", "torch"],
        default="auto",
        help="how seed N becomes a latent: nvlabs (as NVlabs' gen_images.py, so seed N gives its image N), torch "
        "(torch.randn, as the StyleGAN3 module samples), or auto: nvlabs for a .pkl, torch for a .ckpt",
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--label_with",
        "--label-with",
        type=str | None,
        default=None,
        help="segmenter checkpoint: add its predicted masks (pseudo-labels) and their composition",
    )
    parser.add_argument(
        "--equivariance", type=bool, default=False, help="also print EQ-T/EQ-R of the generator (stylegan3-t/-r)"
    )
    parser.add_argument("--equivariance_samples", type=int, default=64, help="latents for the equivariance metrics")
    parser.add_argument("--use_ema", type=bool, default=True, help="sample from the EMA generator (.ckpt only)")
    parser.add_argument(
        "--module_class",
        type=str | None,
        default=None,
        help="the StyleGAN3 subclass that trained --ckpt, as module.Class, when it builds its own generator",
    )
    parser.add_argument("--samples_per_shard", type=int, default=1000, help="samples per output tar")
    parser.add_argument("--chunk_size", type=int, default=1000, help="seeds per resumable part")
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="replace a finished set at --out (an unfinished one resumes)"
    )
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    _worker_arguments(parser)


def _stylegan3(cfg: Namespace) -> int:
    from aras400k.synthesis.unconditional import parse_seeds, synthesize_unconditional

    report = synthesize_unconditional(
        cfg.ckpt,
        cfg.out,
        seeds=parse_seeds(cfg.seeds) if cfg.seeds is not None else None,
        n=cfg.n,
        truncation=cfg.truncation,
        batch_size=cfg.batch_size,
        label_with=cfg.label_with,
        equivariance=cfg.equivariance,
        equivariance_samples=cfg.equivariance_samples,
        device=cfg.device,
        use_ema=cfg.use_ema,
        samples_per_shard=cfg.samples_per_shard,
        chunk_size=cfg.chunk_size,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        shard_index=cfg.shard_index,
        num_shards=cfg.num_shards,
        module_class=_stylegan3_class(cfg.module_class),
        latents=cfg.latents,
    )
    print(report.summary())
    return 0


#: The subcommands, in the order ``--help`` lists them.
SUBCOMMANDS: dict[str, Subcommand] = {
    "label": Subcommand(
        help="label a shard set with a trained segmenter",
        description="Write a new shard set whose masks are a segmenter's predictions (the paper's pseudo-labels); "
        "images, captions and other members are copied byte for byte.",
        add_arguments=_label_arguments,
        run=_label,
    ),
    "spade": Subcommand(
        help="generate images from real masks with a SPADE GAN checkpoint",
        description="Write a new shard set (source synth_cond) with K generated images per mask of a train shard "
        "set; each keeps its parent's mask.png byte for byte. Deterministic by --seed; an interrupted run resumes "
        "when rerun with the same options.",
        add_arguments=_spade_arguments,
        run=_spade,
    ),
    "stylegan3": Subcommand(
        help="generate unconditional images with a StyleGAN3 checkpoint or official pickle",
        description="Write a new shard set (source synth_uncond) with one generated image per seed (sample "
        "sg3_{seed:08d} uses seed seed, so split or resumed runs give the same images); optionally label them "
        "(--label_with) and print the generator's EQ-T/EQ-R (--equivariance true). An interrupted run resumes "
        "when rerun with the same options.",
        add_arguments=_stylegan3_arguments,
        run=_stylegan3,
    ),
}


def build_parser() -> ArgumentParser:
    """Build the ``aras-synth`` parser with one subparser per entry of ``SUBCOMMANDS``.

    Returns:
        The parser.
    """
    parser = ArgumentParser(prog=PROGRAM, description="Make synthetic aras400k shard sets and label them.")
    commands = parser.add_subcommands(dest="command")
    for name, command in SUBCOMMANDS.items():
        sub = ArgumentParser(description=command.description)
        sub.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
        command.add_arguments(sub)
        commands.add_subcommand(name, sub, help=command.help)
    return parser


def main(args: list[str] | None = None) -> int:
    """Run ``aras-synth``.

    Args:
        args: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (with a one-line message).
    """
    cfg = build_parser().parse_args(args)
    return run_command(PROGRAM, lambda: SUBCOMMANDS[cfg.command].run(cfg[cfg.command]))


if __name__ == "__main__":
    sys.exit(main())
