"""No code runs from a checkpoint, whatever door it comes through (local, HTTP, fsspec, resume, ...).

Each malicious checkpoint below holds an object whose unpickling would create a canary
file; every entry point must refuse it in one line naming the file and the global, and
the canary must never appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer, seed_everything

from aras400k.checkpoints import (
    CheckpointError,
    SafeCheckpointIO,
    install_safe_checkpoint_io,
    load_checkpoint,
    read_checkpoint,
)
from aras400k.cli.main import fit_main
from aras400k.cli.main import main as aras_main
from aras400k.cli.synth import main as synth_main
from aras400k.data import SegmentationDataModule
from aras400k.metrics.fid import _load_state_dict
from aras400k.models import SegmentationTask
from aras400k.models.segmentation import load_segmentation_task
from aras400k.models.spade.losses import VGG19Features
from tests.conftest import serve_directory, write_random_set

ARCH, ENCODER = "fpn", "tu-mobilenetv3_small_050"


class _Canary:
    """Unpickling this creates ``path`` (through ``io.open``): the code a checkpoint must never run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with ``evil.ckpt`` (a Lightning-like dict with a canary) and ``good.ckpt`` (a real checkpoint)."""
    folder = tmp_path_factory.mktemp("ckpts")
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "x": _Canary(folder / "CANARY")},
               folder / "evil.ckpt")  # fmt: skip
    torch.save({"weight": _Canary(folder / "CANARY")}, folder / "evil_weights.pt")
    return folder


@pytest.fixture(scope="module")
def good_checkpoint(demo_root, files) -> Path:
    seed_everything(0)
    data = SegmentationDataModule(root=str(demo_root), demo=False, batch_size=8, num_workers=0)
    task = SegmentationTask(arch=ARCH, encoder=ENCODER)
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, accelerator="cpu")  # fmt: skip
    trainer.fit(task, data)
    path = files / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def server(files) -> Iterator[str]:
    """Serve the checkpoint folder on 127.0.0.1."""
    with serve_directory(files) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_canary(files, tmp_path, monkeypatch):
    """Every test: run in tmp (configs write runs/ there) and check afterwards that no canary was made."""
    monkeypatch.chdir(tmp_path)
    yield
    assert not (files / "CANARY").exists(), "a checkpoint ran code"


def _evil_locations(files: Path, server: str) -> list[str]:
    memory = "memory://aras-test/evil.ckpt"
    with fsspec.open(memory, "wb") as f:
        f.write((files / "evil.ckpt").read_bytes())
    return [str(files / "evil.ckpt"), f"{server}/evil.ckpt", memory, f"file://{files / 'evil.ckpt'}"]


def _assert_one_line_refusal(err: str, location: str) -> None:
    line = err.strip().splitlines()[-1]
    assert line.startswith(("aras: error:", "aras-fit: error:", "aras-synth: error:")), err
    assert "refused to load checkpoint" in line and location in line and "io.open" in line
    assert "weights_only=False" not in err and "Traceback" not in err


def test_the_loader_refuses_code_from_every_kind_of_location(files, server):
    for location in _evil_locations(files, server):
        with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*it would import io\.open"):
            load_checkpoint(location)


def test_the_loader_reads_good_checkpoints_from_urls(good_checkpoint, server):
    local = read_checkpoint(good_checkpoint)
    remote = read_checkpoint(f"{server}/good.ckpt")
    assert remote.keys() == local.keys()
    assert all(torch.equal(remote["state_dict"][k], v) for k, v in local["state_dict"].items())


def test_missing_and_unreachable_checkpoints_are_one_line_errors(files, server):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(files / "nope.ckpt")
    with pytest.raises(CheckpointError, match=r"cannot download checkpoint .*nope\.ckpt"):
        load_checkpoint(f"{server}/nope.ckpt")
    (files / "garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(files / "garbage.ckpt")


def _cli_args(demo_root) -> list[str]:
    config = Path(__file__).parents[1] / "configs" / "seg_unet.yaml"
    return ["--config", str(config), "--data.init_args.root", str(demo_root), "--data.init_args.num_workers", "0",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--model.init_args.arch", ARCH, "--model.init_args.encoder", ENCODER]  # fmt: skip


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict", "fit"])
def test_aras_refuses_malicious_checkpoints_from_disk_and_http(subcommand, demo_root, files, server, capsys):
    for location in [str(files / "evil.ckpt"), f"{server}/evil.ckpt"]:
        with pytest.raises(SystemExit) as exc:
            aras_main([subcommand, *_cli_args(demo_root), "--trainer.max_steps", "1", "--ckpt_path", location])
        assert exc.value.code == 2
        _assert_one_line_refusal(capsys.readouterr().err, location)


def test_aras_fit_resume_refuses_a_malicious_checkpoint(demo_root, files, server, capsys):
    with pytest.raises(SystemExit) as exc:
        fit_main([*_cli_args(demo_root), "--trainer.max_steps", "1", "--ckpt_path", f"{server}/evil.ckpt"])
    assert exc.value.code == 2
    _assert_one_line_refusal(capsys.readouterr().err, f"{server}/evil.ckpt")


def test_aras_test_loads_a_good_checkpoint_over_http(demo_root, good_checkpoint, server, capsys):
    aras_main(["test", *_cli_args(demo_root), "--ckpt_path", f"{server}/good.ckpt"])
    assert "| class | F1 | IoU |" in capsys.readouterr().out


def test_a_plain_trainer_is_made_safe_by_the_module(demo_root, files, server):
    """No CLI: the module's setup installs the safe plugin before Lightning restores ckpt_path."""
    data = SegmentationDataModule(root=str(demo_root), demo=False, batch_size=8, num_workers=0)
    for location in [str(files / "evil.ckpt"), f"{server}/evil.ckpt"]:
        trainer = Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", limit_test_batches=1)
        with pytest.raises(CheckpointError, match="refused"):
            trainer.test(SegmentationTask(arch=ARCH, encoder=ENCODER), data, ckpt_path=location)


