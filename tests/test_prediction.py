"""``aras predict`` and the PredictionWriter: files per sample, resume, overwrite, GeoTIFFs."""

from __future__ import annotations

import csv
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from PIL import Image

from aras400k.classes import PALETTE, colour_to_index
from aras400k.cli.main import cli, main
from aras400k.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, SegmentationDataModule
from aras400k.data.datasets import EpochDataLoader, ShardDataset, collate_samples
from aras400k.data.shards import SampleError, iter_samples
from aras400k.data.transforms import Normalize
from aras400k.models.segmentation import SegmentationTask
from aras400k.prediction import PredictionWriter, blend, georeference

# A ~2M-parameter segmenter (random init, nothing downloaded) keeps the tests fast on a CPU.
ARCH, ENCODER = "fpn", "tu-mobilenetv3_small_050"


def _config(path: Path, root: Path, run_dir: Path) -> Path:
    """A tiny segmentation config in the shape of configs/seg_*.yaml."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(run_dir),
            "logger": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(run_dir / "checkpoints"), "save_last": True},
                }
            ],
        },
        "model": {"class_path": "aras400k.models.SegmentationTask", "init_args": {"arch": ARCH, "encoder": ENCODER}},
        "data": {
            "class_path": "aras400k.data.SegmentationDataModule",
            "init_args": {"root": str(root), "demo": False, "batch_size": 16, "num_workers": 0},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """A config and a checkpoint of one training step, written by ``aras fit``."""
    folder = tmp_path_factory.mktemp("predict")
    config = _config(folder / "config.yaml", demo_root, folder / "run")
    cli(["fit", "--config", str(config), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
         "--trainer.enable_progress_bar", "false"])  # fmt: skip
    return config, folder / "run" / "checkpoints" / "last.ckpt"


def _predict(config: Path, ckpt: Path | None, *extra: str) -> None:
    args = ["predict", "--config", str(config), *(["--ckpt_path", str(ckpt)] if ckpt else []), *extra]
    main(args)


def _expected_masks(ckpt: Path, shard_set: Path) -> dict[str, np.ndarray]:
    """The task's argmax on every sample, computed here the way the DataModule feeds it."""
    task = SegmentationTask.load_from_checkpoint(ckpt).eval()
    samples = list(iter_samples(shard_set))
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]).float() / 255
    masks = task.predict_masks(Normalize(IMAGENET_MEAN, IMAGENET_STD)(images)).numpy()
    return {s.key: m for s, m in zip(samples, masks, strict=True)}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name.endswith(".png")}


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)


def test_predict_writes_every_file(trained, demo_root, capsys):
    config, ckpt = trained
    _predict(config, ckpt)
    out = config.parent / "run" / "predictions"  # the default: <default_root_dir>/predictions
    assert f"Predictions: 16 samples written, 0 already complete; 16 samples in {out}" in capsys.readouterr().out
    expected = _expected_masks(ckpt, demo_root / "test")
    images = {s.key: s.image for s in iter_samples(demo_root / "test")}
    assert len(expected) == 16
    for key, truth in expected.items():
        with Image.open(out / f"{key}_mask.png") as img:
            assert img.mode == "L"
            mask = np.array(img)
        np.testing.assert_array_equal(mask, truth, err_msg=key)
        colour = _read(out / f"{key}_color.png")
        assert colour.shape == (*mask.shape, 3)
        np.testing.assert_array_equal(colour_to_index(colour), mask)
        overlay = _read(out / f"{key}_overlay.png").astype(int)
        assert np.abs(overlay - blend(images[key], colour, 0.5)).max() <= 1  # the image, de-normalised
    assert not list(out.glob("*.tif")), "the demo set has no georeference: no GeoTIFF"
    assert not list(out.glob(".*")), "no temporary file is left"
    with (out / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["key"] for row in rows] == sorted(expected)
    for row in rows:
        assert row["files"].split(";") == [
            f"{row['key']}_mask.png",
            f"{row['key']}_color.png",
            f"{row['key']}_overlay.png",
        ]
        shares = [float(row[name]) for name in ("tree", "shrub", "grass", "crop", "built", "barren", "water")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)


