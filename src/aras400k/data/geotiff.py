"""Real-patch preparation: Sentinel-2 true-colour GeoTIFFs + ESA WorldCover maps -> shards.

The paper's section 3.1 (``aras-data prepare``), step by step in ``docs/preparing-data.md``:
every Sentinel-2 tile (``*_S2RGBNIR.tif``, with a tile id such as ``N36E027`` in its name)
is cut into whole patches keyed ``{tile}_{row:03d}_{col:03d}``, labelled with nearest
resampling from the WorldCover maps (``*_Map.tif``) overlapping it, dropped for the first
of :data:`_SKIP_REASONS` that applies, else scaled by its own maximum to uint8 and split
by a seeded hash of its key (:func:`~aras400k.data.splits.split_for_key`).

rasterio is an optional dependency (``pip install "aras400k[geo]"``); it is imported
when :func:`prepare_geotiffs` runs, so this module imports without it.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX, WORLDCOVER_NODATA, worldcover_lookup
from aras400k.data.parallel import LineProgress, ordered_map, resolve_workers
from aras400k.data.parallel import progress as progress_bar
from aras400k.data.shards import MANIFEST_NAME, EncodedSample, Sample, ShardWriter, encode_sample
from aras400k.data.splits import SPLIT_NAMES, split_for_key
from aras400k.errors import check_at_least, check_within

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.io import DatasetReader
    from rasterio.windows import Window

__all__ = ["PrepareReport", "prepare_geotiffs"]

#: Glob of the Sentinel-2 true-colour tiles (searched recursively).
_S2_GLOB = "*_S2RGBNIR.tif"
#: Glob of the WorldCover land-cover maps (searched recursively).
_WORLDCOVER_GLOB = "*_Map.tif"
#: The tile id in a Sentinel-2 file name, e.g. ``N36E027`` or ``S05W072``.
_TILE_RE = re.compile(r"[NS]\d{2}[EW]\d{3}")
#: Sentinel-2 bands read as R, G, B (band 4, NIR, is unused).
_RGB_BANDS = [1, 2, 3]
#: Skip reasons in the order they are checked; a patch counts once, for its first reason.
_SKIP_REASONS = ("zeros", "nodata", "water")
_WATER = CLASS_NAMES.index("water")
_MADE_BY = "aras-data prepare"

Bounds = tuple[float, float, float, float]


@dataclass
class PrepareReport:
    """What :func:`prepare_geotiffs` did.

    Attributes:
        tiles: Sentinel-2 tiles processed.
        patches: Candidate patches seen (whole patches of all tiles).
        written: Split name -> samples written.
        skipped: Skip reason (``"zeros"``, ``"nodata"``, ``"water"``) -> patches dropped for it.
    """

    tiles: int = 0
    patches: int = 0
    written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SKIP_REASONS, 0))

    def summary(self) -> str:
        """Tiles, patches, samples per split and every skip reason with its count and share, one per line."""

        def share(n: int) -> str:
            return f"{100 * n / self.patches:.1f}%" if self.patches else "0.0%"

        total = sum(self.written.values())
        per_split = ", ".join(f"{name} {n}" for name, n in self.written.items())
        lines = [
            f"tiles: {self.tiles}",
            f"patches: {self.patches}",
            f"written: {total} ({share(total)}): {per_split}",
        ]
        lines += [f"skipped {reason}: {n} ({share(n)})" for reason, n in self.skipped.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class _S2Tile:
    """One Sentinel-2 file to cut, with its tile id and patch grid."""

    path: Path
    tile: str
    rows: int
    cols: int


@dataclass(frozen=True)
class _MapInfo:
    """A WorldCover map's header, read once when the maps are indexed."""

    path: Path
    crs: Any
    bounds: Bounds


@dataclass(frozen=True)
class _Options:
    """The per-patch settings of one :func:`prepare_geotiffs` run."""

    patch_size: int
    lut: np.ndarray
    max_water: float
    ratios: tuple[float, ...]
    seed: int


