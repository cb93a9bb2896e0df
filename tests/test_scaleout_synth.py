"""Split synthesis runs (--shard_index/--num_shards) and aras-data merge give the single run's shard set."""

import json

import numpy as np
import pytest
import torch

import aras400k.synthesis.unconditional as synthesis_stylegan3
from aras400k.cli.data import main as data_main
from aras400k.cli.synth import main as synth_main
from aras400k.data.merge import merge_shard_sets, worker_dir, worker_name, worker_parts, worker_record
from aras400k.data.shards import Sample, ShardWriter, iter_raw_samples, read_manifest, shard_paths
from aras400k.data.verify import verify_shards
from aras400k.synthesis.conditional import synthesize_conditional
from aras400k.synthesis.label import label_shards
from aras400k.synthesis.unconditional import synthesize_unconditional, worker_chunks
from tests.conftest import write_random_set
from tests.models.spade.test_module import make_segmenter_checkpoint, tiny_gan
from tests.models.stylegan3.test_module import tiny


class Killed(BaseException):
    """Stands for the process being killed (not an Exception, so nothing catches it on the way)."""


def save_untrained(model, path):
    """A GAN at its initial weights as a plain checkpoint dict (its EMA equals the weights)."""
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def sg3_ckpt(tmp_path_factory):
    return save_untrained(tiny("stylegan3-t"), tmp_path_factory.mktemp("sg3") / "sg3.ckpt")


@pytest.fixture(scope="module")
def spade_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_untrained(tiny_gan(), tmp_path_factory.mktemp("spade") / "spade.ckpt")


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return make_segmenter_checkpoint(tmp_path_factory.mktemp("seg") / "seg.ckpt")


def members(directory):
    """Key -> {member name: bytes}, in shard order (the tar files themselves are not compared)."""
    return {
        raw["__key__"]: {name: data for name, data in raw.items() if not name.startswith("__")}
        for path in shard_paths(directory)
        for raw in iter_raw_samples(path)
    }


def assert_same_samples(merged, single):
    got, want = members(merged), members(single)
    assert list(got) == list(want)  # same keys, same order
    assert got == want  # byte-identical image.png, mask.png, meta.json (seeds included)
    assert verify_shards(merged, progress=False).ok


def without_shards(manifest):
    return {k: v for k, v in manifest.items() if k != "shards"}


def test_stylegan3_workers_cover_whole_batches_of_the_single_run():
    seeds = list(range(10, 17))  # chunks of 3: [10 11 12] [13 14 15] [16]; batches of 2 inside them
    parts = [worker_chunks(seeds, 3, 2, k, 2) for k in range(2)]
    assert parts == [[(0, [10, 11, 12])], [(1, [13, 14, 15]), (2, [16])]]
    assert worker_chunks(seeds, 3, 2, 0, 1) == [(0, [10, 11, 12]), (1, [13, 14, 15]), (2, [16])]
    assert [worker_chunks(seeds, 3, 2, k, 9) for k in range(9)].count([]) == 4  # 5 batches for 9 workers


def test_stylegan3_split_run_merges_into_the_single_run_and_workers_resume(sg3_ckpt, tmp_path, monkeypatch):
    options = {"n": 7, "batch_size": 2, "chunk_size": 3, "samples_per_shard": 2, "device": "cpu", "progress": False}
    synthesize_unconditional(sg3_ckpt, tmp_path / "single", **options)
    out = tmp_path / "split"
    first = synthesize_unconditional(sg3_ckpt, out, shard_index=0, num_shards=2, **options)
    assert (first.out_dir, first.first_seed, first.last_seed) == (str(out / "part-0-of-2"), 0, 2)
    assert "worker 0 of 2" in first.summary() and f"aras-data merge {out} --out {out}" in first.summary()

    generate, calls = synthesis_stylegan3._generate_batch, []

    def killed_on_the_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:  # chunk [3 4 5] done (2 batches), chunk [6] not
            raise Killed
        return generate(*args)

    monkeypatch.setattr(synthesis_stylegan3, "_generate_batch", killed_on_the_third_batch)
    with pytest.raises(Killed):
        synthesize_unconditional(sg3_ckpt, out, shard_index=1, num_shards=2, **options)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="part.s. 1 of 2 are missing"):
        merge_shard_sets(worker_parts(out), out)
    resumed = synthesize_unconditional(sg3_ckpt, out, shard_index=1, num_shards=2, **options)
    assert resumed.resumed_parts == 1 and (resumed.first_seed, resumed.last_seed) == (3, 6)
    part = read_manifest(out / "part-1-of-2")
    assert part["worker"]["shard_index"] == 1 and part["generator"]["num_seeds"] == 7

    report = merge_shard_sets(worker_parts(out), out)
    assert (report.num_samples, report.parts) == (7, [str(out / "part-0-of-2"), str(out / "part-1-of-2")])
    assert_same_samples(out, tmp_path / "single")
    assert without_shards(read_manifest(out)) == without_shards(read_manifest(tmp_path / "single"))
    assert [json.loads(m["meta.json"])["generator"]["seed"] for m in members(out).values()] == list(range(7))


