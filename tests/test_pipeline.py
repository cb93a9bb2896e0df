"""aras-pipeline: the paper's stages from one config, resumable, with an index of every output."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml

from aras400k.cli.pipeline import main
from aras400k.pipeline import STAGE_NAMES, PipelineConfig, PipelineError, run_pipeline
from aras400k.pipeline.stages import deep_update, set_dotted

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TINY_ENCODER = "tu-mobilenetv3_small_050"


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage configs name the base files relative to the repository root, as users run them."""
    monkeypatch.chdir(ROOT)


def _tiny_config(run_dir: Path) -> dict:
    """The demo pipeline at 32 px with 8-32 channel networks and a few steps per stage."""
    trainer = {"trainer.max_time": None, "trainer.max_epochs": 1, "trainer.limit_train_batches": 2}
    return {
        "run_dir": str(run_dir),
        "data": {"command": "demo", "options": {"train": 24, "val": 8, "test": 8, "image_size": 32}},
        "segmenter": {
            "config": "configs/seg_unet.yaml",
            "options": trainer
            | {"model.init_args.arch": "fpn", "model.init_args.encoder": TINY_ENCODER, "data.init_args.num_workers": 0},
        },
        "stylegan3": {
            "config": "configs/gan_stylegan3.yaml",
            "options": trainer
            | {
                "trainer.check_val_every_n_epoch": 1,
                "trainer.limit_val_batches": 1,
                "model.init_args.resolution": 32,
                "model.init_args.cbase": 256,
                "model.init_args.cmax": 16,
                "model.init_args.z_dim": 16,
                "model.init_args.w_dim": 16,
                "model.init_args.sample_seeds": 4,
                "data.init_args.batch_size": 4,
                "data.init_args.num_workers": 0,
            },
        },
        "spade": {
            "config": "configs/gan_spade.yaml",
            "options": trainer
            | {
                "trainer.max_steps": -1,
                "trainer.val_check_interval": None,
                "trainer.limit_val_batches": 1,
                "model.init_args.g_num_upsamplings": 2,
                "model.init_args.g_base_channels": 8,
                "model.init_args.g_max_channels": 16,
                "model.init_args.g_spade_hidden": 16,
                "model.init_args.z_dim": 8,
                "model.init_args.d_num_downsamplings": 3,
                "model.init_args.d_base_channels": 8,
                "model.init_args.d_max_channels": 16,
                "model.init_args.grid_rows": 2,
                "model.init_args.samples_per_mask": 2,
                "data.init_args.batch_size": 4,
                "data.init_args.num_workers": 0,
            },
        },
        "synth_uncond": {"options": {"n": 12, "batch_size": 6, "device": "cpu"}},
        "synth_cond": {"options": {"batch_size": 12, "device": "cpu"}},
        "label": {"options": {"batch_size": 12, "device": "cpu"}},
        "captions": {
            "sets": ["real", "synth_uncond"],
            "models": [
                {
                    "name": "template",
                    "modes": ["text", "hybrid"],
                    "config": "configs/caption_template.yaml",
                    "options": {"captions_per_image": 2},
                }
            ],
        },
        "eval": {
            "config": "configs/eval.yaml",
            "options": {
                "max_samples": 12,
                "embedding_methods": ["tsne"],
                "perplexity": 5,
                "kid_subsets": 5,
                "kid_subset_size": 6,
                "num_threads": 1,
            },
        },
        "ablate": {
            "config": "configs/ablate.yaml",
            "options": {
                "archs": ["fpn"],
                "encoder": TINY_ENCODER,
                "max_epochs": 1,
                "samples_per_epoch": 8,
                "batch_size": 4,
                "num_workers": 0,
            },
        },
    }


def _links(index: Path) -> list[Path]:
    return [index.parent / link for link in re.findall(r"\]\(([^)#]+)\)", index.read_text())]


