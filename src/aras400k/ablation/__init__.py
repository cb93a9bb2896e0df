"""The paper's real / synthetic / mixed training study (its Tables 3 and 4).

What it trains, writes and how it resumes: ``docs/evaluation.md`` ("The real / synthetic
/ mixed study").
"""

from __future__ import annotations

import json
from typing import Any

from aras400k.ablation.config import AblationConfig, DataConfiguration, DemoStandIn, validate_config
from aras400k.ablation.data import build_demo_data, check_data
from aras400k.ablation.report import AblationResult, write_report
from aras400k.ablation.runs import (
    SCORES_NAME,
    RunScores,
    read_run_scores,
    run_folder,
    run_settings,
    train_and_evaluate,
    write_run_scores,
)
from aras400k.ablation.tables import (
    MEAN,
    TABLE3_METRICS,
    build_table3,
    build_table4,
    format_table3,
    format_table4,
    pct,
    plot_per_class_f1,
)

__all__ = [
    "MEAN",
    "SCORES_NAME",
    "TABLE3_METRICS",
    "AblationConfig",
    "AblationResult",
    "DataConfiguration",
    "DemoStandIn",
    "RunScores",
    "build_demo_data",
    "build_table3",
    "build_table4",
    "check_data",
    "format_table3",
    "format_table4",
    "plot_per_class_f1",
    "read_run_scores",
    "run_ablation",
    "run_folder",
    "train_and_evaluate",
    "validate_config",
    "write_report",
    "write_run_scores",
]

# run_ablation is defined here, not in a module of its own, so that it calls
# train_and_evaluate through this namespace: replacing aras400k.ablation.train_and_evaluate
# (as the tests do with monkeypatch) changes what the study trains with.


def _stale_keys(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    current = json.loads(json.dumps(current))  # tuples -> lists, as stored
    return sorted(k for k in current if k in stored and stored[k] != current[k])


def run_ablation(config: AblationConfig, tables_only: bool = False) -> AblationResult:
    """Run the study ``config`` (resumably), write its tables, figure and summary; return the runs, tables and files.

    The settings, the procedural data the config asks for and every shard set are
    checked before the first run starts.

    Args:
        config: The study.
        tables_only: Train nothing; rebuild the outputs from the existing ``scores.json`` files.

    Raises:
        ValueError: On a bad setting or shard set (see :func:`validate_config`, :func:`check_data`).
        FileExistsError: If a stand-in's folder holds other files.
    """
    validate_config(config)
    if not tables_only:
        build_demo_data(config)
        check_data(config)
    grid = [(c, arch) for c in config.configurations for arch in config.archs]
    runs: list[RunScores] = []
    trained, skipped, missing = [], [], []
    for index, (configuration, arch) in enumerate(grid, start=1):
        tag = f"[{index}/{len(grid)}] {configuration.name} / {arch}"
        cell = f"{configuration.name}/{arch}"
        folder = run_folder(config, configuration.name, arch)
        path = folder / SCORES_NAME
        if path.is_file():
            run = read_run_scores(path)
            stale = _stale_keys(run.settings, run_settings(config, configuration, arch))
            print(f"{tag}: skipped, {path} exists" + (f" (made with other {', '.join(stale)})" if stale else ""))
            skipped.append(cell)
        elif tables_only:
            print(f"{tag}: no scores yet")
            missing.append(cell)
            continue
        else:
            print(f"{tag} ...", flush=True)
            run = train_and_evaluate(config, configuration, arch, folder)
            run.settings = run_settings(config, configuration, arch)
            write_run_scores(run, path)
            print(f"{tag}: test F1 {pct(run.scores['f1_macro'])}% ({run.selected_by} checkpoint, {run.seconds:.0f} s)")
            trained.append(cell)
        runs.append(run)
    result = write_report(config, runs, missing)
    result.trained, result.skipped = trained, skipped
    return result
