import json

import numpy as np
import pytest
import torch

import aras400k.synthesis.unconditional as synthesis_stylegan3
from aras400k.cli.synth import main
from aras400k.data.composition import composition
from aras400k.data.merge import merge_shard_sets, worker_parts
from aras400k.data.shards import iter_raw_samples, iter_samples, read_manifest, shard_paths
from aras400k.data.verify import verify_shards
from aras400k.models.gan import ExponentialMovingAverage
from aras400k.models.stylegan3 import StyleGAN3
from aras400k.synthesis.unconditional import (
    load_stylegan3_generator,
    parse_seeds,
    resolve_latents,
    seed_latents,
    synthesize_unconditional,
)
from tests.models.spade.test_module import make_segmenter_checkpoint
from tests.models.stylegan3.test_module import fit, tiny
from tests.models.stylegan3.test_official import write_snapshot
from tests.models.stylegan3.tiny import Z_DIM, tiny_generator


class Killed(BaseException):
    """Stands for the process being killed (not an Exception, so nothing catches it on the way)."""


@pytest.fixture(scope="module")
def sg3_ckpt(tmp_path_factory):
    """A tiny 16 px stylegan3-t trained for one iteration and saved by Lightning."""
    folder = tmp_path_factory.mktemp("sg3")
    model = tiny("stylegan3-t", ema_rampup=None)
    trainer = fit(model, folder, iterations=1)
    path = folder / "sg3.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def sg2_ckpt(tmp_path_factory):
    """A tiny, untrained stylegan2 saved as a plain checkpoint dict (no Fourier input)."""
    model = tiny("stylegan2")
    path = tmp_path_factory.mktemp("sg2") / "sg2.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return path


def raw_samples(directory):
    return [raw for path in shard_paths(directory) for raw in iter_raw_samples(path)]


def images_by_key(directory):
    return {raw["__key__"]: raw["image.png"] for raw in raw_samples(directory)}


def run(ckpt, out, **kwargs):
    options = {"batch_size": 2, "device": "cpu", "progress": False} | kwargs
    return synthesize_unconditional(ckpt, out, **options)


def test_writes_valid_shards_with_keys_seeds_and_meta(sg3_ckpt, tmp_path):
    report = run(sg3_ckpt, tmp_path / "out", seeds=[3, 1, 8], truncation=0.7, samples_per_shard=2)
    out = tmp_path / "out"
    assert verify_shards(out, progress=False).ok and not (out / ".partial").exists()
    samples = raw_samples(out)
    assert [r["__key__"] for r in samples] == ["sg3_00000003", "sg3_00000001", "sg3_00000008"]
    for raw, seed in zip(samples, [3, 1, 8], strict=True):
        assert "mask.png" not in raw
        meta = json.loads(raw["meta.json"])
        assert meta["source"] == "synth_uncond" and meta["split"] == "train"
        assert meta["generator"] == {
            "checkpoint": str(sg3_ckpt),
            "checkpoint_sha256": report.checkpoint_sha256,
            "latents": "torch",
            "seed": seed,
            "truncation": 0.7,
        }
    assert all(s.image.shape == (16, 16, 3) for s in iter_samples(out))
    manifest = read_manifest(out)
    assert (manifest["source"], manifest["num_samples"], len(manifest["shards"])) == ("synth_uncond", 3, 2)
    assert "generated 3 images (seeds 1..8, truncation 0.7)" in report.summary()