class _GridReader:
    """Samples a north-up WorldCover map in the Sentinel-2 CRS at the patch's pixel centres (exact nearest).

    Only the map window under the patch is read.
    """

    def __init__(self, dataset: DatasetReader, s2_transform: Affine) -> None:
        self.dataset = dataset
        self.bounds: Bounds = tuple(dataset.bounds)  # type: ignore[assignment]
        self._s2 = s2_transform

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The ``(codes, covered)`` arrays under a window of the Sentinel-2 grid (codes 0 where not covered)."""
        from rasterio.windows import Window

        t, s = self.dataset.transform, self._s2
        xs = s.c + s.a * (window.col_off + np.arange(window.width) + 0.5)
        ys = s.f + s.e * (window.row_off + np.arange(window.height) + 0.5)
        cols = np.floor((xs - t.c) / t.a).astype(np.int64)
        rows = np.floor((ys - t.f) / t.e).astype(np.int64)
        in_cols = (cols >= 0) & (cols < self.dataset.width)
        in_rows = (rows >= 0) & (rows < self.dataset.height)
        codes = np.zeros((window.height, window.width), dtype=np.int64)
        covered = np.outer(in_rows, in_cols)
        if not covered.any():
            return codes, covered
        c0, c1 = int(cols[in_cols].min()), int(cols[in_cols].max())
        r0, r1 = int(rows[in_rows].min()), int(rows[in_rows].max())
        block = self.dataset.read(1, window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1))
        codes[np.ix_(in_rows, in_cols)] = block[np.ix_(rows[in_rows] - r0, cols[in_cols] - c0)]
        return codes, covered


class _WarpedReader:
    """Reads a WorldCover map in another CRS (or rotated) through a ``WarpedVRT`` on the tile's own grid.

    A patch window of the tile is then a window of the VRT; pixels outside the map read as 0.
    """

    def __init__(self, dataset: DatasetReader, s2: DatasetReader, bounds: Bounds, stack: ExitStack) -> None:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self.bounds = bounds
        grid = {"crs": s2.crs, "transform": s2.transform, "width": s2.width, "height": s2.height}
        vrt = WarpedVRT(dataset, **grid, resampling=Resampling.nearest, nodata=WORLDCOVER_NODATA)
        self.vrt = stack.enter_context(vrt)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`_GridReader.read`; a pixel counts as covered where its code is not 0."""
        codes = self.vrt.read(1, window=window).astype(np.int64)
        return codes, codes != WORLDCOVER_NODATA


#: Reads WorldCover codes on windows of the Sentinel-2 grid.
_CodeReader = _GridReader | _WarpedReader


class _WorldCoverIndex:
    """The WorldCover maps' headers (CRS, bounds), read once, and the maps that overlap a tile.

    A map is reopened only for the tiles it overlaps (never per patch): few files are open at once.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        import rasterio
        from rasterio.errors import RasterioIOError

        self.maps: list[_MapInfo] = []
        for path in paths:
            try:
                with rasterio.open(path) as ds:
                    if ds.crs is None:
                        raise ValueError(f"WorldCover map {path} has no CRS")
                    self.maps.append(_MapInfo(path, ds.crs, tuple(ds.bounds)))  # type: ignore[arg-type]
            except RasterioIOError as err:
                raise ValueError(f"cannot read WorldCover map {path}: {err}") from err
        self._bounds_cache: dict[str, list[Bounds]] = {}

    def _bounds_in(self, crs: Any) -> list[Bounds]:
        """Every map's bounds in ``crs`` (cached per CRS)."""
        from rasterio.warp import transform_bounds

        key = crs.to_string()
        if key not in self._bounds_cache:
            self._bounds_cache[key] = [
                m.bounds if m.crs == crs else tuple(transform_bounds(m.crs, crs, *m.bounds, densify_pts=21))
                for m in self.maps
            ]
        return self._bounds_cache[key]

    def readers_for(self, s2: DatasetReader, stack: ExitStack) -> list[_CodeReader]:
        """One reader per map overlapping an open Sentinel-2 tile, in file order; ``stack`` closes them."""
        import rasterio

        tile_bounds: Bounds = tuple(s2.bounds)  # type: ignore[assignment]
        readers: list[_CodeReader] = []
        for info, bounds in zip(self.maps, self._bounds_in(s2.crs), strict=True):
            if not _overlaps(bounds, tile_bounds):
                continue
            dataset = stack.enter_context(rasterio.open(info.path))
            t = dataset.transform
            if dataset.crs == s2.crs and t.b == 0 and t.d == 0:
                readers.append(_GridReader(dataset, s2.transform))
            else:
                readers.append(_WarpedReader(dataset, s2, bounds, stack))
        return readers


def _overlaps(a: Bounds, b: Bounds) -> bool:
    """Whether two ``(left, bottom, right, top)`` boxes share some area (touching is not enough)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _window_bounds(window: Window, transform: Affine) -> Bounds:
    """``(left, bottom, right, top)`` of a window of a north-up (or south-up) grid."""
    xs = (transform.c + transform.a * window.col_off, transform.c + transform.a * (window.col_off + window.width))
    ys = (transform.f + transform.e * window.row_off, transform.f + transform.e * (window.row_off + window.height))
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def _affine(dataset: DatasetReader, window: Window) -> list[float]:
    """A window's affine transform as six numbers in rasterio's order ``a, b, c, d, e, f`` (``Affine(*t)``)."""
    t = dataset.window_transform(window)
    return [float(t.a), float(t.b), float(t.c), float(t.d), float(t.e), float(t.f)]


def _find_files(folder: Path, pattern: str, what: str) -> list[Path]:
    """The files matching ``pattern`` under ``folder``, recursively and sorted; none is an error."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob(pattern) if p.is_file())
    if not paths:
        raise FileNotFoundError(f"no {what} files ({pattern}) found under {folder}")
    return paths


