"""Run the stages in order: skip finished ones, resume an interrupted one, record times.

The rules are those of ``docs/pipeline.md`` ("Resuming and redoing"). Each command runs
in this process. One pipeline runs in a run folder at a time: it holds the lock
``RUN_DIR.lock`` beside the folder (:mod:`aras400k.locking`), and a second one stops at
once naming its PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from aras400k.data.shards import MANIFEST_NAME, ManifestError, read_manifest
from aras400k.files import write_json_atomic
from aras400k.locking import exclusive_lock
from aras400k.pipeline.config import STAGE_NAMES, PipelineConfig
from aras400k.pipeline.index import write_index
from aras400k.pipeline.records import PipelineError, PipelineResult, StageRecord, duration, read_record
from aras400k.pipeline.stages import STAGES, Command, RunLayout, Stage
from aras400k.pipeline.validate import CLI_MODULES, validate_commands

__all__ = ["PipelineError", "PipelineResult", "StageRecord", "plan_stages", "run_pipeline"]


def _programs() -> dict[str, Callable[[list[str]], Any]]:
    """Console scripts by name, imported when first needed."""
    from aras400k.cli.main import cli, fit_main

    def aras(args: list[str]) -> None:
        cli(args)

    programs = {name: importlib.import_module(f"aras400k.cli.{module}").main for name, module in CLI_MODULES.items()}
    return {"aras": aras, "aras-fit": fit_main, **programs}


def plan_stages(
    config: PipelineConfig, from_stage: str | None = None, only: Sequence[str] | None = None
) -> tuple[list[Stage], set[str]]:
    """Every stage in order, and the names forced to run from scratch (``from_stage`` and all later ones, or ``only``).

    Raises:
        ValueError: On an unknown stage name, or both ``from_stage`` and ``only``.
    """
    for name in [*(only or []), *([from_stage] if from_stage else [])]:
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGE_NAMES)}")
    if from_stage and only:
        raise ValueError("pass either --from or --only, not both")
    layout = RunLayout(config)
    stages = [make(layout) for make in STAGES]
    forced: set[str] = set(only or [])
    if from_stage:
        forced = set(STAGE_NAMES[STAGE_NAMES.index(from_stage) :])
    return stages, forced


def _fingerprint(commands: Sequence[Command], stage: Stage) -> str:
    """Hash of the command lines and the contents of the config files they read.

    ``aras-fit``'s ``--ckpt_path last.ckpt`` (resuming) is left out: it depends on the state, not the settings.
    """
    digest = hashlib.sha256()
    for command in commands:
        args = list(command.args)
        if command.program == "aras-fit" and "--ckpt_path" in args:
            i = args.index("--ckpt_path")
            del args[i : i + 2]
        digest.update(str(Command(command.program, tuple(args))).encode())
        for arg in args:
            if arg.endswith(".yaml") and Path(arg).is_file():
                digest.update(Path(arg).read_text().encode())
    digest.update(stage.name.encode())
    return digest.hexdigest()


def _output_ok(path: Path) -> bool:
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        try:
            manifest = read_manifest(path)
        except ManifestError:
            return False
        return all((path / str(shard["name"])).is_file() for shard in manifest["shards"])
    return path.exists()


def _record_path(layout: RunLayout, name: str) -> Path:
    return layout.state / f"{name}.json"


def _finished(stage: Stage, fingerprint: str) -> dict[str, Any] | None:
    record = read_record(stage.layout, stage.name)
    if record is None or record.get("fingerprint") != fingerprint or not all(map(_output_ok, stage.outputs())):
        return None
    return record


@contextlib.contextmanager
def _output_to(log: IO[bytes] | None) -> Iterator[None]:
    """Send this process's stdout and stderr (Python and C level) to ``log``; ``None`` keeps them."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, kept in zip((1, 2), saved, strict=True):
            os.dup2(kept, fd)
            os.close(kept)


def _run_command(command: Command, programs: dict[str, Callable[[list[str]], Any]]) -> None:
    """Run one command in-process; a non-zero exit or an exception raises."""
    try:
        status = programs[command.program](list(command.args))
    except SystemExit as stop:
        status = stop.code
    if status not in (None, 0):
        raise PipelineError(f"`{command}` exited with status {status}")


def _console(line: str, stream: IO[str]) -> None:
    print(line, file=stream, flush=True)


def _console_warnings(stage: Stage, stream: IO[str]) -> None:
    """One indented line per reason not to trust the stage's result."""
    for warning in stage.warnings():
        _console(f"      WARNING ({stage.name}): {warning}", stream)


def run_pipeline(
    config: PipelineConfig,
    from_stage: str | None = None,
    only: Sequence[str] | None = None,
    dry_run: bool = False,
    verbose: bool = False,
    console: IO[str] | None = None,
) -> PipelineResult:
    """Run the paper's stages (see the module docstring); return the stage records and the index path.

    Args:
        config: The pipeline config.
        from_stage: Rerun this stage and all later ones from scratch.
        only: Run only these stages, from scratch.
        dry_run: Write the stage configs, check each with its command's parser, print
            the commands; run nothing.
        verbose: Show the commands' own output instead of writing it to the stage logs.
        console: Where the progress lines go (default: standard output).

    Raises:
        ValueError: On bad stage names.
        PipelineError: When a stage's command fails (its log is named).
        LockedError: If another pipeline is running in the same run folder (the lock
            ``RUN_DIR.lock`` beside it is held for the whole call, dry runs included).
    """
    stream = console or sys.stdout
    stages, forced = plan_stages(config, from_stage, only)
    layout = stages[0].layout
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(layout.run_dir):
        return _run_stages(stages, forced, only, dry_run, verbose, stream)


