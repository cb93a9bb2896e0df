"""The :class:`Captioner`: text, vision and hybrid captions for images and shard sets.

Requests go to a backend in batches; texts are cleaned, repeats regenerated with another
seed, and a shard set's captions appended to a resumable JSONL sidecar. Each ``build_*``
hook, :meth:`Captioner.caption_seed`, :meth:`Captioner.postprocess` and
:meth:`Captioner.load_input` can be overridden alone. Split runs: :mod:`aras400k.captioning.parts`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aras400k.captioning.backends.base import BackendError, CaptionBackend
from aras400k.captioning.backends.template import TemplateBackend
from aras400k.captioning.batchfile import (
    MAX_BYTES,
    MAX_REQUESTS,
    BatchJob,
    BatchRound,
    RequestFileWriter,
    ResultsLookup,
)
from aras400k.captioning.parts import (
    ATTEMPTS_FIELD,
    TRIES_FIELD,
    append_run_log,
    check_part_run,
    part_run_path,
    part_sidecar_path,
    read_part_answers,
)
from aras400k.captioning.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_USER_PROMPTS,
    check_user_prompt,
    prompt_hash,
    render_prompt,
)
from aras400k.captioning.redundancy import DedupeLevel, DuplicateFilter
from aras400k.captioning.requests import CaptionRequest, Mode, SamplingSettings, check_mode
from aras400k.captioning.sidecar import CaptionSidecarWriter
from aras400k.data.composition import composition as mask_composition
from aras400k.data.merge import check_worker
from aras400k.data.remote import as_location
from aras400k.data.shards import (
    SampleError,
    decode_image,
    decode_mask,
    iter_raw_samples,
    list_shards,
    read_manifest,
)
from aras400k.data.sources import partition_range
from aras400k.errors import check_at_least
from aras400k.locking import RunLock, exclusive_lock

__all__ = ["CaptionInput", "CaptionReport", "CaptionStats", "Captioner"]

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
_LABEL = re.compile(r"^\W{0,2}caption\W{0,2}\s*:\s*", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}


@dataclass
class CaptionInput:
    """What one sample gives the captioner.

    Attributes:
        key: Sample key.
        image: ``(H, W, 3)`` uint8 RGB image (vision and hybrid modes).
        mask: ``(H, W)`` uint8 class-index mask, when known.
        composition: Class name -> fraction (text and hybrid modes; else from the mask).
        meta: The sample's ``meta.json``, for hooks that want more.
    """

    key: str
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    composition: Mapping[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaptionStats:
    """Counts of one captioning call.

    Attributes:
        captions: Captions produced.
        regenerated: Captions asked for again as repeats (or empty).
        duplicates: Repeats kept (retries ran out, or deduplication is off).
        empty: Captions kept although empty after post-processing.
        reused: Tries answered from the workers' sidecars (:meth:`Captioner.merge_parts`).
        asked: Tries sent to the backend.
        best_earlier: Captions out of retries that keep a better earlier try.
        retries: Requests the backend sent again (429, 5xx, timeouts, dropped connections).
        timeouts: Tries that timed out.
        failed_tries: Other failed tries by cause (``HTTP 503``, ``connection errors``, ...).
    """

    captions: int = 0
    regenerated: int = 0
    duplicates: int = 0
    empty: int = 0
    reused: int = 0
    asked: int = 0
    best_earlier: int = 0
    retries: int = 0
    timeouts: int = 0
    failed_tries: dict[str, int] = field(default_factory=dict)

    def server_trouble(self) -> str:
        """``N requests retried (T timeouts, HTTP 429 n, ...)``, or ``""`` when nothing failed."""
        if not (self.retries or self.timeouts or self.failed_tries):
            return ""
        causes = [f"{self.timeouts} timeouts"] if self.timeouts else []
        causes += [f"{cause} {count}" for cause, count in sorted(self.failed_tries.items())]
        return f"{self.retries} requests retried ({', '.join(causes)})"


@dataclass
class CaptionReport:
    """What :meth:`Captioner.caption_shards` did.

    Attributes:
        sidecar: The JSONL sidecar.
        shards_out: The new shard set, if one was written.
        mode: Captioning mode.
        model: Model name recorded with the captions.
        samples: Samples looked at (after ``limit``).
        resumed: Captions an earlier run left in the sidecar.
        stats: Counts of this run's captions.
        skipped: Keys of corrupt or incomplete samples.
        discarded_bytes: Bytes of a partial last line cut from the sidecar.
        seconds: Wall time of the captioning.
        worker: ``(shard_index, num_shards)`` of a worker of a split run, else ``None``.
        merged_parts: Worker sidecars a merge reused (0 when not merging).
        deferred_shards_out: The ``shards_out`` a worker left to the merge.
        batch: What a batch-file pass did (:meth:`Captioner.caption_batch_file`).
    """

    sidecar: Path
    shards_out: Path | None
    mode: str
    model: str
    samples: int = 0
    resumed: int = 0
    stats: CaptionStats = field(default_factory=CaptionStats)
    skipped: list[str] = field(default_factory=list)
    discarded_bytes: int = 0
    seconds: float = 0.0
    worker: tuple[int, int] | None = None
    merged_parts: int = 0
    deferred_shards_out: Path | None = None
    batch: BatchRound | None = None

    @property
    def captions_per_s(self) -> float:
        """Captions made by this run per second."""
        return self.stats.captions / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One paragraph for the terminal."""
        worker = f"worker {self.worker[0]} of {self.worker[1]}: " if self.worker else ""
        lines = [
            f"{worker}{self.stats.captions} new captions ({self.mode}, {self.model}) for {self.samples} samples "
            f"in {self.seconds:.1f} s ({self.captions_per_s:.1f} captions/s); {self.resumed} were already "
            f"in {self.sidecar}",
            f"regenerated {self.stats.regenerated} repeated or empty captions; "
            f"{self.stats.duplicates} repeats and {self.stats.empty} empty captions were kept after the retry limit",
        ]
        if self.stats.best_earlier:
            lines.append(f"kept the best of its tries for {self.stats.best_earlier} captions (not the last one)")
        if trouble := self.stats.server_trouble():
            lines.append(f"server trouble: {trouble}")
        if self.discarded_bytes:
            lines.append(f"cut a partial last line ({self.discarded_bytes} bytes) left by an interrupted run")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} samples: {', '.join(self.skipped[:5])}")
        if self.merged_parts:
            lines.append(
                f"merged {self.merged_parts} worker sidecars: {self.stats.reused} tries taken from them, "
                f"{self.stats.asked} asked of the backend (repeats across parts, or missing)"
            )
        if self.batch is not None:
            lines.append(self.batch.summary())
        if self.shards_out is not None:
            lines.append(f"wrote the shard set with captions.json to {self.shards_out}")
        if self.worker:
            later = f"; that also writes {self.deferred_shards_out}" if self.deferred_shards_out else ""
            lines.append(
                f"when all {self.worker[1]} workers are done, merge their sidecars: rerun with the same options, "
                f"--merge true and no --shard_index{later}"
            )
        return "\n".join(lines)


