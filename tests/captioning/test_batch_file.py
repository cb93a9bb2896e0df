"""Batch-file captioning: write requests, read results files (as vLLM's run_batch writes them), ingest."""

import json
from pathlib import Path
from types import SimpleNamespace

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


class FakeBatchAPI:
    """The ``files`` and ``batches`` calls of an ``openai.OpenAI`` client; batches finish on the second look."""

    def __init__(self, answer=unique_answer, fail_first: int = 0) -> None:
        self.files = self
        self.batches = _Batches(self)
        self.stored: dict[str, bytes] = {}
        self.uploads = 0
        self.answer = answer
        self.fail_first = fail_first  # answer the first N requests with an error line

    def create(self, *, file, purpose):  # files.create
        assert purpose == "batch"
        self.uploads += 1
        file_id = f"file-{len(self.stored)}"
        self.stored[file_id] = file.read()
        return SimpleNamespace(id=file_id)

    def content(self, file_id):  # files.content
        return SimpleNamespace(content=self.stored[file_id])


class _Batches:
    def __init__(self, api: FakeBatchAPI) -> None:
        self.api = api
        self.made: dict[str, SimpleNamespace] = {}
        self.looks: dict[str, int] = {}

    def create(self, *, input_file_id, endpoint, completion_window, metadata=None):
        assert endpoint == "/v1/chat/completions" and completion_window == "24h"
        total = len(self.api.stored[input_file_id].splitlines())
        batch = SimpleNamespace(
            id=f"batch_{len(self.made)}", status="validating", input_file_id=input_file_id, output_file_id=None,
            error_file_id=None, errors=None, request_counts=SimpleNamespace(total=total, completed=0, failed=0),
        )  # fmt: skip
        self.made[batch.id] = batch
        return batch

    def list(self, limit=100):
        return list(self.made.values())

    def retrieve(self, batch_id):
        batch = self.made[batch_id]
        self.looks[batch_id] = self.looks.get(batch_id, 0) + 1
        if self.looks[batch_id] == 1:
            batch.status = "in_progress"
        elif batch.status != "completed":
            self._finish(batch)
        return batch

    def _finish(self, batch):
        requests = self.api.stored[batch.input_file_id].decode().splitlines()
        good, bad = [], []
        for raw in requests:
            request = json.loads(raw)
            if self.api.fail_first > 0:
                self.api.fail_first -= 1
                error = {"code": "server_error", "message": "try again"}
                bad.append({"id": "x", "custom_id": request["custom_id"], "response": None, "error": error})
                continue
            message = {"role": "assistant", "content": self.api.answer(request["body"])}
            body = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            good.append({"id": "x", "custom_id": request["custom_id"], "response": {"status_code": 200, "body": body}})
        for name, lines in (("output_file_id", good), ("error_file_id", bad)):
            if lines:
                file_id = f"file-{len(self.api.stored)}"
                self.api.stored[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
                setattr(batch, name, file_id)
        batch.status = "completed"
        batch.request_counts = SimpleNamespace(total=len(requests), completed=len(good), failed=len(bad))


def test_submit_poll_download_and_ingest_with_the_batch_api(demo_root, tmp_path):
    from aras400k.captioning.batch_api import run_batch_job, submit_waiting

    options = {"captions_per_image": 2, "batch_size": 4, "progress": False}
    live = Captioner("text", ScriptedBackend(lambda r: f"{r.user_prompt[-60:]} seed {r.seed}", model="m"), **options)
    live.caption_shards(demo_root / "val", tmp_path / "live.jsonl", limit=3)
    backend = OpenAIBackend("m")
    captioner = Captioner("text", backend, **options)
    out, job = tmp_path / "caps.jsonl", BatchJob(tmp_path / "job")
    api = FakeBatchAPI(fail_first=2)

    def one_pass():
        return captioner.caption_batch_file(demo_root / "val", out, job.folder, backend.request_body, limit=3)

    first = run_batch_job(one_pass, job, api, wait=False)  # write and submit, do not wait
    assert first.batch.written == 6 and api.uploads == 1 and len(api.batches.made) == 1
    assert job.state()["requests-00000.jsonl"]["batch_id"] == "batch_0"
    assert submit_waiting(job, api) == [] and api.uploads == 1  # a rerun never submits a file twice
    passes = []
    last = run_batch_job(one_pass, job, api, poll_s=0, progress=False, report=passes.append)
    assert last.batch.complete and api.uploads == 2  # the 2 failed requests went in a follow-up batch
    retried = [p.batch for p in passes if p.batch.failed]
    assert len(retried) == 1 and retried[0].failed == 2 and "try again" in retried[0].first_failure
    assert BatchJob.errors_path(job.request_files()[0]).is_file()
    # The same records as a live run; the two answered in the follow-up batch come last.
    by_id = lambda r: (r["key"], r["index"])  # noqa: E731
    assert sorted(read_caption_records(out), key=by_id) == sorted(
        read_caption_records(tmp_path / "live.jsonl"), key=by_id
    )


def test_a_batch_created_before_a_kill_is_adopted_not_created_again(tmp_path):
    from aras400k.captioning.batch_api import submit_waiting

    job = BatchJob(tmp_path / "job")
    job.folder.mkdir()
    (job.folder / "requests-00000.jsonl").write_text('{"custom_id": "k#0#1", "body": {}}\n')
    api = FakeBatchAPI()
    api.stored["file-0"] = (job.folder / "requests-00000.jsonl").read_bytes()
    made = api.batches.create(input_file_id="file-0", endpoint="/v1/chat/completions", completion_window="24h")
    job.save_state({"requests-00000.jsonl": {"input_file_id": "file-0"}})  # killed before the batch id was saved
    submit_waiting(job, api)
    assert len(api.batches.made) == 1 and job.state()["requests-00000.jsonl"]["batch_id"] == made.id


def test_without_the_openai_package_the_error_says_what_to_install(monkeypatch):
    import sys

    from aras400k.captioning.batch_api import openai_client

    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ValueError, match=r"pip install 'aras400k\[openai\]'"):
        openai_client()


