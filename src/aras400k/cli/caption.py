r"""``aras-caption``: caption a shard set into a resumable JSONL sidecar (and new shards).

Examples::

    aras-caption --input data/demo/train --out captions/train.text.jsonl
    aras-caption --config configs/caption_template.yaml --limit 100
    aras-caption --input DIR --out c.jsonl --mode vision --backend transformers \
        --transformers.model_path /models/Qwen3-VL-8B-Instruct --transformers.dtype bfloat16
    aras-caption --input DIR --out c.jsonl --mode hybrid --backend openai \
        --openai.model Qwen/Qwen3-VL-8B-Instruct \
        --openai.base_urls '[http://gpu1:8000/v1, http://gpu2:8000/v1]' --batch_size 64

Rerunning the same command after a kill resumes: captions already in ``--out`` are
kept and only the missing ones are made. ``--shards_out DIR`` also writes a new shard
set whose samples carry ``captions.json``.

A run splits over workers (e.g. a cluster job array): ``--shard_index K --num_shards
N`` captions the K-th of N contiguous sample ranges into ``OUT.part-K-of-N.jsonl``
(each worker resumes on its own); then the same command with ``--merge true`` instead
of ``--shard_index`` joins the parts into ``--out`` (and writes ``--shards_out``),
reusing every worker caption and asking the backend only for captions that repeat one
of another part, so ``--out`` equals a one-worker run's sidecar.

Batch files (``--backend openai --batch_file.action write|submit|run``) write the
requests as OpenAI Batch-format JSONL in ``OUT.batch/`` instead of sending them; run
them with ``vllm run_batch`` (or let ``submit``/``run`` hand them to the Batch API with
the ``openai`` SDK) and rerun to take the answers in, until every caption is there.

The options of a backend are nested under its name (``--transformers.*``,
``--openai.*``, ``--template.*``), also in the YAML config.

One run writes a sidecar at a time: a run holds ``OUT.jsonl.lock`` (beside ``--out``,
or the worker's part) until it ends, and a second run on the same file stops at once
naming the first one's PID (exit status 75). A sidecar two runs wrote at once (before
this lock) holds captions twice and every resume refuses it; ``aras-caption --repair
true --out OUT.jsonl`` keeps the first caption of each and backs the file up first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from aras400k.cli import add_worker_arguments, fail, import_class, run_command
from aras400k.data.remote import is_url

if TYPE_CHECKING:
    from aras400k.captioning import Captioner

__all__ = ["build_parser", "captioner_class", "main"]

PROGRAM = "aras-caption"
_SPLITS = ("train", "val", "test")


def build_parser() -> ArgumentParser:
    """Build the ``aras-caption`` parser.

    Returns:
        The parser.
    """
    parser = ArgumentParser(
        prog=PROGRAM,
        description="Caption a shard set (text, vision or hybrid) into a resumable JSONL sidecar.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument("--input", type=str, default="data/demo/train", help="shard set to caption")
    parser.add_argument("--out", type=str, required=True, help="JSONL caption sidecar (created or resumed)")
    parser.add_argument("--shards_out", type=str | None, default=None, help="also write a new shard set here")
    parser.add_argument("--mode", type=Literal["text", "vision", "hybrid"], default="text", help="captioning mode")
    parser.add_argument(
        "--captioner",
        type=str,
        default="aras400k.captioning.Captioner",
        help="Captioner class (a subclass with your own prompt hooks, as module.Class; its module must be importable)",
    )
    parser.add_argument(
        "--backend", type=Literal["template", "transformers", "openai"], default="template", help="caption backend"
    )
    parser.add_argument("--limit", type=int | None, default=None, help="caption only the first N samples")
    parser.add_argument("--captions_per_image", type=int, default=5, help="captions per sample (the paper: 5)")
    parser.add_argument("--batch_size", type=int, default=16, help="requests sent to the backend at once")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top_p", type=float, default=0.9, help="nucleus-sampling mass")
    parser.add_argument("--max_new_tokens", type=int, default=96, help="longest caption in tokens")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the captions")
    parser.add_argument("--system_prompt", type=str | None, default=None, help="system prompt (default: built in)")
    parser.add_argument(
        "--user_prompt",
        type=str | None,
        default=None,
        help="user prompt template with {composition}, {dominant}, {key} (default: the mode's)",
    )
    parser.add_argument(
        "--dedupe",
        type=Literal["off", "exact", "normalized"],
        default="normalized",
        help="regenerate captions repeating an earlier one (normalized: ignoring case, spaces, punctuation)",
    )
    parser.add_argument("--max_retries", type=int, default=3, help="regenerations of a repeated caption")
    parser.add_argument("--overwrite", type=bool, default=False, help="restart the sidecar; replace --shards_out")
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
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar with captions/s")
    parser.add_argument(
        "--demo",
        type=bool,
        default=True,
        help="when --input is missing and ends in train/val/test, build the demo set in its parent first",
    )

    parser.add_argument("--template.spatial_hints", type=bool, default=True, help="say where classes lie")
    parser.add_argument("--template.image_tones", type=bool, default=True, help="describe brightness and colour")
    parser.add_argument("--template.max_classes", type=int, default=5, help="classes named with a share or place")
    parser.add_argument(
        "--template.min_named_share", type=float, default=0.03, help="smaller classes are only summed up"
    )

    parser.add_argument("--transformers.model_path", type=str | None, default=None, help="local model folder")
    parser.add_argument("--transformers.model_name", type=str | None, default=None, help="name in the sidecar")
    parser.add_argument("--transformers.dtype", type=Literal["auto", "float32", "float16", "bfloat16"], default="auto")
    parser.add_argument("--transformers.device", type=str, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--transformers.attn_implementation",
        type=Literal["eager", "sdpa", "flash_attention_2"] | None,
        default=None,
    )
    parser.add_argument("--transformers.trust_remote_code", type=bool, default=False, help="run the folder's code")
    parser.add_argument(
        "--transformers.chat_template_kwargs",
        type=dict[str, Any] | None,
        default=None,
        help="chat template variables (default: {enable_thinking: false})",
    )
    parser.add_argument("--transformers.num_threads", type=int | None, default=None, help="torch CPU threads")

    parser.add_argument("--openai.model", type=str | None, default=None, help="model name served")
    parser.add_argument(
        "--openai.base_urls", type=list[str] | None, default=None, help="API roots, e.g. [http://host:8000/v1]"
    )
    parser.add_argument("--openai.api_key_env", type=str | None, default="OPENAI_API_KEY", help="env var of the key")
    parser.add_argument("--openai.max_concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--openai.timeout_s", type=float, default=120.0, help="seconds per response")
    parser.add_argument("--openai.max_retries", type=int, default=5, help="retries on 429/5xx/timeouts")
    parser.add_argument("--openai.backoff_s", type=float, default=1.0, help="first retry delay (doubles)")
    parser.add_argument("--openai.max_backoff_s", type=float, default=30.0, help="longest retry delay")
    parser.add_argument("--openai.image_format", type=Literal["png", "jpeg"], default="png")
    parser.add_argument("--openai.extra_body", type=dict[str, Any] | None, default=None, help="extra request fields")
    parser.add_argument("--openai.send_seed", type=bool, default=True, help="send each caption's seed")

    parser.add_argument(
        "--batch_file.action",
        type=Literal["off", "write", "submit", "run"],
        default="off",
        help="batch-file captioning (needs --backend openai): write = take in results, write request files "
        "(for vllm run_batch); submit = also upload them to the Batch API; run = submit and wait until done",
    )
    parser.add_argument("--batch_file.dir", type=str | None, default=None, help="job folder (default: OUT.batch)")
    parser.add_argument("--batch_file.max_requests", type=int, default=50_000, help="requests per file")
    parser.add_argument("--batch_file.max_bytes", type=int, default=200_000_000, help="bytes per request file")
    parser.add_argument("--batch_file.base_url", type=str | None, default=None, help="Batch API root (default: OpenAI)")
    parser.add_argument("--batch_file.poll_s", type=float, default=60.0, help="seconds between polls (run)")
    parser.add_argument("--batch_file.max_rounds", type=int, default=10, help="passes of run (one per regeneration)")
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
    if is_url(cfg.input):
        return
    path = Path(cfg.input)
    if path.exists() or not cfg.demo or path.name not in _SPLITS:
        return
    from aras400k.data.demo import demo_is_ready, make_demo

    if not demo_is_ready(path.parent):
        if path.parent.exists() and any(path.parent.iterdir()):
            raise FileNotFoundError(f"{path} does not exist (and {path.parent} is not empty, so no demo set is built)")
        print(f"{PROGRAM}: building the procedural demo set in {path.parent} (first use only)", file=sys.stderr)
        make_demo(path.parent, progress=cfg.progress)


def captioner_class(path: str) -> type[Captioner]:
    """Import a :class:`~aras400k.captioning.Captioner` (sub)class named ``module.Class``.

    Args:
        path: Dotted path, e.g. ``aras400k.captioning.Captioner`` or ``my_prompts.LocatedCaptioner``.

    Returns:
        The class.

    Raises:
        ValueError: If the path cannot be imported or names something that is not a Captioner class.
    """
    from aras400k.captioning import Captioner

    found: type[Captioner] = import_class(path, Captioner, "--captioner")
    return found


def _repair(cfg: Namespace) -> int:
    from aras400k.captioning import repair_sidecar
    from aras400k.captioning.parts import part_sidecar_path

    if cfg.merge:
        raise ValueError("--repair true mends one sidecar; give it without --merge")
    path = part_sidecar_path(cfg.out, cfg.shard_index, cfg.num_shards) if cfg.num_shards > 1 else Path(cfg.out)
    print(repair_sidecar(path).summary())
    return 0


def _backend_failure(cfg: Namespace, err: Exception, written: int) -> str:
    """The one-line message of a failed backend: what went wrong, what was kept, whether a rerun helps."""
    from aras400k.captioning.parts import part_sidecar_path

    kept = cfg.out
    if cfg.num_shards > 1 and not cfg.merge:
        kept = part_sidecar_path(cfg.out, cfg.shard_index, cfg.num_shards)
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
        return captioner.caption_batch_file(
            cfg.input,
            cfg.out,
            job.folder,
            backend.request_body,
            limit=cfg.limit,
            overwrite=cfg.overwrite,
            max_requests=options.max_requests,
            max_bytes=options.max_bytes,
        )

    if options.action == "write":
        report = one_pass()
        print(report.summary())
    else:
        from aras400k.captioning.batch_api import openai_client, run_batch_job

        client = openai_client(cfg.openai.api_key_env, options.base_url)
        report = run_batch_job(
            one_pass,
            job,
            client,
            wait=options.action == "run",
            poll_s=options.poll_s,
            max_rounds=options.max_rounds,
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
    from aras400k.captioning import BackendError, build_backend

    if cfg.repair:
        return _repair(cfg)
    _ensure_input(cfg)
    captioner_type = captioner_class(cfg.captioner)
    backend = build_backend(cfg.backend, _backend_options(cfg))
    captioner: Captioner | None = None
    try:
        captioner = captioner_type(
            mode=cfg.mode,
            backend=backend,
            system_prompt=cfg.system_prompt,
            user_prompt=cfg.user_prompt,
            captions_per_image=cfg.captions_per_image,
            batch_size=cfg.batch_size,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
            dedupe=cfg.dedupe,
            max_retries=cfg.max_retries,
            progress=cfg.progress,
        )
        if cfg.batch_file.action != "off":
            return _run_batch_file(cfg, captioner, backend)
        if cfg.merge:
            if cfg.shard_index != 0:
                raise ValueError("--merge true joins all the workers' parts; give it without --shard_index")
            report = captioner.merge_parts(
                cfg.input, cfg.out, cfg.num_shards, shards_out=cfg.shards_out, limit=cfg.limit, overwrite=cfg.overwrite
            )
        else:
            report = captioner.caption_shards(
                cfg.input,
                cfg.out,
                shards_out=cfg.shards_out,
                limit=cfg.limit,
                overwrite=cfg.overwrite,
                shard_index=cfg.shard_index,
                num_shards=cfg.num_shards,
            )
    except BackendError as err:
        fail(PROGRAM, _backend_failure(cfg, err, captioner.stats.captions if captioner else 0), status=1)
    finally:
        backend.close()
    print(report.summary())
    return 0


def main(args: list[str] | None = None) -> int:
    """Run ``aras-caption``.

    Args:
        args: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the backend fails, 2 on bad input, 75 when
        another run is writing the sidecar.
    """
    cfg = build_parser().parse_args(args)
    return run_command(PROGRAM, lambda: _run(cfg))


if __name__ == "__main__":
    sys.exit(main())