def _run_stages(
    stages: list[Stage],
    forced: set[str],
    only: Sequence[str] | None,
    dry_run: bool,
    verbose: bool,
    stream: IO[str],
) -> PipelineResult:
    """:func:`run_pipeline` once the run folder's lock is held."""
    layout = stages[0].layout
    config = layout.config
    if dry_run:
        return PipelineResult(validate_commands(stages, stream), None)
    programs = _programs()
    records: list[StageRecord] = []
    rerun_rest = False
    width = len(str(len(stages)))
    for number, stage in enumerate(stages, start=1):
        tag = f"[{number:>{width}}/{len(stages)}] {stage.name:<12}"
        if stage.name in config.skip or (only and stage.name not in only):
            records.append(StageRecord(stage.name, "not run"))
            _console(f"{tag} not run ({'skip' if stage.name in config.skip else 'not in --only'})", stream)
            continue
        commands = stage.commands()
        fingerprint = _fingerprint(commands, stage)
        fresh = stage.name in forced or rerun_rest
        previous = None if fresh else _finished(stage, fingerprint)
        if previous is not None:
            seconds = float(previous.get("seconds", 0.0))
            records.append(StageRecord(stage.name, "skipped", seconds, [str(c) for c in commands]))
            _console(f"{tag} up to date ({stage.summary}; took {duration(seconds)})", stream)
            _console_warnings(stage, stream)
            continue
        if stage.name in forced or read_record(layout, stage.name) is not None:
            # Forced or redone: from scratch; one without a record was interrupted and resumes.
            _record_path(layout, stage.name).unlink(missing_ok=True)
            for path in stage.reset():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            commands = stage.commands()
        rerun_rest = True
        records.append(_run_stage(stage, commands, fingerprint, programs, tag, verbose, stream))
        write_index(layout, stages, records)
    index = write_index(layout, stages, records)
    _console(f"index: {index}", stream)
    return PipelineResult(records, index)


def _run_stage(
    stage: Stage,
    commands: list[Command],
    fingerprint: str,
    programs: dict[str, Callable[[list[str]], Any]],
    tag: str,
    verbose: bool,
    stream: IO[str],
) -> StageRecord:
    layout = stage.layout
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.state.mkdir(parents=True, exist_ok=True)
    log_path = layout.logs / f"{stage.name}.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    start = time.perf_counter()
    failed: BaseException | None = None
    print(f"{tag} {stage.summary} ...", end="", file=stream, flush=True)
    with open(log_path, "ab") as log, _output_to(None if verbose else log):
        try:
            for command in commands:
                print(f"\n$ {command}", flush=True)
                _run_command(command, programs)
        except BaseException as err:
            print(traceback.format_exc(), flush=True)
            failed = err
    seconds = time.perf_counter() - start
    if failed is not None:
        _console(f" FAILED after {duration(seconds)} (log: {log_path})", stream)
        if isinstance(failed, KeyboardInterrupt):
            raise failed
        reason = _failure_reason(log_path, log_start)
        raise PipelineError(
            f"stage {stage.name} failed: {failed}{f': {reason}' if reason else ''} (full output in {log_path})"
        ) from failed
    missing = [str(p) for p in stage.outputs() if not _output_ok(p)]
    if missing:
        _console(f" FAILED: no {', '.join(missing)} (log: {log_path})", stream)
        raise PipelineError(f"stage {stage.name} finished without its outputs {missing} (see {log_path})")
    record = {
        "stage": stage.name,
        "fingerprint": fingerprint,
        "seconds": round(seconds, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commands": [str(c) for c in commands],
        "work": _work(stage),
    }
    write_json_atomic(_record_path(layout, stage.name), record)
    _console(f" done in {duration(seconds)}", stream)
    _console_warnings(stage, stream)
    return StageRecord(stage.name, "ran", seconds, [str(c) for c in commands])


def _failure_reason(log_path: Path, offset: int) -> str | None:
    """The last error line a failed command wrote to its log (from ``offset`` on), if any."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    ours = ("Traceback", "File ", "raise ", "aras400k.pipeline.runner.PipelineError", "$ ")
    candidates = [
        line.strip()
        for line in lines
        if "error" in line.lower() and not line.strip().startswith(ours) and "PipelineError" not in line
    ]
    return candidates[-1][:300] if candidates else None


def _work(stage: Stage) -> dict[str, int]:
    """Amounts of work a stage did, for per-sample costs: samples written, captions, ..."""
    work: dict[str, int] = {}
    for path in stage.outputs():
        if path.is_dir() and (path / MANIFEST_NAME).is_file():
            work[path.name] = int(read_manifest(path)["num_samples"])
        elif path.suffix == ".jsonl" and path.is_file():
            with open(path, "rb") as handle:
                work[path.name] = sum(1 for _ in handle)
    return work
