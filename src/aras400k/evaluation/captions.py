"""The caption sections of the report: the paper's Tables 1 and 2 and the consistency table.

One pass over each dataset's evaluated samples feeds every caption metric at once
(:func:`tally_captions`): :class:`~aras400k.metrics.CaptionRedundancy` per dataset, per
caption model and mode and over all datasets; :class:`~aras400k.metrics.CLIPScore`
(when a CLIP folder is given) against the sample's image; and
:class:`~aras400k.metrics.CompositionConsistency` against the composition in the
sample's ``meta.json`` (counted from its mask when the meta has none).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchmetrics import Metric
from tqdm.auto import tqdm

from aras400k.data.composition import composition
from aras400k.data.shards import Sample, iter_samples
from aras400k.evaluation.config import DatasetInputs, EvalConfig
from aras400k.evaluation.tables import NA, Section, count, markdown_table, number, percent
from aras400k.metrics import CaptionRedundancy, CLIPScore, CompositionConsistency

__all__ = [
    "ALL_DATASETS",
    "CaptionTables",
    "CaptionTally",
    "consistency_section",
    "table1_section",
    "table2_section",
    "tally_captions",
]

#: Label of the rows over every dataset together (the paper's "ARAS400k" rows).
ALL_DATASETS = "all datasets"
_MODE_ORDER = {"text": 0, "vision": 1, "hybrid": 2}
#: How the caption tables print each row field (fields not listed print as they are).
_CELL_FORMATS: dict[str, Callable[[Any], str]] = {
    "source": lambda source: source or "all",
    "volume": count,
    "captions": count,
    "unique": count,
    "with_percentages": count,
    "redundancy": percent,
    "recall": lambda share: percent(share, 1),
    "precision": lambda share: percent(share, 1),
    "clip_score": number,
    "percent_mae": number,
}
#: Column headings of the row fields whose heading is not their name.
_HEADINGS = {"clip_score": "CLIPScore", "percent_mae": "% MAE (pp)", "with_percentages": "with %"}


def _compute(metric: Metric) -> Any:
    """``metric.compute()`` without torchmetrics' warning for a metric that saw no caption."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        return metric.compute()


def _group(record: Mapping[str, Any]) -> str:
    return f"{record.get('model') or 'unknown'}/{record.get('mode') or 'unknown'}"


def split_group(group: str) -> tuple[str, str]:
    """Split a ``model/mode`` group name into ``(model, mode)`` (a model name may itself hold ``/``)."""
    model, _, mode = group.rpartition("/")
    return model, mode


def _rows_table(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], numeric_from: int) -> str:
    """A Markdown table of ``fields`` of each row, printed the one way the caption tables print them."""
    cells = [[_CELL_FORMATS.get(name, str)(row[name]) for name in fields] for row in rows]
    return markdown_table([_HEADINGS.get(name, name) for name in fields], cells, numeric_from)


def _group_order(group: str) -> tuple[int, str, str]:
    model, mode = split_group(group)
    return _MODE_ORDER.get(mode, len(_MODE_ORDER)), mode, model


