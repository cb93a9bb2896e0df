"""Tests of the Sentinel-2 + WorldCover patch preparation (aras400k.data.geotiff).

The scene: one 96x96 px Sentinel-2 tile N36E027 (EPSG:4326, 1/128 degree pixels, four
uint16 bands R, G, B, NIR) cut into 3x3 patches of 32 px, and a WorldCover map at twice
the resolution split at Sentinel-2 column 48 into a west and an east file, so the
middle column of patches straddles both. The WorldCover codes are designed per patch
(on the Sentinel-2 grid, each Sentinel-2 pixel a 2x2 block of map pixels):

=====  ==================================  ======================================
patch  WorldCover                          outcome
=====  ==================================  ======================================
0,0    10                                  tree
0,1    95 | 90 (left | right half)         tree | grass (straddles the two maps)
0,2    100 / 70 (top / bottom half)        grass / barren
1,0    quadrants 20 40 / 50 60             shrub crop / built barren
1,1    30 with one 0 pixel                 skipped: nodata (straddles)
1,2    80 on 30 of 32 rows                 skipped: water (93.75%)
2,0    40 with one 0 pixel, RGB all zero   skipped: zeros (checked before nodata)
2,1    80 | 40 (left | right half)         water | crop, 50% water (straddles)
2,2    50 with one code 12 (unknown)       skipped: nodata
=====  ==================================  ======================================
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402
from rasterio.warp import transform as warp_transform  # noqa: E402
from rasterio.warp import transform_bounds  # noqa: E402

from aras400k.classes import DEFAULT_WORLDCOVER_REMAP  # noqa: E402
from aras400k.data import geotiff  # noqa: E402
from aras400k.data.geotiff import PrepareReport, prepare_geotiffs  # noqa: E402
from aras400k.data.shards import Sample, iter_samples, read_manifest  # noqa: E402
from aras400k.data.splits import split_for_key  # noqa: E402

TILE = "N36E027"
LEFT, TOP = 27.0, 37.0
RES = 1 / 128  # Sentinel-2 pixel size in degrees (exact in binary)
SIZE = 96
PATCH = 32
S2_NAME = f"ESA_WorldCover_10m_2021_v200_{TILE}_S2RGBNIR.tif"
NIR = 65535  # larger than every RGB value: the scaling would show it if NIR were used
ALL_KEYS = {f"{TILE}_{r:03d}_{c:03d}" for r in range(3) for c in range(3)}
KEPT = {f"{TILE}_000_000", f"{TILE}_000_001", f"{TILE}_000_002", f"{TILE}_001_000", f"{TILE}_002_001"}


def _patch(array: np.ndarray, row: int, col: int) -> np.ndarray:
    return array[row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH]


def _north_up(left: float, top: float, xres: float, yres: float) -> Affine:
    """A north-up transform (rasterio's own ``from_origin`` warns under newer affine)."""
    return Affine(xres, 0.0, left, 0.0, -yres, top)


def _write_s2(path: Path, rgb: np.ndarray, left: float = LEFT, top: float = TOP, res: float = RES) -> None:
    """Write an (H, W, 3) RGB array as a 4-band R, G, B, NIR uint16 GeoTIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = rgb.shape[:2]
    bands = np.concatenate([np.moveaxis(rgb, -1, 0), np.full((1, height, width), NIR)]).astype(np.uint16)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:4326",
        "transform": _north_up(left, top, res, res),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)


def _write_map(path: Path, codes: np.ndarray, transform: object, crs: str = "EPSG:4326") -> None:
    """Write a one-band uint8 WorldCover map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": codes.shape[1],
        "height": codes.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes.astype(np.uint8)[None])


def _scene_codes() -> np.ndarray:
    """WorldCover codes of the scene on the Sentinel-2 grid (see the module docstring)."""
    codes = np.zeros((SIZE, SIZE), dtype=np.uint8)
    _patch(codes, 0, 0)[:] = 10
    _patch(codes, 0, 1)[:, :16] = 95
    _patch(codes, 0, 1)[:, 16:] = 90
    _patch(codes, 0, 2)[:16] = 100
    _patch(codes, 0, 2)[16:] = 70
    quadrants = _patch(codes, 1, 0)
    quadrants[:16, :16], quadrants[:16, 16:], quadrants[16:, :16], quadrants[16:, 16:] = 20, 40, 50, 60
    _patch(codes, 1, 1)[:] = 30
    codes[40, 50] = 0  # patch 1,1, on the east map's side
    _patch(codes, 1, 2)[:] = 30
    _patch(codes, 1, 2)[:30] = 80
    _patch(codes, 2, 0)[:] = 40
    _patch(codes, 2, 0)[5, 5] = 0
    _patch(codes, 2, 1)[:, :16] = 80
    _patch(codes, 2, 1)[:, 16:] = 40
    _patch(codes, 2, 2)[:] = 50
    _patch(codes, 2, 2)[7, 9] = 12
    return codes


