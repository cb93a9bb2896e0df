"""aras-eval: the full report on tiny data, its numbers against independent computations, skips and errors."""

import importlib.util
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
import yaml

from aras400k.captioning import Captioner, CaptionSidecarWriter, read_caption_records
from aras400k.cli.eval import main
from aras400k.data.shards import iter_samples
from aras400k.data.stats import load_compositions
from aras400k.metrics import CLIPScore, score_caption
from aras400k.models.segmentation import SegmentationTask
from tests.conftest import write_random_set
from tests.metrics.test_clipscore import build_tiny_clip

transformers = pytest.importorskip("transformers")

ARCH, ENCODER = "fpn", "tu-mobilenetv3_small_050"  # ~2M parameters, random init, nothing downloaded
# Captions with deliberate repeats, so redundancy is not 0: (model, mode, text) per caption index.
HAND_CAPTIONS = [
    ("model-a", "text", "tree 40%, crop 30%"),
    ("model-a", "text", "grassland with a small lake"),
    ("model-b/v2", "vision", "Forest and fields."),
]


@pytest.fixture(scope="module")
def segmenter_ckpt(tmp_path_factory):
    """A randomly initialised SegmentationTask saved the way Lightning saves one (hyper_parameters + state_dict)."""
    torch.manual_seed(0)
    task = SegmentationTask(arch=ARCH, encoder=ENCODER)
    path = tmp_path_factory.mktemp("seg") / "seg.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def inputs(demo_root, tmp_path_factory):
    """The demo train set with hand-written captions, and a noise "synthetic" set with template captions."""
    root = tmp_path_factory.mktemp("eval-inputs")
    synth = write_random_set(root / "synth", 24, size=32, source="synth_uncond", per_shard=8)
    real_sidecar = root / "real.jsonl"
    keys = [s.key for s in iter_samples(demo_root / "train", with_mask=False, with_captions=False)]
    with CaptionSidecarWriter(real_sidecar) as writer:
        writer.write(
            {"key": key, "index": i, "text": text if k % 3 else f"{text} ({k})", "model": model, "mode": mode}
            | {"prompt_hash": "0", "seed": 0}
            for k, key in enumerate(keys)
            for i, (model, mode, text) in enumerate(HAND_CAPTIONS)
        )
    synth_sidecar = root / "synth.hybrid.jsonl"
    Captioner("hybrid", captions_per_image=2, progress=False).caption_shards(synth, synth_sidecar)
    return {"real": demo_root / "train", "synth": synth, "real_sidecar": real_sidecar, "synth_sidecar": synth_sidecar}


def write_config(path, datasets, **options):
    config = {"datasets": datasets, "progress": False, "num_threads": 1, "batch_size": 16, **options}
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def full_report(inputs, segmenter_ckpt, tiny_clip, tmp_path_factory):
    """The full report via the CLI: captions, CLIP, segmenter, two datasets."""
    out = tmp_path_factory.mktemp("report")
    datasets = [
        {"name": "real", "path": str(inputs["real"]), "captions": [str(inputs["real_sidecar"])]},
        {"name": "synth", "path": str(inputs["synth"]), "captions": [str(inputs["synth_sidecar"])]},
    ]
    options = {"segmenter": str(segmenter_ckpt), "clip": str(tiny_clip), "max_samples": None, "kid_subsets": 10}
    config = write_config(out / "eval.yaml", datasets, out_dir=str(out), **options)
    with warnings.catch_warnings():  # the tiny CLIP's character tokens make every caption "too long"
        warnings.filterwarnings("ignore", message=".*longer than the CLIP text encoder.*")
        assert main(["--config", config]) == 0
    report = json.loads((out / "report.json").read_text(), parse_constant=_no_nan)
    return out, report


def _no_nan(name):
    raise AssertionError(f"report.json holds {name}, which is not JSON")


def _rows(report, section):
    return report["sections"][section]["data"]["rows"]


