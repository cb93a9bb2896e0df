import json
import subprocess
import sys
import time

import numpy as np
import pytest

from aras400k.captioning import BackendError, Captioner, TemplateBackend, read_captions, write_captioned_shards
from aras400k.captioning.sidecar import read_caption_records
from aras400k.data.shards import (
    ManifestError,
    Sample,
    ShardWriter,
    iter_raw_samples,
    iter_samples,
    read_manifest,
    shard_paths,
)
from tests.captioning.conftest import ScriptedBackend
from tests.conftest import write_random_set

COMPS = [{"tree": 0.6, "water": 0.4}, {"crop": 0.5, "built": 0.3, "grass": 0.2}]


def test_caption_in_memory_all_modes():
    images = [np.full((32, 32, 3), v, np.uint8) for v in (40, 200)]
    for mode in ("text", "vision", "hybrid"):
        captioner = Captioner(mode, captions_per_image=3, progress=False)
        out = captioner.caption(images=images, compositions=COMPS)
        assert [len(c) for c in out] == [3, 3] and all(isinstance(t, str) and t for c in out for t in c)
        assert captioner.stats.captions == 6
    assert Captioner("text", progress=False).caption(compositions=COMPS) == Captioner("text", progress=False).caption(
        compositions=COMPS
    )
    masks = [np.zeros((8, 8), np.uint8)]
    assert "100.0%" in Captioner("text", captions_per_image=1, progress=False).caption(masks=masks)[0][0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of text, vision, hybrid"):
        Captioner("audio")
    with pytest.raises(ValueError, match="captions_per_image"):
        Captioner(captions_per_image=0)
    with pytest.raises(ValueError, match="dedupe"):
        Captioner(dedupe="fuzzy")
    with pytest.raises(ValueError, match="needs an image"):
        Captioner("vision", progress=False).caption(compositions=COMPS)
    with pytest.raises(ValueError, match="needs a composition"):
        Captioner("hybrid", progress=False).caption(images=[np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="same length"):
        Captioner(progress=False).caption(images=[np.zeros((8, 8, 3), np.uint8)], compositions=COMPS)


def test_hooks_and_postprocessing():
    class Custom(Captioner):
        def build_user_prompt(self, item):
            return f"custom {item.key}"

        def postprocess(self, text, request):
            return super().postprocess(text, request).upper()

    backend = ScriptedBackend(answer=lambda r: f'<think>hmm</think> Caption: "{r.user_prompt}"  ')
    out = Custom("text", backend, captions_per_image=1, progress=False).caption(compositions=COMPS, keys=["a", "b"])
    assert out == [["CUSTOM A"], ["CUSTOM B"]]
    request = backend.batches[0][0]
    assert request.system_prompt.startswith("You write captions") and request.image is None


def test_repeats_are_regenerated_with_new_seeds_and_counted():
    # Answers depend only on the seed's parity: at most two distinct captions exist.
    backend = ScriptedBackend(answer=lambda r: f"caption {r.seed % 2}")
    captioner = Captioner("text", backend, captions_per_image=3, max_retries=2, batch_size=4, progress=False)
    out = captioner.caption(compositions=COMPS)
    flat = [t for c in out for t in c]
    assert len(set(flat)) == 2
    stats = captioner.stats
    assert stats.captions == 6 and stats.duplicates == 4
    assert stats.regenerated == 2 * 4  # each kept repeat was retried twice
    seeds = [r.seed for batch in backend.batches for r in batch]
    assert len(seeds) == 6 + stats.regenerated and len(set(seeds)) == len(seeds)
    off = Captioner(
        "text", ScriptedBackend(answer=lambda r: "same"), captions_per_image=2, dedupe="off", progress=False
    )
    off.caption(compositions=COMPS)
    assert off.stats.regenerated == 0 and off.stats.duplicates == 3
    empty = Captioner(
        "text", ScriptedBackend(answer=lambda r: "  "), captions_per_image=1, max_retries=1, progress=False
    )
    empty.caption(compositions=COMPS[:1])
    assert empty.stats.empty == 1 and empty.stats.regenerated == 1


def test_caption_shards_writes_sidecar_and_new_shards(demo_root, tmp_path):
    source = demo_root / "val"
    out, shards = tmp_path / "caps.jsonl", tmp_path / "captioned"
    report = Captioner("hybrid", captions_per_image=2, batch_size=5, progress=False).caption_shards(
        source, out, shards_out=shards, limit=10, samples_per_shard=4
    )
    assert report.samples == 10 and report.stats.captions == 20 and report.resumed == 0
    assert "20 new captions" in report.summary()
    records = read_caption_records(out)
    assert len(records) == 20 and len({(r["key"], r["index"]) for r in records}) == 20
    assert set(records[0]) == {"key", "index", "text", "model", "mode", "prompt_hash", "seed", "attempts"}
    assert {r["mode"] for r in records} == {"hybrid"} and {r["model"] for r in records} == {"template"}
    manifest = read_manifest(shards)
    assert manifest["num_samples"] == 10 and manifest["split"] == "val" and len(manifest["shards"]) == 3
    originals = {raw["__key__"]: raw for path in shard_paths(source) for raw in iter_raw_samples(path)}
    grouped = read_captions(out)
    for path in shard_paths(shards):
        for raw in iter_raw_samples(path):
            original = originals[raw["__key__"]]
            assert raw["image.png"] == original["image.png"] and raw["meta.json"] == original["meta.json"]
            captions = json.loads(raw["captions.json"])
            assert captions == [
                {"text": r["text"], "model": "template", "mode": "hybrid"} for r in grouped[raw["__key__"]]
            ]
    decoded = {s.key: s for s in iter_samples(shards)}
    for sample in iter_samples(source):
        if sample.key in decoded:
            assert np.array_equal(decoded[sample.key].mask, sample.mask)


def test_interrupted_run_resumes_with_exactly_one_caption_each(demo_root, tmp_path):
    source = demo_root / "val"  # 16 samples

    def captioner(backend):
        return Captioner("text", backend, captions_per_image=3, batch_size=5, progress=False)

    reference = tmp_path / "reference.jsonl"
    captioner(TemplateBackend()).caption_shards(source, reference)

    out = tmp_path / "caps.jsonl"
    flaky = TemplateBackend()
    calls = {"n": 0}
    generate = flaky.generate

    def failing(requests):
        calls["n"] += 1
        if calls["n"] > 4:
            raise BackendError("server went away")
        return generate(requests)

    flaky.generate = failing
    with pytest.raises(BackendError):
        captioner(flaky).caption_shards(source, out)
    assert len(read_caption_records(out)) == 20  # four flushed batches of five
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 40])  # a kill in the middle of the last line
    assert len(read_caption_records(out)) == 19

    report = captioner(TemplateBackend()).caption_shards(source, out)
    assert report.resumed == 19 and report.stats.captions == 16 * 3 - 19 and report.discarded_bytes > 0
    records = read_caption_records(out)
    keys = [(r["key"], r["index"]) for r in records]
    assert len(keys) == len(set(keys)) == 48
    by_key = {(r["key"], r["index"]): r for r in records}
    assert by_key == {(r["key"], r["index"]): r for r in read_caption_records(reference)}

    again = captioner(TemplateBackend()).caption_shards(source, out)  # nothing left to do
    assert again.stats.captions == 0 and again.resumed == 48


