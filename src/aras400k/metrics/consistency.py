"""Cross-modal consistency: does a caption agree with its mask's class composition?

A :class:`Lexicon` finds the classes a caption mentions (whole words or synonyms,
case-insensitive, optional plural ``s``/``es``), the negated ones and the percentages
stated for each; :func:`score_caption` scores them against the mask's composition:
recall of the salient classes, precision of the mentioned ones and the mean absolute
error of the percentages (``docs/evaluation.md``). :class:`CompositionConsistency`
averages these over a dataset and per group. How mentions are read (deliberately simple):

- A caption is split into clauses at ``, ; . ! ?`` (not inside numbers) and at the words
  *and, but, while, whereas, whilst*.
- A mention is negated (counts as not mentioned) when a :data:`NEGATION_CUES` word is
  among the three words before it in its clause (``"no water"``, ``"non-forest"``), or
  when it follows a negated mention joined by *or*/*nor* within three words (``"no
  roads or buildings"``). Negation after the word (``"water is absent"``) and double
  negation are not handled.
- A stated percentage (``41.2%``, ``41 percent``, ``41 per cent``) belongs to the
  nearest non-negated mention in its clause, ties going to the one before it (``"tree
  41.2%, crop 30.5%"``); one with no mention in its clause is ignored. "Respectively"
  lists are not resolved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aras400k.classes import CLASS_NAMES
from aras400k.metrics.captions import CaptionMetric

__all__ = [
    "DEFAULT_LEXICON",
    "NEGATION_CUES",
    "CaptionCheck",
    "CompositionConsistency",
    "Lexicon",
    "ParsedCaption",
    "score_caption",
]

#: Default class words and synonyms (each also matches with a plural ``s``/``es``).
DEFAULT_LEXICON: dict[str, tuple[str, ...]] = {
    "tree": ("tree", "forest", "forested", "woodland", "wooded"),
    "shrub": ("shrub", "shrubland", "bush", "scrub", "scrubland"),
    "grass": ("grass", "grassland", "meadow", "pasture"),
    "crop": ("crop", "cropland", "farmland", "agricultural", "field", "cultivated"),
    "built": ("built", "urban", "settlement", "building", "town", "village", "city", "cities", "residential"),
    "barren": ("barren", "bare", "sand", "sandy", "rock", "rocky", "desert"),
    "water": ("water", "river", "lake", "reservoir", "pond", "sea", "coast"),
}
#: Words that negate a class mention among the three words before it.
NEGATION_CUES: frozenset[str] = frozenset(
    {"no", "not", "non", "none", "nor", "without", "absent", "absence", "lack", "lacks", "lacking", "devoid"}
)
_NEGATION_WINDOW = 3
_CLAUSE_BREAK = re.compile(r"[;,](?!\d)|\.(?!\d)|[!?]|\b(?:and|but|while|whereas|whilst)\b", re.IGNORECASE)
_PERCENT = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d+)?)\s*(?:%|percent\b|per\s+cent\b)", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption says about land cover.

    Attributes:
        mentioned: Classes mentioned and not negated.
        negated: Classes only mentioned under a negation.
        stated: ``(class name, percent)`` pairs, in caption order.
    """

    mentioned: frozenset[str]
    negated: frozenset[str]
    stated: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class CaptionCheck:
    """One caption scored against one composition (NaN where undefined).

    Attributes:
        recall: Fraction of salient classes mentioned (NaN if no class is salient).
        precision: Fraction of mentioned classes present (NaN if none is mentioned).
        percent_mae: Mean absolute error of the stated percentages, in points (NaN if none).
        parsed: The parsed caption.
    """

    recall: float
    precision: float
    percent_mae: float
    parsed: ParsedCaption


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    name: str
    negated: bool