def test_rerun_skips_complete_samples_and_overwrite_redoes_them(trained, tmp_path, capsys):
    config, ckpt = trained
    out = tmp_path / "out"
    _predict(config, ckpt, "--predictions.out_dir", str(out), "--predictions.overlay", "false")
    first = _mtimes(out)
    assert len(first) == 32 and not list(out.glob("*_overlay.png"))
    capsys.readouterr()

    _predict(config, ckpt, "--predictions.out_dir", str(out), "--predictions.overlay", "false")
    assert "0 samples written, 16 already complete" in capsys.readouterr().out
    assert _mtimes(out) == first

    victim = sorted(out.glob("*_color.png"))[3]
    victim.unlink()  # an interrupted sample: one file missing
    _predict(config, ckpt, "--predictions.out_dir", str(out), "--predictions.overlay", "false")
    assert "1 samples written, 15 already complete" in capsys.readouterr().out
    again = _mtimes(out)
    assert victim.is_file()
    assert {n for n in first if again[n] != first[n]} == {victim.name, victim.name.replace("_color", "_mask")}

    _predict(config, ckpt, "--predictions.out_dir", str(out), "--predictions.overlay", "false",
             "--predictions.overwrite", "true")  # fmt: skip
    assert "16 samples written, 0 already complete" in capsys.readouterr().out
    redone = _mtimes(out)
    assert all(redone[name] != again[name] for name in first)


