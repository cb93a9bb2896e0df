"""One pipeline per run folder: a second run on a folder in use stops at once."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from aras400k.cli import LOCKED_STATUS
from aras400k.cli.pipeline import main
from aras400k.locking import exclusive_lock, lock_path
from aras400k.pipeline import STAGE_NAMES, PipelineConfig, run_pipeline

CONFIGS = Path(__file__).parents[1] / "configs"


def test_second_pipeline_on_a_run_folder_in_use_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "pipeline_demo.yaml"), "--run_dir", str(run_dir), "--dry_run", "true"]
    with exclusive_lock(run_dir), pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == LOCKED_STATUS
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aras-pipeline: error: {run_dir} is in use by another run (pid {os.getpid()} on ")
    assert err.endswith("; wait for it or stop it") and "\n" not in err
    assert not (run_dir / "configs").exists()  # the refused run wrote nothing
    # Free again once the holder is gone (a run with every stage skipped: quick).
    result = run_pipeline(PipelineConfig(run_dir=str(run_dir), skip=list(STAGE_NAMES)), console=io.StringIO())
    assert [r.status for r in result.stages] == ["not run"] * len(STAGE_NAMES)
    assert not lock_path(run_dir).exists()