class Lexicon:
    """Class words and synonyms, compiled into one whole-word, case-insensitive pattern.

    Args:
        terms: Class name -> words (multi-word allowed); ``None`` uses :data:`DEFAULT_LEXICON`.
        negation: Whether to detect negated mentions (see the module docstring).

    Raises:
        ValueError: If a word is empty or is listed for two classes.
    """

    def __init__(self, terms: Mapping[str, Sequence[str]] | None = None, negation: bool = True) -> None:
        terms = DEFAULT_LEXICON if terms is None else terms
        self.negation = negation
        self._class_of: dict[str, str] = {}
        for name, words in terms.items():
            if isinstance(words, str):
                words = [words]
            for word in words:
                key = " ".join(word.casefold().split())
                if not key:
                    raise ValueError(f"empty word in the lexicon for class {name!r}")
                if self._class_of.get(key, name) != name:
                    raise ValueError(f"lexicon word {word!r} is listed for {self._class_of[key]!r} and {name!r}")
                self._class_of[key] = name
        self.classes: tuple[str, ...] = tuple(terms)
        alternatives = sorted(self._class_of, key=len, reverse=True)
        body = "|".join(r"\s+".join(map(re.escape, key.split())) for key in alternatives)
        self._pattern = re.compile(rf"\b({body})(?:e?s)?\b", re.IGNORECASE) if body else None

    def mentions(self, clause: str) -> list[_Mention]:
        """Class mentions in one clause, in order."""
        if self._pattern is None:
            return []
        found: list[_Mention] = []
        for match in self._pattern.finditer(clause):
            name = self._class_of[" ".join(match.group(1).casefold().split())]
            negated = self.negation and self._is_negated(clause, match.start(), found[-1] if found else None)
            found.append(_Mention(match.start(), match.end(), name, negated))
        return found

    @staticmethod
    def _is_negated(clause: str, start: int, previous: _Mention | None) -> bool:
        words = [w.casefold() for w in _WORD.findall(clause[:start])[-_NEGATION_WINDOW:]]
        if any(w in NEGATION_CUES for w in words):
            return True
        if previous is None or not previous.negated:
            return False
        between = [w.casefold() for w in _WORD.findall(clause[previous.end : start])]
        return len(between) <= _NEGATION_WINDOW and bool({"or", "nor"} & set(between))

    def parse(self, caption: str) -> ParsedCaption:
        """Read the classes a caption mentions, negates and quantifies."""
        mentioned: set[str] = set()
        negated: set[str] = set()
        stated: list[tuple[str, float]] = []
        for clause in _CLAUSE_BREAK.split(caption):
            mentions = self.mentions(clause)
            for m in mentions:
                (negated if m.negated else mentioned).add(m.name)
            positive = [m for m in mentions if not m.negated]
            for pct in _PERCENT.finditer(clause):
                value = float(pct.group(1))
                owner = _nearest(positive, pct.start(), pct.end())
                if owner is not None and value <= 100:
                    stated.append((owner.name, value))
        return ParsedCaption(frozenset(mentioned), frozenset(negated - mentioned), tuple(stated))


def _nearest(mentions: Sequence[_Mention], start: int, end: int) -> _Mention | None:
    """The mention closest to the span ``[start, end)``; ties go to the one before it."""
    best, best_key = None, (math.inf, 1)
    for m in mentions:
        gap = start - m.end if m.end <= start else m.start - end
        key = (max(gap, 0), 0 if m.end <= start else 1)
        if key < best_key:
            best, best_key = m, key
    return best


def score_caption(
    caption: str | ParsedCaption,
    composition: Mapping[str, float],
    lexicon: Lexicon | None = None,
    salient_share: float = 0.05,
    present_share: float = 0.0,
) -> CaptionCheck:
    """Score a caption (or its parse) against a class name -> mask fraction ``composition`` (missing: 0).

    Recall wants the classes of share ``>= salient_share`` mentioned; precision counts a
    mentioned class present above ``present_share``; ``lexicon`` defaults to :data:`DEFAULT_LEXICON`.
    """
    if isinstance(caption, str):
        caption = (lexicon or Lexicon()).parse(caption)
    classes = set(lexicon.classes) if lexicon is not None else set(DEFAULT_LEXICON)
    salient = {c for c in classes if composition.get(c, 0.0) >= salient_share}
    said = caption.mentioned
    recall = len(salient & said) / len(salient) if salient else math.nan
    precision = sum(composition.get(c, 0.0) > present_share for c in said) / len(said) if said else math.nan
    errors = [abs(value - 100.0 * composition.get(name, 0.0)) for name, value in caption.stated]
    mae = sum(errors) / len(errors) if errors else math.nan
    return CaptionCheck(recall, precision, mae, caption)


_COLUMNS = ("captions", "recall_sum", "recall_n", "precision_sum", "precision_n", "mae_sum", "mae_n")


