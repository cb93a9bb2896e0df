"""Build the whole evaluation report: :func:`run_evaluation` (what ``aras-eval`` runs).

``out_dir`` receives ``report.md`` (a headline summary, then one section per table or
figure, each skipped with a one-line reason when its input is not configured),
``report.json`` (every number, NaN written as ``null``), one CSV per table and the PNG
figures. Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from aras400k.checkpoints import resolve_device
from aras400k.evaluation.captions import (
    ALL_DATASETS,
    CaptionTables,
    CaptionTally,
    combine_clip,
    consistency_section,
    table1_section,
    table2_section,
    tally_captions,
)
from aras400k.evaluation.config import CLIP_HINT, SEGMENTER_HINT, DatasetInputs, EvalConfig, check_inputs
from aras400k.evaluation.distributions import composition_section, dataset_features, embedding_section, fid_section
from aras400k.evaluation.tables import NA, Section, count, markdown_table, number, percent
from aras400k.files import write_atomic
from aras400k.metrics import CLIPScore
from aras400k.metrics.fid import FeatureExtractor
from aras400k.models.features import SegmenterFeatures, feature_extractor

__all__ = ["REPORT_FORMAT", "EvalResult", "run_evaluation", "write_report"]

#: ``format`` field of ``report.json``.
REPORT_FORMAT = "aras400k-eval"
_STEPS = 5


@dataclass
class EvalResult:
    """What :func:`run_evaluation` computed and wrote.

    Attributes:
        config: The configuration.
        datasets: The checked datasets, reference first.
        sections: The report sections, in report order.
        headline: Headline rows (one per dataset) shown at the top of ``report.md``.
        files: Written file name -> path (``report.md``, ``report.json``, CSVs, PNGs).
        seconds: Total wall time.
    """

    config: EvalConfig
    datasets: list[DatasetInputs]
    sections: list[Section]
    headline: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def section(self, key: str) -> Section:
        """The section with this key (``table1``, ``table2``, ``consistency``, ``composition``, ``fid``, ``embedding``).

        Raises:
            KeyError: If there is no such section.
        """
        for section in self.sections:
            if section.key == key:
                return section
        raise KeyError(f"no report section {key!r}; sections: {[s.key for s in self.sections]}")


# -- models ---------------------------------------------------------------------------------------


def load_feature_spaces(config: EvalConfig, device: torch.device) -> dict[str, FeatureExtractor]:
    """Build the configured feature extractors (segmenter first, as the embedding uses the first).

    Returns:
        Feature space name (e.g. ``"segmenter unet/resnet18"``) -> extractor, running on ``device``.

    Raises:
        ValueError: If the segmenter checkpoint is not a ``SegmentationTask`` checkpoint or
            the Inception file holds other weights.
        FileNotFoundError: If a file is missing.
    """
    spaces: dict[str, FeatureExtractor] = {}
    if config.segmenter is not None:
        try:
            extractor = feature_extractor("segmenter", config.segmenter, device=device)
        except ValueError as err:
            raise ValueError(f"segmenter: {err}; {SEGMENTER_HINT}") from err
        assert isinstance(extractor, SegmenterFeatures)
        hparams = extractor.task.hparams
        spaces[f"segmenter {hparams.get('arch')}/{hparams.get('encoder')}"] = extractor
    if config.inception is not None:
        extractor = feature_extractor(
            "inception", config.inception, inception_backend=config.inception_backend, device=device
        )
        spaces[f"inception ({config.inception_backend})"] = extractor
    return spaces


def load_clip_metric(config: EvalConfig, device: torch.device) -> CLIPScore | None:
    """Load the CLIPScore metric from the configured local folder onto ``device``.

    Returns:
        The metric, or ``None`` when ``clip`` is not configured.

    Raises:
        FileNotFoundError: If the folder holds no loadable CLIP model and processor.
    """
    if config.clip is None:
        return None
    try:
        return CLIPScore(config.clip, batch_size=config.batch_size).to(device)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"clip: {err}; {CLIP_HINT}") from err


# -- sections -------------------------------------------------------------------------------------


def _caption_sections(datasets: Sequence[DatasetInputs], config: EvalConfig, clip: CLIPScore | None) -> list[Section]:
    """Tables 1 and 2 and the consistency table, from one pass over each captioned dataset."""
    overall = CaptionTally.empty(ALL_DATASETS, "", config)
    tallies = []
    for inputs in datasets:
        if inputs.has_captions:
            tallies.append(tally_captions(inputs, config, overall, clip))
        else:
            tally = CaptionTally.empty(inputs.spec.name, str(inputs.manifest.get("source", "")), config)
            tally.samples = len(inputs.keys)
            overall.samples += tally.samples
            tallies.append(tally)
    overall.clip = combine_clip(tallies)
    reason = None if clip is not None else "no CLIP model configured (clip: null)"
    tables = CaptionTables(tallies, overall, datasets, reason)
    return [
        table1_section(tables),
        table2_section(tables),
        consistency_section(tallies, datasets, config),
    ]


def _features(
    datasets: Sequence[DatasetInputs], spaces: Mapping[str, FeatureExtractor], config: EvalConfig, device: torch.device
) -> dict[str, dict[str, torch.Tensor]]:
    """Features of every dataset in every feature space (none when there is nothing to compare)."""
    if len(datasets) < 2:
        return {}
    return {space: dataset_features(datasets, extractor, config, device) for space, extractor in spaces.items()}


@contextmanager
def _timed(sections: list[Section]) -> Iterator[None]:
    """Time the sections appended inside the block; each gets the block's time shared equally."""
    start, before = time.perf_counter(), len(sections)
    yield
    new = sections[before:]
    for section in new:
        section.seconds = (time.perf_counter() - start) / len(new)