def _index_s2(paths: Sequence[Path], patch_size: int) -> list[_S2Tile]:
    """Read the Sentinel-2 headers: tile ids, band counts and patch grids (checked)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    tiles: dict[str, _S2Tile] = {}
    for path in paths:
        match = _TILE_RE.search(path.name)
        if match is None:
            raise ValueError(
                f"Sentinel-2 file {path} has no tile id like N36E027 or S05W072 in its name; rename it to include one"
            )
        tile = match.group(0)
        if tile in tiles:
            raise ValueError(f"Sentinel-2 files {tiles[tile].path} and {path} are both tile {tile}; keep one")
        try:
            with rasterio.open(path) as ds:
                if ds.count < len(_RGB_BANDS):
                    raise ValueError(f"Sentinel-2 file {path} has {ds.count} bands; expected R, G, B (and NIR)")
                if ds.crs is None:
                    raise ValueError(f"Sentinel-2 file {path} has no CRS")
                if ds.transform.b != 0 or ds.transform.d != 0:
                    raise ValueError(f"Sentinel-2 file {path} has a rotated grid, which is not supported")
                rows, cols = ds.height // patch_size, ds.width // patch_size
        except RasterioIOError as err:
            raise ValueError(f"cannot read Sentinel-2 file {path}: {err}") from err
        tiles[tile] = _S2Tile(path, tile, rows if cols else 0, cols if rows else 0)
    return sorted(tiles.values(), key=lambda t: t.tile)


def _read_codes(readers: Sequence[_CodeReader], window: Window, bounds: Bounds) -> np.ndarray:
    """``(h, w)`` int64 WorldCover codes under a patch, each pixel from the first map with data there (else 0)."""
    codes = np.full((window.height, window.width), WORLDCOVER_NODATA, dtype=np.int64)
    for reader in readers:
        if not _overlaps(reader.bounds, bounds):
            continue
        part, covered = reader.read(window)
        fill = covered & (codes == WORLDCOVER_NODATA)
        codes[fill] = part[fill]
        if not (codes == WORLDCOVER_NODATA).any():
            break
    return codes


def _scale_to_uint8(rgb: np.ndarray, peak: float) -> np.ndarray:
    """Scale an RGB patch by its maximum: ``round(rgb / peak * 255)`` computed in float."""
    scaled = np.round(rgb.astype(np.float64) / float(peak) * 255.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _patch(
    rgb: np.ndarray, readers: Sequence[_CodeReader], window: Window, bounds: Bounds, opts: _Options
) -> tuple[np.ndarray, np.ndarray] | str:
    """One patch's uint8 ``(image, mask)`` from its raw ``(h, w, 3)`` values, or the reason it is skipped."""
    peak = rgb.max()
    if not peak > 0:  # all zeros (or no positive value at all)
        return "zeros"
    codes = _read_codes(readers, window, bounds)
    known = (codes >= 0) & (codes < len(opts.lut))  # codes outside the table are no-data (ignore, 255)
    mask = np.where(known, opts.lut[np.clip(codes, 0, len(opts.lut) - 1)], IGNORE_INDEX).astype(np.uint8)
    if (mask == IGNORE_INDEX).any():
        return "nodata"
    if np.count_nonzero(mask == _WATER) > opts.max_water * mask.size:
        return "water"
    return _scale_to_uint8(rgb, peak), mask


def _tile_samples(
    tile: _S2Tile,
    index: _WorldCoverIndex,
    report: PrepareReport,
    opts: _Options,
    bar: tqdm[Any] | LineProgress,
) -> Iterator[tuple[str, Sample]]:
    """Yield ``(split, sample)`` for every kept patch of a tile (one read per row), counting skips in ``report``."""
    import rasterio
    from rasterio.windows import Window

    ps = opts.patch_size
    with rasterio.open(tile.path) as s2, ExitStack() as stack:
        readers = index.readers_for(s2, stack)
        if not readers and tile.rows:
            warnings.warn(
                f"no WorldCover map overlaps Sentinel-2 tile {tile.tile} ({tile.path}); its patches count as no-data",
                stacklevel=3,
            )
        crs = s2.crs.to_string()
        bar.set_postfix_str(tile.tile)
        for row in range(tile.rows):
            strip = s2.read(_RGB_BANDS, window=Window(0, row * ps, tile.cols * ps, ps))
            for col in range(tile.cols):
                report.patches += 1
                window = Window(col * ps, row * ps, ps, ps)
                bounds = _window_bounds(window, s2.transform)
                rgb = np.moveaxis(strip[:, :, col * ps : (col + 1) * ps], 0, -1)
                result = _patch(rgb, readers, window, bounds, opts)
                if isinstance(result, str):
                    report.skipped[result] += 1
                    continue
                key = f"{tile.tile}_{row:03d}_{col:03d}"
                meta = {"tile": tile.tile, "bounds": list(bounds), "crs": crs, "transform": _affine(s2, window)}
                yield split_for_key(key, opts.ratios, opts.seed), Sample(key, result[0], result[1], meta)
            bar.update(1)
    report.tiles += 1