def test_spade_split_run_through_the_clis_gives_the_single_runs_shards(spade_ckpt, tmp_path, capsys):
    masks = write_random_set(tmp_path / "masks", 6, per_shard=2, prefix="p")  # three input shards
    base = ["spade", "--ckpt", str(spade_ckpt), "--masks", str(masks), "--per_mask", "2", "--seed", "7"]
    base += ["--batch_size", "3", "--device", "cpu", "--progress", "false"]
    assert synth_main([*base, "--out", str(tmp_path / "single")]) == 0
    out = tmp_path / "split"
    for k in (1, 0):  # workers finish in any order
        assert synth_main([*base, "--out", str(out), "--shard_index", str(k), "--num_shards", "2"]) == 0
    printed = capsys.readouterr().out
    assert "worker 1 of 2: generated 8 images" in printed and "worker 0 of 2: generated 4 images" in printed
    assert data_main(["merge", str(out), "--out", str(out)]) == 0
    assert "merged 2 shard sets" in capsys.readouterr().out
    assert_same_samples(out, tmp_path / "single")
    # Parts follow input shards and batches never cross them: the merged set is the single run's, tar for tar.
    assert read_manifest(out) == read_manifest(tmp_path / "single")
    assert data_main(["verify", str(out), "--quiet", "true"]) == 0


def test_label_split_run_gives_the_single_runs_shards(seg_ckpt, tmp_path):
    src = write_random_set(tmp_path / "in", 5, per_shard=2, masks=False, source="synth_uncond")
    options = {"batch_size": 3, "device": "cpu", "progress": False}  # single-run batches would cross shards
    label_shards(seg_ckpt, src, tmp_path / "single", **options)
    reports = [label_shards(seg_ckpt, src, tmp_path / "split", shard_index=k, num_shards=2, **options) for k in (0, 1)]
    assert [r.num_samples for r in reports] == [2, 3] and "worker 1 of 2" in reports[1].summary()
    merge_shard_sets(worker_parts(tmp_path / "split"), tmp_path / "merged", link=False)
    assert_same_samples(tmp_path / "merged", tmp_path / "single")
    assert read_manifest(tmp_path / "merged") == read_manifest(tmp_path / "single")


def test_more_workers_than_input_shards_leaves_empty_parts(spade_ckpt, tmp_path):
    masks = write_random_set(tmp_path / "masks", 2, per_shard=2, prefix="p")  # one input shard
    options = {"per_mask": 1, "device": "cpu", "progress": False}
    reports = [synthesize_conditional(spade_ckpt, masks, tmp_path / "out", shard_index=k, num_shards=2, **options)
               for k in (0, 1)]  # fmt: skip
    assert [r.num_samples for r in reports] == [0, 2]
    report = merge_shard_sets(worker_parts(tmp_path / "out"), tmp_path / "out")
    assert report.num_samples == 2 and verify_shards(tmp_path / "out", progress=False).ok


