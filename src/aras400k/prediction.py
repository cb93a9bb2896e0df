"""Prediction files: per-sample masks, colour masks, overlays and GeoTIFFs from ``aras predict``.

:class:`PredictionWriter` is a Lightning prediction writer. After each predict batch it
writes, for every sample ``KEY`` (see ``docs/segmentation.md``, section Predictions):

===================  =================================================================
``KEY_mask.png``     one channel, uint8 class indices 0-6 (a shard's ``mask.png`` format)
``KEY_color.png``    RGB in the release colours (:data:`aras400k.classes.PALETTE`)
``KEY_overlay.png``  the image blended with the colour mask (``overlay=True``)
``KEY.tif``          GeoTIFF of the class indices with a colour table, the sample's CRS
                     and affine transform, nodata 255; only for georeferenced samples
===================  =================================================================

and, when the run ends, ``index.csv`` (one row per sample: its files and predicted
composition), ``predictions.json`` (which model wrote the folder) and, with
``archive=True``, ``predictions.zip`` of the visual files. Every file is written
atomically, so a sample whose files all exist is complete: a rerun skips it
(``overwrite=True`` redoes it). A folder written by another model is refused instead
of mixed. The georeference is what ``aras-data prepare`` records (``docs/data.md``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from aras400k.classes import CLASS_NAMES, IGNORE_INDEX, colour_table, index_to_colour
from aras400k.data.composition import composition
from aras400k.data.shards import SampleError
from aras400k.errors import ConfigError, check_within
from aras400k.files import atomic_path, write_json_atomic

__all__ = ["Georeference", "PredictionWriter", "blend", "georeference", "write_geotiff"]

#: ``predictions.json``: the record of the model whose predictions a folder holds.
RECORD_NAME = "predictions.json"
INDEX_NAME = "index.csv"
ARCHIVE_NAME = "predictions.zip"
_SUFFIXES = {"mask": "_mask.png", "color": "_color.png", "overlay": "_overlay.png", "geotiff": ".tif"}
_VISUAL = ("color", "overlay")
_INDEX_FIELDS = ["key", "files", *CLASS_NAMES]
# Lightning looks for the sample indices of each batch for prediction writers; a
# ShardDataset streams samples (no sampler), and the writer names files by key instead.
warnings.filterwarnings(
    "ignore", message=r"Couldn't infer the batch indices fetched from your dataloader: `EpochDataLoader`"
)

_NO_RASTERIO = 'rasterio is not installed, so no GeoTIFFs are written (pip install "aras400k[geo]")'

#: A sample's georeference: its CRS (as rasterio accepts it) and six affine numbers ``a, b, c, d, e, f``.
Georeference = tuple[str, tuple[float, float, float, float, float, float]]


def georeference(meta: Mapping[str, Any] | None, height: int, width: int) -> Georeference | None:
    """Read a sample's georeference from its ``meta.json``.

    ``crs`` is required; the transform is ``transform`` (rasterio's ``a, b, c, d, e, f``)
    or, for samples prepared before it was recorded, a north-up transform derived from
    ``bounds`` (left, bottom, right, top) and the patch's ``height`` and ``width``.

    Returns:
        ``(crs, transform)``, or ``None`` when the sample is not georeferenced.

    Raises:
        ValueError: If ``transform`` or ``bounds`` is present but malformed.
    """
    if not meta or not meta.get("crs"):
        return None
    crs = str(meta["crs"])
    if meta.get("transform") is not None:
        numbers = _numbers(meta["transform"], "transform")
        return crs, (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], numbers[5])
    if meta.get("bounds") is not None:
        left, bottom, right, top = _numbers(meta["bounds"], "bounds", count=4)
        return crs, ((right - left) / width, 0.0, left, 0.0, -(top - bottom) / height, top)
    return None


def _numbers(value: Any, name: str, count: int = 6) -> list[float]:
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise ValueError(f"meta.json {name} must be {count} finite numbers, got {value!r}")
    return numbers


def blend(image: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    """Blend ``(H, W, 3)`` uint8 image and colour mask into an overlay: ``(1 - alpha) * image + alpha * colour``."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _temporary(path: Path) -> str:
    return f".{path.name}.tmp"


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG under a temporary name, then rename it into place."""
    with atomic_path(path, _temporary(path)) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def write_geotiff(path: str | Path, mask: np.ndarray, where: Georeference) -> None:
    """Write a class-index mask as a GeoTIFF (colour table, nodata 255, class tags, DEFLATE), atomically.

    Args:
        path: Destination ``.tif``.
        mask: ``(H, W)`` uint8 class indices.
        where: The patch's CRS and affine transform (see :func:`georeference`).

    Raises:
        ImportError: If rasterio is not installed.
    """
    import rasterio
    from rasterio.transform import Affine

    path = Path(path)
    crs, transform = where
    profile = {
        "driver": "GTiff",
        "width": mask.shape[1],
        "height": mask.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": Affine(*transform),
        "nodata": IGNORE_INDEX,
        "compress": "deflate",
    }
    with atomic_path(path, _temporary(path)) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(mask, dtype=np.uint8)[None])
        dst.write_colormap(1, colour_table())
        dst.update_tags(classes=",".join(CLASS_NAMES), made_by="aras predict")
        dst.set_band_description(1, "land-cover class index (" + ", ".join(CLASS_NAMES) + "); 255 = no data")


def _rasterio_available() -> bool:
    """Whether rasterio imports (an installed but broken one, e.g. without its GDAL library, does not)."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def model_fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of the sha256 of a model's weights (names, shapes and values); equal on any device."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(eq=False)
class PredictionWriter(BasePredictionWriter):
    """Write each predicted mask as PNGs (and a GeoTIFF when georeferenced), resumably.

    ``aras predict`` adds one with its ``--predictions.*`` options; in Python pass it to
    ``Trainer(callbacks=[...])``. ``predict_step`` must return a dict with ``mask``
    (``(B, H, W)`` class indices) and optionally ``key``, as
    :class:`~aras400k.models.SegmentationTask` does; keys, images (mapped back with the
    DataModule's ``denormalize``) and ``meta`` come from the batch. It is idle outside predict.

    Args:
        out_dir: Output folder; default ``<trainer.default_root_dir>/predictions``.
        overlay: Also write ``KEY_overlay.png``, the image blended with the colour mask.
        alpha: Weight of the colour mask in the overlay, in ``[0, 1]``.
        geotiff: Write ``KEY.tif`` for georeferenced samples (:func:`georeference`); without
            rasterio, one warning and no GeoTIFFs.
        archive: Also write ``predictions.zip`` (colour masks, overlays, ``index.csv``) at the end.
        overwrite: Rewrite the files of samples that already have them, and replace a
            folder written by another model (whose files are then deleted).
        keep_in_memory: Also keep every prediction in memory, as ``trainer.predict``
            returns them (off: a large set would fill the memory; ``predict`` returns ``None``).

    Raises:
        ValueError: If ``alpha`` is outside ``[0, 1]``.
    """

    out_dir: str | None = None
    overlay: bool = True
    alpha: float = 0.5
    geotiff: bool = True
    archive: bool = False
    overwrite: bool = False
    keep_in_memory: bool = False

    def __post_init__(self) -> None:
        super().__init__(write_interval="batch")
        check_within("alpha", self.alpha)
        self._rows: dict[str, dict[str, Any]] = {}
        self._counts = {"written": 0, "kept": 0}
        self._previous: dict[str, dict[str, Any]] = {}
        self._replacing = False
        self._rasterio: bool | None = None
        self._fingerprint = ""
        self._folder: Path | None = None
        self._summary: str | None = None

    # -- setup -------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the module only when predicting (the writer sits idle in the other stages)."""
        if stage == "predict":
            super().setup(trainer, pl_module, stage)

    def folder(self, trainer: Trainer) -> Path:
        """The output folder: ``out_dir`` or ``<trainer.default_root_dir>/predictions``."""
        return Path(self.out_dir) if self.out_dir is not None else Path(trainer.default_root_dir) / "predictions"

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open the folder: check which model wrote it, and drop predictions from memory unless kept."""
        self._folder = self.folder(trainer)
        self._rows, self._counts, self._summary = {}, {"written": 0, "kept": 0}, None
        self._rasterio = None  # looked up at the first georeferenced sample
        if not self.keep_in_memory:
            trainer.predict_loop.return_predictions = False
        self._fingerprint = model_fingerprint(pl_module)
        self._check_record(self._folder)
        self._folder.mkdir(parents=True, exist_ok=True)

    def _check_record(self, folder: Path) -> None:
        """Keep the index rows of an earlier run of this model in ``folder``; refuse another model's."""
        record_path = folder / RECORD_NAME
        self._previous, self._replacing = _read_index(folder / INDEX_NAME), False
        if not record_path.is_file():
            return
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{record_path} is not readable ({err}); delete it or choose another out_dir") from err
        if record.get("model_fingerprint") == self._fingerprint:
            return
        if not self.overwrite:
            raise ConfigError(
                f"{folder} holds the predictions of another model (checkpoint {record.get('checkpoint')}); "
                "pass --predictions.overwrite true to replace them, or --predictions.out_dir DIR to write elsewhere"
            )
        self._replacing = True

    def _where(self, meta: Mapping[str, Any] | None, height: int, width: int) -> Georeference | None:
        """The georeference the GeoTIFF gets, or ``None`` (none, GeoTIFFs off, or no rasterio: one warning)."""
        where = georeference(meta, height, width) if self.geotiff else None
        if where is not None and self._rasterio is None:
            self._rasterio = _rasterio_available()
            if not self._rasterio:
                warnings.warn(_NO_RASTERIO, UserWarning, stacklevel=2)
        return where if self._rasterio else None

    # -- per batch ---------------------------------------------------------------------------

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Write the files of every sample of the batch that does not have them yet.

        Raises:
            ValueError: If the prediction has no ``mask`` or the batch no sample keys.
            aras400k.data.SampleError: If a sample's georeference is malformed.
        """
        masks, keys = _masks_and_keys(prediction, batch)
        metas = batch.get("meta") if isinstance(batch, dict) else None
        metas = metas if metas is not None else [{}] * len(keys)
        todo = []
        for i, key in enumerate(keys):
            try:
                where = self._where(metas[i], *masks.shape[1:])
            except ValueError as err:
                raise SampleError(f"sample {key}: {err}") from err
            names = self._names(key, where is not None)
            if not self.overwrite and all((self._dir / name).is_file() for name in names.values()):
                self._keep(key, names)
            else:
                todo.append((i, key, names, where))
        if not todo:
            return
        images = self._images(trainer, batch) if self.overlay else None
        for i, key, names, where in todo:
            self._write_sample(masks[i], None if images is None else images[i], names, where)
            self._rows[key] = _row(key, names, masks[i])
            self._counts["written"] += 1

    @property
    def _dir(self) -> Path:
        if self._folder is None:
            raise RuntimeError("PredictionWriter writes only during trainer.predict")
        return self._folder

    def _names(self, key: str, georeferenced: bool) -> dict[str, str]:
        kinds = ["mask", "color"] + (["overlay"] if self.overlay else []) + (["geotiff"] if georeferenced else [])
        return {kind: key + _SUFFIXES[kind] for kind in kinds}

    def _keep(self, key: str, names: dict[str, str]) -> None:
        """Count a finished sample; its index row is the earlier one, or read back from its mask."""
        row = self._previous.get(key)
        if row is None or row["files"] != ";".join(names.values()):
            with Image.open(self._dir / names["mask"]) as img:
                row = _row(key, names, np.array(img))
        self._rows[key] = row
        self._counts["kept"] += 1

    def _images(self, trainer: Trainer, batch: dict[str, Any]) -> np.ndarray:
        """The batch's images as ``(B, H, W, 3)`` uint8, undoing the DataModule's normalisation."""
        images = batch["image"].detach().float()
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "denormalize"):
            images = datamodule.denormalize(images)
        else:  # unknown normalisation: per-image min-max for display
            lo = images.amin(dim=(1, 2, 3), keepdim=True)
            hi = images.amax(dim=(1, 2, 3), keepdim=True)
            images = (images - lo) / (hi - lo).clamp(min=1e-6)
        images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
        return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _write_sample(
        self, mask: np.ndarray, image: np.ndarray | None, names: dict[str, str], where: Georeference | None
    ) -> None:
        colour = index_to_colour(mask)
        _write_png(self._dir / names["mask"], mask)
        _write_png(self._dir / names["color"], colour)
        if image is not None and "overlay" in names:
            _write_png(self._dir / names["overlay"], blend(image, colour, self.alpha))
        if where is not None and "geotiff" in names:
            write_geotiff(self._dir / names["geotiff"], mask, where)

    # -- at the end ----------------------------------------------------------------------------

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Merge the index over processes, then write ``index.csv``, ``predictions.json`` and the archive."""
        folder = self._dir
        part = folder / f".index-rank{trainer.global_rank}.json"
        if trainer.world_size > 1:
            part.write_text(json.dumps({"rows": self._rows, "counts": self._counts}))
        trainer.strategy.barrier("aras400k-predictions")
        if trainer.is_global_zero:
            rows, counts = self._gather(folder, trainer.world_size)
            self._finish(trainer, folder, rows, counts)
        trainer.strategy.barrier("aras400k-predictions-done")

    def _gather(self, folder: Path, world_size: int) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        if world_size == 1:
            return dict(self._rows), dict(self._counts)
        rows: dict[str, dict[str, Any]] = {}
        counts = {"written": 0, "kept": 0}
        for rank in range(world_size):
            path = folder / f".index-rank{rank}.json"
            part = json.loads(path.read_text())
            rows.update(part["rows"])
            for name in counts:
                counts[name] += part["counts"][name]
            path.unlink()
        return rows, counts

    def _finish(self, trainer: Trainer, folder: Path, rows: dict[str, dict[str, Any]], counts: dict[str, int]) -> None:
        if self._replacing:  # another model's samples that this run did not redo go
            _forget(folder, self._previous, rows)
            self._previous = {}
        merged = {**self._previous, **rows}
        _write_index(folder / INDEX_NAME, merged)
        record = {
            "made_by": "aras predict",
            "model_fingerprint": self._fingerprint,
            "checkpoint": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
            "num_samples": len(merged),
            "overlay_alpha": self.alpha if self.overlay else None,
        }
        write_json_atomic(folder / RECORD_NAME, record)
        extra = f" and {ARCHIVE_NAME}" if self.archive else ""
        if self.archive:
            _write_archive(folder, merged)
        self._summary = (
            f"Predictions: {counts['written']} samples written, {counts['kept']} already complete; "
            f"{len(merged)} samples in {folder} (see {INDEX_NAME}{extra})"
        )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Say where the predictions went (after the progress bar has closed)."""
        if stage == "predict" and self._summary is not None:
            bar = trainer.progress_bar_callback
            if bar is not None:  # close the bar first (idempotent), so that the line comes below it
                bar.teardown(trainer, pl_module, stage)
            print(self._summary)
            self._summary = None


def _masks_and_keys(prediction: Any, batch: Any) -> tuple[np.ndarray, list[str]]:
    """The ``(B, H, W)`` uint8 masks and the sample keys of one predict batch."""
    if not isinstance(prediction, Mapping) or "mask" not in prediction:
        raise ValueError(
            "PredictionWriter needs predict_step to return a dict with 'mask' (B, H, W) class indices, "
            f"as SegmentationTask does; got {type(prediction).__name__}"
        )
    masks = torch.as_tensor(prediction["mask"]).detach().to("cpu", torch.uint8).numpy()
    keys = prediction.get("key")
    if keys is None and isinstance(batch, Mapping):
        keys = batch.get("key")
    if keys is None or len(keys) != len(masks):
        raise ValueError("PredictionWriter needs a 'key' per sample in the batch or the prediction, to name the files")
    for key in keys:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"sample key {key!r} cannot name a file")
    return masks, [str(key) for key in keys]


def _row(key: str, names: dict[str, str], mask: np.ndarray) -> dict[str, Any]:
    shares = composition(mask)
    return {"key": key, "files": ";".join(names.values()), **{n: round(shares.get(n, 0.0), 6) for n in CLASS_NAMES}}


def _read_index(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["key"]: row for row in csv.DictReader(fh) if row.get("key")}


def _write_index(path: Path, rows: Mapping[str, Mapping[str, Any]]) -> None:
    with atomic_path(path, _temporary(path)) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_INDEX_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow(rows[key])


def _forget(folder: Path, old: Mapping[str, Mapping[str, Any]], keep: Mapping[str, Any]) -> None:
    """Delete the files of another model's samples (``old`` index rows) that this run did not rewrite."""
    for key, row in old.items():
        if key in keep:
            continue
        for name in row["files"].split(";"):
            (folder / name).unlink(missing_ok=True)


def _write_archive(folder: Path, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """``predictions.zip``: the colour masks, overlays and ``index.csv``, written under a temporary name."""
    path = folder / ARCHIVE_NAME
    visual = tuple(_SUFFIXES[kind] for kind in _VISUAL)
    with (
        atomic_path(path, _temporary(path)) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive,  # PNGs are compressed already
    ):
        archive.write(folder / INDEX_NAME, INDEX_NAME)
        for key in sorted(rows):
            for name in str(rows[key]["files"]).split(";"):
                if name.endswith(visual) and (folder / name).is_file():
                    archive.write(folder / name, name)
