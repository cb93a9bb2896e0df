"""The ``template`` backend: varied, deterministic captions without any model.

The embedded default, so the whole pipeline runs on a fresh machine. ``text`` captions
give the classes by share with percentages; ``vision`` ones no numbers but *where* each
class lies in the mask (:mod:`~aras400k.captioning.spatial`, its stand-in for what a
vision model sees) and the image's tones; ``hybrid`` ones both (``docs/captioning.md``).
Every choice is drawn from ``random.Random(request.seed)``: one (key, index, seed)
gives one caption, a retry with another seed another phrasing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from aras400k.captioning.backends.base import CaptionBackend
from aras400k.captioning.requests import CaptionRequest
from aras400k.captioning.spatial import ClassLayout, class_layouts, location_phrases
from aras400k.data.composition import composition as mask_composition
from aras400k.errors import check_at_least

__all__ = ["CLASS_WORDS", "LANDSCAPES", "PLURAL_WORDS", "TemplateBackend", "image_tone"]

#: Synonyms of each class name.
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "tree": ("tree cover", "forest", "woodland", "trees"),
    "shrub": ("shrubland", "scrub", "shrubs", "bushland"),
    "grass": ("grassland", "grass", "meadow", "pasture"),
    "crop": ("cropland", "farmland", "agricultural fields", "crop fields"),
    "built": ("built-up land", "buildings", "settlement", "urban fabric"),
    "barren": ("bare ground", "barren land", "exposed soil", "bare land"),
    "water": ("water", "open water", "surface water", "water bodies"),
}
#: The kind of landscape a dominant class makes.
LANDSCAPES: dict[str, tuple[str, ...]] = {
    "tree": ("a forested landscape", "a wooded area", "a forest scene"),
    "shrub": ("a shrubland landscape", "scrubland", "a bushy landscape"),
    "grass": ("open grassland", "a grassy landscape", "a meadow landscape"),
    "crop": ("an agricultural landscape", "farmland", "a cultivated landscape"),
    "built": ("an urban area", "a built-up district", "a settlement"),
    "barren": ("a barren landscape", "bare, open terrain", "a dry, sparsely covered landscape"),
    "water": ("a waterside scene", "a landscape dominated by water", "a lake or river scene"),
}
_MIXED = ("a mixed landscape", "a patchwork of land covers", "a mosaic of land-cover types")
_PATCH = ("satellite patch", "satellite image", "scene", "patch", "image tile")
#: Synonyms above that are plural (they take "cover", not "covers").
PLURAL_WORDS = frozenset({"trees", "shrubs", "crop fields", "agricultural fields", "buildings", "water bodies"})
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven")
# (singular, plural) verbs saying where the largest class lies, or how much of the patch it takes.
_PLACE_VERBS = (("is found", "are found"), ("lies", "lie"), ("appears", "appear"))
_MAJORITY_VERBS = (("dominates", "dominate"), ("covers most of", "cover most of"))
_LARGEST_VERBS = (
    ("is the largest cover in", "are the largest cover in"),
    ("is the main land cover of", "are the main land cover of"),
)
_HUES = {
    "green": ("green", "greenish"),
    "brown": ("brown", "brownish", "earthy"),
    "grey": ("grey", "greyish", "muted"),
    "blue": ("blue", "bluish"),
    "red": ("reddish", "red-brown"),
}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _verb(word: str, singular: str, plural: str) -> str:
    return plural if word in PLURAL_WORDS else singular


def _amount(share: float, rng: random.Random, used: set[str]) -> str:
    """A qualitative amount for a share, avoiding ones already used in the caption when possible."""
    if share >= 0.5:
        options: tuple[str, ...] = ("mostly", "predominantly", "extensive", "widespread")
    elif share >= 0.2:
        options = ("large areas of", "a substantial share of", "broad stretches of", "wide tracts of")
    elif share >= 0.05:
        options = ("some", "patches of", "smaller areas of", "pockets of")
    else:
        options = ("traces of", "small pockets of", "a few spots of", "scattered bits of")
    fresh = [o for o in options if o not in used] or list(options)
    choice = rng.choice(fresh)
    used.add(choice)
    return choice


def image_tone(image: np.ndarray, max_side: int = 64) -> tuple[str, str, str]:
    """``(brightness, hue, texture)`` of an ``(H, W, 3)`` uint8 image, subsampled to about ``max_side`` a side.

    Brightness is ``dark``/``bright``/``""``, hue one of ``green``, ``brown``, ``grey``,
    ``blue``, ``red``, texture ``rough``/``smooth``/``""``.
    """
    stride = max(1, -(-max(image.shape[:2]) // max_side))
    sub = np.asarray(image[::stride, ::stride], dtype=np.float32)
    mean = sub.reshape(-1, 3).mean(axis=0)
    luminance = float(mean @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    brightness = "dark" if luminance < 80 else "bright" if luminance > 170 else ""
    saturation = float((mean.max() - mean.min()) / (mean.max() + 1e-6))
    top = int(np.argmax(mean))
    if saturation < 0.1:
        hue = "grey"
    elif top == 1:
        hue = "green"
    elif top == 2:
        hue = "blue"
    else:
        hue = "brown" if mean[1] >= mean[2] else "red"
    gray = sub @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    detail = float(np.abs(np.diff(gray, axis=1)).mean()) if gray.shape[1] > 1 else 0.0
    texture = "rough" if detail > 25 else "smooth" if detail < 6 else ""
    return brightness, hue, texture


@dataclass
class _Scene:
    """One request's land cover as the caption shapes use it.

    Attributes:
        shares: ``(class, share)`` of the classes present, largest first.
        named: The classes named with their share (at most ``max_classes``); ``rest``: the others.
        words: Class -> the word this caption uses for it.
        layouts: Class -> where it lies (empty without spatial hints).
    """

    shares: Sequence[tuple[str, float]]
    named: list[tuple[str, float]]
    rest: list[str]
    words: Mapping[str, str]
    layouts: Mapping[str, ClassLayout]


@dataclass(eq=False)
class TemplateBackend(CaptionBackend):
    """Captions from the composition, the mask's layout and the image's tones (see the module docstring).

    Args:
        spatial_hints: Say where classes lie (vision and hybrid modes, when a mask is given).
        image_tones: Describe brightness, colour and texture (vision and hybrid modes).
        max_classes: Most classes named with a share or position (the rest: "small amounts of ...").
        min_named_share: Classes below this share are only summed up that way.
        model_name: Name recorded as the sidecar's ``model``.
    """

    name: ClassVar[str] = "template"

    spatial_hints: bool = True
    image_tones: bool = True
    max_classes: int = 5
    min_named_share: float = 0.03
    model_name: str = "template"  # type: ignore[assignment]  # a plain field serves the abstract property

    def __post_init__(self) -> None:
        check_at_least("max_classes", self.max_classes, 1)

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """Write one caption per request (layouts and tones are measured once per array)."""
        layouts: dict[int, dict[str, ClassLayout]] = {}
        tones: dict[int, tuple[str, str, str]] = {}
        out = []
        for request in requests:
            where: dict[str, ClassLayout] = {}
            if request.mode != "text" and self.spatial_hints and request.mask is not None:
                if id(request.mask) not in layouts:
                    layouts[id(request.mask)] = {lay.name: lay for lay in class_layouts(request.mask)}
                where = layouts[id(request.mask)]
            tone = None
            if request.mode != "text" and self.image_tones and request.image is not None:
                if id(request.image) not in tones:
                    tones[id(request.image)] = image_tone(request.image)
                tone = tones[id(request.image)]
            out.append(self.caption_one(request, where, tone))
        return out

    def _shares(self, request: CaptionRequest) -> list[tuple[str, float]]:
        comp: Mapping[str, float] | None = request.composition
        if comp is None and request.mask is not None:
            comp = mask_composition(request.mask)
        items = [(name, float(share)) for name, share in (comp or {}).items() if share >= 0.0005]
        return sorted(items, key=lambda kv: -kv[1])

    def caption_one(
        self, request: CaptionRequest, layouts: Mapping[str, ClassLayout], tone: tuple[str, str, str] | None
    ) -> str:
        """Write the caption of one request, given its class layouts (by name) and image tone (or ``None``)."""
        rng = random.Random(request.seed)
        shares = self._shares(request)
        words = {name: rng.choice(CLASS_WORDS.get(name, (name,))) for name, _ in shares}
        scene = _Scene(shares, *self._split(shares), words, layouts)
        if request.mode == "text":
            text = self._text(scene, rng)
        elif not shares:
            text = ""
        else:
            text = (self._vision if request.mode == "vision" else self._hybrid)(scene, rng)
        if tone is not None and (request.mode == "vision" or rng.random() < 0.5):
            text = f"{text} {self._tone_sentence(tone, rng)}" if text else self._tone_sentence(tone, rng)
        return text or f"{_cap(_a(rng.choice(_PATCH)))} of satellite imagery."

    def _landscape(self, shares: Sequence[tuple[str, float]], rng: random.Random) -> str:
        if not shares or shares[0][1] < 0.4:
            return rng.choice(_MIXED)
        return rng.choice(LANDSCAPES.get(shares[0][0], _MIXED))

    def _split(self, shares: Sequence[tuple[str, float]]) -> tuple[list[tuple[str, float]], list[str]]:
        named = [kv for kv in shares[: self.max_classes] if kv[1] >= self.min_named_share] or list(shares[:1])
        rest = [name for name, _ in shares[len(named) :]]
        return named, rest

    def _rest(self, rest: Sequence[str], words: Mapping[str, str], rng: random.Random) -> str:
        if not rest:
            return ""
        lead = rng.choice(("small amounts of", "traces of", "minor amounts of"))
        return f"{lead} {_join([words[n] for n in rest])}"

    def _text(self, scene: _Scene, rng: random.Random) -> str:
        shares, named, rest, words = scene.shares, scene.named, scene.rest, scene.words
        if not shares:
            return f"{_cap(_a(rng.choice(_PATCH)))} with no labelled land cover."
        (top, top_share), others = named[0], named[1:]
        if not others and not rest:
            return rng.choice(
                (
                    f"The {rng.choice(_PATCH)} is entirely {words[top]} ({_pct(top_share)}).",
                    f"{_cap(words[top])} {_verb(words[top], 'covers', 'cover')} the whole "
                    f"{rng.choice(_PATCH)} ({_pct(top_share)}).",
                    f"{_cap(self._landscape(shares, rng))} made up only of {words[top]}, {_pct(top_share)}.",
                )
            )
        tail = self._rest(rest, words, rng)
        tails = [tail] if tail else []
        paren = [f"{words[n]} ({_pct(s)})" for n, s in others] + tails
        at = [f"{words[n]} at {_pct(s)}" for n, s in others] + tails
        plain = [f"{_pct(s)} {words[n]}" for n, s in named] + tails
        listed = [f"{words[n]} {_pct(s)}" for n, s in named] + tails
        patch = rng.choice(_PATCH)
        lead = "dominated by" if top_share >= 0.4 else "led by"
        shapes = [
            f"{_cap(self._landscape(shares, rng))}: {_join(listed)}.",
            f"{_cap(words[top])} {_verb(words[top], 'covers', 'cover')} {_pct(top_share)} of the {patch}, "
            f"followed by {_join(paren)}.",
            f"{_cap(_a(patch))} {lead} {words[top]} ({_pct(top_share)}), with {_join(paren)}.",
            f"Land cover in this {patch} is {_join(plain)}.",
            f"{rng.choice(('Mainly', 'Chiefly', 'Largely'))} {words[top]} at {_pct(top_share)}, with {_join(at)}.",
            f"{_cap(self._landscape(shares, rng))} where {words[top]} {_verb(words[top], 'takes', 'take')} up "
            f"{_pct(top_share)}, alongside {_join(paren)}.",
        ]
        if top_share < 0.4:
            shapes[4] = f"A mix of {_join(plain)}."
        text = rng.choice(shapes)
        extra = rng.random()
        present = {n for n, _ in shares}
        if extra < 0.2:
            absent = [n for n in ("built", "water", "crop", "tree") if n not in present]
            if absent:
                text += f" There is no {CLASS_WORDS[rng.choice(absent)][0]} in the {patch}."
        elif extra < 0.35:
            text += f" Overall it reads as {self._landscape(shares, rng)}."
        elif extra < 0.45:
            count = _NUMBERS[len(present)] if len(present) < len(_NUMBERS) else str(len(present))
            text += f" {_cap(count)} land-cover classes are present."
        return text

    def _where(self, name: str, layouts: Mapping[str, ClassLayout], rng: random.Random) -> str:
        layout = layouts.get(name)
        return f" {rng.choice(location_phrases(layout.location))}" if layout is not None else ""

    def _vision(self, scene: _Scene, rng: random.Random) -> str:
        shares, named, rest, words, layouts = scene.shares, scene.named, scene.rest, scene.words, scene.layouts
        used: set[str] = set()
        phrases = [f"{_amount(s, rng, used)} {words[n]}{self._where(n, layouts, rng)}" for n, s in named]
        (top, top_share), others = named[0], named[1:]
        where_top = self._where(top, layouts, rng)
        if where_top:
            verb = rng.choice(_PLACE_VERBS)
            top_clause = f"{_cap(words[top])} {_verb(words[top], *verb)}{where_top}"
        else:
            verb = rng.choice(_MAJORITY_VERBS if top_share >= 0.5 else _LARGEST_VERBS)
            top_clause = f"{_cap(words[top])} {_verb(words[top], *verb)} the {rng.choice(_PATCH)}"
        if not others:
            return rng.choice((f"{_cap(self._landscape(shares, rng))} of {words[top]}{where_top}.", f"{top_clause}."))
        shapes = (
            f"{_cap(self._landscape(shares, rng))} with {_join(phrases)}.",
            f"Satellite view of {_join(phrases)}.",
            f"{_cap(self._landscape(shares, rng))}: {_join(phrases)}.",
            f"{top_clause}, with {_join(phrases[1:])}.",
        )
        text = rng.choice(shapes)
        if rest and rng.random() < 0.5:
            text += f" There are also {self._rest(rest, words, rng)}."
        return text

    def _hybrid(self, scene: _Scene, rng: random.Random) -> str:
        shares, named, rest, words, layouts = scene.shares, scene.named, scene.rest, scene.words, scene.layouts
        (top, top_share), others = named[0], named[1:]
        verb = _verb(words[top], *rng.choice(_PLACE_VERBS))
        where_top = self._where(top, layouts, rng) or " across the scene"
        if not others and not rest:
            return f"{_cap(words[top])} ({_pct(top_share)}) {verb}{where_top}."
        tail = self._rest(rest, words, rng)
        paren = [f"{words[n]} ({_pct(s)}){self._where(n, layouts, rng)}" for n, s in others]
        plain = [f"{_pct(s)} {words[n]}{self._where(n, layouts, rng)}" for n, s in others]
        at = [f"{words[n]} at {_pct(s)}{self._where(n, layouts, rng)}" for n, s in others]
        extra = [tail] if tail else []
        shapes = (
            f"{_cap(words[top])} ({_pct(top_share)}) {verb}{where_top}, with {_join(paren + extra)}.",
            f"{_cap(self._landscape(shares, rng))}: {_pct(top_share)} {words[top]}{where_top}, {_join(plain + extra)}.",
            f"{_cap(_a(rng.choice(_PATCH)))} with "
            f"{_join([f'{words[top]} covering {_pct(top_share)}{where_top}', *at, *extra])}.",
        )
        return rng.choice(shapes)

    def _tone_sentence(self, tone: tuple[str, str, str], rng: random.Random) -> str:
        brightness, hue, texture = tone
        colour = rng.choice(_HUES.get(hue, (hue,)))
        feel = {"rough": "a fine, busy texture", "smooth": "a smooth texture"}.get(texture, "")
        lead = f"The image is {brightness} with" if brightness else "The image shows mostly"
        shapes = [
            f"{lead} {colour} tones" + (f" and {feel}." if feel else "."),
            f"Colours are {brightness + ' and ' if brightness else ''}{colour}.",
            f"{_cap(brightness + ', ' if brightness else '')}{colour}-toned imagery"
            + (f" with {feel}." if feel else "."),
        ]
        return _cap(rng.choice(shapes))