@dataclass
class CaptionTally:
    """Caption metrics of one dataset (or of all datasets together).

    Attributes:
        name: Dataset name (or :data:`ALL_DATASETS`).
        source: The shard set's ``source`` (``real``, ``synth_uncond``, ``synth_cond``).
        samples: Samples evaluated.
        captioned: Samples with at least one caption.
        redundancy: Redundancy over all captions.
        groups: ``model/mode`` -> redundancy of that caption model and method.
        consistency: Caption-mask agreement, overall and per group.
        clip: ``CLIPScore.compute()`` as plain numbers (``None`` without a CLIP model).
        without_composition: Captions left out of consistency (no composition nor mask).
    """

    name: str
    source: str
    redundancy: CaptionRedundancy
    consistency: CompositionConsistency
    samples: int = 0
    captioned: int = 0
    groups: dict[str, CaptionRedundancy] = field(default_factory=dict)
    clip: dict[str, Any] | None = None
    without_composition: int = 0

    @classmethod
    def empty(cls, name: str, source: str, config: EvalConfig) -> CaptionTally:
        """A tally with no captions yet, with ``config``'s normalisation and consistency thresholds."""
        return cls(
            name=name,
            source=source,
            redundancy=CaptionRedundancy(normalize=config.normalize),
            consistency=CompositionConsistency(
                lexicon=config.lexicon, salient_share=config.salient_share, present_share=config.present_share
            ),
        )

    def add_redundancy(self, texts: Sequence[str], groups: Sequence[str], normalize: str) -> None:
        """Count captions into the overall and per-group (``model/mode``) redundancy.

        ``normalize`` is the normalisation of new per-group metrics.
        """
        if not texts:
            return
        self.redundancy.update(list(texts))
        by_group: dict[str, list[str]] = {}
        for text, group in zip(texts, groups, strict=True):
            by_group.setdefault(group, []).append(text)
        for group, members in by_group.items():
            if group not in self.groups:
                self.groups[group] = CaptionRedundancy(normalize=normalize)  # type: ignore[arg-type]
            self.groups[group].update(members)

    def redundancy_numbers(self, group: str | None = None) -> dict[str, Any]:
        """``captions``, ``unique`` and ``redundancy`` (NaN without captions) of all captions or of one group."""
        metric = self.redundancy if group is None else self.groups[group]
        result = _compute(metric)
        return {
            "captions": int(result["total"]),
            "unique": int(result["unique"]),
            "redundancy": float(result["redundancy"]),
        }

    def clip_numbers(self, group: str | None = None) -> dict[str, Any]:
        """``clip_score`` (``None`` without a CLIP model or captions) and ``truncated`` of all captions or one group."""
        if self.clip is None:
            return {"clip_score": None, "truncated": None}
        source = self.clip if group is None else self.clip["groups"].get(group)
        if not source or not source["captions"]:
            return {"clip_score": None, "truncated": 0}
        return {"clip_score": float(source["clip_score"]), "truncated": int(source["truncated"])}


def _samples(inputs: DatasetInputs) -> Iterator[Sample]:
    """The evaluated samples of a dataset, in manifest order."""
    samples = iter_samples(inputs.spec.path, with_mask=True, with_captions=inputs.spec.shard_captions)
    return itertools.islice(samples, len(inputs.keys))


def _records(inputs: DatasetInputs, sample: Sample) -> list[dict[str, Any]]:
    """Caption records of one sample: the sidecars' and, if configured, the shard's own."""
    records = list(inputs.captions.get(sample.key, []))
    if inputs.spec.shard_captions and sample.captions:
        for record in sample.captions:
            if not isinstance(record, Mapping) or not isinstance(record.get("text"), str):
                raise ValueError(
                    f"dataset {inputs.spec.name!r}: sample {sample.key}: captions.json holds {record!r:.80}, "
                    "not a {text, model, mode} record"
                )
            records.append(dict(record))
    return records


def _composition(sample: Sample) -> dict[str, float] | None:
    meta_comp = sample.meta.get("composition") if isinstance(sample.meta, dict) else None
    if isinstance(meta_comp, Mapping) and meta_comp:
        return {str(k): float(v) for k, v in meta_comp.items()}
    return composition(sample.mask) if sample.mask is not None else None


@dataclass
class _Batch:
    images: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    image_index: list[int] = field(default_factory=list)
    compositions: list[dict[str, float] | None] = field(default_factory=list)


def _flush(
    batch: _Batch, tally: CaptionTally, overall: CaptionTally, config: EvalConfig, clip: CLIPScore | None
) -> None:
    tally.add_redundancy(batch.texts, batch.groups, config.normalize)
    overall.add_redundancy(batch.texts, batch.groups, config.normalize)
    keep = [i for i, comp in enumerate(batch.compositions) if comp is not None]
    tally.without_composition += len(batch.texts) - len(keep)
    if keep:
        tally.consistency.update(
            [batch.texts[i] for i in keep],
            [batch.compositions[i] for i in keep],  # type: ignore[misc]
            groups=[batch.groups[i] for i in keep],
        )
    if clip is not None and batch.texts:
        clip.update(batch.images, batch.texts, groups=batch.groups, image_index=batch.image_index)


def _plain_clip(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "clip_score": float(result["clip_score"]),
        "captions": int(result["captions"]),
        "truncated": int(result["truncated"]),
        "groups": dict(result["groups"]),
    }


