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
from dataclasses import fields

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from aras400k.cli import parse_and_run

__all__ = ["build_parser", "main"]

PROGRAM = "aras-ablate"


def build_parser() -> ArgumentParser:
    """Build the ``aras-ablate`` parser (every :class:`AblationConfig` field is an option).

    Returns:
        The parser; it raises ``argparse.ArgumentError`` instead of exiting on bad input.
    """
    from aras400k.ablation import AblationConfig

    parser = ArgumentParser(
        prog=PROGRAM,
        description="Train the chosen segmenters on real, synthetic and mixed data and write the paper's "
        "Tables 3 and 4 (tested on the real test split). Resumable: finished runs are skipped.",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument(
        "--tables_only", type=bool, default=False, help="train nothing; rebuild the tables from existing scores.json"
    )
    parser.add_class_arguments(AblationConfig, as_group=False)
    return parser


def _run(cfg: Namespace) -> int:
    from aras400k.ablation import AblationConfig, run_ablation

    init = build_parser().instantiate(cfg)
    config = AblationConfig(**{f.name: init[f.name] for f in fields(AblationConfig)})
    result = run_ablation(config, tables_only=cfg.tables_only)
    counts = f"{len(result.trained)} trained, {len(result.skipped)} skipped"
    if result.missing:
        counts += f", {len(result.missing)} without scores"
    print(f"\nTable 3. Test scores (%) on the real test split ({counts}):\n\n{result.table3_markdown}\n")
    print("written: " + ", ".join(str(path) for path in result.files.values()))
    return 0


def main(args: list[str] | None = None) -> int:
    """Run ``aras-ablate``.

    Args:
        args: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (one line on stderr).
    """
    return parse_and_run(PROGRAM, build_parser(), args, _run)


if __name__ == "__main__":
    sys.exit(main())