def test_load_from_checkpoint_reads_through_the_safe_loader(files, server, good_checkpoint):
    for location in _evil_locations(files, server):
        with pytest.raises(CheckpointError, match="refused"):
            SegmentationTask.load_from_checkpoint(location)
    task = SegmentationTask.load_from_checkpoint(f"{server}/good.ckpt")
    assert task.hparams["encoder"] == ENCODER


def test_library_readers_refuse_malicious_files(files, server, tmp_path, capsys):
    evil = files / "evil.ckpt"
    with pytest.raises(CheckpointError, match="refused"):
        load_segmentation_task(evil)  # segmenter_ckpt of SPADEGAN and GeneratorFID, aras-synth label
    with pytest.raises(CheckpointError, match="refused"):
        load_segmentation_task(f"{server}/evil.ckpt")
    with pytest.raises(CheckpointError, match="refused"):
        SegmentationTask(encoder_weights=str(files / "evil_weights.pt"))
    with pytest.raises(CheckpointError, match="refused"):
        _load_state_dict(files / "evil_weights.pt")  # local Inception weights for FID
    with pytest.raises(CheckpointError, match="refused"):
        VGG19Features(weights_path=files / "evil_weights.pt")  # SPADE perceptual loss
    with pytest.raises(SystemExit) as exc:
        synth_main(["label", "--ckpt", str(evil), "--input", str(write_random_set(tmp_path / "in", 2)),
                    "--out", str(tmp_path / "o")])  # fmt: skip
    assert exc.value.code == 2
    _assert_one_line_refusal(capsys.readouterr().err, str(evil))


@pytest.mark.parametrize("use_url", [False, True])
def test_aras_synth_generators_refuse_malicious_checkpoints(use_url, files, server, tmp_path, capsys):
    evil = f"{server}/evil.ckpt" if use_url else str(files / "evil.ckpt")
    masks = str(write_random_set(tmp_path / "masks", 2))
    for args in (["stylegan3", "--ckpt", evil, "--n", "2", "--out", str(tmp_path / "sg")],
                 ["spade", "--ckpt", evil, "--masks", masks, "--out", str(tmp_path / "sp")]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            synth_main([*args, "--device", "cpu", "--progress", "false"])
        assert exc.value.code == 2
        _assert_one_line_refusal(capsys.readouterr().err, evil)


def test_install_replaces_the_default_plugin_and_refuses_unknown_ones():
    trainer = Trainer(logger=False, accelerator="cpu")
    install_safe_checkpoint_io(trainer)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)

    class Custom(TorchCheckpointIO):
        pass

    trainer = Trainer(logger=False, accelerator="cpu", plugins=[Custom()])
    with pytest.raises(ValueError, match="Custom may run code"):
        install_safe_checkpoint_io(trainer)


def test_safe_plugin_ignores_weights_only_false(files):
    with pytest.raises(CheckpointError, match="refused"):
        SafeCheckpointIO().load_checkpoint(files / "evil.ckpt", weights_only=False)
