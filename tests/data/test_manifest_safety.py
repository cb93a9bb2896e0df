"""Nothing outside a shard set is read, written or deleted because a manifest or a tar says so (issue #12, item 2)."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

import aras400k.data.verify as verify_module
from aras400k.cli.data import main
from aras400k.data import ShardDataset, iter_samples, list_shards, read_manifest, shard_paths
from aras400k.data.merge import merge_shard_sets
from aras400k.data.shards import ManifestError, Sample, ShardWriter, iter_raw_samples
from aras400k.data.stats import load_compositions
from aras400k.data.verify import verify_shards
from tests.conftest import write_random_set

BAD_NAMES = [
    "../victim.tar",
    "../../etc/passwd",
    "/etc/passwd",
    "sub/train-000000.tar",
    "sub\\train-000000.tar",
    "",
    ".",
    "..",
    "train-000000.tar\x00.txt",
    "manifest.json",
]


def _edit_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_merge_overwrite_never_deletes_files_a_manifest_lists_outside_the_output(tmp_path, capsys):
    part = write_random_set(tmp_path / "part", 3, size=16)
    out = write_random_set(tmp_path / "work" / "out", 3, size=16)
    victim = tmp_path / "work" / "victim.txt"
    victim.write_text("precious")
    absolute = tmp_path / "absolute.txt"
    absolute.write_text("precious too")
    _edit_manifest(
        out,
        lambda m: m["shards"].extend(
            [{"name": "../victim.txt", "num_samples": 0}, {"name": str(absolute), "num_samples": 0}]
        ),
    )
    assert main(["merge", str(part), "--out", str(out), "--overwrite", "true"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious"
    assert absolute.read_text() == "precious too"
    assert verify_shards(out, progress=False).ok


def test_merge_never_writes_outside_the_output_when_a_part_names_its_shards_oddly(tmp_path):
    part = write_random_set(tmp_path / "part", 3, size=16)
    (part / "train-000000.tar").rename(part / "odd.tar")
    _edit_manifest(part, lambda m: m.update(split="../../escaped", shards=[{**m["shards"][0], "name": "odd.tar"}]))
    with pytest.raises(ValueError):
        merge_shard_sets([part], tmp_path / "a" / "out")
    assert not list(tmp_path.rglob("escaped*"))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_shard_names_are_refused_by_every_reader(tmp_path, name):
    root = write_random_set(tmp_path / "set", 2, size=16)
    _edit_manifest(root, lambda m: m["shards"].append({"name": name, "num_samples": 1}))
    for read in (read_manifest, shard_paths, list_shards, lambda r: list(iter_samples(r))):
        with pytest.raises(ManifestError, match="plain"):
            read(root)
    with pytest.raises(ManifestError, match="plain"):
        ShardDataset([root])
    with pytest.raises(ManifestError, match="plain"):
        load_compositions([root])


@pytest.mark.parametrize("entry", [{"num_samples": 1}, {"name": 7, "num_samples": 1}, {"name": None}, "x.tar", 3])
def test_malformed_shard_entries_are_manifest_errors(tmp_path, entry):
    root = write_random_set(tmp_path / "set", 2, size=16)
    _edit_manifest(root, lambda m: m["shards"].append(entry))
    with pytest.raises(ManifestError):
        read_manifest(root)


def test_verify_reports_a_manifest_naming_a_file_outside_and_never_opens_it(tmp_path, monkeypatch):
    root = write_random_set(tmp_path / "set", 4, per_shard=2, size=16)
    # A perfectly valid shard outside the set, listed with its right sha256 and count.
    outside = tmp_path / "outside.tar"
    shutil.copy(root / "train-000001.tar", outside)
    _edit_manifest(root, lambda m: m["shards"].__setitem__(1, {**m["shards"][1], "name": "../outside.tar"}))
    (root / "train-000001.tar").unlink()
    opened: list[Path] = []
    real_sha, real_iter = verify_module.sha256_file, verify_module.iter_raw_samples
    monkeypatch.setattr(verify_module, "sha256_file", lambda p: opened.append(Path(p)) or real_sha(p))
    monkeypatch.setattr(verify_module, "iter_raw_samples", lambda p: opened.append(Path(p)) or real_iter(p))
    report = verify_shards(root, progress=False)
    assert not report.ok
    assert "../outside.tar" in report.summary()
    assert all(p.resolve().parent == root.resolve() for p in opened)


def test_verify_cli_exits_1_on_a_manifest_listing_etc_passwd(tmp_path, capsys):
    root = write_random_set(tmp_path / "set", 2, size=16)
    _edit_manifest(root, lambda m: m["shards"].append({"name": "../../etc/passwd", "num_samples": 1}))
    assert main(["verify", str(root), "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    assert "problem" in out and "../../etc/passwd" in out


def test_shard_writer_refuses_a_prefix_that_leaves_the_folder(tmp_path):
    with pytest.raises(ValueError, match="plain"):
        ShardWriter(tmp_path / "set", split="train", prefix="../escaped")
    with pytest.raises(ValueError, match="plain"):
        ShardWriter(tmp_path / "set", split="../escaped")
    assert not list(tmp_path.rglob("*.tar*"))


def _tar_with_odd_member_names(path: Path, image_png: bytes, meta: bytes, outside: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("../evil.image.png", image_png),
            ("../evil.meta.json", meta),
            (f"{outside}/abs.image.png", image_png),
            (f"{outside}/abs.meta.json", meta),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_member_names_never_write_outside(tmp_path):
    """Members named ``../x`` or ``/abs/x`` are read by their base name and never extracted."""
    source = write_random_set(tmp_path / "src", 1, size=16)
    raw = next(iter_raw_samples(source / "train-000000.tar"))
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "sets" / "set"
    with ShardWriter(root, split="train") as writer:
        writer.write(Sample(key="k0", image=next(iter_samples(source)).image))
    shard = root / "train-000000.tar"
    _tar_with_odd_member_names(shard, raw["image.png"], raw["meta.json"], outside)
    assert [r["__key__"] for r in iter_raw_samples(shard)] == ["evil", "abs"]
    _edit_manifest(root, lambda m: m.update(num_samples=2) or m["shards"][0].update(num_samples=2, sha256="x"))
    report = verify_shards(root, progress=False)
    assert not report.ok  # the sha256 differs from the manifest's
    assert sorted(s.key for s in iter_samples(root)) == ["abs", "evil"]
    assert sorted(item["key"] for item in ShardDataset([root], with_mask=False)) == ["abs", "evil"]
    before = _snapshot(tmp_path)
    merge_shard_sets([root], tmp_path / "sets" / "merged")
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("sets/merged/")} == before
    assert not (tmp_path / "evil.image.png").exists() and not list(outside.iterdir())
