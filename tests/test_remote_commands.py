"""Commands read remote shard sets: aras-caption, the composition statistics and aras-eval's key listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aras400k.cli.caption import main as caption_main
from aras400k.evaluation.config import evaluated_keys
from aras400k.metrics.composition import composition_from_shards
from tests.data.test_remote import root, server  # noqa: F401  (module fixtures: a tiny set served on 127.0.0.1)


def _caption(source: str, out: Path) -> list[dict]:
    assert caption_main(["--input", source, "--out", str(out), "--mode", "text", "--progress", "false"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_aras_caption_over_http_and_pipe_equals_local(root, server, tmp_path):  # noqa: F811
    local = _caption(str(root / "train"), tmp_path / "local.jsonl")
    http = _caption(f"{server}/train/", tmp_path / "http.jsonl")
    assert len(local) == 50 and http == local  # 5 captions per image, the paper's default


def test_aras_caption_needs_a_manifest(root, tmp_path, capsys):  # noqa: F811
    """Captioning splits work by manifest counts: a manifest-less shard list is refused by name."""
    spec = f"pipe:cat {root}/train/train-{{000000..000002}}.tar"
    args = ["--input", spec, "--out", str(tmp_path / "x.jsonl"), "--progress", "false"]
    with pytest.raises(SystemExit) as exit_info:
        caption_main(args)
    assert exit_info.value.code == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_composition_and_keys_over_http(root, server):  # noqa: F811
    local = composition_from_shards(root / "train", progress=False)
    remote = composition_from_shards(f"{server}/train/", progress=False)
    for name, value in local.compute().items():
        np.testing.assert_array_equal(remote.compute()[name].numpy(), value.numpy(), err_msg=name)
    keys = [f"t{i:04d}" for i in range(10)]
    assert evaluated_keys(f"{server}/train/") == evaluated_keys(root / "train") == keys
