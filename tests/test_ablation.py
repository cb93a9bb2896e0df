import contextlib
import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from aras400k import ablation
from aras400k.ablation import (
    MEAN,
    SCORES_NAME,
    AblationConfig,
    DataConfiguration,
    DemoStandIn,
    RunScores,
    build_demo_data,
    build_table3,
    build_table4,
    format_table3,
    format_table4,
    plot_per_class_f1,
    run_ablation,
    run_folder,
    validate_config,
)
from aras400k.classes import CLASS_NAMES
from aras400k.cli.ablate import build_parser, main
from aras400k.data.datasets import ShardSource
from tests.conftest import write_random_set

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "ablate.yaml"
TABLE3_KEYS = ("f1_macro", "iou_macro", "precision_macro", "recall_macro", "accuracy")


def _tiny_yaml(path: Path, root: Path, synth: Path, out: Path) -> Path:
    lines = [
        f"root: {root}",
        f"out_dir: {out}",
        "demo: false",
        "archs: [unet, fpn]",
        "configurations:",
        "  - name: real",
        f"    train: [{{path: {root / 'train'}}}]",
        "  - name: real+synth",
        f"    train: [{{path: {root / 'train'}}}, {{path: {synth}, num_samples: 8}}]",
        "batch_size: 4",
        "num_workers: 0",
        "max_epochs: 1",
        "samples_per_epoch: 8",
        "log_every_n_steps: 1",
        "progress_bar: false",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(root: Path, out: Path, names: tuple[str, ...] = ("a", "b"), **kwargs: object) -> AblationConfig:
    configurations = [DataConfiguration(name, [ShardSource(str(root / "train"))]) for name in names]
    options = {"batch_size": 4, "num_workers": 0, "max_epochs": 1, "samples_per_epoch": 8, "progress_bar": False}
    options["log_every_n_steps"] = 1
    return AblationConfig(
        configurations=configurations, root=str(root), out_dir=str(out), demo=False, **options | kwargs
    )


def _fake_scores(configuration: str, arch: str, f1: float = 0.5) -> RunScores:
    scores = {key: f1 for key in TABLE3_KEYS}
    scores |= {f"f1_{name}": f1 + 0.01 * i for i, name in enumerate(CLASS_NAMES)}
    return RunScores(configuration=configuration, arch=arch, scores=scores, selected_by="last")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-ablate: error:") and "\n" not in err
    return err


# -- table builders (no training) -------------------------------------------------------------


def test_tables_from_hand_made_scores(tmp_path):
    runs = [
        _fake_scores("real", "unet", 0.6),
        _fake_scores("real", "fpn", 0.8),
        _fake_scores("synth", "fpn", 0.4),
        _fake_scores("synth", "unet", 0.2),
    ]
    runs[0].scores["f1_shrub"] = math.nan  # shrub absent from the test truth and unet's predictions
    runs[2].scores["f1_water"] = math.nan
    runs[3].scores["f1_water"] = math.nan  # no score for water in any synth run

    table3 = build_table3(runs, ["real", "synth"], ["unet", "fpn"])
    assert [(r["configuration"], r["model"]) for r in table3] == [
        ("real", "unet"), ("real", "fpn"), ("real", MEAN), ("synth", "unet"), ("synth", "fpn"), ("synth", MEAN),
    ]  # fmt: skip
    assert table3[2]["f1_macro"] == pytest.approx(0.7) and table3[5]["accuracy"] == pytest.approx(0.3)
    text3 = format_table3(table3)
    assert "| real | **mean** | 70.00 | 70.00 | 70.00 | 70.00 | 70.00 |" in text3

    table4 = build_table4(runs, ["real", "synth"], ["unet", "fpn"])
    assert [r["model"] for r in table4] == ["unet", "unet", "fpn", "fpn", MEAN, MEAN]
    real_mean = table4[4]
    assert real_mean["configuration"] == "real"
    assert real_mean["shrub"] == pytest.approx(0.81)  # the NaN is left out of the mean
    assert real_mean["tree"] == pytest.approx(0.7)
    assert math.isnan(table4[5]["water"])
    text4 = format_table4(table4)
    assert "### unet" in text4 and "### mean over architectures" in text4
    unet_real = next(line for line in text4.splitlines() if line.startswith("| real |"))
    assert unet_real.split(" | ")[2] == "n/a"  # unet's shrub
    assert text4.splitlines()[-1].endswith("| n/a |")  # mean synth water
    # order of first appearance when no order is given
    assert [r["model"] for r in build_table3(runs)[:3]] == ["unet", "fpn", MEAN]
    # one architecture: no mean row repeating it, and the chart draws that architecture
    single = [run for run in runs if run.arch == "unet"]
    assert [r["model"] for r in build_table3(single)] == ["unet", "unet"]
    assert "mean" not in format_table3(build_table3(single)) and "mean" not in format_table4(build_table4(single))
    assert plot_per_class_f1(build_table4(single), tmp_path / "single.png").is_file()


def test_report_files_render_nan_as_na(tmp_path):
    config = _config(tmp_path, tmp_path / "out", names=("real", "synth"), archs=["unet"])
    runs = [_fake_scores("real", "unet"), _fake_scores("synth", "unet")]
    runs[1].scores["f1_built"] = math.nan
    result = ablation.write_report(config, runs)
    assert set(result.files) == {
        "table3.md",
        "table3.csv",
        "table4.md",
        "table4.csv",
        "per_class_f1.png",
        "summary.json",
    }
    rows = _read_csv(result.files["table4.csv"])
    assert rows[1]["model"] == "unet" and rows[1]["configuration"] == "synth" and rows[1]["built"] == "n/a"
    assert float(rows[0]["tree"]) == pytest.approx(50.0)
    summary = json.loads(result.files["summary.json"].read_text())
    assert summary["runs"][1]["scores"]["f1_built"] is None
    assert Image.open(result.files["per_class_f1.png"]).size[0] >= 800


def test_run_scores_json_round_trip(tmp_path):
    run = _fake_scores("real", "unet")
    run.scores["f1_shrub"] = math.nan
    path = ablation.write_run_scores(run, tmp_path / "r" / SCORES_NAME)
    assert "NaN" not in path.read_text() and not list(path.parent.glob(".*tmp"))
    back = ablation.read_run_scores(path)
    assert math.isnan(back.scores.pop("f1_shrub")) and back.scores == {
        k: v for k, v in run.scores.items() if k != "f1_shrub"
    }
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="delete it to rerun"):
        ablation.read_run_scores(tmp_path / "bad.json")


