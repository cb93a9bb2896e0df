r"""``aras-caption``: caption a shard set into a resumable JSONL sidecar (and new shards).

Examples::

    aras-caption --input data/demo/train --out captions/train.text.jsonl
    aras-caption --config configs/caption_template.yaml --limit 100
    aras-caption --input DIR --out c.jsonl --mode vision --backend transformers \
        --transformers.model_path /models/Qwen3-VL-8B-Instruct --transformers.dtype bfloat16
    aras-caption --input DIR --out c.jsonl --mode hybrid --backend openai \
        --openai.model Qwen/Qwen3-VL-8B-Instruct \
        --openai.base_urls '[http://gpu1:8000/v1, http://gpu2:8000/v1]' --batch_size 64

Rerunning the same command after a kill resumes. Batch files (``--batch_file.action``),
the sidecar lock and ``--repair``: see ``docs/captioning.md``; workers (``--shard_index``
/ ``--num_shards``, ``--merge``): ``docs/scaling.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aras400k.cli import (
    add_worker_arguments,
    call_with,
    command_main,
    command_parser,
    fail,
    import_class,
    optional_argument,
)
from aras400k.data.remote import is_url

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

    from aras400k.captioning import Captioner

__all__ = ["build_parser", "captioner_class", "main"]

PROGRAM = "aras-caption"
_SPLITS = ("train", "val", "test")
#: Parameters of :class:`~aras400k.captioning.Captioner` that are not options (``--backend`` names the backend).
_CAPTIONER_SKIP = {"backend"}
#: Parameters of :meth:`Captioner.caption_batch_file` and :func:`run_batch_job` given by the command itself.
_BATCH_SKIP: set[str | int] = {
    "in_dir",
    "out",
    "folder",
    "body",
    "limit",
    "overwrite",
    "one_pass",
    "job",
    "client",
    "wait",
    "progress",
}


def build_parser() -> ArgumentParser:
    """The ``aras-caption`` parser; it raises ``argparse.ArgumentError`` instead of exiting on bad input.

    Its options are the parameters of :class:`~aras400k.captioning.Captioner`, of each
    backend's class, of ``Captioner.caption_batch_file`` and of ``run_batch_job``, with
    the defaults and help of their signatures and docstrings.
    """
    from aras400k.captioning import Captioner
    from aras400k.captioning.backends import BACKENDS, backend_class
    from aras400k.captioning.batch_api import run_batch_job

    parser = command_parser(PROGRAM, "Caption a shard set (text, vision or hybrid) into a resumable JSONL sidecar.")
    parser.add_argument("--input", type=str, default="data/demo/train", help="shard set to caption")
    parser.add_argument("--out", type=str, required=True, help="JSONL caption sidecar (created or resumed)")
    parser.add_argument("--shards_out", type=str | None, default=None, help="also write a new shard set here")
    parser.add_argument(
        "--captioner",
        type=str,
        default="aras400k.captioning.Captioner",
        help="Captioner class (a subclass with your own prompt hooks, as module.Class; its module must be importable)",
    )
    parser.add_argument("--backend", type=Literal[tuple(BACKENDS)], default="template", help="caption backend")
    parser.add_argument("--limit", type=int | None, default=None, help="caption only the first N samples")
    parser.add_argument("--overwrite", type=bool, default=False, help="restart the sidecar; replace --shards_out")
    parser.add_class_arguments(Captioner, as_group=False, skip=_CAPTIONER_SKIP)
    add_worker_arguments(parser, "each writes OUT.part-K-of-N.jsonl (join them with --merge true)")
    parser.add_argument(
        "--merge",
        type=bool,
        default=False,
        help="join the --num_shards worker sidecars into --out (same options as the workers, no --shard_index)",
    )
    parser.add_argument(
        "--repair",
        type=bool,
        default=False,
        help="only repair --out (or the worker's part): keep the first caption of each (key, index), "
        "backing the file up as OUT.bak first",
    )
    parser.add_argument(
        "--demo",
        type=bool,
        default=True,
        help="when --input is missing and ends in train/val/test, build the demo set in its parent first",
    )
    for name in BACKENDS:
        parser.add_class_arguments(backend_class(name), name)
    optional_argument(parser, "transformers.model_path", "with --backend transformers")
    optional_argument(parser, "openai.model", "with --backend openai")

    parser.add_method_arguments(Captioner, "caption_batch_file", "batch_file", skip=_BATCH_SKIP)
    assert parser.groups is not None  # add_method_arguments made the group
    batch = parser.groups["batch_file"]
    batch.title = "batch-file captioning (--batch_file.action, needs --backend openai)"
    batch.add_argument(
        "--batch_file.action",
        type=Literal["off", "write", "submit", "run"],
        default="off",
        help="write = take in results, write request files (for vllm run_batch); submit = also upload them to the "
        "Batch API; run = submit and wait until done",
    )
    batch.add_argument("--batch_file.dir", type=str | None, default=None, help="job folder (default: OUT.batch)")
    batch.add_argument("--batch_file.base_url", type=str | None, default=None, help="Batch API root (default: OpenAI)")
    batch.add_function_arguments(run_batch_job, "batch_file", as_group=False, skip=_BATCH_SKIP | {"report"})
    return parser


def _backend_options(cfg: Namespace) -> dict[str, Any]:
    options = dict(vars(cfg[cfg.backend]))
    if cfg.backend == "transformers" and not options.get("model_path"):
        raise ValueError(
            "the transformers backend needs a local model folder: pass --transformers.model_path DIR "
            "(nothing is downloaded)"
        )
    if cfg.backend == "openai" and not options.get("model"):
        raise ValueError("the openai backend needs the served model name: pass --openai.model NAME")
    return options


def _ensure_input(cfg: Namespace) -> None:
    path = Path(cfg.input)
    if is_url(cfg.input) or path.exists() or not cfg.demo or path.name not in _SPLITS:
        return
    from aras400k.data.demo import demo_is_ready, make_demo

    if not demo_is_ready(path.parent):
        if path.parent.exists() and any(path.parent.iterdir()):
            raise FileNotFoundError(f"{path} does not exist (and {path.parent} is not empty, so no demo set is built)")
        print(f"{PROGRAM}: building the procedural demo set in {path.parent} (first use only)", file=sys.stderr)
        make_demo(path.parent, progress=cfg.progress)


def captioner_class(path: str) -> type[Captioner]:
    """Import the :class:`~aras400k.captioning.Captioner` (sub)class at ``path``, e.g. ``my_prompts.LocatedCaptioner``.

    Raises:
        ValueError: If the path cannot be imported or names something that is not a Captioner class.
    """
    from aras400k.captioning import Captioner

    found: type[Captioner] = import_class(path, Captioner, "--captioner")
    return found


def _sidecar(cfg: Namespace) -> str | Path:
    """The file this run writes: ``--out``, or a worker's part of it."""
    from aras400k.captioning.parts import part_sidecar_path

    if cfg.num_shards > 1 and not cfg.merge:
        return part_sidecar_path(cfg.out, cfg.shard_index, cfg.num_shards)
    return cfg.out


