"""``aras`` / ``aras-fit``: bad input is one line on stderr and exit status 2, checked before any training step."""

from __future__ import annotations

import errno
import sys
import warnings
from pathlib import Path

import pytest

from aras400k.cli.main import fit_main, main

CONFIG = str(Path(__file__).parents[2] / "configs" / "seg_unet.yaml")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _args(demo_root, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.max_steps", "1",
            "--model.init_args.encoder", "tu-mobilenetv3_small_050", "--model.init_args.arch", "fpn",
            *extra]  # fmt: skip


def _one_line_error(capsys, program: str = "aras-fit") -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith(f"{program}: error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def _fit_fails(demo_root, capsys, *extra: str) -> str:
    with pytest.raises(SystemExit) as exc:
        fit_main(_args(demo_root, *extra))
    assert exc.value.code == 2
    line = _one_line_error(capsys)
    assert not Path("runs/seg_unet/checkpoints").exists(), "training started before the check"
    return line


def test_negative_batch_size(demo_root, capsys):
    assert "batch_size must be >= 1, got -1" in _fit_fails(demo_root, capsys, "--data.init_args.batch_size", "-1")


def test_missing_data_root(demo_root, tmp_path, capsys):
    missing = tmp_path / "no_such_data"
    line = _fit_fails(demo_root, capsys, "--data.init_args.root", str(missing), "--data.init_args.demo", "false")
    assert f"data root {missing} does not exist" in line and "demo: true" in line


def test_unknown_encoder_lists_near_matches(demo_root, capsys):
    line = _fit_fails(demo_root, capsys, "--model.init_args.encoder", "resnet181")
    assert "unknown encoder 'resnet181'" in line and "did you mean resnet18" in line


def test_num_classes_that_differs_from_the_class_table(demo_root, capsys):
    line = _fit_fails(demo_root, capsys, "--model.init_args.num_classes", "5")
    assert "num_classes is 5 but the data's masks hold 7 classes" in line and "set num_classes: 7" in line


@pytest.mark.parametrize("subcommand", ["fit", "test", "validate", "predict"])
def test_wrong_ckpt_path(subcommand, demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([subcommand, *_args(demo_root, "--ckpt_path", str(tmp_path / "nope.ckpt"))])
    assert exc.value.code == 2
    assert f"--ckpt_path {tmp_path / 'nope.ckpt'} does not exist" in _one_line_error(capsys, "aras")


def test_console_script_call_gives_no_args_warning(demo_root, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["aras-fit", *_args(demo_root, "--data.init_args.batch_size", "-1")])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit):
        warnings.simplefilter("always")
        fit_main()
    assert not [w for w in caught if "args parameter is intended" in str(w.message)]


def test_disk_full_names_the_checkpoint_being_written(demo_root, monkeypatch, capsys):
    import lightning.fabric.plugins.io.torch_io as torch_io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", full)
    with pytest.raises(SystemExit) as exc:
        fit_main(_args(demo_root, "--trainer.limit_val_batches", "0"))
    assert exc.value.code == 2
    line = _one_line_error(capsys)
    assert "No space left on device" in line and "last.ckpt" in line and "free some space" in line


def test_debug_variable_shows_the_traceback(demo_root, monkeypatch):
    monkeypatch.setenv("ARAS_DEBUG", "1")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fit_main(_args(demo_root, "--data.init_args.batch_size", "-1"))
