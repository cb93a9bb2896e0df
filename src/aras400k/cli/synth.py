"""``aras-synth``: make synthetic shard sets and label them with a trained segmenter.

Subcommands::

    aras-synth label --ckpt SEG.ckpt --input DIR --out DIR    pseudo-label a shard set
    aras-synth spade --ckpt GAN.ckpt --masks DIR --out DIR --per-mask K
                                                              images from real masks (SPADE GAN)
    aras-synth stylegan3 --ckpt G.ckpt --n N --out DIR     unconditional images (StyleGAN3; seed i -> sample i)

Every subcommand takes ``--config FILE.yaml`` with the same option names, and
``--shard_index K --num_shards N`` to run as one of N workers (``docs/scaling.md``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aras400k.cli import add_worker_arguments, call_with, command_main, command_parser, import_class
from aras400k.cli.signatures import add_options, source_signature

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

PROGRAM = "aras-synth"
#: The functions whose signatures give the subcommands' options (read from source: they import torch).
_LABEL = ("aras400k.synthesis.label", "label_shards")
_SPADE = ("aras400k.synthesis.conditional", "synthesize_conditional")
_STYLEGAN3 = ("aras400k.synthesis.unconditional", "synthesize_unconditional")


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


def _module_class_argument(parser: ArgumentParser, base: str) -> None:
    parser.add_argument(
        "--module_class",
        type=str | None,
        default=None,
        help=f"the {base} subclass that trained --ckpt, as module.Class, when it builds its own generator",
    )


def _label_arguments(parser: ArgumentParser) -> None:
    signature = source_signature(*_LABEL)
    parser.add_argument("--ckpt", type=str, required=True, help="segmenter checkpoint (aras-fit / Lightning .ckpt)")
    parser.add_argument("--input", type=str, required=True, help="shard set to label (with or without masks)")
    parser.add_argument("--out", type=str, required=True, help="folder of the new, labelled shard set")
    add_options(parser, signature, ["batch_size", "device"])
    for name in ("mean", "std"):
        parser.add_argument(
            f"--{name}",
            type=tuple[float, float, float] | None,
            default=None,
            help=f"{signature[name].help} (default: ImageNet's)",
        )
    add_options(parser, signature, ["overwrite", "progress"])
    _worker_arguments(parser)


def _call(target: tuple[str, str], cfg: Namespace, **given: Any) -> int:
    """Import ``module.function`` of ``target``, call it with the options (:func:`call_with`), print its report."""
    function = getattr(importlib.import_module(target[0]), target[1])
    print(call_with(function, cfg, **given).summary())
    return 0


def _label(cfg: Namespace) -> int:
    normalisation: dict[str, Any] = {k: cfg[k] for k in ("mean", "std") if cfg[k] is not None}
    return _call(_LABEL, cfg, segmenter=cfg.ckpt, input_dir=cfg.input, out_dir=cfg.out, **normalisation)


def _spade_arguments(parser: ArgumentParser) -> None:
    signature = source_signature(*_SPADE)
    parser.add_argument("--ckpt", type=str, required=True, help="SPADEGAN checkpoint (aras-fit / Lightning .ckpt)")
    parser.add_argument("--masks", type=str, required=True, help="shard set whose masks condition the generator")
    parser.add_argument("--out", type=str, required=True, help="folder of the new shard set")
    add_options(
        parser,
        signature,
        ["per_mask", "seed", "batch_size", "force_split", "label_with", "use_ema"],
        aliases={"per_mask": ["--per-mask"]},
    )
    _module_class_argument(parser, "SPADEGAN")
    add_options(parser, signature, ["samples_per_shard", "device", "overwrite", "progress"])
    _worker_arguments(parser)


def _spade(cfg: Namespace) -> int:
    module_class = _module_class(cfg.module_class, "aras400k.models.spade", "SPADEGAN")
    return _call(_SPADE, cfg, checkpoint=cfg.ckpt, masks_dir=cfg.masks, out_dir=cfg.out, module_class=module_class)


def _module_class(path: str | None, module: str, name: str) -> type | None:
    """Import ``--module_class``, a subclass of ``module.name`` (``None`` stays ``None``)."""
    if path is None:
        return None
    return import_class(path, getattr(importlib.import_module(module), name), "--module_class")


def _stylegan3_arguments(parser: ArgumentParser) -> None:
    signature = source_signature(*_STYLEGAN3)
    parser.add_argument(
        "--ckpt", type=str, required=True, help="StyleGAN3 checkpoint (.ckpt) or official snapshot (.pkl)"
    )
    parser.add_argument("--out", type=str, required=True, help="folder of the new shard set")
    add_options(parser, signature, ["n"])
    parser.add_argument(
        "--seeds",
        type=str | None,
        default=None,
        help="seeds, a range or a list: '0-99', '1,5,7' (sample i uses seed i)",
    )
    add_options(parser, signature, ["truncation"])
    parser.add_argument(
        "--latents",
        choices=["auto", "nvlabs", "torch"],
        default=signature["latents"].default,
        help=signature["latents"].help,
    )
    add_options(
        parser,
        signature,
        ["batch_size", "label_with", "equivariance", "equivariance_samples", "use_ema"],
        aliases={"batch_size": ["--batch-size"], "label_with": ["--label-with"]},
    )
    _module_class_argument(parser, "StyleGAN3")
    add_options(parser, signature, ["samples_per_shard", "chunk_size", "device", "overwrite", "progress"])
    _worker_arguments(parser)


def _stylegan3(cfg: Namespace) -> int:
    from aras400k.synthesis.unconditional import parse_seeds

    seeds = parse_seeds(cfg.seeds) if cfg.seeds is not None else None
    module_class = _module_class(cfg.module_class, "aras400k.models.stylegan3", "StyleGAN3")
    return _call(_STYLEGAN3, cfg, checkpoint=cfg.ckpt, out_dir=cfg.out, seeds=seeds, module_class=module_class)


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
    """The ``aras-synth`` parser with one subparser per entry of ``SUBCOMMANDS``."""
    parser = command_parser(PROGRAM, "Make synthetic aras400k shard sets and label them.", config=False)
    commands = parser.add_subcommands(dest="command")
    for name, command in SUBCOMMANDS.items():
        sub = command_parser(None, command.description)
        command.add_arguments(sub)
        commands.add_subcommand(name, sub, help=command.help)
    return parser


main = command_main(PROGRAM, build_parser, lambda cfg: SUBCOMMANDS[cfg.command].run(cfg[cfg.command]))

if __name__ == "__main__":
    sys.exit(main())
