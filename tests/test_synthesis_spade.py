import json

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

import aras400k.synthesis.conditional as synthesis_spade
from aras400k.cli.synth import main
from aras400k.data.composition import composition
from aras400k.data.shards import Sample, ShardWriter, iter_raw_samples, iter_samples, read_manifest, shard_paths
from aras400k.data.verify import verify_shards
from aras400k.synthesis.conditional import sample_seed, synthesize_conditional
from tests.conftest import write_random_set
from tests.models.spade.test_module import gan_data, make_segmenter_checkpoint, tiny_gan


class Killed(BaseException):
    """Stands for the process being killed (not an Exception, so nothing catches it on the way)."""


@pytest.fixture(scope="module")
def gan_ckpt(demo_root, tmp_path_factory):
    """A tiny SPADEGAN trained for one iteration and saved by Lightning."""
    seed_everything(0)
    trainer = Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(tiny_gan(), gan_data(demo_root))
    path = tmp_path_factory.mktemp("gan") / "spade.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def masks(tmp_path):
    """Six random 32 px masks in three train shards."""
    return write_random_set(tmp_path / "masks", 6, per_shard=2, prefix="p")


def raw_samples(directory):
    return [raw for path in shard_paths(directory) for raw in iter_raw_samples(path)]


def run(gan_ckpt, masks, out, **kwargs):
    options = {"per_mask": 2, "seed": 7, "batch_size": 3, "device": "cpu", "progress": False} | kwargs
    return synthesize_conditional(gan_ckpt, masks, out, **options)


def test_writes_valid_shards_with_the_input_masks_and_meta(gan_ckpt, masks, tmp_path):
    report = run(gan_ckpt, masks, tmp_path / "out")
    assert verify_shards(tmp_path / "out", progress=False).ok
    assert not (tmp_path / "out" / ".partial").exists()

    parents = {raw["__key__"]: raw for raw in raw_samples(masks)}
    samples = raw_samples(tmp_path / "out")
    assert [r["__key__"] for r in samples] == [f"p{i:04d}_c{k}" for i in range(6) for k in range(2)]
    for raw in samples:
        meta = json.loads(raw["meta.json"])
        parent = parents[meta["parent"]]
        assert raw["mask.png"] == parent["mask.png"]  # byte for byte
        assert meta["source"] == "synth_cond" and meta["split"] == "train"
        index = int(raw["__key__"].rsplit("_c", 1)[1])
        assert meta["generator"] == {
            "checkpoint": str(gan_ckpt),
            "checkpoint_sha256": report.checkpoint_sha256,
            "seed": 7,
            "use_ema": True,
            "index": index,
            "sample_seed": sample_seed(7, meta["parent"], index),
        }
    for sample in iter_samples(tmp_path / "out"):
        assert sample.meta["composition"] == composition(sample.mask) and sample.image.shape == (32, 32, 3)

    manifest = read_manifest(tmp_path / "out")
    assert (manifest["source"], manifest["split"], manifest["num_samples"], manifest["num_masks"]) == (
        "synth_cond", "train", 12, 12,
    )  # fmt: skip
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 4, 4]  # input shard size x per_mask
    assert manifest["generator"]["per_mask"] == 2 and manifest["conditioned_on"] == str(masks)
    assert (report.num_parents, report.num_samples, report.num_shards, report.resumed_parts) == (6, 12, 3, 0)
    assert "generated 12 images (2 per mask, seed 7)" in report.summary()


