"""Batch-file captioning: requests as OpenAI Batch-format JSONL, answers read back from results files.

A job folder holds ``requests-NNNNN.jsonl`` files (``custom_id`` ``KEY#INDEX#SEED``), their
``.results.jsonl``/``.errors.jsonl`` and ``batch.json`` (layout: ``docs/captioning.md``).
A request file without results is *waiting*: its requests are never written again.
Once it has results, its unanswered requests go into the next file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aras400k.captioning.requests import CaptionRequest
from aras400k.data.shards import write_json_atomic

__all__ = [
    "BATCH_ENDPOINT",
    "MAX_BYTES",
    "MAX_REQUESTS",
    "BatchAnswers",
    "BatchJob",
    "BatchRound",
    "RequestFileWriter",
    "ResultsLookup",
    "answer_text",
    "batch_folder",
    "custom_id",
    "parse_custom_id",
]

#: The endpoint every request line names.
BATCH_ENDPOINT = "/v1/chat/completions"
#: Most requests in one file (the OpenAI Batch API's limit).
MAX_REQUESTS = 50_000
#: Largest request file in bytes (the OpenAI Batch API takes files up to 200 MB).
MAX_BYTES = 200_000_000
_REQUESTS = re.compile(r"^requests-(\d{5,})\.jsonl$")


def batch_folder(out: str | Path) -> Path:
    """The default job folder of sidecar ``out``: ``caps.jsonl`` -> ``caps.batch``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.batch")


def custom_id(key: str, index: int, seed: int) -> str:
    """The ``custom_id`` of one caption try: ``KEY#INDEX#SEED`` (the key may hold ``#``)."""
    return f"{key}#{index}#{seed}"


def parse_custom_id(text: str) -> tuple[str, int, int]:
    """Split a ``custom_id`` made by :func:`custom_id` into ``(key, index, seed)``.

    Raises:
        ValueError: If it is not ``KEY#INDEX#SEED``.
    """
    key, _, rest = str(text).rpartition("#")
    key, _, index = key.rpartition("#")
    if not key or not index.isdigit() or not rest.isdigit():
        raise ValueError(f"custom_id {text!r} is not KEY#INDEX#SEED (was it written by aras-caption?)")
    return key, int(index), int(rest)


