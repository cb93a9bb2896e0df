import json
import tarfile

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from aras400k.checkpoints import checkpoint_normalization, read_checkpoint
from aras400k.cli.synth import main
from aras400k.data.composition import composition
from aras400k.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, SegmentationDataModule
from aras400k.data.datasets import ShardSource
from aras400k.data.shards import (
    ManifestError,
    Sample,
    SampleError,
    ShardWriter,
    iter_raw_samples,
    iter_samples,
    read_manifest,
    shard_paths,
)
from aras400k.data.transforms import Normalize
from aras400k.data.verify import verify_shards
from aras400k.models.segmentation import SegmentationTask, load_segmentation_task
from aras400k.synthesis import label_shards
from tests.conftest import write_random_set

# Far from ImageNet's, so predictions under the two normalisations differ.
TRAIN_MEAN = (0.3, 0.3, 0.3)
TRAIN_STD = (0.1, 0.1, 0.1)
# A ~2M-parameter segmenter (random init, nothing downloaded) keeps the tests fast on a CPU.
ARCH, ENCODER = "fpn", "tu-mobilenetv3_small_050"


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory):
    """A tiny FPN/MobileNetV3 trained for one step with non-default normalisation, saved by Lightning."""
    seed_everything(0)
    data = SegmentationDataModule(
        root=str(demo_root),
        train=[ShardSource(str(demo_root / "train"))],  # a dataclass in the hparams: needs the safe global
        demo=False,
        batch_size=8,
        num_workers=0,
        mean=TRAIN_MEAN,
        std=TRAIN_STD,
    )
    task = SegmentationTask(arch=ARCH, encoder=ENCODER)
    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(task, data)
    path = tmp_path_factory.mktemp("ckpt") / "seg.ckpt"
    trainer.save_checkpoint(path, weights_only=True)  # no optimizer state: a third of the size
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return load_segmentation_task(checkpoint)


def write_rich_set(out, n=7, per_shard=3, masks=True, source="synth_uncond"):
    """Samples with captions and an unknown member, to check they are copied verbatim."""
    rng = np.random.default_rng(1)
    with ShardWriter(out, split="train", source=source, samples_per_shard=per_shard, extra={"made_by": "test"}) as w:
        for i in range(n):
            w.write(
                Sample(
                    key=f"g{i:03d}",
                    image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                    mask=rng.integers(0, 7, (32, 32), dtype=np.uint8) if masks else None,
                    meta={"generator": {"seed": i}},
                    captions=[{"text": f"caption {i}", "model": "template", "mode": "text"}],
                    raw_members={"notes.txt": f"note {i}\n".encode()},
                )
            )
    return out


def raw_samples(directory):
    return [raw for path in shard_paths(directory) for raw in iter_raw_samples(path)]


def expected_masks(task, directory, mean, std):
    images = np.stack([s.image for s in iter_samples(directory, with_mask=False)])
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return task.eval().predict_masks(Normalize(mean, std)(batch)).numpy()


def test_label_shards_writes_predictions_and_copies_everything_else(checkpoint, segmenter, tmp_path):
    src = write_rich_set(tmp_path / "in")
    report = label_shards(checkpoint, src, tmp_path / "out", batch_size=4, device="cpu", progress=False)

    before, after = raw_samples(src), raw_samples(tmp_path / "out")
    assert [r["__key__"] for r in after] == [r["__key__"] for r in before]
    masks = np.stack([s.mask for s in iter_samples(tmp_path / "out")])
    np.testing.assert_array_equal(masks, expected_masks(segmenter, src, TRAIN_MEAN, TRAIN_STD))
    for old, new in zip(before, after, strict=True):
        for member in ("image.png", "captions.json", "notes.txt"):
            assert new[member] == old[member]
        assert new["mask.png"] != old["mask.png"]
    for sample in iter_samples(tmp_path / "out"):
        assert sample.meta["composition"] == composition(sample.mask)
        assert sample.meta["generator"] == {"seed": int(sample.key[1:])}
        assert sample.meta["labelled_by"] == {"checkpoint": str(checkpoint), "arch": ARCH, "encoder": ENCODER}

    manifest, original = read_manifest(tmp_path / "out"), read_manifest(src)
    assert manifest["num_masks"] == manifest["num_samples"] == 7
    assert (manifest["split"], manifest["source"], manifest["made_by"]) == ("train", "synth_uncond", "test")
    assert [(s["name"], s["num_samples"]) for s in manifest["shards"]] == [
        (s["name"], s["num_samples"]) for s in original["shards"]
    ]
    assert verify_shards(tmp_path / "out", progress=False).ok
    assert (report.num_samples, report.num_replaced, report.num_shards) == (7, 7, 3)
    assert report.manifest == str(tmp_path / "out" / "manifest.json")
    assert (report.mean, report.std) == (TRAIN_MEAN, TRAIN_STD)
    assert "labelled 7 samples" in report.summary()


