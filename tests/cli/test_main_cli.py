from pathlib import Path

import pytest

from aras400k.cli.main import cli, fit_main
from aras400k.models import ARCHITECTURES

CONFIGS = Path(__file__).parents[2] / "configs"


def _overrides(demo_root, tmp_path):
    return [
        "--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "8", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", "false",
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Configs write to runs/... relative to the working directory: keep that in tmp."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_segmentation_config_runs(arch, demo_root, tmp_path):
    config = CONFIGS / f"seg_{arch}.yaml"
    result = cli(["fit", "--config", str(config), "--trainer.fast_dev_run", "1", *_overrides(demo_root, tmp_path)])
    assert result.model.hparams["arch"] == arch
    assert result.trainer.state.finished


def test_fit_then_test_with_checkpoint_writes_report(demo_root, tmp_path, capsys):
    config = str(CONFIGS / "seg_unet.yaml")
    args = [
        "--config", config, *_overrides(demo_root, tmp_path), "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    fit_main(args)
    checkpoints = sorted((tmp_path / "runs" / "seg_unet" / "checkpoints").glob("best-*.ckpt"))
    assert len(checkpoints) == 1 and (tmp_path / "runs" / "seg_unet" / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    cli(["test", *args, "--ckpt_path", str(checkpoints[0])])
    out = capsys.readouterr().out
    assert "| class | F1 | IoU | precision | recall |" in out and "| water |" in out
    figures = tmp_path / "test"  # the same folder for every test run
    assert (figures / "test_confusion.png").is_file() and (figures / "test_predictions.png").is_file()
    assert (figures / "test_scores.csv").read_text().startswith("metric,value")


def test_test_without_checkpoint_warns_untrained(demo_root, tmp_path):
    config = str(CONFIGS / "seg_fpn.yaml")
    with pytest.warns(UserWarning, match="untrained model"):
        cli(["test", "--config", config, "--trainer.fast_dev_run", "1", *_overrides(demo_root, tmp_path)])


def test_bad_config_value_exits_with_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["fit", "--config", str(CONFIGS / "seg_unet.yaml"), "--model.init_args.arch", "segnet"])
    assert exc.value.code != 0
    assert "segnet" in capsys.readouterr().err


def test_aras_test_writes_its_scores_to_the_same_place_every_time(demo_root, tmp_path, capsys):
    """With the config's CSV logger each run gets a new version_N; the test table does not move."""
    args = ["--config", str(CONFIGS / "seg_fpn.yaml"), "--data.init_args.root", str(demo_root),
            "--data.init_args.num_workers", "0", "--trainer.limit_test_batches", "1",
            "--trainer.enable_progress_bar", "false",
            "--model.init_args.encoder", "tu-mobilenetv3_small_050"]  # fmt: skip
    for _ in range(2):
        with pytest.warns(UserWarning, match="untrained model"):
            cli(["test", *args])
    root = tmp_path / "runs" / "seg_fpn"
    assert (root / "test" / "test_scores.md").is_file() and (root / "test" / "test_confusion.png").is_file()
    assert not list(root.glob("logs/version_*/figures/test_scores.md"))
    assert f"also in {Path('runs/seg_fpn/test/test_scores.md')}" in capsys.readouterr().out