def _encode(job: tuple[str, Sample, int]) -> tuple[str, EncodedSample]:
    """Encode a sample down to its tar bytes (in a worker), so the writer only appends them."""
    split, sample, level = job
    return split, encode_sample(sample, split, "real", level)


def prepare_geotiffs(
    s2_dir: str | Path,
    worldcover_dir: str | Path,
    out_dir: str | Path,
    *,
    patch_size: int = 256,
    remap: Mapping[int, int] | None = None,
    max_water: float = 0.9,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> PrepareReport:
    """Cut Sentinel-2 tiles and WorldCover maps into ``train``/``val``/``test`` shard sets; report the counts.

    ``meta.json`` gets ``tile``, ``bounds``, ``crs`` and ``transform`` (the patch's affine
    transform in rasterio's order; ``docs/data.md``), which prediction GeoTIFFs reuse.

    Args:
        s2_dir: Folder of the Sentinel-2 tiles (searched recursively).
        worldcover_dir: Folder of the WorldCover maps (searched recursively).
        out_dir: Output folder of the ``train``, ``val`` and ``test`` shard sets.
        patch_size: Patch side in Sentinel-2 pixels.
        remap: WorldCover code -> class index; ``None`` uses the published dataset's
            (wetland -> grass). Codes it lacks count as no-data.
        max_water: Largest kept share of water pixels.
        ratios: Shares of train, val and test.
        seed: Seed of the key-hash split assignment.
        samples_per_shard: Samples per tar shard.
        overwrite: Replace existing shard sets in ``out_dir``.
        progress: Show a progress bar over rows of patches.
        workers: Processes encoding the PNGs (reading stays in this one); ``None``: every
            usable core. The shards are the same for any number.

    Raises:
        ImportError: If rasterio is not installed.
        FileNotFoundError: If an input folder is missing or holds no matching file.
        FileExistsError: If a split folder holds a shard set and ``overwrite`` is off
            (checked before anything is written).
        ValueError: On a bad argument, a Sentinel-2 name without a tile id, two files of
            one tile, or an unreadable or unsuitable raster.
    """
    try:
        import rasterio  # noqa: F401
    except ImportError as err:
        raise ImportError('aras-data prepare needs rasterio: pip install "aras400k[geo]"') from err
    check_at_least("patch_size", patch_size, 1)
    check_within("max_water", max_water)
    split_for_key("", ratios, seed)  # fail early on bad ratios
    workers = resolve_workers(workers)
    opts = _Options(patch_size, worldcover_lookup(remap), float(max_water), tuple(ratios), seed)

    tiles = _index_s2(_find_files(Path(s2_dir), _S2_GLOB, "Sentinel-2"), patch_size)
    index = _WorldCoverIndex(_find_files(Path(worldcover_dir), _WORLDCOVER_GLOB, "WorldCover"))
    out_dir = Path(out_dir)
    if not overwrite:
        for split in SPLIT_NAMES:
            if (out_dir / split / MANIFEST_NAME).exists():
                raise FileExistsError(f"{out_dir / split} already holds a shard set; pass overwrite=True to replace it")

    report = PrepareReport()
    extra = {"made_by": _MADE_BY, "patch_size": patch_size}
    writer = functools.partial(
        ShardWriter, source="real", samples_per_shard=samples_per_shard, overwrite=overwrite, extra=extra
    )
    with ExitStack() as stack:  # on an exception every writer aborts, leaving no manifest
        writers = {split: stack.enter_context(writer(out_dir / split, split=split)) for split in SPLIT_NAMES}
        bar = stack.enter_context(progress_bar(sum(t.rows for t in tiles), "prepare", "row", progress))
        level = writers[SPLIT_NAMES[0]].compress_level
        jobs = (
            (split, sample, level) for tile in tiles for split, sample in _tile_samples(tile, index, report, opts, bar)
        )
        for split, encoded in ordered_map(_encode, jobs, workers):
            writers[split].write_encoded(encoded)
            report.written[split] += 1
    return report