class Captioner:
    """Captions images from their pixels, their class composition, or both.

    Args:
        mode: ``text`` (from the composition), ``vision`` (from the image) or ``hybrid`` (both).
        backend: What writes the captions; ``None``: the model-free ``TemplateBackend``.
        system_prompt: System prompt; ``None``: ``DEFAULT_SYSTEM_PROMPT``.
        user_prompt: User prompt template (:mod:`~aras400k.captioning.prompts`); ``None``: the mode's.
        captions_per_image: Captions per sample (the paper: 5).
        batch_size: Requests sent to the backend at once.
        temperature: Sampling temperature (0 = greedy).
        top_p: Nucleus-sampling mass.
        max_new_tokens: Longest caption in tokens.
        seed: Base seed of every caption's seed (:meth:`caption_seed`).
        dedupe: Reject repeats: ``exact``, ``normalized`` (case, space, punctuation ignored) or ``off``.
        max_retries: Regenerations per caption when it repeats one (or is empty).
        progress: Show a progress bar with captions/s.

    Raises:
        ValueError: On an unknown mode or dedupe level, a prompt field its mode lacks, or bad counts.
    """

    def __init__(
        self,
        mode: Mode = "text",
        backend: CaptionBackend | None = None,
        system_prompt: str | None = None,
        user_prompt: str | None = None,
        captions_per_image: int = 5,
        batch_size: int = 16,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 96,
        seed: int = 0,
        dedupe: DedupeLevel = "normalized",
        max_retries: int = 3,
        progress: bool = True,
    ) -> None:
        self.mode: Mode = check_mode(mode)
        check_at_least("captions_per_image", captions_per_image, 1)
        check_at_least("batch_size", batch_size, 1)
        check_at_least("max_retries", max_retries, 0)
        DuplicateFilter(dedupe)  # validates the level
        self.backend = backend if backend is not None else TemplateBackend()
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.user_prompt = check_user_prompt(DEFAULT_USER_PROMPTS[mode] if user_prompt is None else user_prompt, mode)
        self.captions_per_image = captions_per_image
        self.batch_size = batch_size
        self.sampling = SamplingSettings(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        self.seed = seed
        self.dedupe: DedupeLevel = dedupe
        self.max_retries = max_retries
        self.progress = progress
        #: Counts of the latest :meth:`caption` or :meth:`caption_shards` call.
        self.stats = CaptionStats()
        #: Texts the workers of a split run got, ``(key, index, seed) -> text``, while merging.
        self._answers: dict[tuple[str, int, int], str] | None = None
        #: The batch job being taken in (:meth:`caption_batch_file`).
        self._results: ResultsLookup | None = None
        self._retry_base: dict[str, int] = {}

    @property
    def model_name(self) -> str:
        """The backend's model name, recorded with every caption."""
        return self.backend.model_name

    @property
    def prompt_hash(self) -> str:
        """Hash of the system and user prompt templates (the sidecar's ``prompt_hash``)."""
        return prompt_hash(self.system_prompt, self.user_prompt)

    def build_system_prompt(self, item: CaptionInput) -> str:
        """Render the system prompt for sample ``item`` (hook)."""
        return render_prompt(self.system_prompt, key=item.key, composition=item.composition)

    def build_user_prompt(self, item: CaptionInput) -> str:
        """Render the user prompt for sample ``item`` (hook)."""
        return render_prompt(self.user_prompt, key=item.key, composition=item.composition)

    def caption_seed(self, key: str, index: int, attempt: int) -> int:
        """Seed in ``0 .. 2**31 - 1`` of try ``attempt`` of caption ``index`` of sample ``key`` (hook).

        ``attempt`` is 0, then 1, 2, ... for regenerations; seeds are stable across runs and machines.
        """
        digest = hashlib.sha256(f"{self.seed}/{key}/{index}/{attempt}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def build_request(self, item: CaptionInput, index: int, attempt: int = 0) -> CaptionRequest:
        """Request of try ``attempt`` of caption ``index`` of ``item`` (hook; with the image unless in text mode)."""
        return CaptionRequest(
            system_prompt=self.build_system_prompt(item),
            user_prompt=self.build_user_prompt(item),
            image=item.image if self.mode != "text" else None,
            seed=self.caption_seed(item.key, index, attempt),
            sampling=self.sampling,
            mode=self.mode,
            key=item.key,
            index=index,
            composition=item.composition,
            mask=item.mask,
        )

    def postprocess(self, text: str, request: CaptionRequest) -> str:
        """Clean the raw backend ``text`` answering ``request`` (hook).

        Drops ``<think>`` blocks, a ``Caption:`` label and wrapping quotes; whitespace runs become one space.
        """
        text = _LABEL.sub("", _THINK.sub("", text).strip())
        if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
            text = text[1:-1]
        return " ".join(text.split())

    def load_input(self, raw: Mapping[str, Any]) -> CaptionInput:
        """Decode the members of a raw sample (``iter_raw_samples``) that the mode needs (hook; text skips the image).

        Raises:
            SampleError: If a needed member is missing or corrupt.
        """
        key = str(raw["__key__"])
        try:
            meta = json.loads(raw["meta.json"]) if "meta.json" in raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SampleError(f"sample {key}: meta.json is not valid JSON ({err})") from err
        composition = meta.get("composition") if isinstance(meta, dict) else None
        image = None
        if self.mode != "text":
            if "image.png" not in raw:
                raise SampleError(f"sample {key}: member image.png is missing")
            image = decode_image(raw["image.png"])
        mask = None
        if "mask.png" in raw and (self.mode != "text" or composition is None):
            mask = decode_mask(raw["mask.png"])
        return CaptionInput(key=key, image=image, mask=mask, composition=composition, meta=meta)

    def _complete(self, item: CaptionInput) -> CaptionInput:
        """Fill the composition from the mask and check the mode's inputs are there."""
        if item.composition is None and item.mask is not None:
            item.composition = mask_composition(item.mask)
        if self.mode in ("vision", "hybrid") and item.image is None:
            raise ValueError(f"sample {item.key}: {self.mode} mode needs an image")
        if self.mode in ("text", "hybrid") and item.composition is None:
            raise ValueError(f"sample {item.key}: {self.mode} mode needs a composition or a mask")
        return item

    def _generate(self, requests: Sequence[CaptionRequest], stats: CaptionStats) -> list[str | None]:
        """Cleaned texts of a batch: a worker's (merging), a batch job's (``None``: none yet) or the backend's."""
        if self._results is not None:
            found = self._results.lookup(list(requests))
            return [
                None if text is None else self.postprocess(text, r) for r, text in zip(requests, found, strict=True)
            ]
        answers = self._answers or {}
        known = [answers.get((r.key, r.index, r.seed)) for r in requests]
        asked = [r for r, text in zip(requests, known, strict=True) if text is None]
        raw = self.backend.generate(asked) if asked else []
        if len(raw) != len(asked):
            raise BackendError(f"backend {self.backend.name} returned {len(raw)} texts for {len(asked)} requests")
        stats.asked += len(asked)
        stats.reused += len(requests) - len(asked)
        fresh = iter([self.postprocess(text, request) for request, text in zip(asked, raw, strict=True)])
        return [text if text is not None else next(fresh) for text in known]

    def _run_jobs(
        self, jobs: Sequence[tuple[CaptionInput, int]], dupes: DuplicateFilter, stats: CaptionStats
    ) -> list[tuple[str, int, list[dict[str, Any]], int] | None]:
        """Caption (sample, index) jobs, regenerating repeats; the best try is kept when retries run out.

        Returns ``(text, seed, the other tries as {seed, text}, number of tries)`` per job,
        ``None`` for a job still waiting for a batch-file answer.
        """
        attempts = [0] * len(jobs)
        results: list[tuple[str, int, list[dict[str, Any]], int] | None] = [None] * len(jobs)
        tries: list[list[dict[str, Any]]] = [[] for _ in jobs]
        todo = list(range(len(jobs)))
        while todo:
            requests = [self.build_request(jobs[i][0], jobs[i][1], attempts[i]) for i in todo]
            texts = self._generate(requests, stats)
            retry = []
            for i, request, text in zip(todo, requests, texts, strict=True):
                if text is None:  # its answer is not in the batch job's results yet
                    continue
                tries[i].append({"seed": request.seed, "text": text})
                rejected = not text or dupes.rejects(text)
                if rejected and attempts[i] < self.max_retries:
                    attempts[i] += 1
                    retry.append(i)
                    continue
                stats.regenerated += attempts[i]
                best = self._best_try(tries[i], dupes) if rejected else len(tries[i]) - 1
                stats.best_earlier += best != len(tries[i]) - 1
                chosen = tries[i].pop(best)
                text = chosen["text"]
                if not text:
                    stats.empty += 1
                elif dupes.is_repeat(text):
                    stats.duplicates += 1
                dupes.add(text)
                stats.captions += 1
                results[i] = (text, chosen["seed"], tries[i], attempts[i] + 1)
            todo = retry
        return results

    @staticmethod
    def _best_try(tries: Sequence[Mapping[str, Any]], dupes: DuplicateFilter) -> int:
        """Index of the try to keep when all were rejected: non-empty, least repeated, earliest."""
        return min(range(len(tries)), key=lambda j: (not tries[j]["text"], dupes.count(tries[j]["text"]), j))

    @contextmanager
    def _bar(self, total: int) -> Iterator[tqdm]:
        """A progress bar showing regenerations, retries and timeouts live (also counted in :attr:`stats`)."""
        backend = self.backend
        self._retry_base = dict(backend.retry_counts())
        listener = backend.retry_listener
        with tqdm(
            total=total,
            unit=" captions",
            desc=f"captions ({self.mode}, {self.model_name})",
            disable=not self.progress,
            dynamic_ncols=True,
        ) as bar:
            backend.retry_listener = lambda: self._show_counts(bar)
            try:
                yield bar
            finally:
                backend.retry_listener = listener
                self._show_counts(bar)

    def _show_counts(self, bar: tqdm) -> None:
        """Copy the backend's retries since the bar opened into :attr:`stats` and onto the bar."""
        since = dict(Counter(self.backend.retry_counts()) - Counter(self._retry_base))  # only causes that grew
        stats = self.stats
        stats.retries, stats.timeouts = since.pop("retries", 0), since.pop("timeouts", 0)
        stats.failed_tries = since
        shown = {"regenerated": stats.regenerated, "retries": stats.retries, "timeouts": stats.timeouts}
        bar.set_postfix({name: n for name, n in shown.items() if n}, refresh=True)

    def caption(
        self,
        images: Sequence[np.ndarray] | None = None,
        compositions: Sequence[Mapping[str, float]] | None = None,
        masks: Sequence[np.ndarray] | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[list[str]]:
        """``captions_per_image`` captions per sample in memory, in input order (counts in :attr:`stats`).

        Give what the mode needs: ``(H, W, 3)`` uint8 ``images``, ``compositions`` (class name
        -> fraction), class-index ``masks`` (compositions when missing; the template's spatial
        hints); ``keys`` (default ``"0"``, ``"1"``, ...) seed the captions.

        Raises:
            ValueError: If the inputs differ in length or lack what the mode needs.
            BackendError: If the backend fails.
        """
        given = [seq for seq in (images, compositions, masks, keys) if seq is not None]
        lengths = {len(seq) for seq in given}
        if not given or len(lengths) != 1:
            raise ValueError(
                f"give images, compositions or masks of the same length; got lengths {[len(seq) for seq in given]}"
            )
        count = lengths.pop()
        items = [
            self._complete(
                CaptionInput(
                    key=str(keys[i]) if keys is not None else str(i),
                    image=None if images is None else np.asarray(images[i]),
                    mask=None if masks is None else np.asarray(masks[i]),
                    composition=None if compositions is None else dict(compositions[i]),
                )
            )
            for i in range(count)
        ]
        dupes = DuplicateFilter(self.dedupe)
        self.stats = CaptionStats()
        jobs = [(item, index) for item in items for index in range(self.captions_per_image)]
        texts: list[str] = []
        with self._bar(len(jobs)) as bar:
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start : start + self.batch_size]
                texts.extend(result[0] for result in self._run_jobs(batch, dupes, self.stats) if result is not None)
                bar.update(len(batch))
                self._show_counts(bar)
        per = self.captions_per_image
        return [texts[i * per : (i + 1) * per] for i in range(count)]

    def _iter_inputs(
        self, in_dir: str | Path, manifest: Mapping[str, Any], start: int, stop: int, skipped: list[str]
    ) -> Iterator[CaptionInput]:
        """Yield the inputs of samples ``start .. stop - 1``, skipping bad ones; shards outside are not opened."""
        first = 0
        for path, entry in zip(list_shards(in_dir).locations, manifest["shards"], strict=True):
            count = int(entry["num_samples"])
            if first >= stop:
                return
            if first + count <= start:
                first += count
                continue
            for position, raw in enumerate(iter_raw_samples(path), start=first):
                if position < start:
                    continue
                if position >= stop:
                    return
                try:
                    yield self._complete(self.load_input(raw))
                except ValueError as err:  # SampleError is a ValueError
                    skipped.append(str(raw.get("__key__", "?")))
                    if len(skipped) <= 3:
                        warnings.warn(f"skipping a sample of {path}: {err}", stacklevel=3)
            first += count

    def caption_shards(
        self,
        in_dir: str | Path,
        out: str | Path,
        shards_out: str | Path | None = None,
        limit: int | None = None,
        overwrite: bool = False,
        samples_per_shard: int | None = None,
        shard_index: int = 0,
        num_shards: int = 1,
    ) -> CaptionReport:
        """Caption a shard set into a JSONL sidecar, resuming what an earlier run left.

        Every batch is flushed, so a killed run loses at most the batch in flight. With
        ``num_shards > 1`` this is worker ``shard_index``: it captions its contiguous range
        into ``OUT.part-K-of-N.jsonl`` and leaves ``shards_out`` to :meth:`merge_parts`.

        Args:
            in_dir: Shard set folder.
            out: The ``.jsonl`` sidecar (created, or resumed).
            shards_out: Also write the shard set with ``captions.json`` here
                (:func:`~aras400k.captioning.shards.write_captioned_shards`).
            limit: Caption only the first ``limit`` samples.
            overwrite: Start the sidecar afresh and replace an existing ``shards_out``.
            samples_per_shard: Samples per tar in ``shards_out`` (default: as the input).
            shard_index: This worker's part of a split run, ``0 .. num_shards - 1``.
            num_shards: Workers the run is split over (1: this call captions everything).

        Raises:
            ManifestError: If ``in_dir`` is not a shard set.
            ValueError: If the sidecar (or a worker's part) was begun with other settings,
                ``shards_out`` is the input, or ``shard_index`` is outside ``0 .. num_shards - 1``.
            FileExistsError: If ``shards_out`` holds another shard set and ``overwrite`` is off.
            BackendError: If the backend fails (captions of finished batches are kept).
            LockedError: If another run is writing the same sidecar (held for the whole call).
        """
        check_worker(shard_index, num_shards)
        sidecar = part_sidecar_path(out, shard_index, num_shards) if num_shards > 1 else Path(out)
        with exclusive_lock(sidecar) as lock:
            return self._caption_shards(
                in_dir, out, lock, shards_out, limit, overwrite, samples_per_shard, shard_index, num_shards
            )

    def _caption_shards(
        self,
        in_dir: str | Path,
        out: str | Path,
        lock: RunLock,
        shards_out: str | Path | None,
        limit: int | None,
        overwrite: bool,
        samples_per_shard: int | None,
        shard_index: int,
        num_shards: int,
    ) -> CaptionReport:
        """:meth:`caption_shards` with the lock of the sidecar it writes already held."""
        from aras400k.captioning.shards import check_shards_out, write_captioned_shards

        in_dir, out = as_location(in_dir), Path(out)
        manifest = read_manifest(in_dir)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        worker = (shard_index, num_shards) if num_shards > 1 else None
        deferred = None
        if worker is not None:
            record = self._run_record(manifest, limit, num_shards)
            check_part_run(part_run_path(out, *worker), record | {"shard_index": shard_index}, overwrite)
            out, deferred, shards_out = part_sidecar_path(out, *worker), shards_out, None
        if shards_out is not None:
            check_shards_out(in_dir, shards_out, overwrite, out)
        report = CaptionReport(
            sidecar=out,
            shards_out=Path(shards_out) if shards_out else None,
            mode=self.mode,
            model=self.model_name,
            worker=worker,
            deferred_shards_out=Path(deferred) if deferred else None,
        )
        self.stats = report.stats
        start = time.perf_counter()
        samples = manifest["num_samples"] if limit is None else min(limit, manifest["num_samples"])
        first, stop = partition_range(samples, shard_index, num_shards)
        started, status = time.time(), "failed"
        try:
            with CaptionSidecarWriter(out, overwrite=overwrite, lock=lock) as writer:
                self._check_resumable(writer)
                report.discarded_bytes = writer.discarded_bytes
                done = writer.done
                report.resumed = len(done)
                dupes = DuplicateFilter(self.dedupe, seen=(r["text"] for r in writer.records))
                total = max((stop - first) * self.captions_per_image - len(done), 0)
                jobs: list[tuple[CaptionInput, int]] = []
                with self._bar(total) as bar:
                    for item in self._iter_inputs(in_dir, manifest, first, stop, report.skipped):
                        report.samples += 1
                        jobs.extend((item, i) for i in range(self.captions_per_image) if (item.key, i) not in done)
                        while len(jobs) >= self.batch_size:
                            self._write_batch(jobs[: self.batch_size], writer, dupes, bar, worker is not None)
                            del jobs[: self.batch_size]
                    if jobs:
                        self._write_batch(jobs, writer, dupes, bar, worker is not None)
                report.samples += len(report.skipped)
            status = "finished"
        except BaseException as err:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else f"failed: {err}"
            raise
        finally:
            report.seconds = time.perf_counter() - start
            self._log_run(out, report, started, status)
        if report.skipped:
            warnings.warn(
                f"skipped {len(report.skipped)} samples of {in_dir} (first: {', '.join(report.skipped[:5])})",
                stacklevel=2,
            )
        if shards_out is not None:
            write_captioned_shards(
                in_dir, out, shards_out, limit=limit, overwrite=overwrite, samples_per_shard=samples_per_shard
            )
        return report

    def merge_parts(
        self,
        in_dir: str | Path,
        out: str | Path,
        num_shards: int,
        shards_out: str | Path | None = None,
        limit: int | None = None,
        overwrite: bool = False,
        samples_per_shard: int | None = None,
    ) -> CaptionReport:
        """Join the worker sidecars of a split run into the sidecar one worker would have written.

        Reruns :meth:`caption_shards` over all samples (deduplication spans the dataset),
        reusing each text a worker got for the same key, index and seed; with a deterministic
        backend ``out`` equals the single run's sidecar. Parts are kept; a merge resumes.
        The ``num_shards`` (>= 2) workers' ``OUT.part-K-of-N.jsonl`` lie next to ``out``;
        the other arguments are as the workers' :meth:`caption_shards`. The report's
        ``stats.reused`` and ``stats.asked`` count tries reused and asked.

        Raises:
            FileNotFoundError: If a worker's sidecar or run record is missing.
            ValueError: If ``num_shards < 2``, or a part was made with other settings.
            ManifestError: If ``in_dir`` is not a shard set.
            LockedError: If another run is writing ``out``, or a worker is still writing its part.
            BackendError: If the backend fails (captions of finished batches are kept).
        """
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 2:
            raise ValueError(f"merging needs the number of workers the run was split over (>= 2), got {num_shards!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        manifest = read_manifest(in_dir)
        with exclusive_lock(out) as lock:
            with ExitStack() as workers:
                # A worker still writing its part would be merged half done: refuse while one runs.
                for k in range(num_shards):
                    workers.enter_context(exclusive_lock(part_sidecar_path(out, k, num_shards)))
                answers, parts = read_part_answers(out, num_shards, self._run_record(manifest, limit, num_shards))
            self._answers = answers
            try:
                report = self._caption_shards(in_dir, out, lock, shards_out, limit, overwrite, samples_per_shard, 0, 1)
            finally:
                self._answers = None
        report.merged_parts = len(parts)
        return report

    def caption_batch_file(
        self,
        in_dir: str | Path,
        out: str | Path,
        folder: str | Path,
        body: Callable[[CaptionRequest], dict[str, Any]],
        limit: int | None = None,
        overwrite: bool = False,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
    ) -> CaptionReport:
        """One pass of batch-file captioning: take in the answers there are, write requests for the rest.

        The pass is the live captioning (same batches, dedupe and sidecar records) with
        each try answered from the job's results files
        (:class:`~aras400k.captioning.batchfile.BatchJob`); unanswered tries not already
        waiting go to new request files. Rerun once their results are in (Batch API or
        ``vllm run_batch``) until ``batch.complete``. Only which of two colliding captions
        is regenerated may differ from a live run.

        Args:
            in_dir: Shard set folder.
            out: The ``.jsonl`` sidecar (created, or resumed).
            folder: The job folder.
            body: Builds a request's chat-completions body (``OpenAIBackend.request_body``).
            limit: Caption only the first ``limit`` samples.
            overwrite: Start the sidecar afresh (the job folder is kept).
            max_requests: Most requests per request file.
            max_bytes: Most bytes per request file.

        Returns:
            The report; ``batch`` says what was written and waits.

        Raises:
            ManifestError: If ``in_dir`` is not a shard set.
            ValueError: If the sidecar was begun with other settings or a results file is malformed.
            LockedError: If another run is writing the sidecar.
        """
        job = BatchJob(folder)
        writer = RequestFileWriter(job, max_requests, max_bytes)
        with exclusive_lock(out) as lock:
            self._results = ResultsLookup(job, body, writer)
            try:
                report = self._caption_shards(in_dir, out, lock, None, limit, overwrite, None, 0, 1)
                report.batch = self._results.finish()
            except BaseException:
                writer.discard()
                raise
            finally:
                self._results = None
        return report

    def _run_record(self, manifest: Mapping[str, Any], limit: int | None, num_shards: int) -> dict[str, Any]:
        """What the captions of a split run depend on; its workers and its merge must agree on it."""
        return {
            "input_shards": [[s["name"], s.get("sha256")] for s in manifest["shards"]],
            "limit": limit,
            "mode": self.mode,
            "model": self.model_name,
            "prompt_hash": self.prompt_hash,
            "seed": self.seed,
            "sampling": asdict(self.sampling),
            "captions_per_image": self.captions_per_image,
            "dedupe": self.dedupe,
            "max_retries": self.max_retries,
            "num_shards": num_shards,
        }

    def _write_batch(
        self,
        jobs: Sequence[tuple[CaptionInput, int]],
        writer: CaptionSidecarWriter,
        dupes: DuplicateFilter,
        bar: tqdm,
        keep_tries: bool = False,
    ) -> None:
        results = self._run_jobs(jobs, dupes, self.stats)
        model, digest = self.model_name, self.prompt_hash
        records = []
        for (item, index), result in zip(jobs, results, strict=True):
            if result is None:
                continue
            text, seed, tries, attempts = result
            record = {
                "key": item.key,
                "index": index,
                "text": text,
                "model": model,
                "mode": self.mode,
                "prompt_hash": digest,
                "seed": seed,
                ATTEMPTS_FIELD: attempts,
            }
            if keep_tries and tries:
                record[TRIES_FIELD] = tries
            records.append(record)
        writer.write(records)
        bar.update(len(records))
        self._show_counts(bar)

    def _log_run(self, sidecar: Path, report: CaptionReport, started: float, status: str) -> None:
        """Append this run's counts, retries and outcome to the sidecar's run record (``OUT.run.json``)."""
        stats = report.stats
        entry = {
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(report.seconds, 3),
            "status": status,
            "mode": self.mode,
            "model": self.model_name,
            "samples": report.samples,
            "resumed": report.resumed,
            **{name: value for name, value in asdict(stats).items() if name not in ("reused", "asked")},
        }
        try:
            append_run_log(sidecar, entry)
        except OSError as err:  # the captions are what matters; a log that cannot be written only warns
            warnings.warn(f"could not log the run in {sidecar}'s run record: {err}", stacklevel=3)

    def _check_resumable(self, writer: CaptionSidecarWriter) -> None:
        """Refuse to append to a sidecar made with another mode, model or prompt."""
        mine = (self.mode, self.model_name, self.prompt_hash)
        for record in writer.records:
            theirs = (record["mode"], record["model"], record["prompt_hash"])
            if theirs != mine:
                raise ValueError(
                    f"{writer.path} holds captions made with mode={theirs[0]}, model={theirs[1]}, "
                    f"prompt_hash={theirs[2]} but this run uses mode={mine[0]}, model={mine[1]}, "
                    f"prompt_hash={mine[2]}; give another output file or overwrite it (--overwrite true)"
                )
