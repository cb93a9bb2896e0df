import io
import json
import tarfile

import numpy as np

from aras400k.data.shards import encode_png
from aras400k.data.verify import verify_shards
from tests.conftest import write_random_set


def _rewrite_member(shard, member_name, data: bytes):
    """Replace one member of a tar (simulating on-disk corruption) without touching the manifest."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for info, content in members:
            if info.name == member_name:
                if data is None:
                    continue
                content = data
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_clean_set_verifies(tmp_path):
    report = verify_shards(write_random_set(tmp_path / "s", 7), progress=False)
    assert report.ok and report.num_samples == 7
    assert "7 samples decoded, OK" in report.summary()


def test_corrupt_and_missing_members_are_reported_by_key(tmp_path):
    root = write_random_set(tmp_path / "s", 8, per_shard=4)
    shard = root / "train-000000.tar"
    _rewrite_member(shard, "s0001.image.png", b"not a png")
    _rewrite_member(shard, "s0002.meta.json", None)
    _rewrite_member(shard, "s0003.mask.png", encode_png(np.full((32, 32), 42, np.uint8)))
    report = verify_shards(root, progress=False)
    assert not report.ok
    problems = dict(report.problems)
    assert "readable picture" in problems["train-000000.tar:s0001"]
    assert "meta.json is missing" in problems["train-000000.tar:s0002"]
    assert "[42]" in problems["train-000000.tar:s0003"]
    assert "sha256" in problems["train-000000.tar"]


def test_missing_truncated_and_unlisted_shards(tmp_path):
    root = write_random_set(tmp_path / "s", 8, per_shard=4)
    (root / "train-000001.tar").unlink()
    (root / "stray.tar").write_bytes(b"")
    report = verify_shards(root, progress=False)
    problems = dict(report.problems)
    assert problems["train-000001.tar"] == "shard file is missing"
    assert "not listed" in problems["stray.tar"]

    root = write_random_set(tmp_path / "t", 4, per_shard=4)
    data = (root / "train-000000.tar").read_bytes()
    (root / "train-000000.tar").write_bytes(data[: len(data) // 2])
    problems = dict(verify_shards(root, progress=False).problems)
    assert "sha256" in problems["train-000000.tar"] or "corrupt" in problems["train-000000.tar"]


def test_count_mismatch_and_no_manifest(tmp_path):
    root = write_random_set(tmp_path / "s", 4, per_shard=4)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][0]["num_samples"] = 5
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert "shard holds 4" in dict(verify_shards(root, progress=False).problems)["train-000000.tar"]
    report = verify_shards(tmp_path, progress=False)
    assert not report.ok and "no manifest.json" in report.problems[0][1]
