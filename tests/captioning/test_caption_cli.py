import json

import pytest

from aras400k.captioning import read_captions
from aras400k.cli.caption import main
from aras400k.data.shards import read_manifest


def _error(capsys, args, code=2):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("aras-caption: error:") and "\n" not in err, err
    return err


def test_cli_captions_resumes_and_writes_shards(demo_root, tmp_path, capsys):
    out, shards = tmp_path / "caps.jsonl", tmp_path / "shards"
    args = ["--input", str(demo_root / "val"), "--out", str(out), "--mode", "vision", "--limit", "4"]
    assert main([*args, "--shards_out", str(shards), "--progress", "false"]) == 0
    assert "20 new captions (vision, template) for 4 samples" in capsys.readouterr().out
    assert sum(len(v) for v in read_captions(out).values()) == 20
    assert read_manifest(shards)["num_samples"] == 4
    # Resume with a larger limit; the shard set made from this sidecar is replaced.
    assert main([*args, "--limit", "6", "--shards_out", str(shards), "--progress", "false"]) == 0
    assert "10 new captions" in capsys.readouterr().out and len(read_captions(out)) == 6
    assert read_manifest(shards)["num_samples"] == 6


def test_cli_yaml_config(demo_root, tmp_path, capsys):
    config = tmp_path / "caption.yaml"
    config.write_text(
        f"input: {demo_root / 'val'}\nout: {tmp_path / 'c.jsonl'}\nmode: hybrid\nlimit: 3\n"
        "captions_per_image: 2\nprogress: false\ntemplate:\n  spatial_hints: false\n"
    )
    assert main(["--config", str(config)]) == 0
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["mode"] for r in records} == {"hybrid"}


def test_cli_bad_inputs_give_one_line_errors(demo_root, tmp_path, capsys):
    err = _error(capsys, ["--input", str(tmp_path), "--out", str(tmp_path / "c.jsonl")])
    assert "not a shard set" in err
    base = ["--input", str(demo_root / "val"), "--out", str(tmp_path / "c.jsonl")]
    err = _error(capsys, [*base, "--backend", "transformers"])
    assert "--transformers.model_path" in err
    err = _error(capsys, [*base, "--backend", "transformers", "--transformers.model_path", str(tmp_path / "none")])
    assert "does not exist" in err
    err = _error(capsys, [*base, "--backend", "openai"])
    assert "--openai.model" in err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--mode", "audio"])
    assert exc.value.code == 2 and "audio" in capsys.readouterr().err
    down = ["--backend", "openai", "--openai.model", "m", "--openai.base_urls", "[http://127.0.0.1:9/v1]"]
    err = _error(capsys, [*base, *down, "--openai.max_retries", "0", "--progress", "false"], code=1)
    assert "rerun to resume" in err


SUBCLASS = """
from aras400k.captioning import Captioner


class ShoutingCaptioner(Captioner):
    def postprocess(self, text, request):
        return super().postprocess(text, request).upper()


class NotACaptioner:
    pass
"""


def test_cli_runs_a_captioner_subclass(demo_root, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_prompts.py").write_text(SUBCLASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "shout.jsonl"
    args = ["--input", str(demo_root / "train"), "--out", str(out), "--limit", "3", "--progress", "false"]
    assert main([*args, "--captioner", "my_prompts.ShoutingCaptioner"]) == 0
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert len(texts) == 15 and all(t == t.upper() and any(c.isalpha() for c in t) for t in texts)
    for bad, message in (
        ("my_prompts.NotACaptioner", "not a subclass"),
        ("my_prompts.Missing", "cannot import"),
        ("Captioner", "module.Class"),
    ):
        with pytest.raises(SystemExit) as stop:
            main([*args, "--out", str(tmp_path / "x.jsonl"), "--captioner", bad])
        assert stop.value.code == 2 and message in capsys.readouterr().err
