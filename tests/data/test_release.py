"""Tests of the ARAS400k release importer (aras400k.data.release)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE
from aras400k.data import iter_samples, read_manifest
from aras400k.data.release import ImportReport, ReleaseImportError, import_release
from tests.data.test_bad_samples import bomb_png

SIZE = 32
SPLIT_FILES = {
    "train": ["t0", "t1", "t2"],
    "val": ["v0", "v1"],
    "test": ["x0"],
    "synth": ["y0", "y1"],
}
UNLABELLED = {"y1"}


def _index_mask(seed: int, size: int = SIZE) -> np.ndarray:
    """Blocky index mask using every class."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, NUM_CLASSES, size=(4, 4), dtype=np.uint8)
    blocks.flat[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    return np.kron(blocks, np.ones((size // 4, size // 4), dtype=np.uint8))


def _image(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(1000 + seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]]]:
    """A tiny release: images, colour masks, and the arrays they were drawn from."""
    root = tmp_path / "release"
    drawn: dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]] = {}
    seed = 0
    for split, stems in SPLIT_FILES.items():
        drawn[split] = {}
        (root / split / "masks").mkdir(parents=True)
        for stem in stems:
            seed += 1
            image, mask = _image(seed), _index_mask(seed)
            _save(root / split / "images" / f"{stem}.png", image)
            if stem in UNLABELLED:
                drawn[split][stem] = (image, None)
            else:
                _save(root / split / "masks" / f"{stem}.png", PALETTE[mask])
                drawn[split][stem] = (image, mask)
    return root, drawn


def _samples(out: Path, split: str) -> dict[str, object]:
    return {s.key: s for s in iter_samples(out / split)}


def _problems_of(report: ImportReport, kind: str) -> list[tuple[str, str]]:
    return [(path, reason) for path, reason in report.problems if reason.startswith(kind + ": ")]


def test_round_trip(release, tmp_path):
    root, drawn = release
    out = tmp_path / "out"
    report = import_release(root, out, progress=False)
    assert report.written == {"train": 3, "val": 2, "test": 1, "synth": 2}
    assert report.problems == []
    for split, files in drawn.items():
        manifest = read_manifest(out / split)
        assert manifest["num_samples"] == len(files)
        assert manifest["source"] == ("synth_uncond" if split == "synth" else "real")
        assert manifest["made_by"] == "aras-data import"
        assert manifest["release_root"] == str(root)
        samples = _samples(out, split)
        assert list(samples) == sorted(files)
        for stem, (image, mask) in files.items():
            sample = samples[stem]
            np.testing.assert_array_equal(sample.image, image)
            assert sample.meta["split"] == split
            assert sample.meta["release_file"] == f"{split}/images/{stem}.png"
            if mask is None:
                assert sample.mask is None
                assert "composition" not in sample.meta
            else:
                np.testing.assert_array_equal(sample.mask, mask)
                assert set(sample.meta["composition"]) == set(CLASS_NAMES)


def test_synth_cond_source_and_split_selection(release, tmp_path):
    root, _ = release
    report = import_release(root, tmp_path / "out", splits=["synth"], synth_source="synth_cond", progress=False)
    assert report.written == {"synth": 2}
    assert read_manifest(tmp_path / "out" / "synth")["source"] == "synth_cond"
    assert not (tmp_path / "out" / "train").exists()


def test_samples_per_shard(release, tmp_path):
    root, _ = release
    import_release(root, tmp_path / "out", splits=["train"], samples_per_shard=2, progress=False)
    shards = read_manifest(tmp_path / "out" / "train")["shards"]
    assert [s["num_samples"] for s in shards] == [2, 1]


def _no_mask(root: Path) -> Path:
    (root / "train" / "masks" / "t1.png").unlink()
    return root / "train" / "images" / "t1.png"


def _orphan_mask(root: Path) -> Path:
    path = root / "train" / "masks" / "orphan.png"
    _save(path, PALETTE[_index_mask(99)])
    return path


def _size_mismatch(root: Path) -> Path:
    _save(root / "train" / "masks" / "t1.png", PALETTE[_index_mask(5, size=16)])
    return root / "train" / "images" / "t1.png"


def _unknown_colour(root: Path) -> Path:
    path = root / "train" / "masks" / "t1.png"
    colours = np.asarray(Image.open(path)).copy()
    colours[0, 0] = (1, 2, 3)
    _save(path, colours)
    return path


def _corrupt_image(root: Path) -> Path:
    path = root / "train" / "images" / "t1.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    return path


def _truncated_mask(root: Path) -> Path:
    path = root / "train" / "masks" / "t1.png"
    path.write_bytes(path.read_bytes()[:60])
    return path


def _key_collision(root: Path) -> Path:
    # Both stems give the key "t_0"; "t 0.png" sorts first, so "t_0.png" is the collision.
    for seed, stem in enumerate(("t 0", "t_0"), start=50):
        _save(root / "train" / "images" / f"{stem}.png", _image(seed))
        _save(root / "train" / "masks" / f"{stem}.png", PALETTE[_index_mask(seed)])
    return root / "train" / "images" / "t_0.png"


def _bomb_image(root: Path) -> Path:
    # A 12000x12000 palette PNG of a few kB: refused from its header, never decoded (1.4 GB as RGB).
    path = root / "train" / "images" / "t1.png"
    path.write_bytes(bomb_png(12000, 12000))
    return path


DEFECTS = {
    # name: (make the defect, problem kind, samples written to train in skip mode)
    "image without mask": (_no_mask, "image without mask", 2),
    "mask without image": (_orphan_mask, "mask without image", 3),
    "size mismatch": (_size_mismatch, "size mismatch", 2),
    "unknown colour": (_unknown_colour, "unknown mask colour", 2),
    "corrupt image": (_corrupt_image, "unreadable file", 2),
    "truncated mask": (_truncated_mask, "unreadable file", 2),
    "decompression bomb": (_bomb_image, "unreadable file", 2),
    "key collision": (_key_collision, "key collision", 4),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_problem_skipped_and_reported(release, tmp_path, defect):
    root, _ = release
    make, kind, written = DEFECTS[defect]
    bad = make(root)
    report = import_release(root, tmp_path / "out", on_error="skip", progress=False)
    found = _problems_of(report, kind)
    assert len(found) == 1, report.problems
    assert Path(found[0][0]).name == bad.name
    assert len(report.problems) == 1
    assert report.written["train"] == written
    assert read_manifest(tmp_path / "out" / "train")["num_samples"] == written
    assert kind in report.summary()


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_problem_fails_naming_the_file(release, tmp_path, defect):
    root, _ = release
    make, kind, _ = DEFECTS[defect]
    bad = make(root)
    out = tmp_path / "out"
    with pytest.raises(ReleaseImportError) as info:
        import_release(root, out, progress=False)
    message = str(info.value)
    assert bad.name in message
    assert kind in message
    assert "--on-error skip" in message
    assert "\n" not in message
    # Nothing half-written: no split got a manifest, no shard is left behind.
    assert not list(out.glob("*/manifest.json"))
    assert not list(out.glob("*/*.tar*"))


def test_unknown_colours_ignore_maps_to_255(release, tmp_path):
    root, drawn = release
    _unknown_colour(root)
    report = import_release(root, tmp_path / "out", unknown_colours="ignore", progress=False)
    assert report.problems == []
    mask = _samples(tmp_path / "out", "train")["t1"].mask
    expected = drawn["train"]["t1"][1].copy()
    expected[0, 0] = IGNORE_INDEX
    np.testing.assert_array_equal(mask, expected)


def test_index_and_palette_masks_and_mask_suffix(release, tmp_path):
    root, drawn = release
    masks = root / "train" / "masks"
    _save(masks / "t0.png", drawn["train"]["t0"][1])  # one-channel index PNG (mode L)
    palette_mask = Image.fromarray(drawn["train"]["t1"][1], mode="L").convert("P")
    palette_mask.putpalette(PALETTE[::-1].ravel().tolist())  # release colours, in another order
    palette_mask.save(masks / "t1.png")
    (masks / "t2.png").rename(masks / "t2_mask.png")
    report = import_release(root, tmp_path / "out", splits=["train"], progress=False)
    assert report.problems == []
    samples = _samples(tmp_path / "out", "train")
    np.testing.assert_array_equal(samples["t0"].mask, drawn["train"]["t0"][1])
    np.testing.assert_array_equal(samples["t1"].mask, NUM_CLASSES - 1 - drawn["train"]["t1"][1])
    np.testing.assert_array_equal(samples["t2"].mask, drawn["train"]["t2"][1])


def test_bad_index_mask_is_reported(release, tmp_path):
    root, _ = release
    values = np.full((SIZE, SIZE), 3, dtype=np.uint8)
    values[0, :4] = 42
    _save(root / "val" / "masks" / "v0.png", values)
    report = import_release(root, tmp_path / "out", on_error="skip", progress=False)
    (problem,) = _problems_of(report, "unknown mask colour")
    assert problem[0].endswith("v0.png")
    assert "42" in problem[1]


def test_class_percentages_csv(release, tmp_path):
    root, drawn = release
    header = ["Filename", "Tree cover", "Shrubland", "grassland", "cropland", "built-up", "bare_sparse", "Water"]
    y1 = [40.0, 0.0, 10.0, 20.0, 5.0, 0.0, 25.0]
    y0_from_mask = np.bincount(drawn["synth"]["y0"][1].ravel(), minlength=NUM_CLASSES) / SIZE**2 * 100
    y0 = y0_from_mask.round(3)
    y0[y0.argmax()] -= 5.0  # a disagreement that still sums to 100
    y0[y0.argmin()] += 5.0
    y0 = y0.tolist()
    _write_csv(
        root / "class_percentages" / "synth.csv",
        header,
        [["y1.png", *y1], ["y0.png", *y0], ["gone.png", *y1]],
    )
    report = import_release(root, tmp_path / "out", progress=False)
    samples = _samples(tmp_path / "out", "synth")
    assert samples["y1"].mask is None
    assert samples["y1"].meta["composition"] == {c: v / 100 for c, v in zip(CLASS_NAMES, y1, strict=True)}
    (differs,) = _problems_of(report, "csv composition differs")
    assert Path(differs[0]).name == "y0.png"
    (missing,) = _problems_of(report, "csv row for missing file")
    assert "gone.png" in missing[1] and missing[0].endswith("synth.csv")
    # the mask's composition wins, and warnings do not stop a fail-mode import
    assert samples["y0"].meta["composition"]["tree"] == pytest.approx(y0_from_mask[0] / 100, abs=1e-6)
    manifest = read_manifest(tmp_path / "out" / "synth")
    assert manifest["class_pixels"]["tree"] == int((drawn["synth"]["y0"][1] == 0).sum()) + round(0.4 * SIZE**2)


def test_class_percentages_csv_missing_class_column(release, tmp_path):
    root, _ = release
    _write_csv(root / "class_percentages" / "synth.csv", ["filename", "tree", "shrub"], [["y1.png", 50, 50]])
    with pytest.raises(ReleaseImportError, match=r"synth\.csv"):
        import_release(root, tmp_path / "out", progress=False)
    report = import_release(root, tmp_path / "out2", on_error="skip", progress=False)
    assert _problems_of(report, "bad csv")
    assert "composition" not in _samples(tmp_path / "out2", "synth")["y1"].meta


def test_captions_discovered_and_explicit(release, tmp_path):
    root, _ = release
    _write_csv(root / "captions" / "train" / "llava_vision.csv", ["filename", "caption"], [["t0.png", "A forest."]])
    _write_csv(
        root / "captions" / "train_qwen_hybrid.csv",
        ["filename", "caption"],
        [["t0.png", "Mostly trees."], ["t2", "Fields."], ["nowhere.png", "Lost."]],
    )
    extra = tmp_path / "gpt.csv"
    _write_csv(extra, ["filename", "caption"], [["y1.png", "A synthetic lake."], ["t0.png", "Third."]])
    report = import_release(root, tmp_path / "out", captions=[extra], progress=False)
    train = _samples(tmp_path / "out", "train")
    assert train["t0"].captions == [
        {"text": "A forest.", "model": "llava_vision", "mode": "vision"},
        {"text": "Mostly trees.", "model": "train_qwen_hybrid", "mode": "hybrid"},
        {"text": "Third.", "model": "gpt", "mode": "unknown"},
    ]
    assert train["t2"].captions == [{"text": "Fields.", "model": "train_qwen_hybrid", "mode": "hybrid"}]
    assert train["t1"].captions is None
    assert _samples(tmp_path / "out", "synth")["y1"].captions == [
        {"text": "A synthetic lake.", "model": "gpt", "mode": "unknown"}
    ]
    (missing,) = report.problems
    assert missing[0].endswith("train_qwen_hybrid.csv") and "nowhere.png" in missing[1]


def test_missing_caption_csv_argument(release, tmp_path):
    root, _ = release
    with pytest.raises(ReleaseImportError, match=r"nope\.csv"):
        import_release(root, tmp_path / "out", captions=[tmp_path / "nope.csv"], progress=False)


def test_synth_without_masks_folder(release, tmp_path):
    root, _ = release
    for mask in (root / "synth" / "masks").iterdir():
        mask.unlink()
    (root / "synth" / "masks").rmdir()
    report = import_release(root, tmp_path / "out", splits=["synth"], progress=False)
    assert report.written == {"synth": 2}
    assert read_manifest(tmp_path / "out" / "synth")["num_masks"] == 0


def test_deterministic(release, tmp_path):
    root, _ = release
    import_release(root, tmp_path / "a", samples_per_shard=2, progress=False)
    import_release(root, tmp_path / "b", samples_per_shard=2, progress=False)
    for split in SPLIT_FILES:
        a = json.loads((tmp_path / "a" / split / "manifest.json").read_text())
        b = json.loads((tmp_path / "b" / split / "manifest.json").read_text())
        assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
        assert a == b


def test_existing_output_needs_overwrite(release, tmp_path):
    root, _ = release
    import_release(root, tmp_path / "out", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        import_release(root, tmp_path / "out", progress=False)
    report = import_release(root, tmp_path / "out", overwrite=True, progress=False)
    assert report.written["train"] == 3


def test_missing_root(tmp_path):
    with pytest.raises(ReleaseImportError, match="does not exist"):
        import_release(tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_root_without_splits(release, tmp_path):
    root, _ = release
    with pytest.raises(ReleaseImportError, match="none of the release split folders") as info:
        import_release(tmp_path, tmp_path / "out", progress=False)
    assert str(root) in str(info.value)  # the nested release folder is suggested


def test_empty_split_folder(release, tmp_path):
    root, _ = release
    for image in (root / "val" / "images").iterdir():
        image.unlink()
    with pytest.raises(ReleaseImportError, match="val"):
        import_release(root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_requested_split(release, tmp_path):
    root, _ = release
    (root / "extra").mkdir()
    with pytest.raises(ReleaseImportError, match="holiday"):
        import_release(root, tmp_path / "out", splits=["holiday"], progress=False)


def test_bad_arguments(release, tmp_path):
    root, _ = release
    with pytest.raises(ValueError, match="on_error"):
        import_release(root, tmp_path / "out", on_error="ignore", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="synth_source"):
        import_release(root, tmp_path / "out", synth_source="real", progress=False)  # type: ignore[arg-type]


def test_summary():
    report = ImportReport(
        written={"train": 5, "synth": 2},
        problems=[(f"/r/train/images/{i}.png", "image without mask: no mask") for i in range(12)]
        + [("/r/class_percentages/synth.csv", "csv row for missing file: line 3")],
    )
    text = report.summary()
    assert "wrote 7 samples (train 5, synth 2)" in text
    assert "image without mask: 12" in text
    assert "csv row for missing file: 1 (warning)" in text
    assert "/r/train/images/0.png" in text
    assert "... and 3 more" in text
    assert "no problems" in ImportReport(written={"train": 1}, problems=[]).summary()