def tally_captions(
    inputs: DatasetInputs, config: EvalConfig, overall: CaptionTally, clip: CLIPScore | None = None
) -> CaptionTally:
    """Read a dataset's evaluated samples once, feed every caption metric, and return the dataset's tally.

    Args:
        inputs: The checked dataset with its sidecar captions.
        config: The evaluation settings.
        overall: The tally over all datasets; its redundancy counts these captions too.
        clip: The CLIPScore metric (reset here), or ``None`` without a CLIP model.

    Raises:
        ValueError: On a malformed ``captions.json`` or composition.
        aras400k.data.SampleError: On a corrupt sample.
    """
    tally = CaptionTally.empty(inputs.spec.name, str(inputs.manifest.get("source", "")), config)
    if clip is not None:
        clip.reset()
    batch = _Batch()
    bar = tqdm(total=len(inputs.keys), desc=f"captions {inputs.spec.name}", unit="img", disable=not config.progress)
    with bar:
        for sample in _samples(inputs):
            tally.samples += 1
            records = _records(inputs, sample)
            tally.captioned += bool(records)
            if records:
                comp = _composition(sample)
                batch.images.append(sample.image)
                for record in records:
                    batch.texts.append(str(record["text"]))
                    batch.groups.append(_group(record))
                    batch.image_index.append(len(batch.images) - 1)
                    batch.compositions.append(comp)
            if len(batch.images) >= config.batch_size:
                _flush(batch, tally, overall, config, clip)
                batch = _Batch()
            bar.update(1)
        _flush(batch, tally, overall, config, clip)
    overall.samples += tally.samples
    overall.captioned += tally.captioned
    if clip is not None:
        tally.clip = _plain_clip(clip.compute())
    return tally


def combine_clip(tallies: Sequence[CaptionTally]) -> dict[str, Any] | None:
    """The caption-weighted CLIPScore over several datasets, overall and per group.

    Returns:
        The layout of :attr:`CaptionTally.clip`, or ``None`` when no tally has CLIP scores.
    """
    scored = [t.clip for t in tallies if t.clip is not None]
    if not scored:
        return None

    def pooled(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        n = sum(p["captions"] for p in parts)
        total = sum(p["clip_score"] * p["captions"] for p in parts if p["captions"])
        return {
            "clip_score": total / n if n else float("nan"),
            "captions": n,
            "truncated": sum(p["truncated"] for p in parts),
        }

    groups = sorted({g for clip in scored for g in clip["groups"]})
    result = pooled(scored)
    result["groups"] = {g: pooled([c["groups"][g] for c in scored if g in c["groups"]]) for g in groups}
    return result


_NO_CAPTIONS = (
    "no caption sidecars configured (give datasets[].captions, JSONL files written by aras-caption, "
    "or shard_captions: true for captions stored in the shards)"
)


def _clip_note(clip_reason: str | None, tallies: Sequence[CaptionTally]) -> list[str]:
    if clip_reason is not None:
        return [f"CLIPScore n/a: {clip_reason}."]
    truncated = sum(t.clip_numbers()["truncated"] or 0 for t in tallies)
    if truncated:
        return [f"{truncated:,} captions were longer than the CLIP text encoder's context and truncated."]
    return []


@dataclass(frozen=True)
class CaptionTables:
    """What the paper's Tables 1 and 2 are made from.

    Attributes:
        tallies: Per-dataset tallies, in report order.
        overall: The tally over all datasets (its ``clip`` pooled by :func:`combine_clip`).
        datasets: The checked datasets (same order).
        clip_reason: Why CLIPScore is n/a, or ``None`` when it was computed.
    """

    tallies: Sequence[CaptionTally]
    overall: CaptionTally
    datasets: Sequence[DatasetInputs]
    clip_reason: str | None


def table1_section(tables: CaptionTables) -> Section:
    """The paper's Table 1: per dataset (and over all, when several) volume, captions, redundancy, CLIPScore."""
    title = "Table 1. Volume, captions, redundancy and CLIPScore per dataset"
    if not any(d.has_captions for d in tables.datasets):
        return Section.skip("table1", title, _NO_CAPTIONS)
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[CaptionTally, int]] = [
        (t, d.total_samples) for t, d in zip(tables.tallies, tables.datasets, strict=True)
    ]
    if len(tables.tallies) > 1:
        pairs.insert(0, (tables.overall, sum(d.total_samples for d in tables.datasets)))
    for tally, total in pairs:
        row = {"dataset": tally.name, "source": tally.source, "volume": tally.samples, "volume_in_set": total}
        rows.append(row | {"captioned_samples": tally.captioned, **tally.redundancy_numbers(), **tally.clip_numbers()})
    body = _rows_table(rows, ("dataset", "source", "volume", "captions", "unique", "redundancy", "clip_score"), 2)
    exact = tables.overall.redundancy.normalize == "none"
    counted = " (as the paper counts them)." if exact else " after basic normalisation."
    notes = [f"Redundancy = 1 - unique / captions, over exact strings{counted}"]
    notes += _clip_note(tables.clip_reason, tables.tallies)
    capped = [d.spec.name for d in tables.datasets if len(d.keys) < d.total_samples]
    if capped:
        notes.append(f"Volume counts the evaluated samples (max_samples); capped: {', '.join(capped)}.")
    outside = sum(d.captions_outside for d in tables.datasets)
    if outside:
        notes.append(f"{outside:,} sidecar captions of samples that were not evaluated are not counted.")
    return Section("table1", title, body=body, data={"rows": rows}, rows=rows, notes=notes)


