"""Split captioning runs: the worker sidecars, their run records, and what a merge reuses from them.

Worker ``K`` of ``N`` (``aras-caption --shard_index K --num_shards N``) captions the
``K``-th of ``N`` contiguous sample ranges into ``OUT.part-K-of-N.jsonl``, next to a run
record ``OUT.part-K-of-N.run.json`` of everything its captions depend on. Its records
carry an extra ``tries``: the ``{seed, text}`` of the tries it rejected as repeats.

The merge (:meth:`~aras400k.captioning.Captioner.merge_parts`) replays the single run
with every answer the workers got (:func:`read_part_answers`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aras400k.captioning.sidecar import read_caption_records
from aras400k.data.merge import worker_name
from aras400k.data.shards import write_json_atomic
from aras400k.synthesis.jobs import check_settings

__all__ = [
    "ATTEMPTS_FIELD",
    "RUNS_FIELD",
    "TRIES_FIELD",
    "append_run_log",
    "check_part_run",
    "part_run_path",
    "part_sidecar_path",
    "read_part_answers",
    "run_record_path",
]

#: Extra record field of worker sidecars: the rejected tries of that caption.
TRIES_FIELD = "tries"
#: Record field of every sidecar: how many tries the caption took (1: the first was kept).
ATTEMPTS_FIELD = "attempts"
#: Field of a run record (``OUT.run.json``) logging each run: counts, retries, outcome.
RUNS_FIELD = "runs"
_RUN_FORMAT = 1


def part_sidecar_path(out: str | Path, shard_index: int, num_shards: int) -> Path:
    """The sidecar of worker ``shard_index`` of a run writing ``out``: ``caps.jsonl`` -> ``caps.part-K-of-N.jsonl``.

    Raises:
        ValueError: On an invalid ``shard_index``/``num_shards`` pair.
    """
    out = Path(out)
    return out.with_name(f"{out.stem}.{worker_name(shard_index, num_shards)}{out.suffix}")


def part_run_path(out: str | Path, shard_index: int, num_shards: int) -> Path:
    """The run record of worker ``shard_index`` of a run writing ``out`` (``caps.part-K-of-N.run.json``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{worker_name(shard_index, num_shards)}.run.json")


def check_part_run(path: Path, record: Mapping[str, Any], overwrite: bool) -> None:
    """Write a worker's run ``record`` (all its captions depend on) to ``path``, or check the one there matches.

    A resumed worker finds its own; ``overwrite`` replaces one of other settings (the part starts afresh).

    Raises:
        ValueError: If the file holds other settings and ``overwrite`` is off.
    """
    previous = _read_run(path) if path.is_file() else None
    runs = _read_runs(path) if previous is not None else []
    if previous is not None and not overwrite:
        check_settings(
            previous,
            record,
            f"{path} records a worker begun with other settings",
            "rerun it with the same options to resume, or pass overwrite=True (--overwrite true) to start the part "
            "afresh",
        )
    write_json_atomic(path, {"format": _RUN_FORMAT, **record, RUNS_FIELD: runs})


def run_record_path(sidecar: str | Path) -> Path:
    """The run record next to a sidecar: ``caps.jsonl`` -> ``caps.run.json`` (for a part, :func:`part_run_path`)."""
    sidecar = Path(sidecar)
    return sidecar.with_name(f"{sidecar.stem}.run.json")


def append_run_log(sidecar: str | Path, entry: Mapping[str, Any]) -> Path:
    """Append a run's ``entry`` (counts, retries, timeouts, outcome) to the sidecar's run record; return its path.

    The record (:func:`run_record_path`) keeps every run's entry under ``runs``; a
    worker's settings stay as :func:`check_part_run` wrote them.
    """
    path = run_record_path(sidecar)
    record = _json_object(path)  # a damaged log is started afresh rather than failing a finished run
    if record is None:
        record = {"format": _RUN_FORMAT}
    runs = record.get(RUNS_FIELD)
    record[RUNS_FIELD] = [*(runs if isinstance(runs, list) else []), dict(entry)]
    write_json_atomic(path, record)
    return path


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when it is missing, unreadable or no object."""
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) else None


def _read_runs(path: Path) -> list[Any]:
    runs = (_json_object(path) or {}).get(RUNS_FIELD)
    return runs if isinstance(runs, list) else []


def _read_run(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not a readable worker run record ({err}); delete it to start the part afresh"
        ) from err
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a worker run record")
    record.pop("format", None)
    record.pop(RUNS_FIELD, None)  # the log of runs is no setting
    return record


def read_part_answers(
    out: str | Path, num_shards: int, record: Mapping[str, Any]
) -> tuple[dict[tuple[str, int, int], str], list[Path]]:
    """Read the texts the ``num_shards`` workers writing parts of ``out`` got, and the part sidecars read.

    Returns ``{(key, index, seed): text}`` of every caption and rejected try of every part;
    each part must have run with the merge's ``record`` (``shard_index`` aside).

    Raises:
        FileNotFoundError: If a part's sidecar or run record is missing (the message lists them).
        ValueError: If a part ran with other settings or its sidecar is malformed.
    """
    sidecars = [part_sidecar_path(out, k, num_shards) for k in range(num_shards)]
    runs = [part_run_path(out, k, num_shards) for k in range(num_shards)]
    missing = [str(p) for pair in zip(sidecars, runs, strict=True) for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"worker parts are missing: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}; "
            "run every worker (--shard_index K) before merging"
        )
    answers: dict[tuple[str, int, int], str] = {}
    for k, (sidecar, run) in enumerate(zip(sidecars, runs, strict=True)):
        check_settings(
            _read_run(run),
            {**record, "shard_index": k},
            f"{sidecar} was made with other settings than this merge",
            "merge with the options the workers ran with",
        )
        for item in read_caption_records(sidecar):
            answers[(item["key"], item["index"], item["seed"])] = item["text"]
            for attempt in item.get(TRIES_FIELD) or ():
                answers[(item["key"], item["index"], int(attempt["seed"]))] = str(attempt["text"])
    return answers, sidecars