def test_the_two_images_of_a_mask_differ_and_the_seed_decides_them(gan_ckpt, masks, tmp_path):
    run(gan_ckpt, masks, tmp_path / "a")
    run(gan_ckpt, masks, tmp_path / "b", batch_size=5, samples_per_shard=5)
    run(gan_ckpt, masks, tmp_path / "c", seed=8)
    a, b, c = ([s.image for s in iter_samples(tmp_path / d)] for d in "abc")
    assert not np.array_equal(a[0], a[1])
    # Other batching, same images: float kernels may round differently per batch size
    # and thread count, so allow one grey level.
    assert all(np.abs(x.astype(int) - y).max() <= 1 for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_two_runs_give_identical_shard_sets(gan_ckpt, masks, tmp_path):
    run(gan_ckpt, masks, tmp_path / "one")
    run(gan_ckpt, masks, tmp_path / "two")
    assert read_manifest(tmp_path / "one") == read_manifest(tmp_path / "two")  # shard sha256s included


def test_masks_of_evaluation_splits_are_refused_unless_forced(gan_ckpt, tmp_path):
    val = write_random_set(tmp_path / "val", 2, split="val")
    with pytest.raises(ValueError, match=r"'val' split.*force_split"):
        run(gan_ckpt, val, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    run(gan_ckpt, val, tmp_path / "out", force_split=True)
    assert {s.meta["split"] for s in iter_samples(tmp_path / "out")} == {"val"}


def test_resume_after_an_interruption_gives_the_uninterrupted_output(gan_ckpt, masks, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run(gan_ckpt, masks, reference, batch_size=2)
    generate = synthesis_spade._generate_batch
    calls, kill_at = [], [4]  # part 0 (2 batches) done, part 1 half written

    def killed_on_the_fourth_batch(*args):
        calls.append(1)
        if len(calls) == kill_at[0]:
            raise Killed
        return generate(*args)

    monkeypatch.setattr(synthesis_spade, "_generate_batch", killed_on_the_fourth_batch)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run(gan_ckpt, masks, out, batch_size=2)
    assert not (out / "manifest.json").exists() and not verify_shards(out, progress=False).ok
    assert (out / ".partial" / "part-000000" / "manifest.json").is_file()
    assert not (out / ".partial" / "part-000001" / "manifest.json").exists()

    calls.clear()
    kill_at[0] = 0
    report = run(gan_ckpt, masks, out, batch_size=2)
    assert len(calls) == 4  # parts 1 and 2 only
    assert report.resumed_parts == 1 and "resumed" in report.summary()
    assert read_manifest(out) == read_manifest(reference)
    for name in (s["name"] for s in read_manifest(out)["shards"]):
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    assert not (out / ".partial").exists() and verify_shards(out, progress=False).ok


def test_an_unfinished_run_with_other_settings_is_not_mixed_in(gan_ckpt, masks, tmp_path, monkeypatch):
    def killed(*args):
        raise Killed

    monkeypatch.setattr(synthesis_spade, "_generate_batch", killed)
    with pytest.raises(Killed):
        run(gan_ckpt, masks, tmp_path / "out")
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"other settings \(generator differs\)"):
        run(gan_ckpt, masks, tmp_path / "out", seed=8)
    run(gan_ckpt, masks, tmp_path / "out", seed=8, overwrite=True)
    run(gan_ckpt, masks, tmp_path / "reference", seed=8)
    assert read_manifest(tmp_path / "out")["shards"] == read_manifest(tmp_path / "reference")["shards"]
    with pytest.raises(FileExistsError, match="overwrite"):
        run(gan_ckpt, masks, tmp_path / "out", seed=8)


def test_label_with_a_segmenter_replaces_the_masks_and_scores_them(gan_ckpt, masks, tmp_path):
    segmenter = make_segmenter_checkpoint(tmp_path / "seg.ckpt")
    report = run(gan_ckpt, masks, tmp_path / "out", per_mask=1, label_with=segmenter)
    assert verify_shards(tmp_path / "out", progress=False).ok
    sample = next(iter_samples(tmp_path / "out"))
    assert sample.meta["labelled_by"]["checkpoint"] == str(segmenter) and sample.meta["parent"] == "p0000"
    assert sample.meta["composition"] == composition(sample.mask)
    assert 0.0 <= report.label_miou <= 1.0 and "macro IoU against the input masks" in report.summary()
    assert read_manifest(tmp_path / "out")["generator"]["per_mask"] == 1


def test_bad_masks_are_refused_naming_the_sample(gan_ckpt, tmp_path):
    unlabelled = write_random_set(tmp_path / "unlabelled", 2, masks=False)
    with pytest.raises(ValueError, match="s0000 has no mask.png"):
        run(gan_ckpt, unlabelled, tmp_path / "out")
    with ShardWriter(tmp_path / "odd", split="train") as writer:
        writer.write(Sample(key="odd", image=np.zeros((30, 30, 3), np.uint8), mask=np.zeros((30, 30), np.uint8)))
    with pytest.raises(ValueError, match="odd has a 30x30 mask; the generator needs sides divisible by 4"):
        run(gan_ckpt, tmp_path / "odd", tmp_path / "out2")
    with pytest.raises(ValueError, match="never edited in place"):
        run(gan_ckpt, tmp_path / "odd", tmp_path / "odd")


def test_cli_end_to_end(gan_ckpt, masks, tmp_path, capsys):
    args = ["spade", "--ckpt", str(gan_ckpt), "--masks", str(masks), "--out", str(tmp_path / "out")]
    assert main([*args, "--per-mask", "3", "--seed", "1", "--batch_size", "4", "--progress", "false"]) == 0
    assert "generated 18 images (3 per mask, seed 1)" in capsys.readouterr().out
    assert read_manifest(tmp_path / "out")["num_samples"] == 18
    config = tmp_path / "spade.yaml"
    config.write_text(f"ckpt: {gan_ckpt}\nmasks: {masks}\nout: {tmp_path / 'out'}\nper_mask: 1\nprogress: false\n")
    assert main(["spade", "--config", str(config), "--overwrite", "true", "--device", "cpu"]) == 0
    assert read_manifest(tmp_path / "out")["num_samples"] == 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--ckpt": "missing.ckpt"}, "missing.ckpt does not exist"),
        ({"--masks": "nowhere"}, "nowhere is not a folder"),
        ({"--per-mask": "0"}, "per_mask and batch_size must be >= 1"),
        ({"--ckpt": "seg.ckpt"}, "is not a SPADEGAN checkpoint"),
        ({"--masks": "val"}, "pass --force_split true"),
    ],
)
def test_cli_bad_input_gives_one_line_errors(gan_ckpt, masks, tmp_path, capsys, change, message):
    torch.save({"state_dict": {}, "hyper_parameters": {"arch": "unet"}}, tmp_path / "seg.ckpt")
    write_random_set(tmp_path / "val", 1, split="val")
    options = {"--ckpt": str(gan_ckpt), "--masks": str(masks), "--out": str(tmp_path / "out"), "--progress": "false"}
    options |= {k: str(tmp_path / v) if k in ("--ckpt", "--masks") else v for k, v in change.items()}
    with pytest.raises(SystemExit) as exc:
        main(["spade", *[part for item in options.items() for part in item]])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-synth: error:") and "\n" not in err and message in err


def test_sample_seeds_depend_only_on_seed_parent_and_index():
    assert sample_seed(0, "a", 0) == sample_seed(0, "a", 0)
    assert len({sample_seed(0, "a", 0), sample_seed(1, "a", 0), sample_seed(0, "b", 0), sample_seed(0, "a", 1)}) == 4
    assert 0 <= sample_seed(123, "N36E027_000_001", 9) < 2**63
    assert torch.Generator().manual_seed(sample_seed(5, "k", 2)).initial_seed() == sample_seed(5, "k", 2)