def answer_text(line: Mapping[str, Any]) -> str | None:
    """The message content (parts joined) of a ``{"custom_id", "response": {"status_code", "body"}, "error"}`` line.

    ``None`` for an error, a status other than 200 or a body without ``choices[0].message.content``.
    """
    response = line.get("response")
    if line.get("error") or not isinstance(response, Mapping) or response.get("status_code", 200) != 200:
        return None
    try:
        content = response["body"]["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ("" if content is None else None)


def _failure(line: Mapping[str, Any]) -> str:
    """A short reason why a results line holds no answer."""
    error = line.get("error")
    if isinstance(error, Mapping):
        return f"{error.get('code', 'error')}: {error.get('message', '')}".strip()
    response = line.get("response")
    if isinstance(response, Mapping):
        body = response.get("body")
        detail = body.get("error", body) if isinstance(body, Mapping) else body
        return f"HTTP {response.get('status_code')}: {str(detail)[:200]}"
    return str(error or "no response")[:200]


@dataclass
class BatchAnswers:
    """What the results files of a job hold.

    Attributes:
        texts: ``(key, index, seed) -> raw text`` of every answered request.
        failed: ``custom_id -> reason`` of failed requests no other file answered.
        lines: Results lines read.
    """

    texts: dict[tuple[str, int, int], str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    lines: int = 0


@dataclass
class BatchRound:
    """What one pass over a batch job did: answers ingested, requests written or still out.

    Attributes:
        folder: The job folder.
        answered: Results lines read.
        written: Requests written to new files by this pass.
        files: The new request files.
        waiting: Requests needed that wait in files without results.
        waiting_files: Those files.
        failed: Requests whose results line reports an error (asked again in ``files``).
        first_failure: One such error, for the message.
    """

    folder: Path
    answered: int = 0
    written: int = 0
    files: list[Path] = field(default_factory=list)
    waiting: int = 0
    waiting_files: list[Path] = field(default_factory=list)
    failed: int = 0
    first_failure: str = ""

    @property
    def complete(self) -> bool:
        """Whether every caption is in the sidecar (nothing written, nothing waiting)."""
        return self.written == 0 and self.waiting == 0

    def summary(self) -> str:
        """What happened and what to do next, for the terminal."""
        if self.complete:
            return f"batch job {self.folder}: every caption is in the sidecar ({self.answered} answers read)"
        lines = []
        if self.failed:
            lines.append(f"{self.failed} requests failed in the batch (e.g. {self.first_failure}); asked again")
        if self.written:
            lines.append(f"batch job {self.folder}: wrote {self.written} requests to {_names(self.files)}")
        if self.waiting:
            where = _names(self.waiting_files)
            lines.append(f"batch job {self.folder}: {self.waiting} requests wait for results in {where}")
        lines.append(
            "run each file (python -m vllm.entrypoints.openai.run_batch -i F.jsonl -o F.results.jsonl --model M) "
            "or submit them (--batch_file.action submit), then rerun the same command to take in the answers"
        )
        return "\n".join(lines)


def _names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")


class ResultsLookup:
    """Answers caption requests from ``job``'s results (instead of a backend).

    Requests without an answer go to ``writer`` as their chat-completions ``body(request)``
    (``OpenAIBackend.request_body``).
    """

    def __init__(
        self, job: BatchJob, body: Callable[[CaptionRequest], dict[str, Any]], writer: RequestFileWriter
    ) -> None:
        self.job = job
        self.body = body
        self.writer = writer
        self.answers = job.read_answers()
        self.waiting_ids = job.waiting_ids()
        self.round = BatchRound(job.folder, answered=self.answers.lines, waiting_files=job.waiting_files())

    def lookup(self, requests: list[CaptionRequest]) -> list[str | None]:
        """The raw answer of each request, or ``None`` (the request is written, or already waits)."""
        texts: list[str | None] = []
        for request in requests:
            ident = (request.key, request.index, request.seed)
            text = self.answers.texts.get(ident)
            texts.append(text)
            if text is not None:
                continue
            cid = custom_id(*ident)
            if cid in self.waiting_ids:
                self.round.waiting += 1
                continue
            if cid in self.answers.failed:
                self.round.failed += 1
                self.round.first_failure = self.round.first_failure or self.answers.failed[cid]
            self.writer.write(cid, self.body(request))
        return texts

    def finish(self) -> BatchRound:
        """Complete the last request file and return what this pass did."""
        self.writer.close()
        self.round.written, self.round.files = self.writer.requests, list(self.writer.files)
        if not self.round.waiting:
            self.round.waiting_files = []
        return self.round


class RequestFileWriter:
    """Writes request lines into numbered files, starting a new one at the size limits.

    A file is written as ``requests-NNNNN.jsonl.tmp`` and renamed when full or closed,
    so a killed run leaves no half file that looks complete. A file holds at most
    ``max_requests`` lines and ``max_bytes`` bytes (a single larger line still gets a file).
    """

    def __init__(self, job: BatchJob, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> None:
        if max_requests < 1 or max_bytes < 1:
            raise ValueError(f"need max_requests >= 1 and max_bytes >= 1, got {max_requests} and {max_bytes}")
        self.job = job
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        #: Files completed so far.
        self.files: list[Path] = []
        #: Request lines written.
        self.requests = 0
        self._fh: IO[bytes] | None = None
        self._path: Path | None = None
        self._count = 0
        self._bytes = 0

    def write(self, cid: str, body: Mapping[str, Any]) -> None:
        """Add one request: its ``custom_id`` and chat-completions body."""
        line = json.dumps({"custom_id": cid, "method": "POST", "url": BATCH_ENDPOINT, "body": body}) + "\n"
        data = line.encode()
        if self._fh is not None and (self._count >= self.max_requests or self._bytes + len(data) > self.max_bytes):
            self._finish()
        if self._fh is None:
            self._path = self.job.next_request_file()
            self._fh = _tmp(self._path).open("wb")
            self._count = self._bytes = 0
        self._fh.write(data)
        self._count += 1
        self._bytes += len(data)
        self.requests += 1

    def _finish(self) -> None:
        assert self._fh is not None and self._path is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(_tmp(self._path), self._path)
        self.files.append(self._path)
        self._fh = None

    def close(self) -> None:
        """Complete the file being written."""
        if self._fh is not None:
            self._finish()

    def discard(self) -> None:
        """Drop the file being written (the run failed before it was complete)."""
        if self._fh is not None and self._path is not None:
            self._fh.close()
            _tmp(self._path).unlink(missing_ok=True)
            self._fh = None


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


class BatchJob:
    """The ``folder`` (created when needed) of a batch-file job: request and results files, ``batch.json``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"batch folder {self.folder} is a file; give a folder (--batch_file.dir)")

    @property
    def state_path(self) -> Path:
        """``batch.json``: file name -> what the Batch API knows of it."""
        return self.folder / "batch.json"

    def state(self) -> dict[str, dict[str, Any]]:
        """``batch.json``: request file name -> ``{input_file_id, batch_id, status, ...}`` (empty when new).

        Raises:
            ValueError: If the file is not valid JSON.
        """
        if not self.state_path.is_file():
            return {}
        try:
            state = json.loads(self.state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{self.state_path} is not valid JSON ({err}); it records the submitted batches") from err
        return state.get("files", {}) if isinstance(state, dict) else {}

    def save_state(self, files: Mapping[str, Mapping[str, Any]]) -> None:
        """Write ``batch.json`` atomically: request file name -> its submission record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_path, {"format": 1, "files": dict(files)})

    def request_files(self) -> list[Path]:
        """The complete request files, in order."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if _REQUESTS.match(p.name))

    def next_request_file(self) -> Path:
        """A new request file's path, numbered after the last; leftovers of a killed write are removed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("requests-*.jsonl.tmp"):
            stale.unlink()
        numbers = [int(m.group(1)) for p in self.request_files() if (m := _REQUESTS.match(p.name))]
        return self.folder / f"requests-{max(numbers, default=-1) + 1:05d}.jsonl"

    @staticmethod
    def results_path(requests: Path) -> Path:
        """Where the answers of a request file go: ``requests-00000.results.jsonl``."""
        return requests.with_name(requests.name.removesuffix(".jsonl") + ".results.jsonl")

    @staticmethod
    def errors_path(requests: Path) -> Path:
        """Where the failed requests of a request file go: ``requests-00000.errors.jsonl``."""
        return requests.with_name(requests.name.removesuffix(".jsonl") + ".errors.jsonl")

    def waiting_files(self) -> list[Path]:
        """Request files without results yet."""
        return [p for p in self.request_files() if not self.results_path(p).is_file()]

    def waiting_ids(self) -> set[str]:
        """The ``custom_id`` of every request in a file still waiting for results."""
        return {cid for path in self.waiting_files() for cid, _ in _iter_lines(path, "custom_id")}

    def read_answers(self) -> BatchAnswers:
        """Read every results and errors file of the job.

        Raises:
            ValueError: On a line that is not JSON or has a foreign ``custom_id``.
        """
        answers = BatchAnswers()
        for requests in self.request_files():
            for path in (self.results_path(requests), self.errors_path(requests)):
                if not path.is_file():
                    continue
                for cid, line in _iter_lines(path, "custom_id"):
                    answers.lines += 1
                    text = answer_text(line)
                    ident = parse_custom_id(cid)
                    if text is not None:
                        answers.texts[ident] = text
                    else:
                        answers.failed[cid] = _failure(line)
        answers.failed = {c: r for c, r in answers.failed.items() if parse_custom_id(c) not in answers.texts}
        return answers

    def requests(self) -> int:
        """Request lines in all request files."""
        return sum(1 for path in self.request_files() for _ in _iter_lines(path, None))


def _iter_lines(path: Path, id_field: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(custom_id, line)`` of a JSONL file's lines (``id_field=None``: the id is not checked)."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path} line {number} is not valid JSON ({err})") from err
            if not isinstance(line, dict):
                raise ValueError(f"{path} line {number} is not a JSON object")
            cid = str(line.get(id_field, "")) if id_field else ""
            if id_field and "#" not in cid:
                raise ValueError(f"{path} line {number} has no custom_id of aras-caption (KEY#INDEX#SEED)")
            yield cid, line
