"""``aras-eval``: the evaluation report (the paper's Tables 1-2, consistency, Figures 3-4, FID/KID).

::

    aras-eval --config configs/eval.yaml
    aras-eval --config configs/eval.yaml --max_samples 200 --clip /models/clip-vit-base-patch32
    aras-eval --config configs/eval.yaml --segmenter null      # no FID/KID, no embedding

Every field of :class:`aras400k.evaluation.EvalConfig` can be given in the YAML file or
on the command line. Inputs are checked before any work (``docs/evaluation.md``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from aras400k.cli import command_main, command_parser, config_from

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main"]

PROGRAM = "aras-eval"


def build_parser() -> ArgumentParser:
    """Returns the ``aras-eval`` parser, whose options are the fields of :class:`~aras400k.evaluation.EvalConfig`."""
    from aras400k.evaluation import EvalConfig

    return command_parser(
        PROGRAM,
        "Evaluate shard sets (real and synthetic) and write report.md, report.json, CSV tables and figures: caption "
        "volume, redundancy and CLIPScore (Tables 1-2), caption/mask consistency, composition (Figure 3), FID/KID "
        "and t-SNE/UMAP (Figure 4) against a reference set.",
        options_of=EvalConfig,
    )


def _run(cfg: Namespace) -> None:
    from aras400k.evaluation import EvalConfig, run_evaluation
    from aras400k.evaluation.report import headline_markdown

    result = run_evaluation(config_from(EvalConfig, build_parser(), cfg))
    print(headline_markdown(result))
    print("written: " + ", ".join(str(path) for path in result.files.values()))


main = command_main(PROGRAM, build_parser, _run)

if __name__ == "__main__":
    sys.exit(main())