def table2_section(tables: CaptionTables) -> Section:
    """The paper's Table 2: per subset and caption model and method, captions, unique, redundancy, CLIPScore."""
    title = "Table 2. Captions per model and method (mode), per subset"
    if not any(d.has_captions for d in tables.datasets):
        return Section.skip("table2", title, _NO_CAPTIONS)
    subsets = [t for t in tables.tallies if t.groups]
    if len(subsets) > 1:
        subsets.insert(0, tables.overall)
    rows = []
    for tally in subsets:
        for group in sorted(tally.groups, key=_group_order):
            model, mode = split_group(group)
            row = {"subset": tally.name, "model": model, "method": mode, **tally.redundancy_numbers(group)}
            rows.append(row | tally.clip_numbers(group))
    if not rows:
        return Section.skip("table2", title, "the configured caption sources hold no captions")
    body = _rows_table(rows, ("subset", "model", "method", "captions", "unique", "redundancy", "clip_score"), 3)
    notes = _clip_note(tables.clip_reason, tables.tallies)
    return Section("table2", title, body=body, data={"rows": rows}, rows=rows, notes=notes)


def _consistency_row(dataset: str, group: str | None, numbers: Mapping[str, Any]) -> dict[str, Any]:
    model, mode = split_group(group) if group is not None else ("all", "all")
    shares = {k: float(numbers[k]) for k in ("recall", "precision", "percent_mae")}
    row = {"dataset": dataset, "model": model, "method": mode, "captions": int(numbers["captions"])}
    return row | shares | {"with_percentages": int(numbers["with_percentages"])}


def consistency_section(
    tallies: Sequence[CaptionTally], datasets: Sequence[DatasetInputs], config: EvalConfig
) -> Section:
    """Caption-mask consistency per dataset (in report order) and per caption model and method."""
    title = "Cross-modal consistency of captions with the masks' composition"
    if not any(d.has_captions for d in datasets):
        return Section.skip("consistency", title, _NO_CAPTIONS)
    rows = []
    for tally in tallies:
        result = _compute(tally.consistency)
        if not int(result["captions"]):
            continue
        groups = result["groups"]
        if len(groups) > 1:
            rows.append(_consistency_row(tally.name, None, {k: v for k, v in result.items() if k != "groups"}))
        rows += [_consistency_row(tally.name, g, groups[g]) for g in sorted(groups, key=_group_order)]
    if not rows:
        return Section.skip("consistency", title, "no captioned sample has a composition (meta.json or mask)")
    columns = ("dataset", "model", "method", "captions", "recall", "precision", "percent_mae", "with_percentages")
    notes = [
        f"Recall: share of the classes covering at least {100 * config.salient_share:g}% of the mask that a caption "
        f"mentions; precision: share of the mentioned classes present in the mask (above "
        f"{100 * config.present_share:g}%); % MAE: mean absolute error of the percentages a caption states, "
        f"in percentage points ({NA} when no caption states one).",
    ]
    missing = sum(t.without_composition for t in tallies)
    if missing:
        notes.append(f"{missing:,} captions of samples without a composition or mask are not scored.")
    return Section(
        "consistency", title, body=_rows_table(rows, columns, 3), data={"rows": rows}, rows=rows, notes=notes
    )
