"""Tests of whole-scene mapping (aras400k.mapping, aras-map)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from aras400k import mapping  # noqa: E402
from aras400k.classes import IGNORE_INDEX, NUM_CLASSES, PALETTE, worldcover_to_index  # noqa: E402
from aras400k.cli.map import build_parser, main  # noqa: E402
from aras400k.data.transforms import Normalize  # noqa: E402
from aras400k.mapping import column_strips, map_scene, scale_tile, tile_starts, tile_weights  # noqa: E402
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


class _ProjectionModel:
    """A stand-in for ``mapping._Predictor``: a fixed per-pixel projection plus a per-tile term.

    Pure element-wise numpy (each tile's term from that tile alone), so a tile's
    probabilities are bit-identical whatever batch it comes in; neighbouring tiles
    disagree (each is scaled by its own maximum), so the blending decides classes.
    """

    projection = np.random.default_rng(1).normal(0.0, 4.0, size=(3, NUM_CLASSES)).astype(np.float32)
    tile_term = np.random.default_rng(2).normal(0.0, 3.0, size=NUM_CLASSES).astype(np.float32)

    def __init__(self, task: object, normalize: object, device: object, weights: np.ndarray) -> None:
        self.weights = weights

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        x = tiles.astype(np.float32) / np.float32(255.0)
        logits = x[..., 0, None] * self.projection[0] + x[..., 1, None] * self.projection[1]
        logits = logits + x[..., 2, None] * self.projection[2]
        means = np.array([float(t.astype(np.float64).mean()) / 255.0 for t in tiles], np.float32)
        logits = logits + (means[:, None] * self.tile_term)[:, None, None, :]
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True)).transpose(0, 3, 1, 2)
        h, w = tiles.shape[1:3]
        return np.ascontiguousarray(probs * self.weights[:h, :w], dtype=np.float32)


def _full_width_map(scene: Path, predict, tile: int, stride: int, peak: float | None = None) -> np.ndarray:
    """The map as the implementation before column strips computed it, kept as the reference.

    One ``(7, H, W)`` sum over the whole scene, tiles added in row-major order (the
    old full-width band buffer added each pixel's tiles in the same order), each tile
    predicted alone; arg-max, then 255 where the scene has no data.
    """
    with rasterio.open(scene) as src:
        rgb, valid = src.read((1, 2, 3)), np.all(src.read_masks((1, 2, 3)) > 0, axis=0)
    h, w = valid.shape
    th, tw = min(tile, h), min(tile, w)
    acc = np.zeros((NUM_CLASSES, h, w), np.float32)
    for y in tile_starts(h, tile, stride):
        for x in tile_starts(w, tile, stride):
            image = scale_tile(rgb[:, y : y + th, x : x + tw], valid[y : y + th, x : x + tw], peak)
            acc[:, y : y + th, x : x + tw] += predict(image[None])[0]
    labels = acc.argmax(0).astype(np.uint8)
    labels[~valid] = IGNORE_INDEX
    return labels


def test_column_strips_cover_every_column_once_with_every_tile_that_touches_it():
    for width, tile, stride, strip in [(100, 32, 16, 7), (100, 32, 12, 40), (1000, 256, 128, 256), (20, 32, 16, 7)]:
        strips = column_strips(width, tile, stride, strip)
        assert [s.start for s in strips] == list(range(0, width, strip))
        assert [s.stop for s in strips] == [*range(strip, width, strip), width]
        tw = min(tile, width)
        for s in strips:
            touching = [x for x in tile_starts(width, tile, stride) if x < s.stop and x + tw > s.start]
            assert list(s.origins) == touching
            assert (s.read_start, s.read_stop) == (touching[0], touching[-1] + tw)
    # edges on tile origins: one tile column (tile / stride - 1) is predicted by both strips of an edge
    strips = column_strips(1024, 256, 128, 256)
    assert [s.origins for s in strips] == [(0, 128), (128, 256, 384), (384, 512, 640), (640, 768)]
    with pytest.raises(ValueError, match="strip_width must be >= 1"):
        column_strips(100, 32, 16, 0)


@pytest.mark.parametrize(
    ("h", "w", "nodata_box"),
    [(70, 150, (5, 25, 30, 80)), (45, 20, (0, 10, 0, 5))],  # the second: narrower than a tile and most strips
)
def test_any_strip_width_gives_the_full_width_map(task_and_ckpt, tmp_path, monkeypatch, h, w, nodata_box):
    """Strips narrower than a tile, as wide as one, wider than the scene: always the full-width map."""
    _, ckpt = task_and_ckpt
    monkeypatch.setattr(mapping, "_Predictor", _ProjectionModel)
    rgb = _random_scene(h, w, seed=21)
    top, bottom, left, right = nodata_box
    rgb[:, top:bottom, left:right] = 0
    scene = _write_scene(tmp_path / "S2.tif", rgb, nodata=0)
    model = _ProjectionModel(None, None, None, tile_weights(P))
    for stride in (12, P):
        expected = _full_width_map(scene, model, P, stride)
        assert len(np.unique(expected)) >= 3
        for strip, batch in [(1, 4), (7, 16), (P, 3), (45, 1), (2048, 5)]:
            out = tmp_path / f"m_{stride}_{strip}.tif"
            report = map_scene(
                ckpt, scene, out, tile_size=P, stride=stride, batch_size=batch, strip_width=strip,
                quicklook=None, quicklook_size=16, progress=False,
            )  # fmt: skip
            np.testing.assert_array_equal(_read(out), expected, err_msg=f"stride {stride}, strip {strip}")
            step = -(-max(h, w) // 16)
            np.testing.assert_array_equal(report.extra["quicklook"], expected[::step, ::step])
            assert report.nodata_pixels == (bottom - top) * (right - left)
            assert report.tiles == len(tile_starts(h, P, stride)) * len(tile_starts(w, P, stride))
            assert report.predicted == len(tile_starts(h, P, stride)) * sum(
                len(s.origins) for s in column_strips(w, P, stride, strip)
            )


def test_strips_match_the_full_width_map_of_the_segmenter(task_and_ckpt, tmp_path):
    """With the real model, one tile per forward pass on both sides: byte-identical class ids."""
    task, ckpt = task_and_ckpt
    rgb = _random_scene(60, 110, seed=8)
    rgb[:, 10:20, 40:90] = 0
    scene = _write_scene(tmp_path / "S2.tif", rgb, nodata=0)
    predictor = mapping._Predictor(task, Normalize(MEAN, STD), torch.device("cpu"), tile_weights(P))
    expected = _full_width_map(scene, predictor, P, 20)
    assert len(np.unique(expected)) >= 3
    for strip in (24, 2048):
        out = tmp_path / f"m_{strip}.tif"
        map_scene(ckpt, scene, out, tile_size=P, stride=20, batch_size=1, strip_width=strip, progress=False)
        np.testing.assert_array_equal(_read(out), expected)


def test_memory_is_bounded_by_the_strip_not_the_scene(task_and_ckpt, tmp_path, monkeypatch):
    """The buffers, the reads and GDAL's block cache grow with neither the scene's height nor its width."""
    _, ckpt = task_and_ckpt
    monkeypatch.setattr(mapping, "_Predictor", _ProjectionModel)
    buffers: list[tuple[int, ...]] = []
    reads: list[tuple[int, int]] = []
    cache: list[object] = []  # GDAL's block cache would otherwise keep the scene's blocks (5 % of the RAM)
    original_band, original_valid = mapping._Band, mapping._valid_pixels

    def band(rows, width):
        created = original_band(rows, width)
        buffers.append(created.buffer.shape)
        return created

    def valid(src, window):
        reads.append((int(window.height), int(window.width)))
        cache.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
        return original_valid(src, window)

    monkeypatch.setattr(mapping, "_Band", band)
    monkeypatch.setattr(mapping, "_valid_pixels", valid)
    for h, w in [(40, 200), (400, 200), (40, 1000)]:
        scene = _write_scene(tmp_path / f"S2_{h}_{w}.tif", _random_scene(h, w))
        map_scene(ckpt, scene, tmp_path / f"m_{h}_{w}.tif", tile_size=P, batch_size=8, strip_width=64, progress=False)
    assert buffers == [(NUM_CLASSES, P, 64 + P)] * 3  # the strip and tile - stride (16 px) of margin on each side
    assert max(reads) == (P, 64 + P)
    assert set(cache) == {mapping._GDAL_CACHE_MB}


def test_peak_memory_does_not_grow_with_the_scene_width(task_and_ckpt, tmp_path):
    """tracemalloc's peak (numpy buffers and Python objects) is the same for a scene four times as wide."""
    task, _ = task_and_ckpt
    options = {"tile_size": P, "batch_size": 8, "strip_width": 64, "quicklook": None, "quicklook_size": 16}
    scenes = {w: _write_scene(tmp_path / f"S2_{w}.tif", _random_scene(64, w)) for w in (256, 1024)}
    map_scene(task, scenes[256], tmp_path / "warm_up.tif", progress=False, **options)  # first-call imports
    peaks = {}
    for w, scene in scenes.items():
        tracemalloc.start()
        try:
            map_scene(task, scene, tmp_path / f"m_{w}.tif", progress=False, **options)
            peaks[w] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    full_width_band = NUM_CLASSES * P * (1024 - 256) * 4  # what a full-width buffer would add: 688 KiB
    assert peaks[1024] - peaks[256] < full_width_band / 8, peaks


def test_a_failure_midway_leaves_the_old_map_and_no_temporary_files(task_and_ckpt, tmp_path, monkeypatch):
    _, ckpt = task_and_ckpt
    scene = _write_scene(tmp_path / "S2.tif", _random_scene(64, 200))
    out = tmp_path / "m.tif"
    out.write_bytes(b"the previous map")

    class Failing(_ProjectionModel):
        calls = 0

        def __call__(self, tiles: np.ndarray) -> np.ndarray:
            Failing.calls += 1
            if Failing.calls == 3:  # in the second strip: the first one is written
                raise RuntimeError("device lost")
            return super().__call__(tiles)

    monkeypatch.setattr(mapping, "_Predictor", Failing)
    with pytest.raises(RuntimeError, match="device lost"):
        map_scene(ckpt, scene, out, tile_size=P, batch_size=8, strip_width=64, overwrite=True, progress=False)
    assert out.read_bytes() == b"the previous map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S2.tif", "m.tif"]


def test_cli_maps_and_bad_inputs_give_one_line(task_and_ckpt, tmp_path, capsys):
    _, ckpt = task_and_ckpt
    scene = _write_scene(tmp_path / "S2.tif", _random_scene(40, 40))
    out = tmp_path / "lc.tif"
    args = ["--ckpt_path", str(ckpt), "--scene", str(scene), "--tile_size", "32", "--progress", "false"]
    assert main([*args, "--out", str(out)]) == 0
    assert "tiles/s" in capsys.readouterr().out and out.is_file()
    assert build_parser().get_defaults().strip_width == mapping.DEFAULT_STRIP_WIDTH  # the CLI's copy of the default
    assert main([*args, "--out", str(tmp_path / "narrow.tif"), "--strip_width", "16"]) == 0
    assert "repeated across the edges of 16-px column strips" in capsys.readouterr().out
    np.testing.assert_array_equal(_read(tmp_path / "narrow.tif"), _read(out))
    (tmp_path / "notes.tif").write_text("not a GeoTIFF")
    cases = [
        (["--scene", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "a.tif")], "missing.tif does not exist"),
        (["--scene", str(tmp_path / "notes.tif"), "--out", str(tmp_path / "b.tif")], "not a readable GeoTIFF"),
        (["--scene", str(scene), "--out", str(out)], "lc.tif exists"),
        (["--scene", str(scene), "--out", str(tmp_path / "c.tif"), "--stride", "64"], "stride must be in"),
        (["--scene", str(scene), "--out", str(tmp_path / "d.tif"), "--strip_width", "0"], "strip_width must be >= 1"),
    ]
    for extra, expected in cases:
        with pytest.raises(SystemExit) as exc:
            main(["--ckpt_path", str(ckpt), "--tile_size", "32", "--progress", "false", *extra])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and "\n" not in err
        assert err.startswith("aras-map: error:") and expected in err, err