def test_resume_refuses_another_configuration_and_bad_inputs(demo_root, tmp_path):
    out = tmp_path / "caps.jsonl"
    Captioner("text", captions_per_image=1, progress=False).caption_shards(demo_root / "val", out, limit=2)
    with pytest.raises(ValueError, match="mode=text.*this run uses mode=vision"):
        Captioner("vision", captions_per_image=1, progress=False).caption_shards(demo_root / "val", out)
    with pytest.raises(ValueError, match="prompt_hash"):
        Captioner("text", user_prompt="{composition}", progress=False).caption_shards(demo_root / "val", out)
    report = Captioner("vision", captions_per_image=1, progress=False).caption_shards(
        demo_root / "val", out, limit=2, overwrite=True
    )
    assert report.resumed == 0 and len(read_caption_records(out)) == 2
    with pytest.raises(ManifestError, match="not a shard set"):
        Captioner(progress=False).caption_shards(tmp_path, tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="never edited in place"):
        Captioner(progress=False).caption_shards(demo_root / "val", out, shards_out=demo_root / "val")


def test_samples_without_inputs_are_skipped_with_a_warning(tmp_path):
    source = write_random_set(tmp_path / "unlabelled", 3, masks=False)
    with pytest.warns(UserWarning) as caught:
        report = Captioner("text", captions_per_image=1, progress=False).caption_shards(source, tmp_path / "c.jsonl")
    messages = [str(w.message) for w in caught]
    assert any("needs a composition" in m for m in messages) and any("skipped 3 samples" in m for m in messages)
    assert len(report.skipped) == 3 and report.stats.captions == 0
    vision = Captioner("vision", captions_per_image=1, progress=False).caption_shards(source, tmp_path / "v.jsonl")
    assert vision.stats.captions == 3 and not vision.skipped


def test_new_shards_keep_existing_captions_and_unknown_members(tmp_path):
    source = tmp_path / "in"
    rng = np.random.default_rng(0)
    with ShardWriter(source, split="test", source="synth_cond", samples_per_shard=2) as writer:
        for i in range(3):
            writer.write(
                Sample(
                    key=f"k{i}",
                    image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                    mask=np.full((8, 8), i, np.uint8),
                    captions=[{"text": "old", "model": "human", "mode": "text"}] if i == 0 else None,
                    raw_members={"notes.txt": b"keep me"},
                )
            )
    sidecar = tmp_path / "c.jsonl"
    Captioner("text", captions_per_image=1, progress=False).caption_shards(source, sidecar)
    manifest = write_captioned_shards(source, sidecar, tmp_path / "out")
    assert manifest["source"] == "synth_cond" and manifest["num_samples"] == 3
    samples = {s.key: s for s in iter_samples(tmp_path / "out")}
    assert [c["model"] for c in samples["k0"].captions] == ["human", "template"]
    assert len(samples["k1"].captions) == 1
    raws = [raw for path in shard_paths(tmp_path / "out") for raw in iter_raw_samples(path)]
    assert all(raw["notes.txt"] == b"keep me" for raw in raws)
    write_captioned_shards(source, sidecar, tmp_path / "out")  # its own output is replaced
    other = tmp_path / "other.jsonl"
    other.write_bytes(sidecar.read_bytes())
    with pytest.raises(FileExistsError, match="already holds a shard set"):
        write_captioned_shards(source, other, tmp_path / "out")


