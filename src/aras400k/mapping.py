"""Whole-scene land-cover maps: a trained segmenter slid over a Sentinel-2 scene of any size.

:func:`map_scene` (the ``aras-map`` command, ``docs/map.md``) predicts ``tile_size``
tiles every ``stride`` pixels (the last row and column end at the scene's edge) and
blends overlapping tiles by weighting each softmax with a separable triangular window
(never zero, so an edge pixel seen by one tile keeps its prediction); a pixel's class
is the arg-max of the weighted sum.

Memory is bounded by ``strip_width``, whatever the scene's size: the scene is
processed in column strips (:func:`column_strips`), each predicting every tile that
touches its columns (a tile across a strip's edge is predicted by both). Within a
strip the tile rows are accumulated top to bottom in a ``(classes, tile_size,
read width)`` float32 buffer; finished rows of the strip's own columns are written with
a windowed write. Every pixel is summed from the same tiles in the same order as over
the whole width, so the map does not depend on the strip width. Peak memory is
``O(tile_size x strip_width x classes)`` plus one batch and GDAL's 64 MB block cache.

Bands 1-3 are R, G, B; like ``aras-data prepare`` (``docs/preparing-data.md``), each tile
is scaled to uint8 by its valid pixels' maximum (``peak``: one value for the scene).

The output is a tiled, DEFLATE uint8 GeoTIFF with the scene's grid, the release's
colour table and 255 where the scene has no data (compressed at the end, so that no
block is stored twice), plus a PNG quicklook. With a WorldCover ``reference`` (remapped to the seven classes, resampled
nearest onto the map's grid) it reports per-class F1 / IoU and a confusion matrix.

rasterio is an optional dependency (``pip install "aras400k[geo]"``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colour_table, index_to_colour, worldcover_lookup
from aras400k.data.transforms import Normalize
from aras400k.errors import check_at_least
from aras400k.files import atomic_path, write_json_atomic
from aras400k.models.segmentation import SegmentationTask

__all__ = [
    "DEFAULT_STRIP_WIDTH",
    "ColumnStrip",
    "MapReport",
    "column_strips",
    "map_scene",
    "tile_starts",
    "tile_weights",
]

_MADE_BY = "aras-map"
#: GDAL's raster block cache while mapping, in MB. GDAL's default (5 % of the RAM)
#: would let the cached blocks of the scene and the map grow with the scene's size.
_GDAL_CACHE_MB = 64
#: Side of the square windows read at a time when comparing with a reference.
_REFERENCE_BLOCK = 1024
#: Default width of the column strips in pixels: a multiple of the output's 256-px
#: blocks and of the usual strides (128, 256), so that strip edges fall on tile origins.
DEFAULT_STRIP_WIDTH = 2048


@dataclass
class MapReport:
    """What :func:`map_scene` wrote, how fast, and (with a reference) how well.

    Attributes:
        out: The land-cover GeoTIFF.
        quicklook: The PNG quicklook, or ``None``.
        width: Scene width in pixels.
        height: Scene height in pixels.
        tiles: Tiles predicted.
        seconds: Wall time of the prediction loop (reading, predicting, blending, writing).
        device: The device the segmenter ran on.
        tile_size: Tile side in pixels.
        stride: Distance between tile origins in pixels.
        nodata_pixels: Pixels written as no data (255).
        predicted: ``tiles`` plus the repeats of tiles across the column strips' edges.
        strip_width: Width of the column strips in pixels.
        reference: The reference map, or ``None``.
        overlap_pixels: Pixels where both the map and the reference have a class.
        confusion: ``(7, 7)`` pixel counts (rows: reference, columns: map), or ``None``.
        scores: Per-class and macro F1 / IoU / precision / recall and accuracy, or ``None``.
        confusion_figure: The confusion-matrix PNG, or ``None``.
    """

    out: Path
    quicklook: Path | None
    width: int
    height: int
    tiles: int
    seconds: float
    device: str
    tile_size: int
    stride: int
    nodata_pixels: int = 0
    predicted: int = 0
    strip_width: int = 0
    reference: Path | None = None
    overlap_pixels: int = 0
    confusion: np.ndarray | None = None
    scores: dict[str, float] | None = None
    confusion_figure: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tiles_per_second(self) -> float:
        """Tiles predicted per second of the prediction loop."""
        return self.tiles / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """Render the report for a terminal (a few lines, then the per-class scores)."""
        lines = [
            f"wrote {self.out} ({self.width}x{self.height} px, {self.nodata_pixels} no-data px): {self.tiles} tiles "
            f"of {self.tile_size} px, stride {self.stride}, in {self.seconds:.1f}s "
            f"({self.tiles_per_second:.1f} tiles/s on {self.device})"
        ]
        if self.predicted > self.tiles:
            lines.append(
                f"{self.predicted - self.tiles} tile predictions repeated across the edges of "
                f"{self.strip_width}-px column strips ({self.predicted / self.tiles:.2f}x the tiles)"
            )
        if self.quicklook is not None:
            lines.append(f"quicklook: {self.quicklook}")
        if self.reference is not None:
            lines.append(f"reference {self.reference}: {self.overlap_pixels} px compared")
            if self.scores is not None:
                lines.append(f"  {'class':<8} {'F1':>6} {'IoU':>6}")
                for name in CLASS_NAMES:
                    f1, iou = self.scores[f"f1_{name}"], self.scores[f"iou_{name}"]
                    lines.append(f"  {name:<8} {_pct(f1):>6} {_pct(iou):>6}")
                lines.append(f"  {'macro':<8} {_pct(self.scores['f1_macro']):>6} {_pct(self.scores['iou_macro']):>6}")
            if self.confusion_figure is not None:
                lines.append(f"confusion matrix: {self.confusion_figure}")
        return "\n".join(lines)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


# --- tiling and blending ---------------------------------------------------------------


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Origins of the tiles along one axis: every ``stride`` pixels, the last one ending at the edge.

    Args:
        length: The axis length in pixels.
        tile: Tile side.
        stride: Distance between origins (``1 <= stride <= tile``).

    Returns:
        Sorted origins; ``[0]`` when the axis is no longer than a tile.
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tile_weights(tile: int) -> np.ndarray:
    """The blending window: a separable triangle, largest at the centre, never zero.

    Along one axis the weight of pixel ``i`` is ``min(i + 0.5, tile - i - 0.5) / (tile / 2)``,
    so the outermost pixels weigh ``1 / tile`` of the centre's.

    Args:
        tile: Tile side.

    Returns:
        ``(tile, tile)`` float32 weights in ``(0, 1]``.
    """
    i = np.arange(tile, dtype=np.float64)
    ramp = np.minimum(i + 0.5, tile - i - 0.5) / (tile / 2.0)
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass(frozen=True)
class ColumnStrip:
    """One column strip of a scene: it writes the columns ``start:stop`` and reads ``read_start:read_stop``.

    ``origins`` are the sorted column origins of the tiles that touch ``start:stop``; the
    first one is ``read_start``, and the last tile ends at ``read_stop``.
    """

    start: int
    stop: int
    origins: tuple[int, ...]
    read_start: int
    read_stop: int

    @property
    def read_width(self) -> int:
        """Columns read and accumulated: the strip's own plus the overlap margin on each side."""
        return self.read_stop - self.read_start