class CompositionConsistency(CaptionMetric):
    """Caption-mask agreement: mean recall, precision and percentage error of class mentions.

    Each mean runs over the captions where its score (:func:`score_caption`) is defined;
    sums are distributed-safe (:class:`~aras400k.metrics.captions.CaptionMetric`).

    Args:
        lexicon: Class name -> words and synonyms; ``None`` uses :data:`DEFAULT_LEXICON`.
        salient_share: A class covering at least this fraction should be mentioned (recall).
        present_share: A mentioned class is present when its share exceeds this (precision).
        negation: Count negated mentions (``"no water"``) as not mentioned.
        class_names: Class order of compositions given as arrays (default: the land-cover classes).

    Raises:
        ValueError: If a lexicon class is not a class name, or a share is outside ``[0, 1]``.
    """

    higher_is_better = True

    def __init__(
        self,
        lexicon: dict[str, list[str]] | None = None,
        salient_share: float = 0.05,
        present_share: float = 0.0,
        negation: bool = True,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.class_names = tuple(class_names) if class_names is not None else CLASS_NAMES
        self.lexicon = Lexicon(lexicon, negation=negation)
        unknown = sorted(set(self.lexicon.classes) - set(self.class_names))
        if unknown:
            raise ValueError(f"lexicon classes {unknown} are not class names {list(self.class_names)}")
        for label, value in (("salient_share", salient_share), ("present_share", present_share)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} is a fraction in [0, 1], got {value}")
        self.salient_share = salient_share
        self.present_share = present_share
        self._add_group_states(_COLUMNS, self._means)

    def _as_mappings(self, compositions: Any) -> list[Mapping[str, float]]:
        if isinstance(compositions, (torch.Tensor, np.ndarray)):
            array = np.asarray(compositions.detach().cpu() if isinstance(compositions, torch.Tensor) else compositions)
            if array.ndim != 2 or array.shape[1] != len(self.class_names):
                raise ValueError(f"expected compositions of shape (N, {len(self.class_names)}), got {array.shape}")
            comps: list[Mapping[str, float]] = [dict(zip(self.class_names, row.tolist(), strict=True)) for row in array]
        else:
            comps = list(compositions)
        for comp in comps:
            if any(not 0.0 <= float(v) <= 1.0 + 1e-6 for v in comp.values()):
                raise ValueError(f"composition shares are fractions in [0, 1], got {dict(comp)}")
        return comps

    def update(
        self,
        captions: Sequence[str],
        compositions: Sequence[Mapping[str, float]] | torch.Tensor | np.ndarray,
        groups: Sequence[str] | None = None,
    ) -> None:
        """Score captions against their masks' compositions (class name -> fraction each, or ``(N, C)``).

        ``groups`` optionally names each caption's group, e.g. ``f"{model}/{mode}"``.

        Raises:
            ValueError: On mismatched lengths or a share outside ``[0, 1]``.
        """
        if isinstance(captions, str):
            raise ValueError("captions must be a sequence of strings, not one string")
        comps = self._as_mappings(compositions)
        if len(comps) != len(captions):
            raise ValueError(f"got {len(captions)} captions but {len(comps)} compositions")
        rows = torch.tensor([self._row(c, comp) for c, comp in zip(captions, comps, strict=True)], dtype=torch.float64)
        rows = rows.reshape(-1, len(_COLUMNS))
        self._add_rows(rows, groups)

    def _row(self, caption: str, composition: Mapping[str, float]) -> list[float]:
        check = score_caption(caption, composition, self.lexicon, self.salient_share, self.present_share)
        row = [1.0]
        for value in (check.recall, check.precision, check.percent_mae):
            row += [0.0, 0.0] if math.isnan(value) else [value, 1.0]
        return row

    @staticmethod
    def _means(sums: Mapping[str, float]) -> dict[str, float]:
        def mean(name: str) -> float:
            n = sums[f"{name}_n"]
            return sums[f"{name}_sum"] / n if n > 0 else math.nan

        return {
            "recall": mean("recall"),
            "precision": mean("precision"),
            "percent_mae": mean("mae"),
            "captions": int(sums["captions"]),
            "with_salient": int(sums["recall_n"]),
            "with_mentions": int(sums["precision_n"]),
            "with_percentages": int(sums["mae_n"]),
        }

    def compute(self) -> dict[str, Any]:
        """Means over every caption added (and gathered), overall and per group.

        ``recall``, ``precision``, ``percent_mae`` (float64, NaN where no caption defines
        them), the int64 counts ``captions``, ``with_salient``, ``with_mentions``,
        ``with_percentages``, and ``groups``: name -> those as Python numbers.
        """
        return self._results()