@pytest.mark.usefixtures("in_repo")
def test_tiny_pipeline_runs_every_stage_indexes_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(yaml.safe_dump(_tiny_config(run_dir)))
    console = io.StringIO()
    config = _load(config_file)
    result = run_pipeline(config, console=console)

    # Every stage ran once, one progress line each, and left its outputs.
    assert [r.name for r in result.stages] == list(STAGE_NAMES)
    assert all(r.status == "ran" for r in result.stages), result.stages
    lines = [line for line in console.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == len(STAGE_NAMES) and all(" done in " in line for line in lines)
    for name in ("real/train", "synth_uncond", "synth_cond"):
        assert (run_dir / "data" / name / "manifest.json").is_file()
    labelled = json.loads((run_dir / "data" / "synth_uncond" / "manifest.json").read_text())
    assert labelled["num_samples"] == 12 and labelled["num_masks"] == 12
    assert (run_dir / "eval" / "report.md").is_file() and (run_dir / "ablate" / "table3.md").is_file()
    assert len(list((run_dir / "captions").glob("*.jsonl"))) == 4

    # The GANs logged FID in the segmenter's feature space during training.
    metrics = next((run_dir / "stylegan3" / "logs").glob("version_*/metrics.csv")).read_text()
    assert "val_fid" in metrics.splitlines()[0]

    # index.md links only files that exist, including checkpoints, tables and figures.
    index = result.index
    assert index == run_dir / "index.md"
    links = _links(index)
    assert links and all(p.exists() for p in links), [p for p in links if not p.exists()]
    names = {p.name for p in links}
    assert {"last.ckpt", "report.md", "table3.md", "composition.png", "per_class_f1.png"} <= names
    assert {"real.png", "synth_uncond.png", "synth_cond.png"} <= names  # aras-data preview of each set
    # The tiny StyleGAN is undertrained by its own config (2 iterations of a 3.2 kimg
    # budget): console and index say so in words; the segmenter saw its whole epoch.
    text = index.read_text()
    flagged = text.split("## ⚠ Results not to trust")[1].split("\n## ")[0]
    assert "**stylegan3**: the GAN stopped at 0.01 of its 3.2 kimg: it is undertrained" in flagged
    assert "**segmenter**" not in flagged
    assert "WARNING (stylegan3): the GAN stopped at 0.01 of its 3.2 kimg" in console.getvalue()
    assert "| stylegan3 |" in text and "⚠ not trustworthy" in text
    summary = json.loads((run_dir / "stylegan3" / "training_summary.json").read_text())
    assert summary["stopped_by"] == "max_epochs" and summary["iterations"] == 2 and summary["budget"]["kimg"] == 3.2
    glance = index.read_text().split("## Results at a glance")[1].split("\n## ")[0]
    for headline in ("Segmenter on the real test split", "stylegan3 `val_fid`", "spade `val_fid`", "Table 3"):
        assert headline in glance

    # A rerun skips everything; --only reruns one stage from scratch and nothing after it.
    again = run_pipeline(config, console=io.StringIO())
    assert all(r.status == "skipped" for r in again.stages)
    only = run_pipeline(config, only=["eval"], console=io.StringIO())
    assert {r.name: r.status for r in only.stages}["eval"] == "ran"
    assert all(r.status == "not run" for r in only.stages if r.name != "eval")

    # An interrupted stage (no completion record) resumes, and every later stage reruns.
    (run_dir / ".pipeline" / "captions.json").unlink()
    sidecar = run_dir / "captions" / "real.text.template.jsonl"
    full = sidecar.read_text()
    sidecar.write_text("".join(full.splitlines(keepends=True)[:5]))
    resumed = run_pipeline(config, console=io.StringIO())
    status = {r.name: r.status for r in resumed.stages}
    assert status["label"] == "skipped" and status["captions"] == status["eval"] == status["ablate"] == "ran"
    assert sidecar.read_text() == full


def _load(path: Path) -> PipelineConfig:
    from dataclasses import fields

    from aras400k.cli.pipeline import build_parser

    parser = build_parser()
    init = parser.instantiate(parser.parse_args(["--config", str(path)]))
    return PipelineConfig(**{f.name: init[f.name] for f in fields(PipelineConfig)})


def _check_region_configs(run_dir: Path, out: str) -> None:
    """The region config downloads a box into data/raw, prepares it into data/real, trains a segmenter."""
    configs = run_dir / "configs"
    fetch = yaml.safe_load((configs / "data.download.yaml").read_text())
    prepare = yaml.safe_load((configs / "data.yaml").read_text())
    assert fetch["out"] == str(run_dir / "data" / "raw") and len(fetch["bbox"]) == 4
    assert prepare["s2"] == str(run_dir / "data" / "raw" / "s2")
    assert prepare["worldcover"] == str(run_dir / "data" / "raw" / "worldcover")
    assert prepare["out"] == str(run_dir / "data" / "real")
    assert out.index("aras-data download") < out.index("aras-data prepare") < out.index("aras-fit")
    segmenter = yaml.safe_load((configs / "segmenter.yaml").read_text())
    assert segmenter["data"]["init_args"]["root"] == str(run_dir / "data" / "real")
    mapping = yaml.safe_load((configs / "segmenter.map.yaml").read_text())
    assert out.index("aras-fit") < out.index("aras-map")  # the map comes from the trained segmenter
    assert mapping["ckpt_path"] == str(run_dir / "segmenter" / "checkpoints" / "last.ckpt")
    assert mapping["out"] == str(run_dir / "segmenter" / "map" / "landcover.tif")
    assert mapping["scene"].startswith(str(run_dir / "data" / "raw" / "s2"))


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize("name", ["pipeline_demo.yaml", "pipeline_paper.yaml", "pipeline_region.yaml"])
def test_shipped_configs_pass_a_dry_run(name, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["--config", str(CONFIGS / name), "--run_dir", str(run_dir), "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    assert "every command parses" in out
    assert not (run_dir / "index.md").exists() and not (run_dir / "data").exists()  # nothing ran
    if name == "pipeline_region.yaml":
        _check_region_configs(run_dir, out)
        return
    stylegan = yaml.safe_load((run_dir / "configs" / "stylegan3.yaml").read_text())
    callbacks = [c["class_path"] for c in stylegan["trainer"]["callbacks"]]
    assert "aras400k.callbacks.GeneratorFID" in callbacks
    assert stylegan["data"]["init_args"]["root"] == str(run_dir / "data" / "real")
    if name == "pipeline_paper.yaml":
        assert stylegan["model"]["init_args"]["resolution"] == 256
        assert len(list((run_dir / "configs").glob("captions.*.yaml"))) == 4 * 5  # 4 sets x 5 model-modes
        synth = yaml.safe_load((run_dir / "configs" / "synth_uncond.yaml").read_text())
        assert synth["n"] == 300_000
        gemma = yaml.safe_load((run_dir / "configs" / "captions.real.vision.gemma3-4b.yaml").read_text())
        assert gemma["openai"]["model"] == "google/gemma-3-4b-it" and gemma["openai"]["timeout_s"] == 120
        assert gemma["captions_per_image"] == 1 and gemma["openai"]["max_concurrency"] == gemma["batch_size"] == 128
        spade = yaml.safe_load((run_dir / "configs" / "spade.yaml").read_text())
        assert spade["trainer"]["check_val_every_n_epoch"] is None


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize(
    ("value", "expected"),
    [("eval", ["eval"]), ("eval,ablate", ["eval", "ablate"]), ("[eval, ablate]", ["eval", "ablate"])],
)
def test_only_takes_a_name_a_comma_list_or_a_yaml_list(tmp_path, monkeypatch, value, expected):
    """``--only eval`` as the docs write it (it was refused: the option took only a YAML list)."""
    import aras400k.pipeline

    seen = {}

    def run_pipeline(config, from_stage=None, only=None, dry_run=False, verbose=False, console=None):
        seen["only"] = only

    monkeypatch.setattr(aras400k.pipeline, "run_pipeline", run_pipeline)
    args = ["--config", str(CONFIGS / "pipeline_demo.yaml"), "--run_dir", str(tmp_path / "run")]
    assert main([*args, "--only", value]) == 0
    assert seen["only"] == expected


@pytest.mark.usefixtures("in_repo")
def test_only_without_a_name_is_refused(tmp_path, capsys):
    args = ["--config", str(CONFIGS / "pipeline_demo.yaml"), "--run_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--only", " , "])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "--only needs at least one stage name" in err


@pytest.mark.usefixtures("in_repo")
def test_bad_stage_names_and_a_failing_stage(tmp_path, capsys):
    args = ["--config", str(CONFIGS / "pipeline_demo.yaml"), "--run_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--only", "[captionz]"])
    assert stop.value.code == 2 and "unknown stage 'captionz'" in capsys.readouterr().err
    # Labelling before anything was trained fails; the message names the stage's log.
    assert main([*args, "--only", "[label]"]) == 1
    err = capsys.readouterr().err
    assert "stage label failed" in err and str(tmp_path / "run" / "logs" / "label.log") in err
    assert "aras-synth: error:" in err  # the command's own reason, taken from the stage log
    with pytest.raises(ValueError, match="unknown stages"):
        PipelineConfig(skip=["nope"])
    with pytest.raises(PipelineError):
        raise PipelineError("x")


def test_config_helpers():
    config = {"trainer": {"max_epochs": 3}, "openai": {"model": "a", "timeout_s": 5}}
    set_dotted(config, "trainer.callbacks.x", 1)
    assert config["trainer"] == {"max_epochs": 3, "callbacks": {"x": 1}}
    with pytest.raises(ValueError, match="not a mapping"):
        set_dotted(config, "trainer.max_epochs.y", 1)
    deep_update(config, {"openai": {"model": "b"}})
    assert config["openai"] == {"model": "b", "timeout_s": 5}
    deep_update(config, {"openai": {"extra_body": {"x": 1}}})
    deep_update(config, {"openai": {"extra_body": {}}})  # an empty mapping clears
    assert config["openai"]["extra_body"] == {}


@pytest.mark.usefixtures("in_repo")
def test_the_segmenter_stage_maps_a_scene_when_the_map_section_names_one(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    scene = tmp_path / "scene.tif"
    rng = np.random.default_rng(0)
    bands = np.kron(rng.integers(1, 3000, (4, 6, 8)), np.ones((1, 8, 8), dtype=np.int64)).astype(np.uint16)
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=48, count=4, dtype="uint16",
                       crs="EPSG:32635", transform=from_origin(500000, 4100000, 10, 10)) as dst:  # fmt: skip
        dst.write(bands)
    run_dir = tmp_path / "run"
    config = _tiny_config(run_dir)
    config["map"] = {"options": {"scene": str(scene), "tile_size": 32, "batch_size": 4, "progress": False}}
    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(yaml.safe_dump(config))
    run_pipeline(_load(config_file), only=["data", "segmenter"], console=io.StringIO())
    landcover = run_dir / "segmenter" / "map" / "landcover.tif"
    with rasterio.open(landcover) as out, rasterio.open(scene) as src:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
    links = {p.name for p in _links(run_dir / "index.md")}
    assert {"landcover.tif", "landcover.png"} <= links


def test_the_synthesis_stages_write_one_config_each_and_preview_their_sets(tmp_path):
    from aras400k.pipeline.stages import LabelStage, RunLayout, SynthCondStage, SynthUncondStage

    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(yaml.safe_dump(_tiny_config(tmp_path / "run")))
    layout = RunLayout(_load(config_file))
    data, figures = layout.data, tmp_path / "run" / "figures"

    uncond = SynthUncondStage(layout)
    (command,) = uncond.commands()
    assert (command.program, command.args[:2]) == ("aras-synth", ("stylegan3", "--config"))
    written = yaml.safe_load(Path(command.args[2]).read_text())
    assert written["n"] == 12 and written["progress"] is False  # the section's options win over the default n
    assert written["ckpt"] == str(layout.checkpoint("stylegan3"))
    assert written["out"] == str(data / "synth_uncond_unlabelled")
    assert [a.path for a in uncond.artefacts()] == [data / "synth_uncond_unlabelled" / "manifest.json"]

    label = LabelStage(layout)
    run, preview = label.commands()
    written = yaml.safe_load(Path(run.args[2]).read_text())
    assert list(written)[-3:] == ["ckpt", "input", "out"]  # the pipeline's paths last, in this order
    assert written["input"] == str(data / "synth_uncond_unlabelled") and written["out"] == str(data / "synth_uncond")
    assert preview.program == "aras-data" and str(figures / "synth_uncond.png") in preview.args
    assert label.outputs() == [data / "synth_uncond"]
    manifest, figure = (a.path for a in label.artefacts())
    assert manifest == data / "synth_uncond" / "manifest.json" and figure == figures / "synth_uncond.png"

    cond = SynthCondStage(layout)
    run, preview = cond.commands()
    written = yaml.safe_load(Path(run.args[2]).read_text())
    assert run.args[0] == "spade" and written["masks"] == layout.real("train")
    assert written["ckpt"] == str(layout.checkpoint("spade")) and str(figures / "synth_cond.png") in preview.args
