"""``aras-ablate``: the paper's real / synthetic / mixed training study (Tables 3 and 4).

::

    aras-ablate --config configs/ablate.yaml                 train what is missing, write the tables
    aras-ablate --config configs/ablate.yaml --tables_only true   rebuild the tables only
    aras-ablate --config configs/ablate.yaml --archs '[unet]' --max_epochs 1

Every option of :class:`aras400k.ablation.AblationConfig` can be given in the YAML file
or on the command line. The study resumes: finished runs (with a ``scores.json``) are
skipped, so the same command continues an interrupted study.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from aras400k.cli import command_main, command_parser, config_from

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main"]

PROGRAM = "aras-ablate"


def build_parser() -> ArgumentParser:
    """Build the ``aras-ablate`` parser (every :class:`AblationConfig` field is an option).

    Returns:
        The parser; it raises ``argparse.ArgumentError`` instead of exiting on bad input.
    """
    from aras400k.ablation import AblationConfig

    parser = command_parser(
        PROGRAM,
        "Train the chosen segmenters on real, synthetic and mixed data and write the paper's Tables 3 and 4 "
        "(tested on the real test split). Resumable: finished runs are skipped.",
        options_of=AblationConfig,
    )
    parser.add_argument(
        "--tables_only", type=bool, default=False, help="train nothing; rebuild the tables from existing scores.json"
    )
    return parser


def _run(cfg: Namespace) -> int:
    from aras400k.ablation import AblationConfig, run_ablation

    result = run_ablation(config_from(AblationConfig, build_parser(), cfg), tables_only=cfg.tables_only)
    counts = f"{len(result.trained)} trained, {len(result.skipped)} skipped"
    if result.missing:
        counts += f", {len(result.missing)} without scores"
    print(f"\nTable 3. Test scores (%) on the real test split ({counts}):\n\n{result.table3_markdown}\n")
    print("written: " + ", ".join(str(path) for path in result.files.values()))
    return 0


main = command_main(PROGRAM, build_parser, _run)

if __name__ == "__main__":
    sys.exit(main())
