"""Procedural synthetic land-cover scenes: the project's embedded demo dataset.

:func:`generate_scene` draws a satellite-like RGB patch and its 7-class mask
(:mod:`aras400k.classes`) from a numpy random generator, so a segmenter can be trained
and tested on a CPU without downloading anything.

An archetype (forest, farmland, mixed, urban or dry land) sets the target shares of
trees and crops and the odds of the other features, so scenes vary a lot while the
pooled class shares stay imbalanced like Sentinel-2 / WorldCover data. Grass is the
background; the ``_draw_*`` functions add parcels, forests, shrub and barren patches,
settlements and roads, then rivers and lakes, and :func:`_render_image` paints and
degrades the picture as a sensor would. Every length is a fraction of the scene size;
a 64 px scene takes a few milliseconds and depends only on the generator's state.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from aras400k.classes import CLASS_NAMES

__all__ = ["generate_scene"]

_TREE, _SHRUB, _GRASS, _CROP, _BUILT, _BARREN, _WATER = (
    CLASS_NAMES.index(name) for name in ("tree", "shrub", "grass", "crop", "built", "barren", "water")
)

#: Scene archetypes and their probabilities.
_ARCHETYPES = ("forest", "farmland", "mixed", "urban", "dry")
_ARCHETYPE_P = (0.22, 0.33, 0.23, 0.12, 0.10)

#: Base true-colour RGB (0..255, as a 2-98 % stretched Sentinel-2 composite) per class.
_CLASS_RGB = np.array(
    [
        (40, 66, 40),  # tree: dark green
        (96, 98, 66),  # shrub: olive
        (104, 138, 72),  # grass: lighter green
        (150, 140, 95),  # crop (parcels get their own tones)
        (132, 126, 122),  # built: grey-brown
        (192, 178, 150),  # barren: beige
        (24, 40, 62),  # water: dark blue
    ],
    dtype=np.float32,
)
#: Per-class amplitudes of multiplicative brightness texture at four frequencies:
#: (finest, fine, mid, broad).
_TEXTURE_AMP = np.array(
    [
        (0.16, 0.14, 0.08, 0.05),  # tree: rough canopy
        (0.10, 0.06, 0.06, 0.04),  # shrub (plus its own speckle)
        (0.03, 0.03, 0.06, 0.07),  # grass: smooth
        (0.03, 0.02, 0.04, 0.04),  # crop (plus stripes)
        (0.20, 0.10, 0.05, 0.04),  # built (plus roofs and roads)
        (0.04, 0.05, 0.10, 0.08),  # barren: mottled
        (0.01, 0.02, 0.03, 0.04),  # water: flat
    ],
    dtype=np.float32,
)
#: Parcel kinds: (RGB, stripe amplitude). The last one is pasture, labelled grass.
_PARCEL_KINDS = np.array(
    [
        (84, 142, 52, 0.10),  # green cereal / maize
        (200, 182, 112, 0.08),  # ripe, yellow
        (128, 98, 74, 0.16),  # ploughed, brown
        (172, 148, 118, 0.07),  # bare light soil
        (124, 128, 84, 0.04),  # fallow, grass-like
        (104, 140, 74, 0.0),  # pasture (grass)
    ],
    dtype=np.float32,
)
_PASTURE = len(_PARCEL_KINDS) - 1
#: Large-scale noise fields that place land cover: (correlation length as a fraction of
#: the size, spectral slope). Steeper slopes give smoother, blobbier shapes.
_FIELDS = {
    "forest": (0.12, 3.0),
    "farmland": (0.20, 4.0),
    "copses": (0.04, 4.0),
    "shrub": (0.07, 3.5),
    "barren": (0.07, 3.5),
    "outline": (0.03, 3.5),  # perturbs the outlines of settlements, lakes and rivers
    "haze": (0.30, 5.0),
    "riparian": (0.02, 3.0),  # riparian trees
    "sandbars": (0.03, 4.0),
}
_Noise = dict[str, np.ndarray]
#: Urban detail codes drawn inside settlements and their colours.
_ROAD, _ROOF_LIGHT, _ROOF_RED, _ROOF_DARK, _YARD, _ROOF_WIDE = 1, 2, 3, 4, 5, 6
_DETAIL_RGB = np.array(
    [
        (0, 0, 0),  # unused
        (72, 72, 78),  # road: dark asphalt
        (206, 200, 194),  # light roof
        (178, 98, 78),  # red tiles
        (98, 96, 100),  # dark roof
        (120, 124, 100),  # yards and gardens
        (222, 222, 220),  # industrial roof
    ],
    dtype=np.float32,
)


class _Layers:
    """Everything drawn for one scene: the mask plus what the renderer needs; all grass at first."""

    def __init__(self, size: int) -> None:
        shape = (size, size)
        self.size = size
        self.mask: np.ndarray = np.full(shape, _GRASS, dtype=np.uint8)
        self.parcel: np.ndarray = np.full(shape, -1, dtype=np.int32)  # parcel index per pixel, -1 outside parcels
        self.parcel_rgb: np.ndarray = np.zeros((0, 3), dtype=np.float32)  # (P, 3) parcel colours
        self.parcel_stripe: np.ndarray = np.zeros((0, 4), dtype=np.float32)  # (P, 4): amplitude, period, axis, phase
        self.field_uv: np.ndarray = np.zeros((2, *shape), dtype=np.float32)  # (2, H, W) field-grid coordinates
        self.edge: np.ndarray = np.zeros(shape, dtype=np.float32)  # 0..1 weight of field borders (tracks, hedges)
        self.detail: np.ndarray = np.zeros(shape, dtype=np.uint8)  # urban detail code per pixel
        self.depth: np.ndarray = np.zeros(shape, dtype=np.float32)  # 0..1 relative water depth


def generate_scene(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: ``(image, mask)``, ``(size, size, 3)`` uint8 RGB and ``(size, size)`` uint8 classes 0..6.

    It depends only on the state of ``rng``, which advances; ``size`` is meant for 32..256
    pixels (features scale with it).

    Raises:
        ValueError: If ``size`` is smaller than 8.
    """
    if size < 8:
        raise ValueError(f"scene size must be at least 8 pixels, got {size}")
    archetype = _ARCHETYPES[int(rng.choice(len(_ARCHETYPES), p=_ARCHETYPE_P))]
    scales, betas = zip(*_FIELDS.values(), strict=True)
    fields = _smooth_noise(rng, size, np.array(scales) * size, np.array(betas))
    noise = dict(zip(_FIELDS, fields, strict=True))
    layers = _Layers(size)

    tree_frac, crop_frac = _cover_targets(rng, archetype)
    _draw_fields(layers, rng, noise["farmland"], crop_frac)
    _draw_forest(layers, rng, noise, tree_frac, archetype)
    _draw_rare_patches(layers, rng, noise, archetype)
    _draw_settlements(layers, rng, noise["outline"], archetype)
    _draw_water(layers, rng, noise, archetype)
    image = _render_image(layers, rng, noise["haze"], archetype)
    return image, layers.mask


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only pixel-centre coordinates ``(x, y)`` of a ``size`` x ``size`` scene."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@lru_cache(maxsize=32)
def _spectral_filter(m: int, scales: tuple[float, ...], betas: tuple[float, ...]) -> np.ndarray:
    """Read-only amplitude spectra (see :func:`_smooth_noise`) on an ``m`` x ``m`` real FFT grid."""
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(m)[None, :]
    f2 = (fy**2 + fx**2)[None]
    scale = np.asarray(scales, dtype=np.float64)[:, None, None]
    beta = np.asarray(betas, dtype=np.float64)[:, None, None]
    amplitude = ((1.0 + (2.0 * np.pi) ** 2 * f2 * scale**2) ** (-beta / 4.0)).astype(np.float32)
    amplitude.flags.writeable = False
    return amplitude