def test_images_match_the_modules_generate(sg3_ckpt, tmp_path):
    run(sg3_ckpt, tmp_path / "out", n=3)
    model = StyleGAN3.load_from_checkpoint(sg3_ckpt, map_location="cpu", weights_only=True)
    expected = torch.round((model.generate(n=3, seed=0) + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1)
    got = torch.stack([torch.from_numpy(s.image) for s in iter_samples(tmp_path / "out")])
    assert (got.int() - expected.int()).abs().max() <= 1


def test_same_seed_same_image_across_runs_and_split_runs(sg3_ckpt, tmp_path):
    run(sg3_ckpt, tmp_path / "all", seeds=parse_seeds("0-7"))
    run(sg3_ckpt, tmp_path / "again", n=8)
    run(sg3_ckpt, tmp_path / "a", seeds=parse_seeds("0-3"))
    run(sg3_ckpt, tmp_path / "b", seeds=parse_seeds("4-7"))
    whole = images_by_key(tmp_path / "all")
    assert len(whole) == 8 and len(set(whole.values())) == 8
    assert images_by_key(tmp_path / "again") == whole
    assert images_by_key(tmp_path / "a") | images_by_key(tmp_path / "b") == whole


def test_resume_after_an_interruption_gives_the_uninterrupted_output(sg3_ckpt, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run(sg3_ckpt, reference, n=6, chunk_size=2)
    generate = synthesis_stylegan3._generate_batch
    calls, kill_at = [], [2]  # part 0 (1 batch) done, part 1 interrupted

    def killed_on_the_second_batch(*args):
        calls.append(1)
        if len(calls) == kill_at[0]:
            raise Killed
        return generate(*args)

    monkeypatch.setattr(synthesis_stylegan3, "_generate_batch", killed_on_the_second_batch)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run(sg3_ckpt, out, n=6, chunk_size=2)
    assert not (out / "manifest.json").exists()
    assert (out / ".partial" / "part-000000" / "manifest.json").is_file()
    assert not (out / ".partial" / "part-000001" / "manifest.json").exists()

    calls.clear()
    kill_at[0] = 0
    report = run(sg3_ckpt, out, n=6, chunk_size=2)
    assert len(calls) == 2  # parts 1 and 2 only
    assert report.resumed_parts == 1 and "resumed" in report.summary()
    assert read_manifest(out) == read_manifest(reference)
    for name in (s["name"] for s in read_manifest(out)["shards"]):
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    assert not (out / ".partial").exists() and verify_shards(out, progress=False).ok


def test_an_unfinished_run_with_other_settings_is_not_mixed_in(sg3_ckpt, tmp_path, monkeypatch):
    def killed(*args):
        raise Killed

    monkeypatch.setattr(synthesis_stylegan3, "_generate_batch", killed)
    with pytest.raises(Killed):
        run(sg3_ckpt, tmp_path / "out", n=4)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"other settings \(generator differs\)"):
        run(sg3_ckpt, tmp_path / "out", n=4, truncation=0.5)
    run(sg3_ckpt, tmp_path / "out", n=4, truncation=0.5, overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        run(sg3_ckpt, tmp_path / "out", n=4, truncation=0.5)


def test_label_with_a_segmenter_adds_masks_and_composition(sg3_ckpt, tmp_path):
    segmenter = make_segmenter_checkpoint(tmp_path / "seg.ckpt")
    report = run(sg3_ckpt, tmp_path / "out", n=2, label_with=segmenter)
    assert verify_shards(tmp_path / "out", progress=False).ok
    samples = list(iter_samples(tmp_path / "out"))
    assert [s.key for s in samples] == ["sg3_00000000", "sg3_00000001"]
    for sample in samples:
        assert sample.mask is not None and sample.mask.shape == (16, 16)
        assert sample.meta["composition"] == composition(sample.mask)
        assert sample.meta["labelled_by"]["checkpoint"] == str(segmenter) and sample.meta["generator"]["seed"] >= 0
    assert "masks are the predictions of" in report.summary()


def test_official_pickle_gives_the_pickled_generators_images(tmp_path):
    generator = tiny_generator("stylegan3-t", seed=1)
    path = write_snapshot(tmp_path / "snapshot.pkl", {"G_ema": generator}, tmp_path / "code-ran.txt")
    loaded = load_stylegan3_generator(path)
    z = torch.randn(1, Z_DIM, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(z, noise_mode="const"), generator(z, noise_mode="const"))
    run(path, tmp_path / "out", n=2)
    assert verify_shards(tmp_path / "out", progress=False).ok and not (tmp_path / "code-ran.txt").exists()


def test_cli_end_to_end_with_equivariance(sg3_ckpt, sg2_ckpt, tmp_path, capsys):
    args = ["stylegan3", "--ckpt", str(sg3_ckpt), "--out", str(tmp_path / "out"), "--device", "cpu"]
    options = ["--seeds", "2,5", "--truncation", "0.5", "--progress", "false"]
    assert main([*args, *options, "--equivariance", "true", "--equivariance_samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "generated 2 images (seeds 2..5, truncation 0.5)" in printed
    assert "EQ-T" in printed and "EQ-R" in printed and " dB" in printed
    assert set(images_by_key(tmp_path / "out")) == {"sg3_00000002", "sg3_00000005"}
    args = ["stylegan3", "--ckpt", str(sg2_ckpt), "--out", str(tmp_path / "sg2"), "--n", "1"]
    assert main([*args, "--equivariance", "true", "--progress", "false", "--device", "cpu"]) == 0
    assert "need a generator with Fourier input features" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--ckpt": "missing.ckpt"}, "missing.ckpt does not exist"),
        ({"--ckpt": "seg.ckpt"}, "is not a StyleGAN3 checkpoint"),
        ({"--seeds": "3-1"}, "is reversed"),
        ({"--seeds": "a,b"}, "seeds must be non-negative integers"),
        ({"--seeds": "0-3", "--n": "2"}, "does not match the 4 seeds"),
        ({"--n": "0"}, "pass n >= 1"),
        ({"--batch_size": "0"}, "must be >= 1"),
    ],
)
def test_cli_bad_input_gives_one_line_errors(sg3_ckpt, tmp_path, capsys, change, message):
    torch.save({"state_dict": {}, "hyper_parameters": {"arch": "unet"}}, tmp_path / "seg.ckpt")
    options = {"--ckpt": str(sg3_ckpt), "--out": str(tmp_path / "out"), "--n": "2", "--progress": "false"}
    options |= {k: str(tmp_path / v) if k == "--ckpt" else v for k, v in change.items()}
    with pytest.raises(SystemExit) as exc:
        main(["stylegan3", *[part for item in options.items() for part in item]])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-synth: error:") and "\n" not in err and message in err


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,7") == [1, 5, 7]
    assert parse_seeds("9, 0-1") == [9, 0, 1]
    with pytest.raises(ValueError, match="more than once"):
        parse_seeds("0-3,2")


class TintedStyleGAN3(StyleGAN3):
    """A subclass whose generator carries one more weight (a learned tint), as a custom generator would."""

    def configure_models(self) -> None:
        super().configure_models()
        self.generator.register_parameter("tint", torch.nn.Parameter(torch.zeros(3)))
        self.ema = ExponentialMovingAverage(self.generator, ema_kimg=10.0, ema_rampup=None)


def test_module_class_samples_a_subclass_generator(tmp_path, capsys):
    model = TintedStyleGAN3(**tiny("stylegan3-t").hparams)
    ckpt = tmp_path / "tinted.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, ckpt)
    generator = load_stylegan3_generator(ckpt, module_class=TintedStyleGAN3)
    assert "tint" in dict(generator.named_parameters())
    with pytest.raises(ValueError, match="do not fit"):
        load_stylegan3_generator(ckpt)  # the standard generator has no tint
    with pytest.raises(TypeError, match="StyleGAN3 subclass"):
        load_stylegan3_generator(ckpt, module_class=torch.nn.Module)  # type: ignore[arg-type]
    out = tmp_path / "out"
    args = ["stylegan3", "--ckpt", str(ckpt), "--out", str(out), "--n", "2", "--progress", "false"]
    assert main([*args, "--module_class", "tests.test_synthesis_stylegan3.TintedStyleGAN3"]) == 0
    got = torch.stack([torch.from_numpy(s.image) for s in iter_samples(out)]).permute(0, 3, 1, 2).int()
    expected = torch.round((model.generate(n=2, seed=0) + 1) * 127.5).int()
    assert (got - expected).abs().max() <= 1
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "x"), "--module_class", "tests.test_synthesis_stylegan3.nothing"])
    assert "cannot import --module_class" in capsys.readouterr().err