def _row(report, section, **match):
    found = [r for r in _rows(report, section) if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


def test_report_files_exist_and_every_linked_figure_exists(full_report):
    out, report = full_report
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# aras400k evaluation report")
    links = re.findall(r"\]\(([^)]+)\)", markdown)
    figures = [link for link in links if link.endswith(".png")]
    assert {"composition.png", "share_distributions.png", "embedding_tsne.png"} <= set(figures)
    for link in links:
        assert (out / link).is_file(), link
    for section in report["sections"].values():
        for name in section["figures"].values():
            assert (out / name).is_file() and name in markdown
    assert not list(out.glob("*.tmp*"))  # every file was renamed into place
    assert [r["dataset"] for r in report["headline"]] == ["real", "synth"]
    if importlib.util.find_spec("umap") is None:  # the notice is in the headline and the embedding section
        headline, embedding = markdown.split("\n## ")[0], report["sections"]["embedding"]
        assert "UMAP skipped" in headline and "UMAP skipped" in " ".join(embedding["notes"])


def test_table1_and_table2_equal_an_independent_count_of_the_sidecars(full_report, inputs):
    _, report = full_report
    records = read_caption_records(inputs["real_sidecar"])
    texts = [r["text"] for r in records]
    row = _row(report, "table1", dataset="real")
    assert row["captions"] == len(texts) == 48 * len(HAND_CAPTIONS)
    assert row["unique"] == len(set(texts))
    assert row["redundancy"] == pytest.approx(1 - len(set(texts)) / len(texts))
    assert row["volume"] == 48 and row["captioned_samples"] == 48
    synth_texts = [r["text"] for r in read_caption_records(inputs["synth_sidecar"])]
    everything = texts + synth_texts
    total = _row(report, "table1", dataset="all datasets")
    assert (total["captions"], total["unique"]) == (len(everything), len(set(everything)))
    # Table 2: one row per subset and (model, mode); a model name may hold "/"
    for model, mode, _ in HAND_CAPTIONS:
        group = [r["text"] for r in records if (r["model"], r["mode"]) == (model, mode)]
        row2 = _row(report, "table2", subset="real", model=model, method=mode)
        assert (row2["captions"], row2["unique"]) == (len(group), len(set(group)))


def test_clipscore_equals_the_metric_on_the_same_images_and_captions(full_report, inputs, tiny_clip):
    _, report = full_report
    records = read_caption_records(inputs["synth_sidecar"])
    images = {s.key: s.image for s in iter_samples(inputs["synth"], with_mask=False, with_captions=False)}
    keys = list(images)
    scores, _ = CLIPScore(tiny_clip).per_caption(
        [images[k] for k in keys], [r["text"] for r in records], [keys.index(r["key"]) for r in records]
    )
    assert _row(report, "table1", dataset="synth")["clip_score"] == pytest.approx(scores.mean().item(), abs=1e-4)
    real, synth = _row(report, "table1", dataset="real"), _row(report, "table1", dataset="synth")
    pooled = (real["clip_score"] * real["captions"] + synth["clip_score"] * synth["captions"]) / (
        real["captions"] + synth["captions"]
    )
    assert _row(report, "table1", dataset="all datasets")["clip_score"] == pytest.approx(pooled)


def test_consistency_equals_the_mean_of_per_caption_scores(full_report, inputs):
    _, report = full_report
    meta = {s.key: s.meta["composition"] for s in iter_samples(inputs["real"], with_mask=False)}
    records = [r for r in read_caption_records(inputs["real_sidecar"]) if r["model"] == "model-a"]
    checks = [score_caption(r["text"], meta[r["key"]]) for r in records]
    row = _row(report, "consistency", dataset="real", model="model-a", method="text")
    assert row["recall"] == pytest.approx(np.nanmean([c.recall for c in checks]))
    assert row["precision"] == pytest.approx(np.nanmean([c.precision for c in checks]))
    assert row["percent_mae"] == pytest.approx(np.nanmean([c.percent_mae for c in checks]))


def test_composition_equals_the_manifests_and_distances_are_reported(full_report, inputs):
    _, report = full_report
    data = report["sections"]["composition"]["data"]
    expected = load_compositions([inputs["real"], inputs["synth"]], labels=["real", "synth"])
    for got, want in zip(data["datasets"], expected, strict=True):
        assert got["label"] == want.label and got["num_samples"] == want.num_samples
        assert got["shares"] == pytest.approx(want.shares, abs=1e-9)
    (distance,) = data["distances"]
    assert distance["reference"] == "real" and distance["other"] == "synth"
    assert 0 < distance["js_divergence"] <= 1


def test_fid_of_the_shifted_set_is_positive_with_counts_and_a_floor(full_report):
    _, report = full_report
    synth = _row(report, "fid", dataset="synth")
    floor = _row(report, "fid", dataset="real half vs half")
    assert synth["fid"] > 0 and synth["fid"] > floor["fid"]
    assert (synth["n_reference"], synth["n_dataset"], floor["n_reference"]) == (48, 24, 24)
    assert synth["kid_subset_size"] == 12  # half the smaller set, so the subsets differ
    notes = " ".join(report["sections"]["fid"]["notes"])
    if synth["dim"] > 24:
        assert "Fewer samples than feature dimensions" in notes
    embedding = report["sections"]["embedding"]["data"]
    assert embedding["counts"] == {"real": 48, "synth": 24}
    assert -1 <= embedding["silhouette_features"] <= 1 and set(embedding["pairwise_features"]) == {"real vs synth"}


def test_unconfigured_sections_are_skipped_with_their_reason(inputs, tmp_path):
    datasets = [
        {"name": "synth", "path": str(inputs["synth"])},
        {"name": "real", "path": str(inputs["real"]), "captions": [str(inputs["real_sidecar"])]},
    ]
    out = tmp_path / "out"
    config = write_config(tmp_path / "eval.yaml", datasets, out_dir=str(out), reference="real", max_samples=10)
    assert main(["--config", config]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "CLIPScore n/a: no CLIP model configured" in markdown
    for key in ("fid", "embedding"):
        assert report["sections"][key]["skipped"].startswith("no feature space configured")
        assert f"*Skipped: {report['sections'][key]['skipped']}*" in markdown
    assert report["reference"] == "real" and [d["name"] for d in report["datasets"]] == ["real", "synth"]
    assert _row(report, "table1", dataset="real")["volume"] == 10
    assert _row(report, "table1", dataset="synth")["captions"] == 0
    # without any captions the caption tables are skipped too
    config = write_config(tmp_path / "none.yaml", datasets[:1], out_dir=str(tmp_path / "none"))
    assert main(["--config", config]) == 0
    report = json.loads((tmp_path / "none" / "report.json").read_text())
    for key in ("table1", "table2", "consistency"):
        assert report["sections"][key]["skipped"].startswith("no caption sidecars configured")
    assert "only one dataset" in " ".join(report["sections"]["composition"]["notes"])


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("missing_set", r"dataset 'ghost': shard set .*nowhere does not exist; make it with `aras-data demo --seed 9`"),
        ("missing_sidecar", r"caption sidecar .*missing\.jsonl does not exist; make it with `aras-caption"),
        ("foreign_sidecar", r"holds no caption of the evaluated samples"),
        ("missing_clip", r"CLIP folder .*no-clip does not exist; save a CLIP there with CLIPModel\.save_pretrained"),
        ("missing_segmenter", r"segmenter checkpoint .*none\.ckpt does not exist; train one with `aras-fit"),
        ("not_a_segmenter", r"segmenter: .*gan\.ckpt is not a SegmentationTask checkpoint"),
        ("unknown_reference", r"reference 'fake' is not one of the datasets \(real\)"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_naming_the_problem(problem, expected, inputs, tmp_path, capsys):
    real = {"name": "real", "path": str(inputs["real"])}
    datasets, options = [real], {}
    if problem == "missing_set":
        datasets.append({"name": "ghost", "path": str(tmp_path / "nowhere"), "make": "aras-data demo --seed 9"})
    elif problem == "missing_sidecar":
        real["captions"] = [str(tmp_path / "missing.jsonl")]
    elif problem == "foreign_sidecar":
        real["captions"] = [str(inputs["synth_sidecar"])]
    elif problem == "missing_clip":
        options["clip"] = str(tmp_path / "no-clip")
    elif problem == "missing_segmenter":
        options["segmenter"] = str(tmp_path / "none.ckpt")
    elif problem == "not_a_segmenter":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 1.0}}, tmp_path / "gan.ckpt")
        options["segmenter"] = str(tmp_path / "gan.ckpt")
    elif problem == "unknown_reference":
        options["reference"] = "fake"
    config = write_config(tmp_path / "eval.yaml", datasets, out_dir=str(tmp_path / "out"), **options)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", config])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("aras-eval: error: ")
    assert re.search(expected, err), err
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


def test_report_json_numbers_are_finite_or_null(full_report):
    _, report = full_report

    def walk(value):
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(report)
    assert report["format"] == "aras400k-eval" and report["config"]["max_samples"] is None