# -- resuming (a fake trainer stands in for training) ------------------------------------


class FakeTrainer:
    """Stands in for ``train_and_evaluate``; ``fail_on`` a cell raises KeyboardInterrupt, ``"*"`` any call fails."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on

    def __call__(self, config, configuration, arch, folder):
        cell = f"{configuration.name}/{arch}"
        self.calls.append(cell)
        if self.fail_on == "*":
            raise AssertionError(f"{cell} was trained")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "partial.ckpt").write_text("x")
        if cell == self.fail_on:
            raise KeyboardInterrupt
        return _fake_scores(configuration.name, arch, 0.1 * len(self.calls))


def test_resume_skips_finished_and_reruns_unfinished(demo_root, tmp_path, monkeypatch, capsys):
    config = _config(demo_root, tmp_path / "out", archs=["unet", "fpn"])
    killed = FakeTrainer(fail_on="b/unet")
    monkeypatch.setattr(ablation, "train_and_evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(config)
    assert killed.calls == ["a/unet", "a/fpn", "b/unet"]
    assert (run_folder(config, "a", "fpn") / SCORES_NAME).is_file()
    assert not (run_folder(config, "b", "unet") / SCORES_NAME).exists()  # the killed run left no scores
    capsys.readouterr()

    again = FakeTrainer()
    monkeypatch.setattr(ablation, "train_and_evaluate", again)
    result = run_ablation(config)
    assert again.calls == ["b/unet", "b/fpn"]
    assert result.skipped == ["a/unet", "a/fpn"] and result.trained == ["b/unet", "b/fpn"]
    out = capsys.readouterr().out
    assert "[1/4] a / unet: skipped" in out and "[3/4] b / unet ..." in out

    table3 = result.files["table3.csv"].read_text()
    nothing = FakeTrainer(fail_on="*")
    monkeypatch.setattr(ablation, "train_and_evaluate", nothing)
    config.lr = 0.5
    second = run_ablation(config)
    assert nothing.calls == [] and second.trained == [] and len(second.skipped) == 4
    assert second.files["table3.csv"].read_text() == table3
    assert "made with other lr" in capsys.readouterr().out


def test_tables_only_trains_nothing_and_notes_missing_runs(demo_root, tmp_path, monkeypatch):
    config = _config(demo_root, tmp_path / "out", archs=["unet"])
    ablation.write_run_scores(_fake_scores("a", "unet"), run_folder(config, "a", "unet") / SCORES_NAME)
    monkeypatch.setattr(ablation, "train_and_evaluate", FakeTrainer(fail_on="b/unet"))
    result = run_ablation(config, tables_only=True)
    assert result.missing == ["b/unet"] and [r["model"] for r in result.table3] == ["unet"]  # one arch: no mean row
    assert "No scores yet for: b/unet" in result.files["table3.md"].read_text()


# -- validation, before any training ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"archs": []}, "archs is empty"),
        ({"archs": ["unet", "segnet"]}, "unknown arch 'segnet' in archs; choose from unet, unetplusplus"),
        ({"archs": ["fpn", "fpn"]}, "duplicate archs: fpn"),
        ({"configurations": []}, "configurations is empty"),
        ({"encoder": "resnet1000"}, "unknown encoder 'resnet1000'"),
        ({"max_epochs": None}, "training budget is unbounded"),
        ({"samples_per_epoch": 0}, "samples_per_epoch must be >= 1"),
    ],
)
def test_validate_config_messages(tmp_path, change, message):
    config = _config(tmp_path, tmp_path / "out")
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_configuration_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="duplicate configuration names: a"):
        validate_config(_config(tmp_path, tmp_path / "out", names=("a", "b", "a")))
    with pytest.raises(ValueError, match="not usable as a folder name"):
        validate_config(_config(tmp_path, tmp_path / "out", names=("real/synth",)))
    config = _config(tmp_path, tmp_path / "out", names=("a",))
    config.configurations[0].train = []
    with pytest.raises(ValueError, match="'a' has no training sources"):
        validate_config(config)


def test_cli_errors_are_one_line_and_come_before_training(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ablation, "train_and_evaluate", FakeTrainer(fail_on="*"))  # would fail if called
    synth = write_random_set(tmp_path / "synth", 8)
    good = _tiny_yaml(tmp_path / "good.yaml", demo_root, synth, tmp_path / "out")

    err = _one_line_error(capsys, ["--config", str(good), "--archs", "[unet, segnet]"])
    assert "segnet" in err and "unetplusplus" in err and "deeplabv3plus" in err

    missing = _tiny_yaml(tmp_path / "missing.yaml", demo_root, tmp_path / "nowhere", tmp_path / "out")
    err = _one_line_error(capsys, ["--config", str(missing)])
    assert "configuration 'real+synth'" in err and "nowhere" in err and "is not a folder" in err

    no_masks = write_random_set(tmp_path / "unlabelled", 8, masks=False)
    unlabelled = _tiny_yaml(tmp_path / "unlabelled.yaml", demo_root, no_masks, tmp_path / "out")
    assert "without a mask" in _one_line_error(capsys, ["--config", str(unlabelled)])

    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(good.read_text().replace("name: real+synth", "name: real"))
    assert "duplicate configuration names: real" in _one_line_error(capsys, ["--config", str(duplicate)])

    too_many = tmp_path / "too_many.yaml"
    too_many.write_text(good.read_text().replace("num_samples: 8", "num_samples: 9"))
    assert "fewer than num_samples=9" in _one_line_error(capsys, ["--config", str(too_many)])

    assert "does_not_exist.yaml" in _one_line_error(capsys, ["--config", str(tmp_path / "does_not_exist.yaml")])
    assert not (tmp_path / "out" / "runs").exists()


def test_help_and_the_shipped_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--samples_per_epoch" in capsys.readouterr().out
    parser = build_parser()
    init = parser.instantiate(parser.parse_args(["--config", str(CONFIG_FILE)]))
    config = AblationConfig(**{k: init[k] for k in AblationConfig.__dataclass_fields__})
    validate_config(config)
    assert [c.name for c in config.configurations] == [
        "real", "synth_small", "synth_large", "real+cond", "real+uncond", "real+both",
    ]  # fmt: skip
    assert {s.source for s in config.demo_stand_ins} == {"synth_uncond", "synth_cond"}
    assert config.samples_per_epoch and config.max_epochs


def test_stand_ins_are_built_only_when_listed(tmp_path, capsys):
    config = _config(tmp_path / "real", tmp_path / "out")
    assert build_demo_data(config) == []  # demo off, nothing listed: nothing built
    stand_in = DemoStandIn(
        out=str(tmp_path / "su"), seed=1, source="synth_uncond", num_samples=(4, 0, 0), image_size=32
    )
    config.demo_stand_ins = [stand_in]
    assert build_demo_data(config) == [tmp_path / "su"]
    manifest = json.loads((tmp_path / "su" / "train" / "manifest.json").read_text())
    assert manifest["source"] == "synth_uncond" and manifest["num_samples"] == 4
    assert build_demo_data(config) == []  # already there
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    config.demo_stand_ins = [DemoStandIn(out=str(tmp_path / "other"), seed=2)]
    with pytest.raises(FileExistsError, match="holds files"):
        build_demo_data(config)


# -- the real thing: 2 configurations x 2 architectures, a few training steps each -----------


@pytest.fixture(scope="module")
def one_thread():
    # Tiny convolutions gain nothing from a second thread, and on a shared 2-core
    # machine OpenMP threads contending with other processes make them 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study(demo_root, tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("ablation")
    synth = write_random_set(tmp / "synth", 8, source="synth_uncond")
    config = _tiny_yaml(tmp / "ablate.yaml", demo_root, synth, tmp / "out")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["--config", str(config)]) == 0
    return tmp / "out", stdout.getvalue(), config


def test_study_writes_tables_figure_and_run_folders(study):
    out, printed, _ = study
    for i, cell in enumerate(["real / unet", "real / fpn", "real+synth / unet", "real+synth / fpn"], start=1):
        assert f"[{i}/4] {cell} ..." in printed
    assert "Table 3." in printed and "| real | **mean** |" in printed
    scores = {}
    for conf in ("real", "real+synth"):
        for arch in ("unet", "fpn"):
            folder = out / "runs" / conf / arch
            run = json.loads((folder / SCORES_NAME).read_text())
            assert run["selected_by"] == "best val_f1_macro" and (folder / run["checkpoint"]).is_file()
            assert (folder / "logs" / "metrics.csv").is_file()
            assert run["steps"] == 2 and run["train_samples"] == 8
            scores[conf, arch] = run["scores"]

    table3 = _read_csv(out / "table3.csv")
    assert [(r["configuration"], r["model"]) for r in table3] == [
        ("real", "unet"), ("real", "fpn"), ("real", MEAN), ("real+synth", "unet"), ("real+synth", "fpn"),
        ("real+synth", MEAN),
    ]  # fmt: skip
    for row in table3:
        conf, model = row["configuration"], row["model"]
        for key in TABLE3_KEYS:
            values = [scores[conf, a][key] for a in ("unet", "fpn")] if model == MEAN else [scores[conf, model][key]]
            assert float(row[key]) == pytest.approx(100 * sum(values) / len(values), abs=1e-3)

    table4 = _read_csv(out / "table4.csv")
    assert [r["model"] for r in table4] == ["unet", "unet", "fpn", "fpn", MEAN, MEAN]
    assert list(table4[0])[2:] == list(CLASS_NAMES)
    md4 = (out / "table4.md").read_text()
    assert md4.count("### ") == 3 and "| training data | tree | shrub |" in md4
    assert "| real+synth | fpn |" in (out / "table3.md").read_text()
    assert Image.open(out / "per_class_f1.png").size[0] >= 800
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 4 and len(summary["table3"]) == 6


def test_study_resumes_without_training(study, monkeypatch, capsys):
    out, _, config = study
    before = {name: (out / name).read_text() for name in ("table3.md", "table3.csv", "table4.md", "table4.csv")}
    trainer = FakeTrainer(fail_on="*")
    monkeypatch.setattr(ablation, "train_and_evaluate", trainer)
    assert main(["--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert trainer.calls == [] and printed.count("skipped") >= 4 and "0 trained, 4 skipped" in printed
    assert {name: (out / name).read_text() for name in before} == before


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")
@pytest.mark.parametrize("validate", [False, True])
def test_the_last_checkpoint_is_tested_without_validation(demo_root, tmp_path, one_thread, validate):
    # validate=True: one step ends the budget before the first validation
    config = _config(demo_root, tmp_path / "out", names=("real",), archs=["fpn"], validate=validate, max_steps=1)
    run = run_ablation(config).runs[0]
    assert run.selected_by == "last" and run.best_val_f1 is None and run.steps == 1
    assert (run_folder(config, "real", "fpn") / run.checkpoint).is_file()