def column_strips(width: int, tile: int, stride: int, strip_width: int) -> list[ColumnStrip]:
    """Cut a scene's columns into strips of ``strip_width`` and list the tiles each needs.

    A strip predicts every tile of :func:`tile_starts` that touches its columns; with
    ``strip_width`` a multiple of ``stride``, ``ceil(tile / stride) - 1`` tile columns
    are repeated per edge.

    Args:
        width: Scene width in pixels.
        tile: Tile side.
        stride: Distance between tile origins (``1 <= stride <= tile``).
        strip_width: Columns written per strip (``>= 1``).

    Returns:
        The strips, left to right.

    Raises:
        ValueError: If ``width`` or ``strip_width`` is below 1.
    """
    check_at_least("width", width, 1)
    check_at_least("strip_width", strip_width, 1)
    origins = tile_starts(width, tile, stride)
    tw = min(tile, width)
    strips = []
    for start in range(0, width, strip_width):
        stop = min(start + strip_width, width)
        first, end = bisect.bisect_right(origins, start - tw), bisect.bisect_left(origins, stop)
        used = tuple(origins[first:end])
        strips.append(ColumnStrip(start, stop, used, used[0], used[-1] + tw))
    return strips


def scale_tile(rgb: np.ndarray, valid: np.ndarray, peak: float | None = None) -> np.ndarray:
    """Scale ``(3, h, w)`` raw values to an ``(h, w, 3)`` uint8 image as ``aras-data prepare`` does.

    ``peak=None`` divides by the maximum of the ``valid`` pixels; pixels without data are 0.
    """
    values = rgb.astype(np.float64)
    if peak is None:
        peak = float(values[:, valid].max()) if valid.any() else 0.0
    if not peak > 0:
        return np.zeros((*rgb.shape[1:], 3), dtype=np.uint8)
    scaled = np.clip(np.round(values / peak * 255.0), 0, 255).astype(np.uint8)
    scaled[:, ~valid] = 0
    return np.ascontiguousarray(scaled.transpose(1, 2, 0))