def test_worker_names_and_folders(tmp_path):
    assert worker_name(3, 4) == "part-3-of-4" and worker_name(3, 16) == "part-03-of-16"
    assert worker_dir(tmp_path, 0, 1) == tmp_path and worker_dir(tmp_path, 1, 2) == tmp_path / "part-1-of-2"
    for index, count in [(2, 2), (-1, 2), (0, 0), (True, 2)]:
        with pytest.raises(ValueError, match="shard_index must be in|num_shards must be"):
            worker_dir(tmp_path, index, count)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--shard_index", "2", "--num_shards", "2"], "shard_index must be in 0..1"),
        (["--shard_index", "-1", "--num_shards", "2"], "shard_index must be in 0..1"),
        (["--num_shards", "0"], "num_shards must be an integer >= 1"),
    ],
)
def test_cli_bad_worker_options_give_one_line_errors(sg3_ckpt, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exc:
        synth_main(["stylegan3", "--ckpt", str(sg3_ckpt), "--out", str(tmp_path / "o"), "--n", "2", *options])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-synth: error:") and "\n" not in err and message in err
    assert not (tmp_path / "o").exists()


def write_part(path, keys, split="train", source="synth_uncond", **extra):
    rng = np.random.default_rng(len(keys))
    with ShardWriter(path, split=split, source=source, samples_per_shard=2, extra=extra) as writer:
        for key in keys:
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            writer.write(Sample(key=key, image=image, mask=rng.integers(0, 7, (8, 8), dtype=np.uint8)))
    return path


def test_merge_refuses_parts_that_do_not_make_one_run(tmp_path, capsys):
    gen = {"checkpoint_sha256": "aaaa", "truncation": 1.0}
    a = write_part(tmp_path / "a", ["k0", "k1", "k2"], generator=gen)
    with pytest.raises(ValueError, match="'k1' is in both"):
        merge_shard_sets([a, write_part(tmp_path / "b", ["k1", "k9"], generator=gen)], tmp_path / "m")
    with pytest.raises(ValueError, match=r"differ in 'generator'.*same generator"):
        merge_shard_sets([a, write_part(tmp_path / "c", ["k5"], generator=gen | {"truncation": 0.5})], tmp_path / "m")
    with pytest.raises(ValueError, match="differ in split"):
        merge_shard_sets([a, write_part(tmp_path / "d", ["k6"], split="val", generator=gen)], tmp_path / "m")
    with pytest.raises(ValueError, match="one of the parts"):
        merge_shard_sets([a], a)
    with pytest.raises(ValueError, match="at least one"):
        merge_shard_sets([], tmp_path / "m")

    run, other = worker_record(0, 2, {"seeds": "x"}), worker_record(1, 2, {"seeds": "y"})
    w0 = write_part(tmp_path / "w0", ["k7"], generator=gen, worker=run)
    w1 = write_part(tmp_path / "w1", ["k8"], generator=gen, worker=other)
    with pytest.raises(ValueError, match="parts of different runs"):
        merge_shard_sets([w0, w1], tmp_path / "m")
    with pytest.raises(ValueError, match="is a part of a split run but"):
        merge_shard_sets([w0, a], tmp_path / "m")
    assert not (tmp_path / "m" / "manifest.json").exists()

    e = write_part(tmp_path / "e", ["k3", "k4"], generator=gen)
    assert merge_shard_sets([a, e], tmp_path / "m").num_samples == 5
    merged = read_manifest(tmp_path / "m")
    pixels = [read_manifest(p)["class_pixels"] for p in (a, e)]
    assert merged["class_pixels"] == {n: pixels[0][n] + pixels[1][n] for n in pixels[0]}
    assert [s["name"] for s in merged["shards"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert verify_shards(tmp_path / "m", progress=False).ok
    with pytest.raises(FileExistsError, match="overwrite"):
        merge_shard_sets([a, e], tmp_path / "m")
    assert merge_shard_sets([e], tmp_path / "m", overwrite=True).num_samples == 2
    assert verify_shards(tmp_path / "m", progress=False).ok  # the third shard of the earlier merge is gone

    with pytest.raises(SystemExit) as exc:
        data_main(["merge", str(a), str(tmp_path / "b"), "--out", str(tmp_path / "n")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("aras-data: error:") and "\n" not in err and "is in both" in err