def run_evaluation(config: EvalConfig, log: Callable[[str], None] | None = None) -> EvalResult:
    """Check the inputs, compute every section, and write the report into ``config.out_dir``.

    Args:
        config: The configuration.
        log: Receives one progress line per section (default: stderr when ``config.progress``).

    Raises:
        ValueError: On a bad setting or input (the message names it).
        FileNotFoundError: On a missing input (the message says which command makes it).
    """
    if log is None:
        log = _stderr_log if config.progress else (lambda line: None)
    start = time.perf_counter()
    datasets = check_inputs(config)
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        spaces = load_feature_spaces(config, device)
        clip = load_clip_metric(config, device)
        out_dir = Path(config.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sections: list[Section] = []
        names = ", ".join(d.spec.name for d in datasets)
        log(f"[1/{_STEPS}] captions: Tables 1 and 2, consistency ({names})")
        with _timed(sections):
            sections += _caption_sections(datasets, config, clip)
        log(f"[2/{_STEPS}] composition of {len(datasets)} datasets")
        with _timed(sections):
            sections.append(composition_section(datasets, config, out_dir))
        log(f"[3/{_STEPS}] features: {', '.join(spaces) or 'no feature space configured'}")
        with _timed(sections):  # FID/KID's time includes the features (the embedding reuses them)
            features = _features(datasets, spaces, config, device)
            log(f"[4/{_STEPS}] FID and KID against {datasets[0].spec.name}")
            sections.append(fid_section(features, datasets, config))
        log(f"[5/{_STEPS}] embedding ({', '.join(config.embedding_methods)})")
        with _timed(sections):
            sections.append(embedding_section(features, datasets, config, out_dir))
    finally:
        torch.set_num_threads(threads)
    result = EvalResult(config=config, datasets=datasets, sections=sections)
    result.headline = headline_rows(result)
    result.seconds = time.perf_counter() - start
    result.files = write_report(result, out_dir)
    log(f"wrote {out_dir / 'report.md'} in {result.seconds:.0f} s")
    return result


def _stderr_log(line: str) -> None:
    print(f"aras-eval: {line}", file=sys.stderr, flush=True)


# -- headline -------------------------------------------------------------------------------------


def _by(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, Mapping[str, Any]]:
    return {str(r[key]): r for r in rows}


def headline_rows(result: EvalResult) -> list[dict[str, Any]]:
    """One summary row per dataset from the computed sections.

    Returns:
        Rows with ``dataset``, ``source``, ``samples``, ``captions``, ``redundancy``,
        ``clip_score``, ``js_divergence``, ``fid``, ``kid_mean`` and ``feature_space``
        (``None`` where not computed).
    """
    sections = {s.key: s for s in result.sections}
    table1 = _by(sections["table1"].data.get("rows", []), "dataset")
    distances = _by(sections["composition"].data.get("distances", []), "other")
    fid_rows = sections["fid"].data.get("rows", [])
    space = fid_rows[0]["feature_space"] if fid_rows else None
    fid = _by([r for r in fid_rows if r["feature_space"] == space], "dataset")
    rows = []
    for inputs in result.datasets:
        name = inputs.spec.name
        t1, dist, f = table1.get(name, {}), distances.get(name, {}), fid.get(name, {})
        row = {"dataset": name, "source": inputs.manifest.get("source"), "samples": len(inputs.keys)}
        row |= {k: t1.get(k) for k in ("captions", "redundancy", "clip_score")}
        row |= {"js_divergence": dist.get("js_divergence"), "fid": f.get("fid"), "kid_mean": f.get("kid_mean")}
        rows.append(row | {"feature_space": space if f else None})
    return rows


def _dash(value: str, is_reference: bool) -> str:
    return "reference" if is_reference and value == NA else value


def headline_markdown(result: EvalResult) -> str:
    """The top of ``report.md`` (Markdown): what was evaluated, the summary table, skips and figure links."""
    config, ref = result.config, result.datasets[0].spec.name
    cap = f"at most {config.max_samples:,} samples each" if config.max_samples is not None else "every sample"
    fid_space = next((r["feature_space"] for r in result.headline if r["feature_space"]), None)
    lines = [
        "# aras400k evaluation report",
        "",
        f"{len(result.datasets)} datasets against the reference **{ref}**, {cap} (seed {config.seed}); "
        f"written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {result.seconds:.0f} s.",
        "",
    ]
    header = ["dataset", "source", "samples", "captions", "redundancy", "CLIPScore", f"JS vs {ref} (bits)"]
    header += [f"FID vs {ref}", f"KID vs {ref}"]
    cells = [
        [
            r["dataset"],
            str(r["source"]),
            count(r["samples"]),
            count(r["captions"]),
            percent(r["redundancy"]),
            number(r["clip_score"]),
            _dash(number(r["js_divergence"], 4), i == 0),
            _dash(number(r["fid"], 3), i == 0),
            _dash(NA if r["kid_mean"] is None else f"{r['kid_mean']:.4g}", i == 0),
        ]
        for i, r in enumerate(result.headline)
    ]
    lines += [markdown_table(header, cells, 2), ""]
    if fid_space:
        lines += [f"FID/KID in the {fid_space} feature space; see the sections below for every number.", ""]
    skipped = [f"{s.title}: {s.skipped}" for s in result.sections if s.skipped]
    skipped += [notice for s in result.sections for notice in s.data.get("notices", [])]  # e.g. UMAP missing
    if skipped:
        lines += ["Skipped:", "", *(f"- {line}" for line in skipped), ""]
    figures = [(caption, name) for s in result.sections for caption, name in s.figures.items()]
    if figures:
        lines += ["Figures:", "", *(f"- [{caption}]({name})" for caption, name in figures), ""]
    return "\n".join(lines)


# -- writing --------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN/inf -> ``None``, paths -> strings, tuples -> lists, tensors -> numbers, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})
    return buffer.getvalue()


def report_json(result: EvalResult) -> dict[str, Any]:
    """Every number of the evaluation as a JSON-safe dict (the content of ``report.json``).

    Returns:
        ``format``, ``config``, ``reference``, ``datasets``, ``headline``, ``sections``, ``seconds``, ...
    """
    datasets = [
        {
            "name": d.spec.name,
            "path": d.spec.path,
            "source": d.manifest.get("source"),
            "samples_evaluated": len(d.keys),
            "samples_in_set": d.total_samples,
            "caption_sidecars": list(d.spec.captions),
            "shard_captions": d.spec.shard_captions,
            "sidecar_captions_not_evaluated": d.captions_outside,
        }
        for d in result.datasets
    ]
    fields = ("title", "skipped", "data", "figures", "notes", "seconds")
    sections = {s.key: {name: getattr(s, name) for name in fields} for s in result.sections}
    return _json_safe(
        {
            "format": REPORT_FORMAT,
            "format_version": 1,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": asdict(result.config),
            "reference": result.datasets[0].spec.name,
            "datasets": datasets,
            "headline": result.headline,
            "sections": sections,
            "seconds": result.seconds,
        }
    )


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and one CSV per table into ``out_dir`` (figures are already written).

    Returns:
        File name -> path of everything the report consists of, figures included.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for section in result.sections:
        if section.rows:
            name = f"{section.key}.csv"
            files[name] = write_atomic(out_dir / name, _csv_text(section.rows))
        for figure in section.figures.values():
            files[figure] = out_dir / figure
    body = [headline_markdown(result), *(s.markdown() for s in result.sections)]
    tables = ", ".join(f"[{name}]({name})" for name in files if name.endswith(".csv"))
    body.append(
        "---\n\nEvery number is in [report.json](report.json)" + (f"; tables as CSV: {tables}.\n" if tables else ".\n")
    )
    files["report.md"] = write_atomic(out_dir / "report.md", "\n".join(body))
    text = json.dumps(report_json(result), indent=2, allow_nan=False) + "\n"
    files["report.json"] = write_atomic(out_dir / "report.json", text)
    return files