def _scene_rgb() -> np.ndarray:
    rgb = np.random.default_rng(0).integers(1, 5000, size=(SIZE, SIZE, 3))
    _patch(rgb, 0, 0)[:] = (2000, 1200, 400)
    _patch(rgb, 2, 0)[:] = 0
    return rgb


@pytest.fixture
def scene(tmp_path: Path) -> dict:
    """Write the scene's Sentinel-2 tile and its two WorldCover maps."""
    rgb = _scene_rgb()
    _write_s2(tmp_path / "s2" / TILE / S2_NAME, rgb)
    fine = np.kron(_scene_codes(), np.ones((2, 2), dtype=np.uint8))  # 2x the Sentinel-2 resolution
    half = fine.shape[1] // 2
    _write_map(tmp_path / "wc" / "west" / "WC_west_Map.tif", fine[:, :half], _north_up(LEFT, TOP, RES / 2, RES / 2))
    east_left = LEFT + (SIZE // 2) * RES
    _write_map(
        tmp_path / "wc" / "east" / "WC_east_Map.tif", fine[:, half:], _north_up(east_left, TOP, RES / 2, RES / 2)
    )
    return {"s2": tmp_path / "s2", "wc": tmp_path / "wc", "out": tmp_path / "out", "rgb": rgb}


def _run(scene: dict, out: Path | None = None, **kwargs: object) -> PrepareReport:
    kwargs.setdefault("patch_size", PATCH)
    kwargs.setdefault("progress", False)
    return prepare_geotiffs(scene["s2"], scene["wc"], out or scene["out"], **kwargs)


def _read_all(out: Path) -> dict[str, Sample]:
    samples = {}
    for split in ("train", "val", "test"):
        for sample in iter_samples(out / split):
            assert sample.key not in samples
            samples[sample.key] = sample
    return samples


def _expected_masks() -> dict[str, np.ndarray]:
    """The masks of the kept patches under the default remap, written out by hand."""
    masks = {}
    masks["000_000"] = np.zeros((PATCH, PATCH), np.uint8)  # 10 -> tree
    masks["000_001"] = np.zeros((PATCH, PATCH), np.uint8)  # 95 (mangrove) -> tree
    masks["000_001"][:, 16:] = 2  # 90 (wetland) -> grass
    masks["000_002"] = np.full((PATCH, PATCH), 2, np.uint8)  # 100 (moss) -> grass
    masks["000_002"][16:] = 5  # 70 (snow) -> barren
    masks["001_000"] = np.zeros((PATCH, PATCH), np.uint8)
    masks["001_000"][:16, :16], masks["001_000"][:16, 16:] = 1, 3  # shrub, crop
    masks["001_000"][16:, :16], masks["001_000"][16:, 16:] = 4, 5  # built, barren
    masks["002_001"] = np.full((PATCH, PATCH), 3, np.uint8)  # 40 -> crop
    masks["002_001"][:, :16] = 6  # 80 -> water
    return {f"{TILE}_{k}": v for k, v in masks.items()}


def test_masks_are_geo_aligned_with_the_default_remap(scene: dict) -> None:
    _run(scene)
    samples = _read_all(scene["out"])
    assert set(samples) == KEPT
    for key, expected in _expected_masks().items():
        np.testing.assert_array_equal(samples[key].mask, expected, err_msg=key)


def test_custom_remap_and_codes_it_lacks(scene: dict) -> None:
    remap = {**DEFAULT_WORLDCOVER_REMAP, 90: 0}  # wetland -> tree, as the paper's text says
    del remap[70]  # snow is unknown now: patch 0,2 becomes no-data
    report = _run(scene, remap=remap)
    samples = _read_all(scene["out"])
    np.testing.assert_array_equal(samples[f"{TILE}_000_001"].mask, np.zeros((PATCH, PATCH), np.uint8))
    assert f"{TILE}_000_002" not in samples
    assert report.skipped == {"zeros": 1, "nodata": 3, "water": 1}


def test_every_filter_is_counted(scene: dict) -> None:
    report = _run(scene)
    assert report.tiles == 1
    assert report.patches == 9
    assert report.skipped == {"zeros": 1, "nodata": 2, "water": 1}
    assert sum(report.written.values()) == len(KEPT)
    assert report.patches == sum(report.written.values()) + sum(report.skipped.values())


@pytest.mark.parametrize(("max_water", "water_skips"), [(0.9, 1), (0.5, 1), (0.49, 2), (1.0, 0)])
def test_max_water_is_a_strict_upper_share(scene: dict, max_water: float, water_skips: int) -> None:
    # Patch 1,2 is 93.75% water and patch 2,1 exactly 50%.
    report = _run(scene, max_water=max_water)
    assert report.skipped["water"] == water_skips


def test_images_are_scaled_by_the_patch_maximum(scene: dict) -> None:
    _run(scene)
    samples = _read_all(scene["out"])
    # Band 1, 2, 3 = R, G, B; NIR (65535) is ignored: 2000 -> 255, 1200 -> 153, 400 -> 51.
    first = samples[f"{TILE}_000_000"].image
    assert first.dtype == np.uint8
    assert (first == np.array([255, 153, 51], np.uint8)).all()
    for key in KEPT:
        row, col = (int(part) for part in key.split("_")[1:])
        raw = _patch(scene["rgb"], row, col).astype(np.float64)
        expected = np.round(raw / raw.max() * 255).astype(np.uint8)
        np.testing.assert_array_equal(samples[key].image, expected, err_msg=key)


def test_meta_holds_tile_bounds_crs_transform_and_composition(scene: dict) -> None:
    _run(scene)
    samples = _read_all(scene["out"])
    for key, sample in samples.items():
        row, col = (int(part) for part in key.split("_")[1:])
        left, top = LEFT + col * PATCH * RES, TOP - row * PATCH * RES
        assert sample.meta["tile"] == TILE
        assert sample.meta["crs"] == "EPSG:4326"
        assert sample.meta["bounds"] == pytest.approx([left, top - PATCH * RES, left + PATCH * RES, top])
        # rasterio's Affine order a, b, c, d, e, f: the patch's own upper-left corner and pixel size
        assert sample.meta["transform"] == pytest.approx([RES, 0.0, left, 0.0, -RES, top])
        assert sample.meta["source"] == "real"
        assert sum(sample.meta["composition"].values()) == pytest.approx(1.0)
    assert samples[f"{TILE}_002_001"].meta["composition"]["water"] == pytest.approx(0.5)


def test_split_is_deterministic_and_adds_up(scene: dict, tmp_path: Path) -> None:
    ratios = (0.4, 0.3, 0.3)
    first = _run(scene, ratios=ratios, seed=3)
    again = _run(scene, out=tmp_path / "again", ratios=ratios, seed=3)
    assert first == again
    for out, report in ((scene["out"], first), (tmp_path / "again", again)):
        for split in ("train", "val", "test"):
            manifest = read_manifest(out / split)
            assert manifest["num_samples"] == report.written[split]
            assert manifest["source"] == "real"
            assert manifest["made_by"] == "aras-data prepare"
            assert manifest["patch_size"] == PATCH
            for sample in iter_samples(out / split):
                assert sample.meta["split"] == split == split_for_key(sample.key, ratios, 3)
    assert sum(first.written.values()) == len(KEPT)


def test_an_empty_split_still_gets_a_manifest(scene: dict) -> None:
    report = _run(scene, ratios=(1.0, 0.0, 0.0))
    assert report.written == {"train": len(KEPT), "val": 0, "test": 0}
    assert read_manifest(scene["out"] / "val")["num_samples"] == 0
    assert read_manifest(scene["out"] / "test")["num_samples"] == 0


def test_keys_name_tile_row_and_column(scene: dict) -> None:
    _run(scene)
    keys = set(_read_all(scene["out"]))
    assert keys <= ALL_KEYS
    assert all(re.fullmatch(r"[NS]\d{2}[EW]\d{3}_\d{3}_\d{3}", key) for key in keys)


def test_summary_mentions_every_reason(scene: dict) -> None:
    text = _run(scene).summary()
    assert "tiles: 1" in text
    assert "patches: 9" in text
    assert "written: 5" in text
    assert "skipped zeros: 1 (11.1%)" in text
    assert "skipped nodata: 2 (22.2%)" in text
    assert "skipped water: 1 (11.1%)" in text
    assert "0.0%" in PrepareReport().summary()


def test_a_patch_straddling_two_maps_needs_both(scene: dict) -> None:
    # Without the east map, the straddling patches (middle column) lose their east half.
    (scene["wc"] / "east" / "WC_east_Map.tif").unlink()
    report = _run(scene)
    keys = set(_read_all(scene["out"]))
    assert keys == {f"{TILE}_000_000", f"{TILE}_001_000"}
    assert report.skipped == {"zeros": 1, "nodata": 6, "water": 0}


def test_nearest_resampling_takes_the_map_pixel_under_the_centre(tmp_path: Path) -> None:
    # A map at 3x the resolution: the middle of each 3x3 block is a checkerboard of
    # tree/crop, the ring around it water. Nearest must return the checkerboard.
    size = 64
    _write_s2(tmp_path / "s2" / S2_NAME, np.full((size, size, 3), 100))
    checker = np.where((np.add.outer(np.arange(size), np.arange(size)) % 2) == 0, 10, 40).astype(np.uint8)
    fine = np.full((3 * size, 3 * size), 80, np.uint8)
    fine[1::3, 1::3] = checker
    _write_map(tmp_path / "wc" / "fine_Map.tif", fine, _north_up(LEFT, TOP, RES / 3, RES / 3))
    report = prepare_geotiffs(tmp_path / "s2", tmp_path / "wc", tmp_path / "out", patch_size=PATCH, progress=False)
    assert sum(report.written.values()) == 4
    expected = np.where(checker == 10, 0, 3).astype(np.uint8)
    for key, sample in _read_all(tmp_path / "out").items():
        row, col = (int(part) for part in key.split("_")[1:])
        np.testing.assert_array_equal(sample.mask, _patch(expected, row, col), err_msg=key)


def test_worldcover_in_another_crs_is_warped(tmp_path: Path) -> None:
    # Codes in 8x8-pixel blocks of the Sentinel-2 grid, drawn on two Web Mercator maps
    # with 200 m pixels by where each map pixel's centre falls on that grid.
    _write_s2(tmp_path / "s2" / S2_NAME, np.full((SIZE, SIZE, 3), 100))
    cycle = np.array([10, 20, 30, 40, 50, 60], np.uint8)
    blocks = np.add.outer(np.arange(SIZE) // 8, np.arange(SIZE) // 8) % len(cycle)
    left, bottom, right, top = transform_bounds(
        "EPSG:4326", "EPSG:3857", LEFT, TOP - SIZE * RES, LEFT + SIZE * RES, TOP
    )
    step = 200.0
    x0, y0 = np.floor(left / step) * step - 1000, np.ceil(top / step) * step + 1000
    width, height = int((right - x0 + 1000) // step), int((y0 - bottom + 1000) // step)
    xs, ys = np.meshgrid(x0 + step * (np.arange(width) + 0.5), y0 - step * (np.arange(height) + 0.5))
    lon, lat = (
        np.asarray(v).reshape(xs.shape) for v in warp_transform("EPSG:3857", "EPSG:4326", xs.ravel(), ys.ravel())
    )
    rows, cols = np.floor((TOP - lat) / RES).astype(int), np.floor((lon - LEFT) / RES).astype(int)
    inside = (rows >= 0) & (rows < SIZE) & (cols >= 0) & (cols < SIZE)
    codes = np.full(xs.shape, 10, np.uint8)
    codes[inside] = cycle[blocks[rows[inside], cols[inside]]]
    split = width // 2 + 7  # not on a patch edge: some patches straddle the two maps
    _write_map(tmp_path / "wc" / "a_Map.tif", codes[:, :split], _north_up(x0, y0, step, step), "EPSG:3857")
    _write_map(
        tmp_path / "wc" / "b_Map.tif", codes[:, split:], _north_up(x0 + split * step, y0, step, step), "EPSG:3857"
    )
    report = prepare_geotiffs(tmp_path / "s2", tmp_path / "wc", tmp_path / "out", patch_size=PATCH, progress=False)
    assert sum(report.written.values()) == 9
    lut = np.zeros(256, np.uint8)
    lut[[10, 20, 30, 40, 50, 60]] = [0, 1, 2, 3, 4, 5]
    expected = lut[cycle[blocks]]
    for key, sample in _read_all(tmp_path / "out").items():
        row, col = (int(part) for part in key.split("_")[1:])
        assert sample.meta["crs"] == "EPSG:4326"
        # 200 m map pixels are far finer than the ~870 m Sentinel-2 pixels: exact.
        np.testing.assert_array_equal(sample.mask, _patch(expected, row, col), err_msg=key)


def test_a_tile_without_worldcover_counts_as_nodata(scene: dict) -> None:
    _write_s2(scene["s2"] / "far" / "X_S05W072_S2RGBNIR.tif", np.full((64, 64, 3), 7), left=-72.0, top=-4.0)
    with pytest.warns(UserWarning, match="S05W072"):
        report = _run(scene)
    assert report.tiles == 2
    assert report.patches == 13
    assert report.skipped["nodata"] == 2 + 4


def test_missing_folders_are_named(scene: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_geotiffs(tmp_path / "nowhere", scene["wc"], scene["out"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_geotiffs(scene["s2"], tmp_path / "nowhere", scene["out"])


def test_folders_without_matching_files_are_named(scene: dict, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"S2RGBNIR.*empty"):
        prepare_geotiffs(tmp_path / "empty", scene["wc"], scene["out"])
    with pytest.raises(FileNotFoundError, match=r"_Map.*empty"):
        prepare_geotiffs(scene["s2"], tmp_path / "empty", scene["out"])
    assert not scene["out"].exists()


def test_an_s2_name_without_tile_id_is_rejected(scene: dict) -> None:
    _write_s2(scene["s2"] / "somewhere_S2RGBNIR.tif", np.ones((32, 32, 3)))
    with pytest.raises(ValueError, match=re.escape("somewhere_S2RGBNIR.tif")):
        _run(scene)


def test_two_files_of_one_tile_are_rejected(scene: dict) -> None:
    _write_s2(scene["s2"] / "copy" / S2_NAME, np.ones((32, 32, 3)))
    with pytest.raises(ValueError, match="both tile N36E027"):
        _run(scene)


def test_existing_output_needs_overwrite(scene: dict) -> None:
    _run(scene)
    with pytest.raises(FileExistsError, match="overwrite"):
        _run(scene)
    assert sum(_run(scene, overwrite=True).written.values()) == len(KEPT)
    assert set(_read_all(scene["out"])) == KEPT


def test_writers_abort_on_an_error(scene: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_on_third(rgb: np.ndarray, peak: float) -> np.ndarray:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return np.zeros(rgb.shape, np.uint8)

    monkeypatch.setattr(geotiff, "_scale_to_uint8", fail_on_third)
    with pytest.raises(RuntimeError, match="boom"):
        _run(scene, samples_per_shard=1)
    for split in ("train", "val", "test"):
        assert not (scene["out"] / split / "manifest.json").exists()
        assert not list((scene["out"] / split).glob("*.tmp"))


def test_missing_rasterio_gives_an_install_hint(scene: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(ImportError, match=re.escape('pip install "aras400k[geo]"')):
        _run(scene)


def test_workers_write_the_same_bytes_as_one(scene: dict, tmp_path: Path) -> None:
    reports = [_run(scene, out=tmp_path / f"w{n}", samples_per_shard=2, workers=n) for n in (1, 2, 3)]
    assert reports[0] == reports[1] == reports[2]
    files = [
        {
            p.relative_to(tmp_path / f"w{n}").as_posix(): p.read_bytes()
            for p in sorted((tmp_path / f"w{n}").rglob("*"))
            if p.is_file()
        }
        for n in (1, 2, 3)
    ]
    assert any(name.endswith(".tar") for name in files[0])
    assert files[0] == files[1] == files[2]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        _run(scene, out=tmp_path / "none", workers=0)


def test_progress_on_a_log_is_a_few_lines(scene: dict, capsys: pytest.CaptureFixture[str]) -> None:
    _run(scene, progress=True, workers=1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 2 <= len(lines) <= 12, lines
    assert lines[-1].startswith("prepare: ") and lines[-1].endswith("rows/s")
