import json

import pytest

from aras400k.captioning import CaptionSidecarWriter, read_captions


def _rec(key, index, text="t"):
    return {"key": key, "index": index, "text": text, "model": "m", "mode": "text", "prompt_hash": "ab", "seed": 3}


def test_write_read_and_resume_cuts_a_partial_line(tmp_path):
    path = tmp_path / "c" / "caps.jsonl"
    with CaptionSidecarWriter(path) as writer:
        writer.write([_rec("b", 1), _rec("b", 0), _rec("a", 0)])
    with path.open("ab") as fh:
        fh.write(b'{"key": "a", "index": 1, "te')  # a kill in the middle of a write
    grouped = read_captions(path)
    assert list(grouped) == ["b", "a"] and [r["index"] for r in grouped["b"]] == [0, 1]
    with CaptionSidecarWriter(path) as writer:
        assert writer.discarded_bytes > 0 and writer.done == {("b", 0), ("b", 1), ("a", 0)}
        writer.write([_rec("a", 1, "new")])
        with pytest.raises(ValueError, match="already written"):
            writer.write([_rec("a", 1)])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["text"] == "new"
    with CaptionSidecarWriter(path, overwrite=True) as writer:
        assert writer.done == frozenset()
    assert path.read_text() == ""


def test_bad_records_and_files(tmp_path):
    path = tmp_path / "caps.jsonl"
    with CaptionSidecarWriter(path) as writer:
        with pytest.raises(ValueError, match="lacks the field 'seed'"):
            writer.write([{k: v for k, v in _rec("a", 0).items() if k != "seed"}])
        with pytest.raises(ValueError, match="mode must be one of"):
            writer.write([{**_rec("a", 0), "mode": "audio"}])
        with pytest.raises(ValueError, match="'index' must be int"):
            writer.write([{**_rec("a", 0), "index": "0"}])
    path.write_text(json.dumps(_rec("a", 0)) + "\nnot json\n" + json.dumps(_rec("a", 1)) + "\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_captions(path)
    path.write_text(json.dumps(_rec("a", 0)) + "\n" + json.dumps(_rec("a", 0)) + "\n")
    with pytest.raises(ValueError, match="second caption for key 'a' index 0"):
        read_captions(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_captions(tmp_path / "missing.jsonl")
