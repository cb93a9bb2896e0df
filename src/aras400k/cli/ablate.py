"""``aras-ablate``: the paper's real / synthetic / mixed training study (Tables 3 and 4).

::

    aras-ablate --config configs/ablate.yaml                 train what is missing, write the tables
    aras-ablate --config configs/ablate.yaml --tables_only true   rebuild the tables only
    aras-ablate --config configs/ablate.yaml --archs '[unet]' --max_epochs 1

Every option of :class:`aras400k.ablation.AblationConfig` can be given in the YAML file
or on the command line. The same command continues an interrupted study (``docs/evaluation.md``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from aras400k.cli import call_with, command_main, command_parser, config_from

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["build_parser", "main"]

PROGRAM = "aras-ablate"


def build_parser() -> ArgumentParser:
    """Returns the ``aras-ablate`` parser: the :class:`AblationConfig` fields and ``run_ablation``'s ``tables_only``."""
    from aras400k.ablation import AblationConfig, run_ablation

    parser = command_parser(
        PROGRAM,
        "Train the chosen segmenters on real, synthetic and mixed data and write the paper's Tables 3 and 4 "
        "(tested on the real test split). Resumable: finished runs are skipped.",
        options_of=AblationConfig,
    )
    parser.add_function_arguments(run_ablation, as_group=False, skip={"config"})
    return parser


def _run(cfg: Namespace) -> None:
    from aras400k.ablation import AblationConfig, run_ablation

    result = call_with(run_ablation, cfg, config=config_from(AblationConfig, build_parser(), cfg))
    counts = f"{len(result.trained)} trained, {len(result.skipped)} skipped"
    if result.missing:
        counts += f", {len(result.missing)} without scores"
    print(f"\nTable 3. Test scores (%) on the real test split ({counts}):\n\n{result.table3_markdown}\n")
    print("written: " + ", ".join(str(path) for path in result.files.values()))


main = command_main(PROGRAM, build_parser, _run)

if __name__ == "__main__":
    sys.exit(main())