class _Predictor:
    """Runs the segmenter on uint8 tiles and returns weighted softmax probabilities."""

    def __init__(self, task: SegmentationTask, normalize: Normalize, device: torch.device, weights: np.ndarray) -> None:
        self.task = task.to(device).eval()
        self.normalize = normalize.to(device)
        self.device = device
        self.weights = torch.from_numpy(weights).to(device)

    @torch.no_grad()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """``(B, h, w, 3)`` uint8 tiles -> ``(B, C, h, w)`` float32 probabilities x weights."""
        batch = torch.from_numpy(tiles).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        h, w = tiles.shape[1:3]
        size = self.weights.shape[0]
        if h < size or w < size:  # a scene smaller than a tile: mirror it up to the tile size
            batch = _mirror_pad(batch, size)
        probs = self.task(self.normalize(batch)).float().softmax(1) * self.weights
        return probs[:, :, :h, :w].cpu().numpy()


def _mirror_pad(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Pad a batch at the bottom and right to ``size`` by repeated mirroring (a 1-px side is repeated)."""
    pad = torch.nn.functional.pad
    while batch.shape[2] < size or batch.shape[3] < size:
        h, w = batch.shape[2], batch.shape[3]
        if min(h, w) == 1:
            return pad(batch, (0, size - w, 0, size - h), mode="replicate")
        batch = pad(batch, (0, min(size - w, w - 1), 0, min(size - h, h - 1)), mode="reflect")
    return batch


# --- the map ---------------------------------------------------------------------------


def map_scene(
    segmenter: SegmentationTask | str | Path,
    scene: str | Path,
    out: str | Path,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    batch_size: int = 16,
    strip_width: int = 2048,  # DEFAULT_STRIP_WIDTH: aras-map reads literal defaults from this source
    device: str = "auto",
    peak: float | None = None,
    quicklook: str | Path | None = "auto",
    quicklook_size: int = 1024,
    reference: str | Path | None = None,
    remap: Mapping[int, int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> MapReport:
    """Map a whole Sentinel-2 scene with a trained segmenter (sliding window, blended tiles).

    Args:
        segmenter: An ``aras-fit`` checkpoint (with its normalisation) or a :class:`SegmentationTask`.
        scene: GeoTIFF whose bands 1-3 are R, G, B (e.g. a ``*_S2RGBNIR.tif`` tile).
        out: The land-cover GeoTIFF to write.
        tile_size: Tile side in pixels (the paper's patches: 256).
        stride: Distance between tiles; default ``tile_size // 2``; ``tile_size``: no overlap.
        batch_size: Tiles per forward pass (a batch may span tile rows).
        strip_width: Width of the column strips, in pixels (memory grows with it; the map
            does not change); a multiple of ``stride`` and of 256 repeats the fewest tiles.
        device: ``"auto"`` (the GPU when there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        peak: Scale every tile by this value instead of by its own maximum.
        quicklook: PNG quicklook path; ``"auto"``: ``out`` with ``.png``; ``None``: none.
        quicklook_size: Longest side of the quicklook's map, in pixels.
        reference: Optional ESA WorldCover GeoTIFF to compare the map with.
        remap: WorldCover code -> class index (:func:`~aras400k.classes.worldcover_lookup`).
        overwrite: Replace ``out`` (and its quicklook and figures) if they exist.
        progress: Show a progress bar over the tiles.

    Returns:
        The :class:`MapReport`.

    Raises:
        FileNotFoundError: If the checkpoint, the scene or the reference is missing.
        FileExistsError: If ``out`` exists and ``overwrite`` is off.
        ValueError: On a bad argument, a file that is not a GeoTIFF, a scene with
            fewer than three bands, or a reference that does not overlap the scene.
        ImportError: If rasterio is not installed.
    """
    try:
        import rasterio
    except ImportError as err:  # pragma: no cover - the geo extra is installed in the tests
        raise ImportError('aras-map needs rasterio: pip install "aras400k[geo]"') from err
    from aras400k.checkpoints import resolve_device
    from aras400k.models.segmentation import load_segmenter

    scene, out = Path(scene), Path(out)
    stride = tile_size // 2 if stride is None else stride
    _check_arguments(tile_size, stride, batch_size, strip_width, quicklook_size, peak)
    look = out.with_suffix(".png") if quicklook == "auto" else (Path(quicklook) if quicklook is not None else None)
    _check_outputs(out, look, reference, overwrite)
    torch_device = resolve_device(device)
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB), _open_raster(rasterio, scene, "scene") as src:
        if src.count < 3:
            raise ValueError(f"scene {scene} has {src.count} band(s); bands 1-3 must be R, G, B")
        ref_path = _check_reference(rasterio, Path(reference), src) if reference is not None else None
        task, _, norm = load_segmenter(segmenter, torch_device, purpose="mapping")
        predictor = _Predictor(task, Normalize(*norm) if norm else Normalize(), torch_device, tile_weights(tile_size))
        layout = _Layout(src.height, src.width, tile_size, stride, strip_width)
        report = _write_map(src, out, predictor, layout, batch_size, peak, quicklook_size, progress)
    report.device = str(torch_device)
    if look is not None:
        report.quicklook = _draw_quicklook(report.extra.pop("quicklook"), look, scene.name)
    if ref_path is not None:
        _compare(report, ref_path, remap)
    return report


def _check_arguments(
    tile_size: int, stride: int, batch_size: int, strip_width: int, quicklook_size: int, peak: float | None
) -> None:
    """Raise a ``ValueError`` naming the first bad argument."""
    check_at_least("tile_size", tile_size, 16)
    if not 1 <= stride <= tile_size:
        raise ValueError(f"stride must be in 1..tile_size ({tile_size}), got {stride}")
    check_at_least("batch_size", batch_size, 1)
    check_at_least("strip_width", strip_width, 1)
    check_at_least("quicklook_size", quicklook_size, 16)
    if peak is not None and not peak > 0:
        raise ValueError(f"peak must be > 0, got {peak}")


def _check_outputs(out: Path, look: Path | None, reference: str | Path | None, overwrite: bool) -> None:
    """Refuse to replace files without ``overwrite`` and outputs that clash with each other."""
    if look is not None and look.resolve() == out.resolve():
        raise ValueError(f"the quicklook {look} would replace the map; give the map a .tif name")
    if reference is not None and Path(reference).resolve() == out.resolve():
        raise ValueError(f"out {out} is the reference; choose another output name")
    if not overwrite:
        taken = [p for p in (out, look) if p is not None and p.exists()]
        if taken:
            raise FileExistsError(f"{taken[0]} exists; pass overwrite=True (--overwrite true) to replace it")


def _open_raster(rasterio: Any, path: Path, what: str) -> Any:
    """Open a raster for reading, with one-line errors for a missing or unreadable file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(f"{what} {path} is not a readable GeoTIFF ({' '.join(str(err).split())})") from err


def _check_reference(rasterio: Any, path: Path, src: Any) -> Path:
    """Check that the reference opens, has a CRS and overlaps the scene."""
    from rasterio.warp import transform_bounds

    with _open_raster(rasterio, path, "reference") as ref:
        if ref.crs is None or src.crs is None:
            which = "reference" if ref.crs is None else "scene"
            raise ValueError(f"the {which} has no CRS; cannot line up {path} with the scene")
        left, bottom, right, top = transform_bounds(ref.crs, src.crs, *ref.bounds)
    s = src.bounds
    if left >= s.right or right <= s.left or bottom >= s.top or top <= s.bottom:
        raise ValueError(f"reference {path} does not overlap the scene")
    return path


def _valid_pixels(src: Any, window: Any) -> np.ndarray:
    """Pixels of the window where every RGB band has data (rasterio's band masks)."""
    masks = src.read_masks((1, 2, 3), window=window)
    return np.all(masks > 0, axis=0)


class _Band:
    """The running sum of weighted probabilities over one band of tile rows of a strip.

    One buffer as wide as the widest strip is allocated once; each strip uses its
    left part. The weights need no running sum of their own: dividing by it would not
    change the arg-max at any pixel.
    """

    def __init__(self, rows: int, width: int) -> None:
        self.buffer = np.zeros((NUM_CLASSES, rows, width), np.float32)
        self.acc = self.buffer
        self.top = 0

    def start(self, width: int) -> None:
        """Start a strip ``width`` columns wide at scene row 0, zeroed."""
        self.acc = self.buffer[:, :, :width]
        self.acc[...] = 0
        self.top = 0

    def advance(self, top: int) -> None:
        """Move the buffer down to start at scene row ``top``, zeroing the new rows."""
        shift = top - self.top
        if shift <= 0:
            return
        if shift < self.acc.shape[1]:
            self.acc[:, :-shift] = self.acc[:, shift:]
        self.acc[:, -shift:] = 0
        self.top = top


@dataclass(frozen=True)
class _Layout:
    """Where the tiles and the strips of a scene lie."""

    height: int
    width: int
    tile: int
    stride: int
    strip_width: int

    @property
    def tile_rows(self) -> int:
        """Rows of a tile (fewer in a scene shorter than a tile)."""
        return min(self.tile, self.height)

    @property
    def tile_cols(self) -> int:
        """Columns of a tile (fewer in a scene narrower than a tile)."""
        return min(self.tile, self.width)


class _Quicklook:
    """The map downsampled by ``step`` (nearest), filled window by window."""

    def __init__(self, height: int, width: int, size: int) -> None:
        self.step = max(1, math.ceil(max(height, width) / size))
        self.labels = np.full((-(-height // self.step), -(-width // self.step)), IGNORE_INDEX, np.uint8)

    def add(self, labels: np.ndarray, y: int, x: int) -> None:
        """Copy the window's pixels on the quicklook's grid (``labels`` starts at row ``y``, column ``x``)."""
        r, c = (-y) % self.step, (-x) % self.step
        sub = labels[r :: self.step, c :: self.step]
        top, left = (y + r) // self.step, (x + c) // self.step
        self.labels[top : top + sub.shape[0], left : left + sub.shape[1]] = sub


def _write_map(
    src: Any,
    out: Path,
    predict: _Predictor,
    layout: _Layout,
    batch_size: int,
    peak: float | None,
    quicklook_size: int,
    progress: bool,
) -> MapReport:
    """Predict, blend and write the map strip by strip, to a temporary file renamed at the end."""
    import rasterio

    rows = tile_starts(layout.height, layout.tile, layout.stride)
    strips = column_strips(layout.width, layout.tile, layout.stride, layout.strip_width)
    band = _Band(layout.tile_rows, max(strip.read_width for strip in strips))
    look = _Quicklook(layout.height, layout.width, quicklook_size)
    tiles = len(rows) * len(tile_starts(layout.width, layout.tile, layout.stride))
    predicted = len(rows) * sum(len(strip.origins) for strip in strips)
    nodata = 0
    raw = out.with_name(out.name + ".raw.tmp.tif")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        # A compressed block written twice (by two strips) is stored twice, so the strips
        # go to an uncompressed file, which GDAL then compresses block by block.
        with atomic_path(out, out.name + ".tmp.tif") as tmp:
            with (
                rasterio.open(raw, "w", **_profile(src)) as dst,
                tqdm(total=predicted, desc=f"map {out.name}", unit="tile", disable=not progress) as bar,
            ):
                dst.write_colormap(1, colour_table())
                dst.update_tags(made_by=_MADE_BY, tile_size=str(layout.tile), stride=str(layout.stride))
                for strip in strips:
                    nodata += _map_strip(src, dst, strip, layout, rows, band, look, predict, batch_size, peak, bar)
            _compress(raw, tmp, src)
    finally:
        raw.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    report = MapReport(
        out=out, quicklook=None, width=layout.width, height=layout.height, tiles=tiles, seconds=seconds,
        device="", tile_size=layout.tile, stride=layout.stride, nodata_pixels=nodata, predicted=predicted,
        strip_width=layout.strip_width,
    )  # fmt: skip
    report.extra["quicklook"] = look.labels
    return report


def _map_strip(
    src: Any,
    dst: Any,
    strip: ColumnStrip,
    layout: _Layout,
    rows: list[int],
    band: _Band,
    look: _Quicklook,
    predict: _Predictor,
    batch_size: int,
    peak: float | None,
    bar: tqdm,
) -> int:
    """Predict, blend and write one column strip, top to bottom; return its no-data pixels.

    Tiles are taken in row-major order (as over the whole width, so every pixel's sum
    is added in the same order) and batched across tile rows; a tile row is finished
    and written once the first tile of the next row has been predicted.
    """
    from rasterio.windows import Window

    tw = layout.tile_cols
    band.start(strip.read_width)
    masks: dict[int, np.ndarray] = {}  # the valid pixels of the tile rows read and not yet written
    nodata, row = 0, 0
    own = slice(strip.start - strip.read_start, strip.stop - strip.read_start)

    def finish(i: int) -> int:
        y = rows[i]
        done = (rows[i + 1] if i + 1 < len(rows) else layout.height) - y
        labels = band.acc[:, :done, own].argmax(0).astype(np.uint8)
        invalid = ~masks.pop(i)[:done, own]
        labels[invalid] = IGNORE_INDEX
        dst.write(labels, 1, window=Window(strip.start, y, strip.stop - strip.start, done))
        look.add(labels, y, strip.start)
        return int(np.count_nonzero(invalid))

    for batch in _batches(_strip_tiles(src, strip, rows, layout.tile_rows, tw, peak, masks), batch_size):
        probs = predict(np.stack([t for _, _, t in batch]))
        for (i, x, _), p in zip(batch, probs, strict=True):
            if i != row:
                nodata += finish(row)
                band.advance(rows[i])
                row = i
            left = x - strip.read_start
            band.acc[:, :, left : left + tw] += p
        bar.update(len(batch))
    return nodata + finish(row)


def _strip_tiles(
    src: Any,
    strip: ColumnStrip,
    rows: list[int],
    th: int,
    tw: int,
    peak: float | None,
    masks: dict[int, np.ndarray],
) -> Iterator[tuple[int, int, np.ndarray]]:
    """The strip's uint8 tiles as ``(tile row, column origin, tile)``, row-major; one read per tile row.

    The valid pixels of each tile row are kept in ``masks`` under its index.
    """
    from rasterio.windows import Window

    for i, y in enumerate(rows):
        window = Window(strip.read_start, y, strip.read_width, th)
        rgb, valid = src.read((1, 2, 3), window=window), _valid_pixels(src, window)
        masks[i] = valid
        for x in strip.origins:
            left = x - strip.read_start
            yield i, x, scale_tile(rgb[:, :, left : left + tw], valid[:, left : left + tw], peak)


def _batches(items: Iterator[tuple[int, int, np.ndarray]], size: int) -> Iterator[list[tuple[int, int, np.ndarray]]]:
    """Lists of ``size`` items (the last one shorter)."""
    while batch := list(itertools.islice(items, size)):
        yield batch


def _profile(src: Any) -> dict[str, Any]:
    """The uncompressed map's GeoTIFF profile: the scene's grid, uint8, no data 255, tiled when large enough."""
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
        "crs": src.crs, "transform": src.transform, "nodata": IGNORE_INDEX,
    }  # fmt: skip
    if src.width >= 256 and src.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _compress(raw: Path, out: Path, src: Any) -> None:
    """Copy the uncompressed map to ``out`` with DEFLATE, block by block (bounded memory)."""
    from rasterio.shutil import copy

    options = {k: v for k, v in _profile(src).items() if k in ("tiled", "blockxsize", "blockysize")}
    copy(raw, out, driver="GTiff", compress="deflate", **options)


# --- quicklook and reference -----------------------------------------------------------


def _draw_quicklook(labels: np.ndarray, path: Path, title: str) -> Path:
    """Draw the downsampled map in the class colours with the class legend."""
    from aras400k.plotting import add_class_legend, pyplot, save_figure

    plt = pyplot()
    h, w = labels.shape
    scale = 6.0 / max(h, w)
    fig, ax = plt.subplots(figsize=(max(3.0, w * scale), max(2.0, h * scale) + 0.6), dpi=max(100, max(h, w) // 6))
    ax.imshow(index_to_colour(labels), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    legend = add_class_legend(fig, fontsize=6)
    fig.tight_layout(rect=(0, legend, 1, 1))
    return save_figure(fig, path)


def _compare(report: MapReport, reference: Path, remap: Mapping[int, int] | None) -> None:
    """Fill the report's reference fields: confusion matrix, scores, figure and JSON."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    from aras400k.metrics.segmentation import scores_from_confusion
    from aras400k.plotting import plot_confusion_matrix

    lut = worldcover_lookup(remap)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    env = rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB)
    with env, rasterio.open(report.out) as mapped, rasterio.open(reference) as ref, WarpedVRT(
        ref, crs=mapped.crs, transform=mapped.transform, width=mapped.width, height=mapped.height,
        resampling=Resampling.nearest, nodata=0,
    ) as vrt:  # fmt: skip
        for y in range(0, mapped.height, _REFERENCE_BLOCK):
            for x in range(0, mapped.width, _REFERENCE_BLOCK):
                window = Window(x, y, min(_REFERENCE_BLOCK, mapped.width - x), min(_REFERENCE_BLOCK, mapped.height - y))
                confusion += _confusion(vrt.read(1, window=window), mapped.read(1, window=window), lut)
    report.reference = reference
    report.confusion = confusion
    report.overlap_pixels = int(confusion.sum())
    if report.overlap_pixels == 0:
        return
    report.scores = {k: float(v) for k, v in scores_from_confusion(torch.from_numpy(confusion)).items()}
    stem = report.out.with_suffix("")
    report.confusion_figure = plot_confusion_matrix(
        confusion, CLASS_NAMES, f"{stem}_confusion.png", title=f"{report.out.name} vs {reference.name}"
    )
    payload = {"reference": str(reference), "pixels": report.overlap_pixels, "confusion": confusion.tolist()}
    payload["scores"] = {k: (None if math.isnan(v) else round(v, 6)) for k, v in report.scores.items()}
    write_json_atomic(f"{stem}_reference.json", payload)


def _confusion(codes: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Pixel counts of (reference class, map class) where both have a class."""
    known = (codes >= 0) & (codes < len(lut))
    truth = np.where(known, lut[np.clip(codes, 0, len(lut) - 1)], IGNORE_INDEX)
    both = (truth != IGNORE_INDEX) & (labels != IGNORE_INDEX)
    pairs = truth[both].astype(np.int64) * NUM_CLASSES + labels[both]
    return np.bincount(pairs, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)