def _smooth_noise(
    rng: np.random.Generator, size: int, scales: np.ndarray, betas: np.ndarray, pad: bool = True
) -> np.ndarray:
    """``(len(scales), size, size)`` float32 fields with zero mean, unit std and power-law spectra.

    White noise is filtered by the amplitude spectrum ``(1 + (2 pi f L)^2)^(-beta / 4)``:
    the correlation length ``L`` (``scales``, pixels) sets the blob size, ``beta`` the
    roughness (3: fractal edges; 5: smooth blobs). ``pad`` draws 1.5 times larger and crops,
    so the periodic FFT does not make opposite edges match.
    """
    m = size + (size // 2 if pad else 0)
    m += m % 2
    # Uniform white noise is as white as Gaussian and much cheaper to draw; after
    # filtering, the fields are close to Gaussian anyway.
    white = rng.random((len(scales), m, m), dtype=np.float32)
    amplitude = _spectral_filter(m, tuple(float(x) for x in scales), tuple(float(x) for x in betas))
    fields = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(m, m))[:, :size, :size].astype(np.float32)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-6
    return fields


def _rotated(size: int, theta: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``theta`` about ``(cx, cy)``: ``(along, across)``."""
    x, y = _grid(size)
    dx, dy = x - cx, y - cy
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    return dx * c + dy * s, dy * c - dx * s


def _hash01(keys: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random floats in ``[0, 1)`` for integer keys (a splitmix64 mix)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _cover_targets(rng: np.random.Generator, archetype: str) -> tuple[float, float]:
    """Target shares of trees and of farmland for an archetype."""
    tree_range, crop_range = {
        "forest": ((0.55, 0.92), (0.0, 0.12)),
        "farmland": ((0.02, 0.18), (0.50, 0.88)),
        "mixed": ((0.18, 0.45), (0.20, 0.50)),
        "urban": ((0.04, 0.25), (0.05, 0.40)),
        "dry": ((0.0, 0.06), (0.0, 0.30)),
    }[archetype]
    return float(rng.uniform(*tree_range)), float(rng.uniform(*crop_range))


def _draw_fields(layers: _Layers, rng: np.random.Generator, farm: np.ndarray, crop_frac: float) -> None:
    """Lay out parcels on a rotated strip grid and mark those where ``farm`` is high as crop.

    Whole parcels are taken, highest mean ``farm`` first (jittered), until ``crop_frac`` of
    the scene is covered. Each gets a kind (pasture is labelled grass), a tone and stripes.
    """
    size = layers.size
    if crop_frac <= 0.0:
        return
    theta = rng.normal(0.0, 0.12) if rng.random() < 0.75 else rng.uniform(0.0, np.pi)
    u, v = _rotated(size, theta, size / 2, size / 2)
    half = 0.75 * size  # the rotated scene fits in [-half, half]^2
    widths = rng.uniform(0.08, 0.28, 24) * size
    breaks = np.cumsum(widths) - half - rng.uniform(0.0, widths[0])
    breaks[-1] = max(breaks[-1], half + 1.0)
    strip = np.searchsorted(breaks, u)
    lengths = rng.uniform(0.12, 0.45, len(breaks) + 1) * size
    offsets = rng.uniform(0.0, 1.0, len(breaks) + 1) * lengths
    w = v + offsets[strip].astype(np.float32)
    length = lengths[strip].astype(np.float32)
    cell = np.floor(w / length)
    keys = strip.astype(np.int64) * 1024 + cell.astype(np.int64) + 512
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(size, size)
    n_parcels = len(uniq)

    counts = np.bincount(inverse.ravel(), minlength=n_parcels)
    score = np.bincount(inverse.ravel(), weights=farm.ravel(), minlength=n_parcels) / counts
    score += rng.normal(0.0, 0.35, n_parcels)
    order = np.argsort(-score)
    n_take = int(np.searchsorted(np.cumsum(counts[order]), crop_frac * size * size)) + 1
    chosen = np.zeros(n_parcels, dtype=bool)
    chosen[order[:n_take]] = True

    # Season: the mix of parcel kinds differs per scene; pasture is always a minority.
    kind_p = rng.dirichlet(np.array([1.6, 1.0, 1.0, 0.6, 0.8]))
    pasture_p = rng.uniform(0.03, 0.22)
    kind_p = np.append(kind_p * (1.0 - pasture_p), pasture_p)
    kind = rng.choice(len(_PARCEL_KINDS), size=n_parcels, p=kind_p)
    tone = 1.0 + rng.normal(0.0, 0.07, (n_parcels, 1)) + rng.normal(0.0, 0.03, (n_parcels, 3))
    layers.parcel_rgb = (_PARCEL_KINDS[kind, :3] * tone).astype(np.float32)
    long_axis = rng.random(n_parcels) < 0.7
    layers.parcel_stripe = np.stack(
        [
            _PARCEL_KINDS[kind, 3] * rng.uniform(0.6, 1.4, n_parcels),
            np.maximum(2.2, rng.uniform(0.03, 0.06, n_parcels) * size),
            long_axis.astype(np.float64),
            rng.uniform(0.0, 2.0 * np.pi, n_parcels),
        ],
        axis=1,
    ).astype(np.float32)

    in_field = chosen[inverse]
    layers.parcel = np.where(in_field, inverse, -1).astype(np.int32)
    layers.mask[in_field] = np.where(kind[inverse[in_field]] == _PASTURE, _GRASS, _CROP)
    layers.field_uv = np.stack([u, w]).astype(np.float32)

    # Distance to the nearest parcel border, for tracks and hedgerows in the image.
    bounds = np.concatenate([[-np.inf], breaks, [np.inf]]).astype(np.float32)
    du = np.minimum(u - bounds[strip], bounds[strip + 1] - u)
    r = w - cell * length
    dv = np.minimum(r, length - r)
    border = np.float32(0.7 * size / 64)
    layers.edge = np.where(in_field, np.clip(1.0 - np.minimum(du, dv) / border, 0.0, 1.0), 0.0).astype(np.float32)


def _draw_forest(layers: _Layers, rng: np.random.Generator, noise: _Noise, tree_frac: float, archetype: str) -> None:
    """Mark the top ``tree_frac`` of the forest field (away from farmland) as trees, plus small copses."""
    forest = noise["forest"] - 0.5 * noise["farmland"]
    if tree_frac > 0.0:
        level = np.quantile(forest, 1.0 - tree_frac)
        layers.mask[forest > level] = _TREE
    if archetype in ("farmland", "mixed", "urban") and rng.random() < 0.7:
        layers.mask[noise["copses"] > rng.uniform(1.8, 2.6)] = _TREE


def _blob(size: int, rng: np.random.Generator, wobble: np.ndarray, radius: tuple[float, float]) -> np.ndarray:
    """A random ellipse with a noisy outline; ``radius`` is a range in fractions of the size."""
    cx, cy = rng.uniform(0.0, size, 2)
    a, b = rng.uniform(*radius, 2) * size
    u, v = _rotated(size, rng.uniform(0.0, np.pi), cx, cy)
    return np.hypot(u / max(a, 0.8), v / max(b, 0.8)) + 0.3 * wobble < 1.0


def _draw_rare_patches(layers: _Layers, rng: np.random.Generator, noise: _Noise, archetype: str) -> None:
    """Draw shrub and barren land: widespread in dry scenes, small and rare elsewhere."""
    size = layers.size
    mask = layers.mask
    shrub = noise["shrub"]
    open_land = (mask == _GRASS) | ((mask == _TREE) & (archetype == "dry"))
    if archetype == "dry":
        frac = rng.uniform(0.1, 0.4)
        mask[open_land & (shrub > np.quantile(shrub, 1.0 - frac))] = _SHRUB
        frac = rng.uniform(0.03, 0.2)
        mask[(mask != _CROP) & (noise["barren"] > np.quantile(noise["barren"], 1.0 - frac))] = _BARREN
        return
    if rng.random() < 0.12:  # scrub around forest edges and in clearings
        edge = (noise["forest"] > np.quantile(noise["forest"], 0.45)) & (mask != _TREE)
        mask[edge & open_land & (shrub > 0.3)] = _SHRUB
    if rng.random() < 0.06:  # a few shrub patches
        for _ in range(int(rng.integers(1, 4))):
            mask[_blob(size, rng, shrub, (0.04, 0.12)) & (mask != _CROP)] = _SHRUB
    if rng.random() < 0.07:  # quarries, bare rock, burnt or cleared land
        for _ in range(int(rng.integers(1, 3))):
            mask[_blob(size, rng, noise["barren"], (0.03, 0.10))] = _BARREN


def _draw_settlements(layers: _Layers, rng: np.random.Generator, wobble: np.ndarray, archetype: str) -> None:
    """Draw towns or villages and roads crossing the scene."""
    size = layers.size
    if archetype == "urban":
        _draw_settlement(layers, rng, wobble, rng.uniform(0.3, 0.65) * size)
        road_p = 0.6
    else:
        p = {"forest": 0.12, "farmland": 0.35, "mixed": 0.35, "dry": 0.2}[archetype]
        for _ in range(2):
            if rng.random() < p:
                _draw_settlement(layers, rng, wobble, rng.uniform(0.07, 0.2) * size)
        road_p = 0.25
    if rng.random() < road_p:
        _draw_road(layers, rng)


def _draw_settlement(layers: _Layers, rng: np.random.Generator, wobble: np.ndarray, radius: float) -> None:
    """Draw one settlement: a noisy disc cut by a road grid into blocks of buildings.

    Blocks are dense (small roofs on lots), garden suburbs, industrial (one wide roof) or
    parks (grass or trees in the mask); some get a bare construction site at their edge.
    """
    size = layers.size
    cx, cy = rng.uniform(0.1, 0.9, 2) * size
    u, v = _rotated(size, rng.normal(0.0, 0.15) if rng.random() < 0.6 else rng.uniform(0, np.pi), cx, cy)
    reach = np.hypot(u, v) / radius
    area = reach + 0.35 * wobble < 1.0
    if not area.any():
        return
    spacing = rng.uniform(0.07, 0.12) * size
    road_w = max(0.9, 0.018 * size)
    u = u + rng.uniform(0.0, spacing)
    v = v + rng.uniform(0.0, spacing)
    bu, bv = np.floor(u / spacing), np.floor(v / spacing)
    ru, rv = u - bu * spacing, v - bv * spacing
    road = (ru < road_w) | (rv < road_w)
    salt = int(rng.integers(1 << 62))
    block = (bu.astype(np.int64) + 4096) * 8192 + bv.astype(np.int64) + 4096
    block_kind = _hash01(block, salt)  # < .62 dense, < .82 garden, < .9 industrial, else park
    dense, garden = block_kind < 0.62, (block_kind >= 0.62) & (block_kind < 0.82)
    industrial, park = (block_kind >= 0.82) & (block_kind < 0.9), block_kind >= 0.9

    # Lots: each block is split into n x n lots with a roof in the middle of most.
    n_lots = int(rng.integers(2, 4))
    lot = (spacing - road_w) / n_lots
    lu, lv = (ru - road_w) / lot, (rv - road_w) / lot
    iu, iv = np.floor(lu), np.floor(lv)
    fu, fv = lu - iu, lv - iv
    margin = rng.uniform(0.12, 0.25)
    on_roof = (fu > margin) & (fu < 1 - margin) & (fv > margin) & (fv < 1 - margin)
    lot_key = block * 16 + (iu * 4 + iv).astype(np.int64)
    lot_draw = _hash01(lot_key, salt + 1)
    roof_colour = np.where(lot_draw < 0.45, _ROOF_LIGHT, np.where(lot_draw < 0.8, _ROOF_RED, _ROOF_DARK))
    occupied = _hash01(lot_key, salt + 2) < np.where(dense, 0.85, 0.45)
    detail = np.full((size, size), _YARD, dtype=np.uint8)
    detail[(dense | garden) & on_roof & occupied] = roof_colour[(dense | garden) & on_roof & occupied]
    detail[industrial & ~road] = _ROOF_WIDE
    detail[road] = _ROAD

    built = area & (road | ~park)
    layers.mask[built] = _BUILT
    layers.detail[built] = detail[built]
    green = area & park & ~road
    layers.mask[green] = np.where(rng.random() < 0.5, _TREE, _GRASS)
    layers.parcel[area] = -1
    layers.edge[area] = 0.0
    if rng.random() < 0.2:  # construction site / bare lot at the edge of town
        site = _blob(size, rng, wobble, (0.03, 0.08)) & ~area & (reach < 1.6)
        layers.mask[site] = _BARREN


def _draw_road(layers: _Layers, rng: np.random.Generator) -> None:
    """Draw a gently curving road across the scene (built, dark asphalt)."""
    size = layers.size
    u, v = _rotated(size, rng.uniform(0.0, np.pi), *rng.uniform(0.2, 0.8, 2) * size)
    bend = rng.uniform(-0.4, 0.4) * size * np.sin(u / size * rng.uniform(1.0, 3.0) + rng.uniform(0.0, np.pi))
    road = np.abs(v - bend) < max(0.55, 0.012 * size)
    layers.mask[road] = _BUILT
    layers.detail[road] = _ROAD
    layers.parcel[road] = -1


def _draw_water(layers: _Layers, rng: np.random.Generator, noise: _Noise, archetype: str) -> None:
    """Draw rivers (with riparian trees and sand bars), lakes and ponds."""
    size = layers.size
    wobble = noise["outline"]
    river_p = {"forest": 0.4, "farmland": 0.4, "mixed": 0.45, "urban": 0.35, "dry": 0.35}[archetype]
    if rng.random() < river_p:
        width = size * (rng.uniform(0.03, 0.10) if rng.random() < 0.8 else rng.uniform(0.1, 0.22))
        _draw_river(layers, rng, noise, width, dry=archetype == "dry" and rng.random() < 0.6)
        if rng.random() < 0.25:
            _draw_river(layers, rng, noise, size * rng.uniform(0.015, 0.035), dry=False)
    if rng.random() < (0.08 if archetype == "dry" else 0.16):
        for _ in range(int(rng.integers(1, 3))):
            lake = _blob(size, rng, wobble, (0.06, 0.22))
            _set_water(layers, lake, wobble)
    if archetype in ("farmland", "mixed", "forest") and rng.random() < 0.15:
        for _ in range(int(rng.integers(1, 5))):
            pond = _blob(size, rng, 0.3 * wobble, (max(0.015, 1.2 / size), max(0.04, 2.0 / size)))
            _set_water(layers, pond, wobble)


def _set_water(layers: _Layers, water: np.ndarray, wobble: np.ndarray) -> None:
    """Label ``water`` pixels as water, with a depth from the smooth wobble field."""
    layers.mask[water] = _WATER
    layers.depth[water] = np.clip(0.6 + 0.3 * wobble[water], 0.2, 1.0)
    layers.parcel[water] = -1
    layers.detail[water] = 0
    layers.edge[water] = 0.0


def _draw_river(layers: _Layers, rng: np.random.Generator, noise: _Noise, width: float, dry: bool) -> None:
    """Draw a meandering river band of variable width across the scene.

    The centre line is a sum of three sines along a random direction; the distance to it
    is approximated by ``|v - f(u)| / sqrt(1 + f'(u)^2)``. A dry river (wadi) is a barren
    bed with at most a thin trickle of water.
    """
    size = layers.size
    wobble = noise["outline"]
    u, v = _rotated(size, rng.uniform(0.0, np.pi), *(size / 2 + rng.uniform(-0.25, 0.25, 2) * size))
    wavelength = rng.uniform(0.35, 1.6, 3) * size
    amplitude = wavelength * rng.uniform(0.02, 0.09, 3)
    k = 2.0 * np.pi / wavelength
    phase = rng.uniform(0.0, 2.0 * np.pi, 3)
    centre = np.zeros_like(u)
    slope = np.zeros_like(u)
    for a, kk, ph in zip(amplitude, k, phase, strict=True):
        centre += np.float32(a) * np.sin(np.float32(kk) * u + np.float32(ph))
        slope += np.float32(a * kk) * np.cos(np.float32(kk) * u + np.float32(ph))
    swell = np.float32(2.0 * np.pi / (rng.uniform(0.5, 1.5) * size))
    half = 0.5 * width * (1.0 + 0.3 * np.sin(u * swell + rng.uniform(0.0, 2.0 * np.pi)))
    dist = np.abs(v - centre) / np.sqrt(1.0 + slope**2) + min(0.25 * width, size / 64) * wobble
    bank = max(1.0, 0.05 * size) * rng.uniform(0.5, 1.5)

    mask = layers.mask
    if rng.random() < 0.7:  # riparian trees
        strip = (dist >= half) & (dist < half + bank) & (noise["riparian"] > -0.2) & (mask != _BUILT)
        mask[strip] = _TREE
        layers.parcel[strip] = -1
    if dry:
        bed = dist < half * 1.3
        mask[bed] = _BARREN
        layers.parcel[bed] = -1
        layers.detail[bed] = 0
        if rng.random() < 0.5:
            _set_water(layers, dist < 0.15 * half + 0.3, wobble)
        return
    water = dist < half
    _set_water(layers, water, wobble)
    layers.depth[water] = np.clip(1.0 - dist[water] / half[water], 0.0, 1.0) ** 0.5
    if rng.random() < 0.3:  # sand and gravel bars along the banks
        bar = (dist > 0.55 * half) & (dist < half + 0.5 * bank) & (noise["sandbars"] > 1.0)
        mask[bar] = _BARREN
        layers.parcel[bar] = -1


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an ``(H, W, C)`` image with reflected borders."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    h, w = image.shape[:2]
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = sum(t * padded[i : i + h] for i, t in enumerate(taps))
    padded = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(t * padded[:, i : i + w] for i, t in enumerate(taps))


def _render_image(layers: _Layers, rng: np.random.Generator, haze_field: np.ndarray, archetype: str) -> np.ndarray:
    """Render the RGB image for the drawn layers.

    Per-class base colours, per-parcel tones with tillage stripes, textures at
    class-specific frequencies, roofs and roads, water darker with depth; then a small
    blur (the sensor's point-spread function), illumination, colour balance, haze and noise.
    """
    size = layers.size
    s = size / 64
    mask = layers.mask
    texture = _smooth_noise(rng, size, np.array([0.25, 0.8, 2.5, 7.0]) * s, np.array([2.0, 3.0, 3.0, 3.0]), pad=False)
    finest, fine, mid, broad = texture

    # Per-scene class colours: seasonal greenness and dryness shift the vegetation.
    colours = _CLASS_RGB * rng.uniform(0.92, 1.08, (len(_CLASS_RGB), 1)).astype(np.float32)
    dryness = rng.uniform(0.5, 1.0) if archetype == "dry" else rng.uniform(0.0, 0.35)
    dry_grass = np.array([158, 150, 102], dtype=np.float32)
    colours[_GRASS] = (1 - dryness) * colours[_GRASS] + dryness * dry_grass
    image = colours[mask]

    # Trees: deciduous / conifer mix and canopy shadows.
    tree = mask == _TREE
    conifer = np.clip(0.5 + 0.8 * broad[tree] + rng.uniform(-0.6, 0.6), 0.0, 1.0)[:, None]
    image[tree] *= 1.0 - 0.28 * conifer
    # Shrub: speckle of dark bushes on light soil.
    shrub = mask == _SHRUB
    bush = 1.0 / (1.0 + np.exp(-3.0 * fine[shrub] - 0.5))
    soil = np.array([178, 162, 128], dtype=np.float32)
    image[shrub] = bush[:, None] * image[shrub] * 0.85 + (1 - bush[:, None]) * soil
    # Parcels: own tone, tillage or crop-row stripes, tracks and hedges at borders.
    inside = (layers.parcel >= 0) & ((mask == _CROP) | (mask == _GRASS))
    if inside.any():
        idx = layers.parcel[inside]
        amp, period, orient, phase = layers.parcel_stripe[idx].T
        coord = np.where(orient > 0.5, layers.field_uv[1][inside], layers.field_uv[0][inside])
        stripes = 1.0 + amp * np.sin(2.0 * np.pi * coord / period + phase)
        image[inside] = layers.parcel_rgb[idx] * stripes[:, None]
    if rng.random() < 0.7:
        hedge = np.array([70, 92, 55] if rng.random() < 0.6 else [150, 140, 115], dtype=np.float32)
        weight = (np.where(inside, layers.edge, 0.0) * rng.uniform(0.4, 0.9))[..., None]
        image = image * (1 - weight) + hedge * weight
    # Built-up: roads, roofs, yards.
    urban = (layers.detail > 0) & (mask == _BUILT)
    image[urban] = _DETAIL_RGB[layers.detail[urban]] * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    # Water: darker with depth, sometimes greenish (turbid).
    water = mask == _WATER
    turbid = rng.uniform(0.0, 0.7) if rng.random() < 0.4 else 0.0
    murky = np.array([70, 88, 62], dtype=np.float32)
    shallow = (1 - turbid) * np.array([44, 60, 72], dtype=np.float32) + turbid * murky
    deep = (1 - 0.5 * turbid) * colours[_WATER] + 0.5 * turbid * np.array([40, 60, 50], dtype=np.float32)
    d = layers.depth[water][:, None]
    image[water] = (1 - d) * shallow + d * deep

    # Class-specific brightness texture at four frequencies.
    amp = _TEXTURE_AMP[mask]
    brightness = 1.0 + amp[..., 0] * finest + amp[..., 1] * fine + amp[..., 2] * mid + amp[..., 3] * broad
    image *= brightness[..., None]

    # Sensor: point-spread blur, illumination, colour balance, haze, noise.
    image = _blur(image, 0.45 * s)
    gain = rng.uniform(0.82, 1.18) * rng.uniform(0.94, 1.06, 3)
    image *= gain.astype(np.float32)
    if rng.random() < 0.35:
        haze = np.clip(rng.uniform(0.03, 0.22) * (1.0 + 0.6 * haze_field), 0.0, 0.45)[..., None]
        image = image * (1 - haze) + np.array([185, 190, 200], dtype=np.float32) * haze
    image += rng.normal(0.0, rng.uniform(1.0, 3.5), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