def test_cli_write_run_results_rerun_then_shards(demo_root, tmp_path, capsys):
    from aras400k.cli.caption import main
    from aras400k.data.shards import read_manifest

    out, shards = tmp_path / "caps.jsonl", tmp_path / "shards"
    args = [
        "--input", str(demo_root / "val"), "--out", str(out), "--limit", "3", "--captions_per_image", "2",
        "--progress", "false", "--backend", "openai", "--openai.model", "m", "--shards_out", str(shards),
        "--batch_file.action", "write", "--batch_file.max_requests", "4",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 requests to requests-00000.jsonl, requests-00001.jsonl" in printed and "run_batch" in printed
    job = BatchJob(tmp_path / "caps.batch")
    assert not shards.exists()
    for path in job.request_files():
        run_batch(path)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "6 new captions" in printed and "every caption is in the sidecar" in printed
    assert len(read_caption_records(out)) == 6 and read_manifest(shards)["num_samples"] == 3
    with pytest.raises(SystemExit) as stop:
        main([*args, "--backend", "template"])
    assert stop.value.code == 2 and "--batch_file.action needs --backend openai" in capsys.readouterr().err


def test_request_files_split_at_the_byte_limit_and_keys_need_the_api_key(tmp_path, monkeypatch):
    from aras400k.captioning.batch_api import openai_client
    from aras400k.captioning.batchfile import RequestFileWriter

    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 60}]}
    line = len(json.dumps({"custom_id": "k#0#7", "method": "POST", "url": "/v1/chat/completions", "body": body})) + 1
    writer = RequestFileWriter(BatchJob(tmp_path / "job"), max_requests=100, max_bytes=2 * line + 10)
    for i in range(5):
        writer.write(custom_id("k", i, 7), body)
    writer.close()
    sizes = [path.stat().st_size for path in writer.files]
    assert len(writer.files) == 3 and all(size <= 2 * line + 10 for size in sizes) and writer.requests == 5
    assert [len(p.read_text().splitlines()) for p in writer.files] == [2, 2, 1]
    pytest.importorskip("openai")
    monkeypatch.delenv("ARAS_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match=r"\$ARAS_TEST_KEY is not set"):
        openai_client("ARAS_TEST_KEY")
