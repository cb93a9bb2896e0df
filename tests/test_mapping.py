"""Tests of whole-scene mapping (aras400k.mapping, aras-map)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from aras400k import mapping  # noqa: E402
from aras400k.classes import IGNORE_INDEX, NUM_CLASSES, PALETTE, worldcover_to_index  # noqa: E402
from aras400k.cli.map import main  # noqa: E402
from aras400k.data.transforms import Normalize  # noqa: E402
from aras400k.mapping import map_scene, scale_tile, tile_starts, tile_weights  # noqa: E402
from aras400k.models.segmentation import SegmentationTask  # noqa: E402

MEAN, STD = (0.3, 0.35, 0.4), (0.2, 0.25, 0.3)
CRS = "EPSG:32635"
TRANSFORM = from_origin(500000.0, 4200000.0, 10.0, 10.0)
P = 32


@pytest.fixture(scope="module")
def task_and_ckpt(tmp_path_factory) -> tuple[SegmentationTask, Path]:
    """An untrained tiny FPN saved as a Lightning checkpoint with a non-default normalisation.

    Fresh, it predicts one class almost everywhere, which would make the seam tests
    vacuous; its batch-norm statistics are set on a few scenes and its head drawn
    anew so that it predicts several classes with sharp boundaries.
    """
    torch.manual_seed(0)
    task = SegmentationTask(arch="fpn", encoder="tu-mobilenetv3_small_050").train()
    images = np.stack([scale_tile(_random_scene(P, P, seed=10 + i), np.ones((P, P), bool)) for i in range(16)])
    batch = Normalize(MEAN, STD)(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    with torch.no_grad():
        for _ in range(5):
            task(batch)
        task.model.segmentation_head[0].bias.zero_()
        task.model.segmentation_head[0].weight.normal_(0.0, 1.0)
    task.eval()
    path = tmp_path_factory.mktemp("map") / "seg.ckpt"
    torch.save(
        {
            "hyper_parameters": dict(task.hparams),
            "state_dict": task.state_dict(),
            "datamodule_hyper_parameters": {"mean": MEAN, "std": STD},
        },
        path,
    )
    return task, path


def _write_scene(path: Path, rgb: np.ndarray, nodata: float | None = None, transform=TRANSFORM) -> Path:
    """Write ``(3, H, W)`` values as a 4-band (R, G, B, NIR) uint16 GeoTIFF."""
    bands = np.concatenate([rgb, rgb[:1] // 2], axis=0).astype(np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=4, dtype="uint16",
        crs=CRS, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(bands)
    return path


def _random_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Blocky positive reflectances (1..3000), so a model sees structure."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(1, 3000, size=(3, -(-h // 8), -(-w // 8)))
    return np.kron(blocks, np.ones((1, 8, 8), dtype=np.int64))[:, :h, :w]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _predict_patch(task: SegmentationTask, patch: np.ndarray) -> np.ndarray:
    """The segmenter's own prediction for one raw patch, scaled as prepare scales it."""
    image = scale_tile(patch, np.ones(patch.shape[1:], bool))
    batch = torch.from_numpy(image[None]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return task.predict_masks(Normalize(MEAN, STD)(batch))[0].numpy()


def test_tiling_and_weights():
    assert tile_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert tile_starts(96, 32, 32) == [0, 32, 64]
    assert tile_starts(20, 32, 16) == [0]
    w = tile_weights(32)
    assert w.min() > 0 and w.max() <= 1 and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w[16, 16] > w[16, 8] > w[16, 0]


def test_georeference_colours_and_quicklook_match_the_scene(task_and_ckpt, tmp_path):
    _, ckpt = task_and_ckpt
    scene = _write_scene(tmp_path / "S2.tif", _random_scene(100, 130))
    report = map_scene(ckpt, scene, tmp_path / "landcover.tif", tile_size=P, batch_size=4, progress=False)
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "landcover.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count, out.dtypes[0]) == (130, 100, 1, "uint8")
        assert out.nodata == IGNORE_INDEX and out.compression.name.lower() == "deflate"
        colours = out.colormap(1)
        assert [colours[i][:3] for i in range(NUM_CLASSES)] == [tuple(int(v) for v in c) for c in PALETTE]
        assert set(np.unique(out.read(1))) <= set(range(NUM_CLASSES))
    assert report.tiles == len(tile_starts(100, P, 16)) * len(tile_starts(130, P, 16)) == 6 * 8
    assert report.quicklook == tmp_path / "landcover.png" and report.quicklook.stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp.*"))


def test_a_tiled_patch_maps_to_the_tiling_of_its_prediction(task_and_ckpt, tmp_path):
    task, ckpt = task_and_ckpt
    patch = _random_scene(P, P, seed=3)
    scene = _write_scene(tmp_path / "S2.tif", np.tile(patch, (1, 3, 4)))
    map_scene(ckpt, scene, tmp_path / "aligned.tif", tile_size=P, stride=P, batch_size=5, progress=False)
    expected = _predict_patch(task, patch)
    assert len(np.unique(expected)) >= 3  # the test means something only if the model draws boundaries
    np.testing.assert_array_equal(_read(tmp_path / "aligned.tif"), np.tile(expected, (3, 4)))


def test_overlapping_tiles_leave_no_seams(task_and_ckpt, tmp_path):
    """A periodic scene maps to a periodic map: the blend is the same at every tile boundary."""
    _, ckpt = task_and_ckpt
    scene = _write_scene(tmp_path / "S2.tif", np.tile(_random_scene(P, P, seed=4), (1, 3, 4)))
    map_scene(ckpt, scene, tmp_path / "blend.tif", tile_size=P, stride=P // 2, batch_size=3, progress=False)
    m = _read(tmp_path / "blend.tif")
    assert len(np.unique(m)) >= 3
    inner = m[P // 2 : P // 2 + 2 * P, P // 2 : P // 2 + 3 * P]  # pixels seen by two tile rows and columns
    np.testing.assert_array_equal(inner[:P], inner[P:])
    np.testing.assert_array_equal(inner[:, :P], inner[:, P : 2 * P])
    np.testing.assert_array_equal(inner[:, :P], inner[:, 2 * P :])


def test_nodata_is_propagated_and_a_small_scene_is_padded(task_and_ckpt, tmp_path):
    _, ckpt = task_and_ckpt
    rgb = _random_scene(50, 70)
    rgb[:, 10:30, 20:45] = 0
    scene = _write_scene(tmp_path / "S2.tif", rgb, nodata=0)
    report = map_scene(ckpt, scene, tmp_path / "m.tif", tile_size=P, progress=False)
    m = _read(tmp_path / "m.tif")
    assert (m[10:30, 20:45] == IGNORE_INDEX).all()
    outside = np.ones_like(m, bool)
    outside[10:30, 20:45] = False
    assert (m[outside] < NUM_CLASSES).all() and report.nodata_pixels == 20 * 25
    small = _write_scene(tmp_path / "small.tif", _random_scene(20, 9))
    map_scene(ckpt, small, tmp_path / "small_map.tif", tile_size=P, progress=False)
    assert _read(tmp_path / "small_map.tif").shape == (20, 9)


def test_reference_scores_equal_a_hand_computation(task_and_ckpt, tmp_path):
    _, ckpt = task_and_ckpt
    scene = _write_scene(tmp_path / "S2.tif", _random_scene(60, 90))
    codes = np.random.default_rng(5).choice([0, 10, 20, 30, 40, 50, 60, 80, 90, 95], size=(60, 200))
    ref_transform = from_origin(500000.0 + 40 * 10.0, 4200000.0, 10.0, 10.0)  # starts 40 px into the scene
    ref = tmp_path / "worldcover.tif"
    with rasterio.open(
        ref, "w", driver="GTiff", width=200, height=60, count=1, dtype="uint8", crs=CRS, transform=ref_transform
    ) as dst:
        dst.write(codes.astype(np.uint8), 1)
    report = map_scene(ckpt, scene, tmp_path / "m.tif", tile_size=P, reference=ref, progress=False)

    mapped = _read(tmp_path / "m.tif")[:, 40:]
    truth = worldcover_to_index(codes[:, :50])
    both = truth != IGNORE_INDEX
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(expected, (truth[both], mapped[both]), 1)
    np.testing.assert_array_equal(report.confusion, expected)
    assert report.overlap_pixels == int(both.sum())
    for c, name in enumerate(mapping.CLASS_NAMES):
        tp, support, predicted = expected[c, c], expected[c].sum(), expected[:, c].sum()
        if support + predicted == 0:
            continue
        assert report.scores[f"f1_{name}"] == pytest.approx(2 * tp / (support + predicted), abs=1e-6)
        assert report.scores[f"iou_{name}"] == pytest.approx(tp / (support + predicted - tp), abs=1e-6)
    assert (tmp_path / "m_confusion.png").stat().st_size > 0 and (tmp_path / "m_reference.json").is_file()
    assert "F1" in report.summary()


def test_memory_is_bounded_by_one_band_of_tile_rows(task_and_ckpt, tmp_path, monkeypatch):
    """The buffers, the reads and GDAL's block cache do not grow with the scene's height."""
    _, ckpt = task_and_ckpt
    buffers: list[tuple[int, ...]] = []
    reads: list[int] = []
    cache: list[object] = []  # GDAL's block cache would otherwise keep the scene's blocks (5 % of the RAM)
    original_band, original_valid = mapping._Band, mapping._valid_pixels

    def band(acc, *args):
        buffers.append(acc.shape)
        return original_band(acc, *args)

    def valid(src, window):
        reads.append(int(window.height))
        cache.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
        return original_valid(src, window)

    monkeypatch.setattr(mapping, "_Band", band)
    monkeypatch.setattr(mapping, "_valid_pixels", valid)
    for h in (40, 400):
        scene = _write_scene(tmp_path / f"S2_{h}.tif", _random_scene(h, 50))
        map_scene(ckpt, scene, tmp_path / f"m_{h}.tif", tile_size=P, batch_size=8, progress=False)
    assert buffers == [(NUM_CLASSES, P, 50)] * 2
    assert max(reads) == P
    assert set(cache) == {mapping._GDAL_CACHE_MB}


def test_cli_maps_and_bad_inputs_give_one_line(task_and_ckpt, tmp_path, capsys):
    _, ckpt = task_and_ckpt
    scene = _write_scene(tmp_path / "S2.tif", _random_scene(40, 40))
    out = tmp_path / "lc.tif"
    args = ["--ckpt_path", str(ckpt), "--scene", str(scene), "--out", str(out), "--tile_size", "32"]
    assert main([*args, "--progress", "false"]) == 0
    assert "tiles/s" in capsys.readouterr().out and out.is_file()
    (tmp_path / "notes.tif").write_text("not a GeoTIFF")
    cases = [
        (["--scene", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "a.tif")], "missing.tif does not exist"),
        (["--scene", str(tmp_path / "notes.tif"), "--out", str(tmp_path / "b.tif")], "not a readable GeoTIFF"),
        (["--scene", str(scene), "--out", str(out)], "lc.tif exists"),
        (["--scene", str(scene), "--out", str(tmp_path / "c.tif"), "--stride", "64"], "stride must be in"),
    ]
    for extra, expected in cases:
        with pytest.raises(SystemExit) as exc:
            main(["--ckpt_path", str(ckpt), "--tile_size", "32", "--progress", "false", *extra])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and "\n" not in err
        assert err.startswith("aras-map: error:") and expected in err, err
