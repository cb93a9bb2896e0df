"""Tests of importing the released zips as they are (aras400k.data.release.zips)."""

from __future__ import annotations

import functools
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aras400k.classes import PALETTE
from aras400k.cli.data import main
from aras400k.data import iter_samples, read_manifest
from aras400k.data.parallel import ordered_map
from aras400k.data.release import ReleaseImportError, import_release, importer
from aras400k.data.release import zips as release_zips
from tests.data.test_release import SPLIT_FILES, release  # noqa: F401  (the fixture)

SPLITS = ("train", "val", "test", "synth")


def _zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    """Write ``folder``'s files into ``zip_path`` under ``prefix + relative path``."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def zips(release, tmp_path, monkeypatch):  # noqa: F811  (pytest fixture injection)
    """The tiny release as four zips ``{split}/images|masks/...``, their digests as the published table."""
    root, drawn = release
    (tmp_path / "zips").mkdir()
    paths = []
    for split in SPLITS:
        zip_path = tmp_path / "zips" / f"{split}.zip"
        with zipfile.ZipFile(zip_path, "w") as archive:
            for path in sorted((root / split).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root).as_posix())
        paths.append(zip_path)
    monkeypatch.setattr(release_zips, "RELEASE_MD5", {p.name: _md5(p) for p in paths})
    return paths, drawn


def _assert_same_as_folder_import(out: Path, drawn) -> None:
    for split, files in drawn.items():
        samples = {s.key: s for s in iter_samples(out / split)}
        assert list(samples) == sorted(files)
        for stem, (image, mask) in files.items():
            np.testing.assert_array_equal(samples[stem].image, image)
            assert samples[stem].meta["release_file"] == f"{split}/images/{stem}.png"
            if mask is None:
                assert samples[stem].mask is None
            else:
                np.testing.assert_array_equal(samples[stem].mask, mask)


def test_zips_import_like_the_extracted_folder_and_extract_nothing(zips, tmp_path):
    paths, drawn = zips
    before = sorted(p.name for p in (tmp_path / "zips").iterdir())
    notices: list[str] = []
    report = import_release(paths, tmp_path / "out", progress=False, notice=notices.append)
    assert report.written == {s: len(SPLIT_FILES[s]) for s in SPLITS}
    assert report.problems == [] and notices == []
    _assert_same_as_folder_import(tmp_path / "out", drawn)
    assert read_manifest(tmp_path / "out" / "train")["release_root"] == str(paths[0])
    assert sorted(p.name for p in (tmp_path / "zips").iterdir()) == before


def test_corrupt_zip_is_named_with_both_digests(zips, tmp_path):
    paths, _ = zips
    expected = _md5(paths[1])
    with zipfile.ZipFile(paths[1], "a") as archive:  # still a valid zip, other bytes
        archive.writestr("val/extra.txt", "tampered")
    with pytest.raises(ReleaseImportError) as exc:
        import_release(paths, tmp_path / "out", progress=False)
    message = str(exc.value)
    assert "val.zip" in message and expected in message and _md5(paths[1]) in message
    assert not (tmp_path / "out").exists()
    report = import_release(paths, tmp_path / "out", progress=False, check_md5=False, on_error="skip")
    assert report.written["val"] == len(SPLIT_FILES["val"])


def test_missing_and_unreadable_zips_are_named(zips, tmp_path):
    paths, _ = zips
    with pytest.raises(ReleaseImportError, match="synth2.zip does not exist"):
        import_release([*paths[:3], tmp_path / "synth2.zip"], tmp_path / "out", progress=False)
    paths[2].write_bytes(b"not a zip at all")
    with pytest.raises(ReleaseImportError, match=r"test\.zip is not a readable zip"):
        import_release(paths, tmp_path / "out", progress=False)


def test_other_names_and_layouts_are_accepted_with_a_notice(release, tmp_path):  # noqa: F811
    root, drawn = release
    flat = _zip_folder(root / "val", tmp_path / "val_part.zip")  # images/, masks/ at the top
    nested = tmp_path / "my_train.zip"
    with zipfile.ZipFile(nested, "w") as archive:  # ARAS400k/train/...
        for path in sorted((root / "train").rglob("*")):
            if path.is_file():
                archive.write(path, "ARAS400k/" + path.relative_to(root).as_posix())
    notices: list[str] = []
    report = import_release([flat, nested], tmp_path / "out", progress=False, notice=notices.append)
    assert report.written == {"val_part": len(SPLIT_FILES["val"]), "train": len(SPLIT_FILES["train"])}
    assert len(notices) == 2 and all("MD5 not checked" in n for n in notices)
    samples = {s.key: s for s in iter_samples(tmp_path / "out" / "train")}
    np.testing.assert_array_equal(samples["t0"].mask, drawn["train"]["t0"][1])


def test_two_zips_with_one_split_and_split_selection(zips, tmp_path):
    paths, _ = zips
    copy = tmp_path / "train_copy.zip"
    copy.write_bytes(paths[0].read_bytes())
    with pytest.raises(ReleaseImportError, match="both hold split 'train'"):
        import_release([paths[0], copy], tmp_path / "out", progress=False)
    report = import_release(paths, tmp_path / "out", splits=["test"], progress=False)
    assert report.written == {"test": 1}
    with pytest.raises(ReleaseImportError, match="no zip holds split 'nope'"):
        import_release(paths, tmp_path / "out2", splits=["nope"], progress=False)


def test_zip_problem_names_the_member(release, tmp_path, monkeypatch):  # noqa: F811
    root, _ = release
    _zip_folder(root, tmp_path / "whole.zip")
    with zipfile.ZipFile(tmp_path / "whole.zip", "a") as archive:
        archive.writestr("train/masks/orphan.png", (PALETTE[np.zeros((4, 4), np.uint8)]).tobytes())
    train = tmp_path / "train.zip"
    with zipfile.ZipFile(tmp_path / "whole.zip") as src, zipfile.ZipFile(train, "w") as dst:
        for name in src.namelist():
            if name.startswith("train/"):
                dst.writestr(name, src.read(name))
    monkeypatch.setattr(release_zips, "RELEASE_MD5", {"train.zip": _md5(train)})
    with pytest.raises(ReleaseImportError, match=r"train\.zip/train/masks/orphan\.png"):
        import_release([train], tmp_path / "out", progress=False)


def test_cli_imports_zips_and_reports_a_bad_digest_in_one_line(zips, tmp_path, capsys):
    paths, _ = zips
    assert main(["import", *map(str, paths), "--out", str(tmp_path / "out")]) == 0
    assert "wrote 8 samples" in capsys.readouterr().out
    release_zips.RELEASE_MD5["test.zip"] = "0" * 32
    with pytest.raises(SystemExit) as exc:
        main(["import", *map(str, paths), "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the lines above are progress bars
    assert exc.value.code == 2
    assert err.startswith("aras-data: error: release zip") and "test.zip" in err and "0" * 32 in err
    assert main(["import", *map(str, paths), "--out", str(tmp_path / "out3"), "--check_md5", "false"]) == 0


def test_zips_are_read_by_every_worker_with_the_same_bytes(zips, tmp_path, monkeypatch):
    """Workers open the zips themselves: the shards, and every problem's path, match one process."""
    # One item per message, so both workers read every zip (chunks would give a small split to one).
    monkeypatch.setattr(importer, "ordered_map", functools.partial(ordered_map, chunk=1))
    paths, drawn = zips
    train = paths[0]
    with zipfile.ZipFile(train, "a") as archive:  # a corrupt image: a problem named inside the zip
        archive.writestr("train/images/t_bad.png", b"\x89PNG\r\n\x1a\n not a picture")
        archive.writestr("train/masks/t_bad.png", (PALETTE[np.zeros((4, 4), np.uint8)]).tobytes())
    reports = [
        import_release(
            paths, tmp_path / f"w{w}", on_error="skip", check_md5=False, workers=w, progress=False, notice=print
        )
        for w in (1, 2)
    ]
    assert reports[0].problems == reports[1].problems
    assert [kind for path, kind in reports[0].problems if path.endswith("train.zip/train/images/t_bad.png")]
    one = {p.relative_to(tmp_path / "w1").as_posix(): p.read_bytes() for p in sorted((tmp_path / "w1").glob("*/*"))}
    two = {p.relative_to(tmp_path / "w2").as_posix(): p.read_bytes() for p in sorted((tmp_path / "w2").glob("*/*"))}
    assert any(name.endswith(".tar") for name in one) and one == two
    _assert_same_as_folder_import(tmp_path / "w2", drawn)


def test_zip_member_pickles_and_reads_like_zipfile_path(zips):
    import pickle

    paths, _ = zips
    with zipfile.ZipFile(paths[0]) as archive:
        member = zipfile.Path(archive) / "train" / "images" / f"{SPLIT_FILES['train'][0]}.png"
        named = pickle.loads(pickle.dumps(release_zips.ZipMember.of(member)))
        assert str(named) == str(member) and named.name == member.name and named.at == member.at
        assert named.read_bytes() == member.read_bytes()
        with named.open("rb") as fh:
            assert fh.read() == member.read_bytes()
    with pytest.raises(ValueError, match="for reading only"):
        named.open("w")
    release_zips._ZIPS.pop(str(paths[0])).close()  # the zip this process opened for the member