def test_a_folder_of_another_model_is_refused(trained, tmp_path, capsys):
    config, ckpt = trained
    out = tmp_path / "out"
    _predict(config, ckpt, "--predictions.out_dir", str(out))
    before = _mtimes(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc, pytest.warns(UserWarning, match="untrained"):
        _predict(config, None, "--predictions.out_dir", str(out))  # random weights: another model
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("aras: error: ") and "holds the predictions of another model" in err
    assert "--predictions.overwrite true" in err
    assert _mtimes(out) == before


def test_archive_holds_the_visual_predictions(trained, tmp_path):
    config, ckpt = trained
    out = tmp_path / "out"
    _predict(config, ckpt, "--predictions.out_dir", str(out), "--predictions.archive", "true")
    with zipfile.ZipFile(out / "predictions.zip") as archive:
        names = set(archive.namelist())
        assert archive.testzip() is None
    keys = {p.name.removesuffix("_mask.png") for p in out.glob("*_mask.png")}
    assert names == {"index.csv"} | {f"{k}_color.png" for k in keys} | {f"{k}_overlay.png" for k in keys}
    assert not list(out.glob(".*"))


def test_predict_batches_carry_keys_and_meta(demo_root):
    data = SegmentationDataModule(root=str(demo_root), demo=False, batch_size=5, num_workers=0)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert len(batch["key"]) == 5 and len(batch["meta"]) == 5
    assert batch["meta"][0]["split"] == "test" and isinstance(batch["meta"][0]["composition"], dict)


def test_collate_keeps_meta_as_dicts_of_any_fields():
    items = [
        {"image": torch.zeros(3, 2, 2, dtype=torch.uint8), "key": "a", "meta": {"crs": "EPSG:4326", "n": 1}},
        {"image": torch.ones(3, 2, 2, dtype=torch.uint8), "key": "b", "meta": {"tile": "DEMO"}},
    ]
    batch = collate_samples(items)
    assert batch["image"].shape == (2, 3, 2, 2) and batch["key"] == ["a", "b"]
    assert batch["meta"] == [{"crs": "EPSG:4326", "n": 1}, {"tile": "DEMO"}]
    assert "meta" not in collate_samples([{k: v for k, v in i.items() if k != "meta"} for i in items])


def test_georeference_from_transform_or_bounds():
    assert georeference({"tile": "DEMO"}, 32, 32) is None
    assert georeference({"crs": "EPSG:32635", "transform": [10, 0, 500000, 0, -10, 4100000]}, 32, 32) == (
        "EPSG:32635",
        (10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0),
    )
    from_bounds = georeference({"crs": "EPSG:4326", "bounds": [27.0, 36.75, 27.25, 37.0]}, 32, 64)
    assert from_bounds == ("EPSG:4326", (0.25 / 64, 0.0, 27.0, 0.0, -0.25 / 32, 37.0))
    with pytest.raises(ValueError, match="transform must be 6 finite numbers"):
        georeference({"crs": "EPSG:4326", "transform": [1, 2, 3]}, 32, 32)


# -- georeferenced samples --------------------------------------------------------------------


def _georeferenced_set(folder: Path) -> Path:
    """Prepare 2x2 patches of 32 px from a UTM Sentinel-2 tile and its WorldCover map (aras-data prepare)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    from aras400k.data.geotiff import prepare_geotiffs

    rng = np.random.default_rng(0)
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4100000.0)
    common = {"driver": "GTiff", "width": 64, "height": 64, "crs": "EPSG:32635", "transform": transform}
    (folder / "s2").mkdir(parents=True)
    (folder / "wc").mkdir()
    with rasterio.open(folder / "s2" / "x_N36E027_S2RGBNIR.tif", "w", count=4, dtype="uint16", **common) as dst:
        dst.write(rng.integers(1, 5000, (4, 64, 64)).astype(np.uint16))
    with rasterio.open(folder / "wc" / "x_Map.tif", "w", count=1, dtype="uint8", **common) as dst:
        dst.write(rng.choice(np.array([10, 30, 40, 50], dtype=np.uint8), (1, 64, 64)))
    prepare_geotiffs(folder / "s2", folder / "wc", folder / "shards", patch_size=32, ratios=(0, 0, 1), progress=False)
    return folder / "shards"


def test_georeferenced_samples_get_geotiffs_with_their_crs_and_transform(trained, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    config, ckpt = trained
    shards = _georeferenced_set(tmp_path / "geo")
    out = tmp_path / "out"
    _predict(config, ckpt, "--data.init_args.root", str(shards), "--predictions.out_dir", str(out))
    with rasterio.open(tmp_path / "geo" / "s2" / "x_N36E027_S2RGBNIR.tif") as s2:
        source_crs, windows = s2.crs, {}
        for row in range(2):
            for col in range(2):
                windows[f"N36E027_{row:03d}_{col:03d}"] = s2.window_transform(
                    ((row * 32, row * 32 + 32), (col * 32, col * 32 + 32))
                )
    assert sorted(p.stem for p in out.glob("*.tif")) == sorted(windows)
    for key, window_transform in windows.items():
        with rasterio.open(out / f"{key}.tif") as tif:
            assert tif.crs == source_crs and tif.crs.to_epsg() == 32635
            assert tif.transform == window_transform
            assert tif.nodata == 255 and tif.dtypes == ("uint8",) and tif.count == 1
            np.testing.assert_array_equal(tif.read(1), _read(out / f"{key}_mask.png"))
            assert tif.colormap(1)[0] == (*PALETTE[0].tolist(), 255)
    with (out / "index.csv").open(newline="") as fh:
        assert all(row["files"].endswith(f"{row['key']}.tif") for row in csv.DictReader(fh))


def test_without_rasterio_geotiffs_are_skipped_with_one_warning(tmp_path, monkeypatch):
    pytest.importorskip("rasterio")  # to prepare the georeferenced set
    import aras400k.prediction as prediction

    shards = _georeferenced_set(tmp_path / "geo")
    monkeypatch.setattr(prediction, "_rasterio_available", lambda: False)
    data = SegmentationDataModule(root=str(shards), demo=False, batch_size=2, num_workers=0)
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[PredictionWriter(out_dir=str(tmp_path / "out"), overlay=False)],
    )  # fmt: skip
    with pytest.warns(UserWarning, match="rasterio is not installed") as caught:
        assert trainer.predict(SegmentationTask(arch=ARCH, encoder=ENCODER), data) is None
    assert len([w for w in caught if "rasterio" in str(w.message)]) == 1
    out = tmp_path / "out"
    assert len(list(out.glob("*_mask.png"))) == 4 and not list(out.glob("*.tif"))


def test_writer_refuses_bad_alpha_and_predictions_without_masks(tmp_path):
    with pytest.raises(ValueError, match=r"alpha must be within \[0, 1\], got 1.5"):
        PredictionWriter(alpha=1.5)
    writer = PredictionWriter(out_dir=str(tmp_path))
    writer._folder = tmp_path
    with pytest.raises(ValueError, match="return a dict with 'mask'"):
        writer.write_on_batch_end(None, None, torch.zeros(2, 4, 4), None, {"key": ["a", "b"]}, 0, 0)  # type: ignore[arg-type]


def test_epoch_loader_keeps_a_given_collate_fn(tmp_path):
    from tests.conftest import write_random_set

    root = write_random_set(tmp_path / "a", 4)
    loader = EpochDataLoader(ShardDataset([root]), batch_size=2, collate_fn=len)
    assert list(loader) == [2, 2]
    assert os.path.isdir(root)


def test_docs_example_writes_the_files(trained, demo_root, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "docs" / "examples"))
    from predict_files import write_predictions

    write_predictions(str(trained[1]), str(demo_root), str(tmp_path / "out"))
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == 16
    assert (tmp_path / "out" / "predictions.zip").is_file() and (tmp_path / "out" / "index.csv").is_file()


def test_a_malformed_georeference_names_the_sample(tmp_path):
    writer = PredictionWriter(out_dir=str(tmp_path), overlay=False)
    writer._folder = tmp_path
    batch = {"key": ["k1"], "meta": [{"crs": "EPSG:4326", "transform": [1, 0, 0]}]}
    with pytest.raises(SampleError, match=r"sample k1: meta.json transform must be 6 finite numbers"):
        writer.write_on_batch_end(None, None, {"mask": torch.zeros(1, 4, 4)}, None, batch, 0, 0)  # type: ignore[arg-type]


def test_a_rasterio_that_fails_to_import_counts_as_missing(monkeypatch, tmp_path):
    # An installed but broken rasterio (no GDAL library) must mean "no GeoTIFFs, one warning", not a crash.
    import importlib

    import aras400k.prediction as prediction

    broken = tmp_path / "rasterio"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libgdal.so.32: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rasterio", raising=False)
    importlib.invalidate_caches()
    assert not prediction._rasterio_available()