def _repair(cfg: Namespace) -> int:
    from aras400k.captioning import repair_sidecar

    if cfg.merge:
        raise ValueError("--repair true mends one sidecar; give it without --merge")
    print(repair_sidecar(Path(_sidecar(cfg))).summary())
    return 0


def _backend_failure(cfg: Namespace, err: Exception, written: int) -> str:
    """The one-line message of a failed backend: what went wrong, what was kept, whether a rerun helps."""
    kept = _sidecar(cfg)
    done = (
        f"the {written} captions of finished batches are kept in {kept}"
        if written
        else (f"nothing was written to {kept} by this run")
    )
    if getattr(err, "resumable", True):
        return f"{err} ({done}; rerun to resume)"
    return f"{err} ({done}; with that fixed, the same command goes on from there)"


def _run_batch_file(cfg: Namespace, captioner: Captioner, backend: Any) -> int:
    """``--batch_file.action write|submit|run``: one pass, or passes with the Batch API until done."""
    from aras400k.captioning.batchfile import BatchJob, batch_folder

    options = cfg.batch_file
    if cfg.backend != "openai":
        raise ValueError("--batch_file.action needs --backend openai (its options build the requests)")
    if cfg.merge or cfg.num_shards > 1:
        raise ValueError("--batch_file.action captions in one process; give it without --merge and --num_shards")
    job = BatchJob(options.dir or batch_folder(cfg.out))

    def one_pass() -> Any:
        return call_with(
            captioner.caption_batch_file, options, cfg, in_dir=cfg.input, folder=job.folder, body=backend.request_body
        )

    if options.action == "write":
        report = one_pass()
        print(report.summary())
    else:
        from aras400k.captioning.batch_api import openai_client, run_batch_job

        client = openai_client(cfg.openai.api_key_env, options.base_url)
        report = call_with(
            run_batch_job,
            options,
            one_pass=one_pass,
            job=job,
            client=client,
            wait=options.action == "run",
            progress=cfg.progress,
            report=lambda r: print(r.summary()),
        )
        if options.action == "run" and not report.batch.complete:
            fail(PROGRAM, f"{job.folder} is not done after {options.max_rounds} rounds; rerun to go on", status=1)
    if report.batch.complete and cfg.shards_out:
        from aras400k.captioning import write_captioned_shards

        write_captioned_shards(cfg.input, cfg.out, cfg.shards_out, limit=cfg.limit, overwrite=cfg.overwrite)
        print(f"wrote the shard set with captions.json to {cfg.shards_out}")
    return 0


def _run(cfg: Namespace) -> int:
    from aras400k.captioning import BackendError, Captioner, build_backend

    if cfg.repair:
        return _repair(cfg)
    _ensure_input(cfg)
    captioner_type = captioner_class(cfg.captioner)
    backend = build_backend(cfg.backend, _backend_options(cfg))
    captioner: Captioner | None = None
    try:
        captioner = call_with(captioner_type, cfg, like=Captioner, backend=backend)
        if cfg.batch_file.action != "off":
            return _run_batch_file(cfg, captioner, backend)
        if cfg.merge and cfg.shard_index != 0:
            raise ValueError("--merge true joins all the workers' parts; give it without --shard_index")
        run = captioner.merge_parts if cfg.merge else captioner.caption_shards
        report = call_with(run, cfg, in_dir=cfg.input)
    except BackendError as err:
        fail(PROGRAM, _backend_failure(cfg, err, captioner.stats.captions if captioner else 0), status=1)
    finally:
        backend.close()
    print(report.summary())
    return 0


main = command_main(
    PROGRAM,
    build_parser,
    _run,
    "0 on success, 1 when the backend fails, 2 on bad input (one line on stderr), 75 when another run is writing "
    "the sidecar",
)

if __name__ == "__main__":
    sys.exit(main())
