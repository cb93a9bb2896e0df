"""Split captioning runs (--shard_index/--num_shards) merge into the single run's sidecar, record for record."""

import json

import pytest

from aras400k.captioning import BackendError, Captioner
from aras400k.captioning.parts import part_run_path, part_sidecar_path
from aras400k.captioning.sidecar import read_caption_records
from aras400k.cli.caption import main
from aras400k.data.shards import iter_raw_samples, shard_paths
from tests.captioning.conftest import ScriptedBackend
from tests.conftest import write_random_set


def colliding(request):
    """A deterministic backend answer that often repeats the caption of another sample."""
    return f"Fields and trees, variant {request.seed % 5}."


def split_run(make, source, out, num_shards, **options):
    """Every worker of a split run (sequentially), then the merge."""
    workers = [make().caption_shards(source, out, shard_index=k, num_shards=num_shards, **options)
               for k in range(num_shards)]  # fmt: skip
    return workers, make().merge_parts(source, out, num_shards, **options)


def test_template_split_run_merges_into_the_single_runs_sidecar(demo_root, tmp_path):
    source = demo_root / "val"  # 16 samples in two shards

    def make():
        return Captioner("text", captions_per_image=3, batch_size=5, progress=False)

    make().caption_shards(source, tmp_path / "single.jsonl")
    workers, merged = split_run(make, source, tmp_path / "caps.jsonl", 3)
    assert [w.samples for w in workers] == [5, 5, 6]  # contiguous sample ranges, not whole shards
    assert workers[1].sidecar == tmp_path / "caps.part-1-of-3.jsonl" and "worker 1 of 3" in workers[1].summary()
    assert merged.merged_parts == 3 and merged.stats.reused >= 48 and "merged 3 worker sidecars" in merged.summary()
    single = read_caption_records(tmp_path / "single.jsonl")
    assert read_caption_records(tmp_path / "caps.jsonl") == single  # same order, keys, indices, texts, seeds
    assert (tmp_path / "caps.jsonl").read_bytes() == (tmp_path / "single.jsonl").read_bytes()


def test_repeats_across_parts_are_regenerated_as_in_the_single_run(tmp_path):
    source = write_random_set(tmp_path / "in", 6, per_shard=4)

    def make():
        return Captioner("text", ScriptedBackend(colliding), captions_per_image=2, batch_size=3, progress=False)

    make().caption_shards(source, tmp_path / "single.jsonl")
    single = read_caption_records(tmp_path / "single.jsonl")
    _, merged = split_run(make, source, tmp_path / "caps.jsonl", 2)
    parts = [r for k in range(2) for r in read_caption_records(part_sidecar_path(tmp_path / "caps.jsonl", k, 2))]
    # Each worker deduplicated only its own captions: joined as they are, they are not the single run's.
    assert [(r["text"], r["seed"]) for r in parts] != [(r["text"], r["seed"]) for r in single]
    assert any(r.get("tries") for r in parts)  # workers keep their rejected tries for the merge
    assert read_caption_records(tmp_path / "caps.jsonl") == single
    assert merged.stats.asked > 0 and merged.stats.reused > 0


def test_an_interrupted_worker_resumes_and_other_settings_are_refused(tmp_path):
    source = write_random_set(tmp_path / "in", 6, per_shard=2)
    out = tmp_path / "caps.jsonl"

    def make(backend=None, seed=0):
        backend = backend or ScriptedBackend(colliding)
        return Captioner("text", backend, captions_per_image=2, batch_size=2, seed=seed, progress=False)

    make().caption_shards(source, tmp_path / "single.jsonl")
    with pytest.raises(BackendError):
        make(ScriptedBackend(colliding, fail_after=2)).caption_shards(source, out, shard_index=1, num_shards=2)
    assert 0 < len(read_caption_records(part_sidecar_path(out, 1, 2))) < 6
    with pytest.raises(ValueError, match=r"other settings \(seed differs\)"):
        make(seed=1).caption_shards(source, out, shard_index=1, num_shards=2)
    resumed = make().caption_shards(source, out, shard_index=1, num_shards=2)
    assert resumed.resumed > 0 and len(read_caption_records(part_sidecar_path(out, 1, 2))) == 6

    with pytest.raises(FileNotFoundError, match=r"worker parts are missing: .*caps\.part-0-of-2\.jsonl"):
        make().merge_parts(source, out, 2)
    make().caption_shards(source, out, shard_index=0, num_shards=2)
    with pytest.raises(ValueError, match=r"other settings than this merge \(seed differs\)"):
        make(seed=1).merge_parts(source, out, 2)
    with pytest.raises(ValueError, match="other settings than this merge.*limit"):
        make().merge_parts(source, out, 2, limit=4)
    make().merge_parts(source, out, 2)
    assert read_caption_records(out) == read_caption_records(tmp_path / "single.jsonl")
    assert json.loads(part_run_path(out, 1, 2).read_text())["shard_index"] == 1


def captions_by_key(directory):
    return {raw["__key__"]: raw["captions.json"] for path in shard_paths(directory) for raw in iter_raw_samples(path)}


def test_cli_workers_and_merge_write_the_single_runs_sidecar_and_shards(demo_root, tmp_path, capsys):
    base = ["--input", str(demo_root / "val"), "--mode", "hybrid", "--captions_per_image", "2", "--limit", "10"]
    base += ["--progress", "false"]
    assert main([*base, "--out", str(tmp_path / "single.jsonl"), "--shards_out", str(tmp_path / "single")]) == 0
    split = [*base, "--out", str(tmp_path / "caps.jsonl"), "--shards_out", str(tmp_path / "shards")]
    for k in ("0", "1"):
        assert main([*split, "--shard_index", k, "--num_shards", "2"]) == 0
    printed = capsys.readouterr().out
    assert "worker 1 of 2: 10 new captions" in printed and "--merge true" in printed
    assert not (tmp_path / "shards").exists()  # written by the merge, from the merged captions
    assert main([*split, "--num_shards", "2", "--merge", "true"]) == 0
    assert "merged 2 worker sidecars" in capsys.readouterr().out
    assert (tmp_path / "caps.jsonl").read_bytes() == (tmp_path / "single.jsonl").read_bytes()
    assert captions_by_key(tmp_path / "shards") == captions_by_key(tmp_path / "single")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--shard_index", "2", "--num_shards", "2"], "shard_index must be in 0..1"),
        (["--shard_index", "-1", "--num_shards", "2"], "shard_index must be in 0..1"),
        (["--num_shards", "0"], "num_shards must be an integer >= 1"),
        (["--merge", "true"], "merging needs the number of workers"),
        (["--merge", "true", "--num_shards", "2", "--shard_index", "1"], "without --shard_index"),
        (["--merge", "true", "--num_shards", "2"], "worker parts are missing"),
    ],
)
def test_cli_bad_worker_options_give_one_line_errors(demo_root, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exc:
        main(["--input", str(demo_root / "val"), "--out", str(tmp_path / "c.jsonl"), "--progress", "false", *options])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-caption: error:") and "\n" not in err and message in err, err
    assert not list(tmp_path.glob("c*.jsonl"))
