"""``aras-pipeline``: the paper's stages in order, from one config.

::

    aras-pipeline --config configs/pipeline_demo.yaml                 # everything (resumes)
    aras-pipeline --config configs/pipeline_demo.yaml --from captions  # redo captions, eval, ablate
    aras-pipeline --config configs/pipeline_demo.yaml --only eval      # redo one stage
    aras-pipeline --config configs/pipeline_paper.yaml --dry_run true  # write and check the configs only

Every field of :class:`aras400k.pipeline.PipelineConfig` is an option.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from aras400k.cli import call_with, command_main, command_parser, config_from
from aras400k.errors import check_at_least
from aras400k.threads import THREADS_VARIABLE

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main", "stage_names"]

PROGRAM = "aras-pipeline"


def build_parser() -> ArgumentParser:
    """Returns the ``aras-pipeline`` parser: ``run_pipeline``'s options, threads, the :class:`PipelineConfig` fields."""
    from aras400k.pipeline import STAGE_NAMES, PipelineConfig, run_pipeline

    parser = command_parser(
        PROGRAM,
        "Run the paper's stages (data, segmenter, StyleGAN3, SPADE, synthesis, labels, captions, evaluation, "
        "study) into one run folder with an index.md. Finished stages are skipped; an interrupted stage resumes.",
        options_of=PipelineConfig,
    )
    parser.add_argument(
        "--from",
        dest="from_stage",
        type=str | None,
        default=None,
        help=f"rerun this stage and all later ones from scratch ({', '.join(STAGE_NAMES)})",
    )
    parser.add_argument(
        "--only",
        type=list[str] | str | None,
        default=None,
        help="run only these stages, from scratch: one name (--only eval), several (--only eval,ablate or "
        "--only '[eval, ablate]')",
    )
    parser.add_function_arguments(run_pipeline, as_group=False, skip={"config", "from_stage", "console", "only"})
    parser.add_argument(
        "--threads",
        type=int | None,
        default=None,
        help="torch intra-op threads for every stage (default: ARAS_THREADS or OMP_NUM_THREADS if set, else the "
        "usable cores less one per loader worker)",
    )
    return parser


def stage_names(text: str) -> list[str]:
    """The stage names of ``--only eval`` or ``--only eval,ablate``, in order (``run_pipeline`` refuses unknown ones).

    A list in brackets is parsed as YAML before this.

    Raises:
        ValueError: If no name is given (``--only ""``, which would otherwise run everything).
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--only needs at least one stage name, got {text!r}")
    return names


def _run(cfg: Namespace) -> int:
    from aras400k.pipeline import PipelineConfig, PipelineError, run_pipeline

    if cfg.threads is not None:
        check_at_least("--threads", cfg.threads, 1)
        os.environ[THREADS_VARIABLE] = str(cfg.threads)  # every stage's command reads it
    if isinstance(cfg.only, str):
        cfg.only = stage_names(cfg.only)
    try:
        call_with(run_pipeline, cfg, config=config_from(PipelineConfig, build_parser(), cfg))
    except PipelineError as err:
        print(f"{PROGRAM}: {err}", file=sys.stderr)
        return 1
    return 0


main = command_main(PROGRAM, build_parser, _run, "0 on success, 1 when a stage fails, 2 on bad input")

if __name__ == "__main__":
    sys.exit(main())