# -- seed conventions: NVlabs' gen_images.py (official pickles) and torch (our checkpoints) -----


def nvlabs_gen_images(generator, seed, truncation_psi=1.0, noise_mode="const"):
    """Image ``seed`` as NVlabs' gen_images.py makes it (one seed per call, unconditional label)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, generator.z_dim))
    label = torch.zeros([1, generator.c_dim])
    with torch.no_grad():
        img = generator(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode)
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


@pytest.fixture(scope="module", params=["stylegan3-t", "stylegan2"])
def official(request, tmp_path_factory):
    """A tiny generator and the official-format snapshot that holds it as G_ema."""
    folder = tmp_path_factory.mktemp("official")
    generator = tiny_generator(request.param, seed=2)
    return generator, write_snapshot(folder / "snapshot.pkl", {"G_ema": generator}, folder / "code-ran.txt")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_official_pickle_seed_n_is_nvlabs_image_n(official, tmp_path, batch_size):
    generator, path = official
    seeds = [0, 1, 7, 42]
    report = run(path, tmp_path / "out", seeds=seeds, truncation=0.7, batch_size=batch_size)
    got = {s.key: s.image for s in iter_samples(tmp_path / "out")}
    for seed in seeds:
        np.testing.assert_array_equal(got[f"sg3_{seed:08d}"], nvlabs_gen_images(generator, seed, truncation_psi=0.7))
    assert report.latents == "nvlabs" and "nvlabs latents" in report.summary()


def test_latents_are_recorded_in_meta_manifest_and_run_record(official, tmp_path, monkeypatch):
    _, path = official
    run(path, tmp_path / "out", n=2)
    assert {s.meta["generator"]["latents"] for s in iter_samples(tmp_path / "out")} == {"nvlabs"}
    assert read_manifest(tmp_path / "out")["generator"]["latents"] == "nvlabs"

    def killed(*args):
        raise Killed

    monkeypatch.setattr(synthesis_stylegan3, "_generate_batch", killed)
    with pytest.raises(Killed):
        run(path, tmp_path / "cut", n=2, latents="torch")
    record = json.loads((tmp_path / "cut" / ".partial" / "run.json").read_text())
    assert record["generator"]["latents"] == "torch"
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"other settings \(generator differs\)"):
        run(path, tmp_path / "cut", n=2)  # auto is nvlabs for a .pkl: not mixed into a torch run
    run(path, tmp_path / "cut", n=2, latents="torch")


def test_torch_latents_on_a_pickle_and_nvlabs_latents_on_a_checkpoint(official, sg3_ckpt, tmp_path):
    generator, path = official
    run(path, tmp_path / "torch", seeds=[3], latents="torch")
    z = seed_latents([3], generator.z_dim, "torch")
    with torch.no_grad():
        expected = torch.round((generator(z, noise_mode="const").clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    np.testing.assert_array_equal(next(iter_samples(tmp_path / "torch")).image, expected[0].permute(1, 2, 0).numpy())
    assert not np.array_equal(next(iter_samples(tmp_path / "torch")).image, nvlabs_gen_images(generator, 3))

    default, nvlabs = tmp_path / "default", tmp_path / "nvlabs"
    assert run(sg3_ckpt, default, n=2).latents == "torch"  # our checkpoints keep their images
    assert run(sg3_ckpt, nvlabs, n=2, latents="nvlabs").latents == "nvlabs"
    assert images_by_key(default) != images_by_key(nvlabs)


def test_seed_latents_depend_on_their_own_seed_only():
    for convention in ("nvlabs", "torch"):
        together = seed_latents([5, 0, 9], 8, convention)
        alone = torch.cat([seed_latents([s], 8, convention) for s in (5, 0, 9)])
        assert together.shape == (3, 8) and torch.equal(together, alone)
    np.testing.assert_array_equal(seed_latents([4], 6, "nvlabs").numpy(), np.random.RandomState(4).randn(1, 6))
    assert seed_latents([], 6, "nvlabs").shape == seed_latents([], 6, "torch").shape == (0, 6)


def test_resolve_latents():
    assert resolve_latents("auto", "runs/x/network-snapshot-000100.PKL") == "nvlabs"
    assert resolve_latents("auto", "runs/x/last.ckpt") == "torch"
    assert resolve_latents("torch", "a.pkl") == "torch"
    with pytest.raises(ValueError, match="latents must be auto, nvlabs or torch"):
        resolve_latents("numpy", "a.pkl")


def test_an_unfinished_run_of_an_older_version_resumes_as_torch(sg3_ckpt, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run(sg3_ckpt, reference, n=4, chunk_size=2)

    calls = []
    generate = synthesis_stylegan3._generate_batch

    def killed_on_the_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return generate(*args)

    monkeypatch.setattr(synthesis_stylegan3, "_generate_batch", killed_on_the_second_batch)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run(sg3_ckpt, out, n=4, chunk_size=2)
    monkeypatch.undo()
    record_path = out / ".partial" / "run.json"
    record = json.loads(record_path.read_text())
    del record["generator"]["latents"]  # as written before the convention was recorded
    record_path.write_text(json.dumps(record))
    assert run(sg3_ckpt, out, n=4, chunk_size=2).resumed_parts == 1
    assert images_by_key(out) == images_by_key(reference)


def test_split_nvlabs_run_merges_into_the_single_run(official, tmp_path):
    _, path = official
    single = run(path, tmp_path / "single", n=5, batch_size=2)
    out = tmp_path / "split"
    for index in range(2):
        assert run(path, out, n=5, batch_size=2, shard_index=index, num_shards=2).latents == "nvlabs"
    merge_shard_sets(worker_parts(out), out)
    assert images_by_key(out) == images_by_key(tmp_path / "single") and single.num_samples == 5
    mixed = tmp_path / "mixed"
    run(path, mixed, n=5, batch_size=2, shard_index=0, num_shards=2)
    run(path, mixed, n=5, batch_size=2, shard_index=1, num_shards=2, latents="torch")
    with pytest.raises(ValueError, match="generator"):
        merge_shard_sets(worker_parts(mixed), mixed)


def test_cli_latents_option(official, tmp_path, capsys):
    generator, path = official
    base = ["stylegan3", "--ckpt", str(path), "--seeds", "4", "--progress", "false", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert "nvlabs latents" in capsys.readouterr().out
    np.testing.assert_array_equal(next(iter_samples(tmp_path / "auto")).image, nvlabs_gen_images(generator, 4))
    assert main([*base, "--out", str(tmp_path / "torch"), "--latents", "torch"]) == 0
    assert "torch latents" in capsys.readouterr().out
    assert next(iter_samples(tmp_path / "torch")).meta["generator"]["latents"] == "torch"
    with pytest.raises(SystemExit) as exc:
        main([*base, "--out", str(tmp_path / "bad"), "--latents", "numpy"])
    assert exc.value.code == 2 and "invalid choice: 'numpy'" in capsys.readouterr().err
