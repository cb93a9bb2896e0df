"""Batch-file captioning: write requests, read results files (as vLLM's run_batch writes them), ingest."""

import json
from pathlib import Path

import pytest

from aras400k.captioning import Captioner, read_caption_records
from aras400k.captioning.backends.openai import OpenAIBackend
from aras400k.captioning.batchfile import BatchJob, custom_id, parse_custom_id
from tests.captioning.conftest import ScriptedBackend


def _user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else content[-1]["text"]


def unique_answer(body: dict) -> str:
    return f"{_user_text(body)[-60:]} seed {body['seed']}"


def run_batch(requests: Path, answer=unique_answer, fail=(), drop=()) -> list[str]:
    """Answer a request file the way ``vllm run_batch -o`` does; return the custom_ids asked."""
    lines, asked = [], []
    for n, raw in enumerate(requests.read_text().splitlines()):
        request = json.loads(raw)
        assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
        asked.append(request["custom_id"])
        if n in drop:
            continue
        if n in fail:
            response = {"status_code": 500, "request_id": f"r{n}", "body": {"error": {"message": "overloaded"}}}
        else:
            message = {"role": "assistant", "content": answer(request["body"])}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            body = {"object": "chat.completion", "model": request["body"]["model"], "choices": [choice]}
            response = {"status_code": 200, "request_id": f"r{n}", "body": body}
        lines.append({"id": f"vllm-{n}", "custom_id": request["custom_id"], "response": response, "error": None})
    BatchJob.results_path(requests).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return asked


def test_custom_ids_round_trip():
    assert parse_custom_id(custom_id("N36#E027_000", 3, 1234)) == ("N36#E027_000", 3, 1234)
    with pytest.raises(ValueError, match="KEY#INDEX#SEED"):
        parse_custom_id("request-1")


def test_write_results_ingest_equals_a_live_run(demo_root, tmp_path):
    options = {"captions_per_image": 2, "batch_size": 4, "progress": False}
    live = Captioner("hybrid", ScriptedBackend(lambda r: f"{r.user_prompt[-60:]} seed {r.seed}", model="m"), **options)
    live.caption_shards(demo_root / "val", tmp_path / "live.jsonl", limit=5)

    backend = OpenAIBackend("m", extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    captioner = Captioner("hybrid", backend, **options)
    out, folder = tmp_path / "batch.jsonl", tmp_path / "job"
    first = captioner.caption_batch_file(demo_root / "val", out, folder, backend.request_body, limit=5)
    assert first.stats.captions == 0 and first.batch is not None and first.batch.written == 10
    [requests] = first.batch.files
    assert requests.name == "requests-00000.jsonl" and not first.batch.complete
    line = json.loads(requests.read_text().splitlines()[0])
    assert line["body"]["model"] == "m" and line["body"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert line["body"]["messages"][-1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "run_batch" in first.summary()

    run_batch(requests)
    second = captioner.caption_batch_file(demo_root / "val", out, folder, backend.request_body, limit=5)
    assert second.stats.captions == 10 and second.batch.complete and second.batch.written == 0
    assert read_caption_records(out) == read_caption_records(tmp_path / "live.jsonl")
    third = captioner.caption_batch_file(demo_root / "val", out, folder, backend.request_body, limit=5)
    assert third.stats.captions == 0 and third.batch.complete and len(BatchJob(folder).request_files()) == 1


def test_regenerations_failures_and_missing_answers_go_to_follow_up_files(demo_root, tmp_path):
    # Two captions exist (by seed parity): most tries repeat one and are regenerated in later files.
    parity = lambda body: f"caption {body['seed'] % 2}"  # noqa: E731
    backend = OpenAIBackend("m")
    captioner = Captioner("text", backend, captions_per_image=3, batch_size=4, max_retries=2, progress=False)
    out, folder = tmp_path / "caps.jsonl", tmp_path / "job"

    def one_pass():
        return captioner.caption_batch_file(
            demo_root / "val", out, folder, backend.request_body, limit=4, max_requests=5
        ).batch

    first = one_pass()
    assert first.written == 12 and [p.name for p in first.files] == [f"requests-0000{i}.jsonl" for i in range(3)]
    again = one_pass()  # no results yet: nothing is written twice
    assert again.written == 0 and again.waiting == 12 and len(again.waiting_files) == 3
    failed = run_batch(first.files[0], parity, fail={1})[1]
    dropped = run_batch(first.files[1], parity, drop={2})[2]
    answered = set()
    for path in BatchJob(folder).request_files():
        if BatchJob.results_path(path).is_file():
            answered |= {json.loads(line)["custom_id"] for line in BatchJob.results_path(path).read_text().splitlines()}
    answered -= {failed}
    follow = one_pass()
    assert follow.failed == 1 and "overloaded" in follow.first_failure and follow.waiting == 2  # file 3
    asked = {json.loads(line)["custom_id"] for path in follow.files for line in path.read_text().splitlines()}
    assert {failed, dropped} <= asked and not asked & answered
    for _ in range(10):
        job = BatchJob(folder)
        for path in job.waiting_files():
            run_batch(path, parity)
        if one_pass().complete:
            break
    records = read_caption_records(out)
    assert len(records) == 12 and len({(r["key"], r["index"]) for r in records}) == 12
    assert {r["text"] for r in records} == {"caption 0", "caption 1"}
    assert max(r["attempts"] for r in records) == 3  # the retry limit was reached for the repeats
    files = BatchJob(folder).request_files()
    ids = [json.loads(line)["custom_id"] for path in files for line in path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) + 2  # only the failed and the dropped request were asked twice


def test_a_killed_pass_leaves_whole_files_and_the_rerun_asks_only_the_rest(demo_root, tmp_path):
    backend = OpenAIBackend("m")
    captioner = Captioner("text", backend, captions_per_image=2, batch_size=8, progress=False)
    out, folder = tmp_path / "caps.jsonl", tmp_path / "job"
    written = []

    def dies_after_three(request):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(request)
        return backend.request_body(request)

    with pytest.raises(KeyboardInterrupt):
        captioner.caption_batch_file(demo_root / "val", out, folder, dies_after_three, limit=4, max_requests=2)
    job = BatchJob(folder)
    assert [p.name for p in job.request_files()] == ["requests-00000.jsonl"] and not list(folder.glob("*.tmp"))
    report = captioner.caption_batch_file(demo_root / "val", out, folder, backend.request_body, limit=4)
    assert report.batch.written == 6 and report.batch.waiting == 2