@pytest.mark.slow
def test_resume_after_a_real_kill(demo_root, tmp_path):
    source, out, reference = demo_root / "val", tmp_path / "caps.jsonl", tmp_path / "ref.jsonl"
    Captioner("text", captions_per_image=3, batch_size=4, progress=False).caption_shards(source, reference)
    script = (
        "import time\n"
        "from aras400k.captioning import Captioner, TemplateBackend\n"
        "class Slow(TemplateBackend):\n"
        "    def generate(self, requests):\n"
        "        time.sleep(0.2)\n"
        "        return super().generate(requests)\n"
        f"Captioner('text', Slow(), captions_per_image=3, batch_size=4, progress=False).caption_shards("
        f"{str(source)!r}, {str(out)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 12):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    written = out.read_bytes().count(b"\n")
    assert 12 <= written < 48, "the run should have been killed half-way"
    Captioner("text", captions_per_image=3, batch_size=4, progress=False).caption_shards(source, out)
    records = read_caption_records(out)
    assert len(records) == 48 and len({(r["key"], r["index"]) for r in records}) == 48
    assert sorted(records, key=lambda r: (r["key"], r["index"])) == sorted(
        read_caption_records(reference), key=lambda r: (r["key"], r["index"])
    )


def test_when_tries_run_out_the_best_try_is_kept_and_the_tries_recorded(demo_root, tmp_path):
    # Answers per (sample, caption index) and try: the last try of the two repeats is empty.
    script = {(0, 0): ["alpha"], (0, 1): ["beta"], (1, 0): ["alpha", "alpha", ""], (1, 1): ["alpha", "beta", ""]}
    captioner = Captioner("text", captions_per_image=2, max_retries=2, batch_size=8, progress=False)
    order: dict[str, int] = {}

    def answer(request):
        attempt = next(a for a in range(3) if captioner.caption_seed(request.key, request.index, a) == request.seed)
        return script[(order.setdefault(request.key, len(order)), request.index)][attempt]

    captioner.backend = ScriptedBackend(answer=answer)
    report = captioner.caption_shards(demo_root / "val", tmp_path / "c.jsonl", limit=2)
    records = read_caption_records(tmp_path / "c.jsonl")
    # Not the empty last try: the earliest non-empty one repeating the least-used caption.
    assert [(r["text"], r["attempts"]) for r in records] == [("alpha", 1), ("beta", 1), ("alpha", 3), ("beta", 3)]
    second = records[2]["key"]
    assert records[2]["seed"] == captioner.caption_seed(second, 0, 0)
    assert records[3]["seed"] == captioner.caption_seed(second, 1, 1)
    stats = report.stats
    assert stats.empty == 0 and stats.duplicates == 2 and stats.regenerated == 4 and stats.best_earlier == 2
    assert "kept the best of its tries for 2 captions" in report.summary()


def test_retries_and_timeouts_show_in_the_bar_the_summary_and_the_run_record(demo_root, tmp_path, capsys):
    from aras400k.captioning.backends.openai import OpenAIBackend
    from tests.captioning.test_openai_backend import FakeServer

    server = FakeServer(fail_with=[200, 503, 429, 200, 200], stalls=[0.0, 0.0, 0.0, 1.0])
    try:
        backend = OpenAIBackend("m", base_urls=[server.url], backoff_s=0.01, timeout_s=0.4, max_concurrency=1)
        captioner = Captioner("text", backend, captions_per_image=2, batch_size=4, progress=True)
        report = captioner.caption_shards(demo_root / "val", tmp_path / "c.jsonl", limit=2)
        backend.close()
    finally:
        server.close()
    stats = report.stats
    assert stats.retries == 3 and stats.timeouts == 1 and stats.failed_tries == {"HTTP 503": 1, "HTTP 429": 1}
    bar = capsys.readouterr().err
    assert "retries=3" in bar and "timeouts=1" in bar
    assert "3 requests retried (1 timeouts, HTTP 429 1, HTTP 503 1)" in report.summary()
    run = json.loads((tmp_path / "c.run.json").read_text())["runs"][-1]
    assert run["retries"] == 3 and run["timeouts"] == 1 and run["failed_tries"] == {"HTTP 503": 1, "HTTP 429": 1}
    assert run["captions"] == 4 and run["status"] == "finished"
