"""Submitting batch-file jobs to the OpenAI Batch API with the official ``openai`` SDK.

:func:`submit_waiting` uploads each waiting request file of a
:class:`~aras400k.captioning.batchfile.BatchJob` and creates its batch (24 h window);
:func:`collect_finished` downloads the output and error files of finished batches next
to their request files; :func:`run_batch_job` repeats them until every caption is in.
Each step is recorded in ``batch.json`` when done, so a rerun never repeats one. The
``openai`` package is an optional extra (``pip install 'aras400k[openai]'``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aras400k.captioning.backends.base import BackendError
from aras400k.captioning.batchfile import BATCH_ENDPOINT, BatchJob
from aras400k.files import write_atomic

__all__ = [
    "FINAL_STATES",
    "BatchProgress",
    "collect_finished",
    "openai_client",
    "run_batch_job",
    "submit_waiting",
    "wait_for_batches",
]

#: Batch states after which nothing more comes.
FINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})


def openai_client(api_key_env: str | None = "OPENAI_API_KEY", base_url: str | None = None) -> Any:
    """An ``openai.OpenAI`` client with the key in ``$api_key_env``, at ``base_url`` (``None``: OpenAI's).

    Raises:
        ValueError: If the ``openai`` package is missing or the key variable is unset.
    """
    try:
        import openai
    except ImportError as err:
        raise ValueError(
            "submitting batch files needs the openai package: pip install 'aras400k[openai]' "
            "(or write the files with --batch_file.action write and run them with vLLM)"
        ) from err
    key = os.environ.get(api_key_env) if api_key_env else None
    if not key:
        raise ValueError(
            f"${api_key_env} is not set: export your API key there (--openai.api_key_env names the variable)"
        )
    return openai.OpenAI(api_key=key, base_url=base_url)


@dataclass
class BatchProgress:
    """Where the submitted batches of a job stand.

    Attributes:
        total: Requests in submitted batches still waiting for results.
        done: Of those, requests the service has finished (completed or failed).
        states: Batch state -> number of batches.
        downloaded: Request files whose results were downloaded by this call.
    """

    total: int = 0
    done: int = 0
    states: dict[str, int] = field(default_factory=dict)
    downloaded: list[Path] = field(default_factory=list)

    def line(self) -> str:
        """``2 in_progress, 1 finalizing``: the states, for a progress line."""
        return ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))


def _find_batch(client: Any, input_file_id: str) -> Any | None:
    """A batch already created for an uploaded file (a run killed before it recorded the batch)."""
    for batch in itertools.islice(client.batches.list(limit=100), 1000):
        if getattr(batch, "input_file_id", None) == input_file_id:
            return batch
    return None


def submit_waiting(job: BatchJob, client: Any) -> list[Path]:
    """Upload and submit every request file waiting for results and not yet submitted; return those files.

    ``client`` is an ``openai.OpenAI`` client (or one with the same ``files`` and ``batches`` calls).
    """
    state = job.state()
    submitted = []
    for path in job.waiting_files():
        entry = state.setdefault(path.name, {})
        if entry.get("batch_id"):
            continue
        batch = _find_batch(client, entry["input_file_id"]) if entry.get("input_file_id") else None
        if not entry.get("input_file_id"):
            with path.open("rb") as fh:
                entry["input_file_id"] = client.files.create(file=fh, purpose="batch").id
            job.save_state(state)
        if batch is None:
            batch = client.batches.create(
                input_file_id=entry["input_file_id"],
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata={"aras_request_file": path.name},
            )
        entry.update(batch_id=batch.id, status=batch.status)
        job.save_state(state)
        submitted.append(path)
    return submitted


def _download(client: Any, file_id: str | None, path: Path) -> None:
    """Write a service file to ``path`` through a temporary name (an empty file when there is none)."""
    write_atomic(path, client.files.content(file_id).content if file_id else b"")


def collect_finished(job: BatchJob, client: Any) -> BatchProgress:
    """Ask how the submitted batches stand; download the output and error files of finished ones.

    Raises:
        BackendError: If a batch's file was refused (``resumable`` false; the next pass rewrites it).
    """
    state = job.state()
    progress = BatchProgress()
    refused = []
    for path in job.waiting_files():
        entry = state.get(path.name, {})
        if not entry.get("batch_id"):
            continue
        batch = client.batches.retrieve(entry["batch_id"])
        entry["status"] = batch.status
        progress.states[batch.status] = progress.states.get(batch.status, 0) + 1
        counts = getattr(batch, "request_counts", None)
        if counts is not None:
            progress.total += int(counts.total or 0)
            progress.done += int(counts.completed or 0) + int(counts.failed or 0)
        if batch.status not in FINAL_STATES:
            continue
        _download(client, batch.error_file_id, job.errors_path(path))
        _download(client, batch.output_file_id, job.results_path(path))  # last: marks the file answered
        progress.downloaded.append(path)
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            entry["errors"] = [str(getattr(e, "message", e)) for e in errors][:5]
            refused.append(f"{path.name} ({batch.id}): {'; '.join(entry['errors']) or 'no reason given'}")
        job.save_state(state)
    if state:
        job.save_state(state)
    if refused:
        raise BackendError(
            f"the Batch API refused {', '.join(refused)}; fix that, then rerun (the requests are written again)",
            resumable=False,
        )
    return progress


def wait_for_batches(job: BatchJob, client: Any, poll_s: float = 60.0, progress: bool = True) -> None:
    """Poll every ``poll_s`` seconds until every submitted file of the job has results (with a progress line)."""
    with tqdm(desc="batch requests", unit=" requests", disable=not progress, dynamic_ncols=True) as bar:
        while True:
            status = collect_finished(job, client)
            bar.total = status.total or bar.total
            bar.n = status.done
            bar.set_postfix_str(status.line() or "all collected")
            if not any(job.state().get(p.name, {}).get("batch_id") for p in job.waiting_files()):
                return
            time.sleep(poll_s)


def run_batch_job(
    one_pass: Callable[[], Any],
    job: BatchJob,
    client: Any,
    wait: bool = True,
    poll_s: float = 60.0,
    max_rounds: int = 10,
    progress: bool = True,
    report: Callable[[Any], None] | None = None,
) -> Any:
    """Collect, take in, write and submit until every caption is in the sidecar.

    Each round downloads what finished, runs ``one_pass``
    (:meth:`~aras400k.captioning.Captioner.caption_batch_file`) and submits the new files.

    Args:
        one_pass: Runs one pass and returns its report (with ``batch``).
        job: The job.
        client: An ``openai.OpenAI`` client.
        wait: Wait for the batches and go on until done; ``False`` submits and returns.
        poll_s: Seconds between polls.
        max_rounds: Most passes (regenerations need one each).
        progress: Show a progress line while waiting.
        report: Called with each pass's report (the CLI prints its summary).

    Returns:
        The last pass's report.
    """
    result = None
    for _ in range(max(max_rounds, 1)):
        collect_finished(job, client)
        result = one_pass()
        if report is not None:
            report(result)
        if result.batch.complete:
            break
        submit_waiting(job, client)
        if not wait:
            break
        wait_for_batches(job, client, poll_s, progress)
    return result
