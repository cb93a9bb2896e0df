"""The release importer on several cores: verbatim image PNGs, byte-identical shards, log-friendly progress."""

from __future__ import annotations

import functools
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aras400k.classes import CLASS_NAMES, PALETTE
from aras400k.data import iter_samples
from aras400k.data.parallel import ordered_map
from aras400k.data.release import ImportReport, ReleaseImportError, import_release, importer
from tests.data.test_release import SPLIT_FILES, _corrupt_image, _image, _index_mask, _write_csv


def _tar_bytes(out: Path) -> dict[str, bytes]:
    """Every file of every split under ``out``: relative path -> bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/*")) if p.is_file()}


@pytest.fixture
def fast_release(tmp_path: Path) -> Path:
    """A release whose PNGs are saved with zlib level 1, so re-encoding them (level 6) would change the bytes."""
    root = tmp_path / "release"
    for split, stems in SPLIT_FILES.items():
        for seed, stem in enumerate(stems, start=len(split)):
            for folder, array in (("images", _image(seed)), ("masks", PALETTE[_index_mask(seed)])):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / folder / f"{stem}.png", compress_level=1)
    grey = root / "train" / "images" / "t9.png"  # a grey image is converted, not copied
    Image.fromarray(_image(9)[..., 0]).save(grey)
    Image.fromarray(PALETTE[_index_mask(9)]).save(root / "train" / "masks" / "t9.png")
    # A CSV composition off by far: a warning, which must come back from the workers in order.
    rows = [[f"{stem}.png", 100] + [0] * (len(CLASS_NAMES) - 1) for stem in ("v0", "v1")]
    _write_csv(root / "class_percentages" / "val.csv", ["filename", *CLASS_NAMES], rows)
    return root


def test_rgb_png_copied_verbatim(fast_release, tmp_path):
    import_release(fast_release, tmp_path / "out", workers=1, progress=False)
    with tarfile.open(tmp_path / "out" / "train" / "train-000000.tar") as tar:
        copied = tar.extractfile("t0.image.png").read()  # type: ignore[union-attr]
        converted = tar.extractfile("t9.image.png").read()  # type: ignore[union-attr]
    assert copied == (fast_release / "train" / "images" / "t0.png").read_bytes()
    assert Image.open(fast_release / "train" / "images" / "t9.png").mode == "L"
    samples = {s.key: s for s in iter_samples(tmp_path / "out" / "train")}
    assert Image.open(__import__("io").BytesIO(converted)).mode == "RGB"
    np.testing.assert_array_equal(samples["t9"].image, np.repeat(_image(9)[..., :1], 3, axis=2))
    np.testing.assert_array_equal(samples["t0"].image, np.asarray(Image.open(fast_release / "train/images/t0.png")))


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_workers_write_the_same_bytes_as_one(fast_release, tmp_path, on_error, monkeypatch):
    reports: list[ImportReport] = []
    for workers in (1, 2, 3):
        reports.append(
            import_release(fast_release, tmp_path / f"w{workers}", samples_per_shard=2, workers=workers, progress=False)
        )
    with monkeypatch.context() as patch:  # one item per message: every split's samples alternate between workers
        patch.setattr(importer, "ordered_map", functools.partial(ordered_map, chunk=1))
        reports.append(import_release(fast_release, tmp_path / "c1", samples_per_shard=2, workers=2, progress=False))
    one = _tar_bytes(tmp_path / "w1")
    assert any(name.endswith(".tar") for name in one)
    assert _tar_bytes(tmp_path / "w2") == one
    assert _tar_bytes(tmp_path / "w3") == one
    assert _tar_bytes(tmp_path / "c1") == one
    assert reports[0].problems and all(r.problems == reports[0].problems for r in reports)
    assert all(r.written == reports[0].written for r in reports)

    bad = _corrupt_image(fast_release)
    if on_error == "fail":
        for workers in (1, 2):
            with pytest.raises(ReleaseImportError, match=bad.name):
                import_release(fast_release, tmp_path / f"f{workers}", workers=workers, progress=False)
            assert not list((tmp_path / f"f{workers}").glob("*/*.tar*"))
        return
    skipped = [
        import_release(fast_release, tmp_path / f"s{w}", on_error="skip", workers=w, progress=False) for w in (1, 2)
    ]
    assert skipped[0].problems == skipped[1].problems
    assert _tar_bytes(tmp_path / "s1") == _tar_bytes(tmp_path / "s2")


def test_bad_worker_count(fast_release, tmp_path):
    with pytest.raises(ValueError, match="workers must be >= 1"):
        import_release(fast_release, tmp_path / "out", workers=0)


def test_progress_on_a_log_is_a_few_lines(fast_release, tmp_path, capsys):
    import_release(fast_release, tmp_path / "out", workers=1, splits=["train"], progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 2 <= len(lines) <= 12, lines
    assert lines[-1].startswith("import train: 4/4 (100%) images in ")
    assert lines[-1].endswith("images/s")


def test_a_worker_sends_back_bytes_not_arrays(fast_release):
    """The writing process gets each sample as tar bytes: no decoded image or mask crosses the pipe."""
    from aras400k.data.release.layout import Entry

    image, mask = fast_release / "train" / "images" / "t0.png", fast_release / "train" / "masks" / "t0.png"
    job = importer._Job(Entry(image=image, key="t0", mask=mask), fast_release, "error", "train", "real", 6)
    encoded, warnings, problem = importer._load_job(job)
    assert problem is None and not warnings and encoded is not None
    assert image.read_bytes() in encoded.tar  # copied verbatim
    shipped = len(pickle.dumps((encoded, warnings, problem)))
    assert shipped < len(encoded.tar) + 1024
    assert len(encoded.tar) < image.stat().st_size + mask.stat().st_size + 8 * 512 + 1024