def test_normalisation_comes_from_the_checkpoint(checkpoint, segmenter, tmp_path):
    src = write_random_set(tmp_path / "in", 6, per_shard=4)
    label_shards(checkpoint, src, tmp_path / "out", device="cpu", progress=False)
    masks = np.stack([s.mask for s in iter_samples(tmp_path / "out")])
    assert checkpoint_normalization(read_checkpoint(checkpoint)) == (TRAIN_MEAN, TRAIN_STD)
    np.testing.assert_array_equal(masks, expected_masks(segmenter, src, TRAIN_MEAN, TRAIN_STD))
    assert not np.array_equal(masks, expected_masks(segmenter, src, IMAGENET_MEAN, IMAGENET_STD))


def test_unlabelled_input_with_a_task_instance_uses_the_arguments(segmenter, tmp_path):
    src = write_random_set(tmp_path / "in", 5, per_shard=2, masks=False, source="synth_cond")
    segmenter.train()
    report = label_shards(segmenter, src, tmp_path / "out", batch_size=2, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert segmenter.training  # mode restored
    masks = np.stack([s.mask for s in iter_samples(tmp_path / "out")])
    np.testing.assert_array_equal(masks, expected_masks(segmenter, src, (0.5,) * 3, (0.25,) * 3))
    manifest = read_manifest(tmp_path / "out")
    assert (manifest["source"], manifest["num_masks"], report.num_replaced) == ("synth_cond", 5, 0)
    assert manifest["labelled_by"]["checkpoint"] is None
    assert verify_shards(tmp_path / "out", progress=False).ok


def test_images_of_different_sizes_are_batched_apart_in_order(segmenter, tmp_path):
    rng = np.random.default_rng(2)
    sizes = [32, 32, 64, 32]
    with ShardWriter(tmp_path / "in", split="test", source="synth_uncond", samples_per_shard=10) as writer:
        for i, size in enumerate(sizes):
            writer.write(Sample(key=f"m{i}", image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
    report = label_shards(segmenter, tmp_path / "in", tmp_path / "out", batch_size=8, progress=False)
    samples = list(iter_samples(tmp_path / "out"))
    assert [s.key for s in samples] == ["m0", "m1", "m2", "m3"]
    assert [s.mask.shape for s in samples] == [(n, n) for n in sizes]
    assert report.num_samples == 4 and read_manifest(tmp_path / "out")["num_masks"] == 4


def test_an_empty_shard_set_gives_an_empty_labelled_set(segmenter, tmp_path):
    with ShardWriter(tmp_path / "in", split="val", source="synth_cond"):
        pass
    report = label_shards(segmenter, tmp_path / "in", tmp_path / "out", progress=False)
    assert report.num_samples == 0 and read_manifest(tmp_path / "out")["source"] == "synth_cond"


def test_load_segmentation_task_restores_the_weights(checkpoint, segmenter):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert not segmenter.training and segmenter.hparams["arch"] == ARCH
    assert state.keys() == segmenter.state_dict().keys()
    assert all(torch.equal(tensor, state[name]) for name, tensor in segmenter.state_dict().items())


def test_cli_written_checkpoints_load_without_their_encoder_weights_file(checkpoint, segmenter, tmp_path):
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].update(
        encoder_weights=str(tmp_path / "gone" / "encoder.pth"),
        _class_path="aras400k.models.SegmentationTask",
        _instantiator="lightning.pytorch.cli.instantiate_module",
    )
    torch.save(ckpt, tmp_path / "cli.ckpt")
    task = load_segmentation_task(tmp_path / "cli.ckpt")
    assert all(torch.equal(tensor, segmenter.state_dict()[name]) for name, tensor in task.state_dict().items())


def test_checkpoints_that_are_not_segmentation_tasks_are_refused(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_segmentation_task(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_segmentation_task(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 1.0}}, tmp_path / "gan.ckpt")
    with pytest.raises(ValueError, match="not a SegmentationTask checkpoint"):
        load_segmentation_task(tmp_path / "gan.ckpt")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["encoder"] = "resnet18"
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint of SegmentationTask"):
        load_segmentation_task(tmp_path / "other.ckpt")
    torch.save({"state_dict": {}, "callback": Normalize()}, tmp_path / "code.ckpt")
    with pytest.raises(ValueError, match=r"refused to load checkpoint .*import aras400k\.data\.transforms\.Normalize"):
        read_checkpoint(tmp_path / "code.ckpt")


def test_bad_inputs_and_outputs_are_refused(checkpoint, tmp_path):
    src = write_random_set(tmp_path / "in", 2)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        label_shards(tmp_path / "missing.ckpt", src, tmp_path / "out", progress=False)
    with pytest.raises(ManifestError, match="not a shard set"):
        label_shards(checkpoint, tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="never edited in place"):
        label_shards(checkpoint, src, src, overwrite=True, progress=False)
    write_random_set(tmp_path / "out", 1)
    with pytest.raises(FileExistsError, match="overwrite"):
        label_shards(checkpoint, src, tmp_path / "out", progress=False)
    label_shards(checkpoint, src, tmp_path / "out", overwrite=True, progress=False)
    assert read_manifest(tmp_path / "out")["num_samples"] == 2


def test_a_corrupt_sample_stops_labelling_naming_shard_and_key(segmenter, tmp_path):
    with ShardWriter(tmp_path / "in", split="train", samples_per_shard=2) as writer:
        for i in range(3):
            image = np.zeros((32, 32, 3), np.uint8)
            writer.write(Sample(key=f"k{i}", image=image, image_png=b"broken" if i == 2 else None))
    with pytest.raises(SampleError, match=r"train-000001\.tar: sample k2: image is not a readable picture"):
        label_shards(segmenter, tmp_path / "in", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_a_truncated_shard_stops_labelling(segmenter, tmp_path):
    src = write_random_set(tmp_path / "in", 4, per_shard=4)
    tar = src / "train-000000.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    with pytest.raises(SampleError, match=r"train-000000\.tar"):
        label_shards(segmenter, src, tmp_path / "out", progress=False)


def test_shard_writer_keeps_the_members_it_builds(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    with ShardWriter(tmp_path / "s", split="train") as writer:
        for name in ("mask.png", "meta.json", "__key__", "a/b.txt"):
            with pytest.raises(ValueError, match="raw member"):
                writer.write(Sample(key="k", image=image, raw_members={name: b"x"}))
        with pytest.raises(ValueError, match="captions.json"):
            writer.write(Sample(key="k", image=image, captions=[], raw_members={"captions.json": b"[]"}))
        writer.write(Sample(key="k", image=image, raw_members={"x.json.gz": b"\x1f\x8b raw"}))
    assert writer.num_samples == 1
    with tarfile.open(tmp_path / "s" / "train-000000.tar") as tar:
        assert tar.extractfile("k.x.json.gz").read() == b"\x1f\x8b raw"


def test_cli_label_with_a_config_file(checkpoint, tmp_path, capsys):
    src = write_random_set(tmp_path / "in", 3, masks=False)
    config = tmp_path / "label.yaml"
    config.write_text(f"ckpt: {checkpoint}\ninput: {src}\nout: {tmp_path / 'out'}\nbatch_size: 2\nprogress: false\n")
    assert main(["label", "--config", str(config), "--device", "cpu"]) == 0
    assert "labelled 3 samples" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["num_masks"] == 3
    assert main(["label", "--config", str(config), "--overwrite", "true"]) == 0


def test_cli_bad_input_gives_one_line_error(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["label", "--ckpt", str(checkpoint), "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-synth: error:") and "\n" not in err and "nope" in err


def test_segmenter_loads_inside_a_lightningcli_instantiation(tmp_path):
    """SPADEGAN(segmenter_ckpt=...) built by LightningCLI: the nested task keeps its own hyper-parameters."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    from aras400k.models.segmentation import SegmentationTask

    task = SegmentationTask(arch="fpn", encoder="tu-mobilenetv3_small_050")
    ckpt = tmp_path / "seg.ckpt"
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, ckpt)
    with _given_hyperparameters_context(hparams={"g_base_channels": 8}, instantiator="cli"):
        loaded = load_segmentation_task(ckpt)
    assert loaded.hparams["arch"] == "fpn" and "g_base_channels" not in loaded.hparams
