"""Webdataset shard sets: the on-disk format every stage of aras400k reads and writes.

A *shard set* is a folder of webdataset tar files plus ``manifest.json``. A sample is
the tar members sharing a key: ``image.png`` (RGB), an optional ``mask.png`` (class
indices 0-6, 255 = ignore), ``meta.json`` and optional ``captions.json`` (``docs/data.md``).

A folder with a manifest is finished: :class:`ShardWriter` writes it last. The readers
also take remote specs (:mod:`aras400k.data.remote`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tarfile
import zlib
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np
from PIL import Image

from aras400k.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from aras400k.data.composition import class_counts, composition_from_counts
from aras400k.data.remote import is_url, join_location, location_name, open_shard, parse_spec, read_location
from aras400k.errors import check_at_least
from aras400k.files import naming_path
from aras400k.files import write_json_atomic as _write_json_atomic

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_IMAGE_PIXELS",
    "MAX_MEMBER_BYTES",
    "SOURCES",
    "EncodedSample",
    "ManifestError",
    "Sample",
    "SampleError",
    "ShardList",
    "ShardReadError",
    "ShardWriter",
    "decode_image",
    "decode_mask",
    "decode_sample",
    "encode_png",
    "encode_sample",
    "is_shard_name",
    "iter_raw_samples",
    "iter_samples",
    "list_shards",
    "manifest_image_size",
    "mixes_sizes",
    "read_image_size",
    "read_manifest",
    "shard_paths",
    "write_json_atomic",
]

FORMAT_NAME = "aras400k-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: Allowed values of ``meta.json``'s ``source``.
SOURCES = ("real", "synth_uncond", "synth_cond")
Source = Literal["real", "synth_uncond", "synth_cond"]

#: Most pixels an image or mask may have (4096 x 4096). Larger ones are bad samples,
#: rejected from their header before anything is decoded, so memory stays bounded.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Most bytes one tar member may hold; a larger (or sparse) member makes its shard unreadable.
MAX_MEMBER_BYTES = 256 * 1024 * 1024

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
#: Members the writer builds itself; a raw member may not replace them (the manifest's
#: pixel counts and the meta defaults depend on them).
_WRITER_MEMBERS = frozenset({"image.png", "mask.png", "meta.json"})


class ManifestError(ValueError):
    """A shard set folder has no readable manifest, or the manifest is malformed."""


class SampleError(ValueError):
    """A sample cannot be decoded (corrupt or missing member, bad mask value, ...)."""


class ShardReadError(tarfile.ReadError):
    """A tar shard is truncated or corrupt; the message names it and the last sample read.

    Attributes:
        location: The shard (local path, URL or ``pipe:`` command).
        reason: What the tar reader said.
    """

    def __init__(self, location: str, last_key: str | None, reason: str) -> None:
        where = f"after sample {last_key}" if last_key else "before its first sample"
        super().__init__(f"{location}: tar file is truncated or corrupt {where} ({reason})")
        self.location = location
        self.reason = reason


@dataclass
class Sample:
    """One decoded sample of a shard set.

    Attributes:
        key: Patch id (real) or generated id (synthetic); letters, digits, ``_`` and ``-``.
        image: ``(H, W, 3)`` uint8 RGB image (``(3, H, W)`` from ``decode_sample(..., channels_first=True)``).
        mask: ``(H, W)`` uint8 class indices, or ``None`` for an unlabelled image.
        meta: Contents of ``meta.json``.
        captions: Contents of ``captions.json``, or ``None``.
        image_png: Encoded ``image.png`` written verbatim; it must decode to ``image``.
        mask_png: Encoded ``mask.png`` written verbatim; it must decode to ``mask`` (still
            required, for checks and pixel counts).
        raw_members: Further members written verbatim, name -> bytes.
    """

    key: str
    image: np.ndarray
    mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    captions: list[dict[str, Any]] | None = None
    image_png: bytes | None = None
    mask_png: bytes | None = None
    raw_members: dict[str, bytes] = field(default_factory=dict)


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an ``(H, W)`` or ``(H, W, 3)`` uint8 array as PNG bytes, at zlib level ``compress_level`` (0-9).

    A one-channel array (a mask: runs of a few values) is deflated with zlib's ``Z_RLE``
    strategy, about 3x faster to write and smaller than the default (``docs/data.md``).
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    options: dict[str, int] = {"compress_level": compress_level}
    if array.ndim == 2:
        options["compress_type"] = zlib.Z_RLE
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **options)
    return buffer.getvalue()


#: What Pillow raises on bytes it cannot decode (a decompression bomb included, and its
#: warning when warnings are errors).
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Formats an image member may hold; masks are PNG only. Other decoders are never tried.
_IMAGE_FORMATS = ("PNG", "JPEG")
_MASK_FORMATS = ("PNG",)

Size = tuple[int, int]


def read_image_size(data: bytes, what: str = "image") -> Size:
    """Read a PNG or JPEG's ``(height, width)`` in pixels from its header, decoding no pixels.

    ``what`` names the bytes in the message (``image``, ``mask``).

    Raises:
        SampleError: If the header is unreadable or the picture has more than
            :data:`MAX_IMAGE_PIXELS` pixels.
    """
    size = _png_size(data)
    if size is None:
        try:
            with Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS) as img:
                size = (img.height, img.width)
        except _PIL_ERRORS as err:
            raise SampleError(f"{what} is not a readable picture ({err})") from err
    _check_size(size, what)
    return size


def _png_size(data: bytes) -> Size | None:
    """``(height, width)`` from a PNG's ``IHDR`` chunk, or ``None`` if ``data`` is not a PNG."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise SampleError("PNG has no IHDR header chunk")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def _check_size(size: Size, what: str, expected: Size | None = None, of: str = "the set's size") -> None:
    """Refuse an empty or oversized picture, or one of another size than ``expected``."""
    height, width = size
    if height < 1 or width < 1 or height * width > MAX_IMAGE_PIXELS:
        raise SampleError(f"{what} is {width}x{height} px, outside 1 to {MAX_IMAGE_PIXELS} pixels")
    if expected is not None and tuple(size) != tuple(expected):
        raise SampleError(f"{what} is {width}x{height} but {of} is {expected[1]}x{expected[0]}")


@contextmanager
def _open(data: bytes, what: str, formats: tuple[str, ...], size: Size | None, of: str) -> Iterator[Image.Image]:
    """Open picture bytes lazily, having checked the size in their header (nothing decoded yet).

    What Pillow raises, there or in the ``with`` body, becomes a :class:`SampleError`
    saying the ``what`` is not a readable picture (PNG for a mask).
    """
    try:
        header = _png_size(data)
        if header is not None:
            _check_size(header, what, size, of)
        with Image.open(io.BytesIO(data), formats=formats) as img:
            _check_size((img.height, img.width), what, size, of)
            yield img
    except SampleError:
        raise
    except _PIL_ERRORS as err:
        raise SampleError(f"{what} is not a readable {'PNG' if what == 'mask' else 'picture'} ({err})") from err


def decode_image(data: bytes, size: Size | None = None, channels_first: bool = False) -> np.ndarray:
    """Decode PNG/JPEG bytes into an ``(H, W, 3)`` uint8 RGB array (``(3, H, W)`` planes if ``channels_first``).

    The size is read from the header first: a picture over :data:`MAX_IMAGE_PIXELS`
    (a decompression bomb) or of another ``(height, width)`` than ``size`` (``None``:
    any) is refused undecoded. Planes: ``docs/data.md#loader-speed``.

    Raises:
        SampleError: If the bytes are not a readable image or it has the wrong size.
    """
    with _open(data, "image", _IMAGE_FORMATS, size, "the set's size") as img:
        if img.mode != "RGB":
            img = img.convert("RGB")
        if not channels_first:
            return np.array(img)
        img.load()
        planes = _planes(img.im, img.height, img.width) if _PILLOW_BUFFERS else None
        return planes if planes is not None else np.ascontiguousarray(np.array(img).transpose(2, 0, 1))


#: Whether this Pillow can map a numpy array as a picture's memory (``Image.core.map_buffer``,
#: an internal of Pillow's); without it the decoders take the plain ``np.array`` path.
_PILLOW_BUFFERS = hasattr(Image.core, "map_buffer")
#: What an internal of another Pillow may raise; the plain path is taken then.
_INTERNAL_ERRORS = (AttributeError, TypeError, ValueError)


def _planes(pixels: Any, height: int, width: int) -> np.ndarray | None:
    """The ``(3, H, W)`` planes of a loaded RGB picture, pasted band by band by Pillow (``docs/data.md#loader-speed``).

    ``None`` where this Pillow's internals differ.
    """
    out = np.empty((3, height, width), dtype=np.uint8)
    try:
        for band in range(3):
            plane = Image.core.map_buffer(out[band], (width, height), "raw", 0, ("L", 0, 1))
            plane.paste(pixels.getband(band), (0, 0, width, height))
    except _INTERNAL_ERRORS:
        return None
    return out


def _decode_direct(img: Image.Image) -> np.ndarray | None:
    """Decode an opened, unloaded ``L`` PNG straight into a new ``(H, W)`` array; ``None`` where Pillow would not.

    The array is mapped as the picture's memory before loading, saving the copies of
    ``np.array(img)``; a Pillow that replaces it decodes into its own (``docs/data.md#loader-speed``).
    """
    if not _PILLOW_BUFFERS or img.format != "PNG" or img.mode != "L":
        return None
    out = np.empty((img.height, img.width), dtype=np.uint8)
    try:
        target = Image.core.map_buffer(out, img.size, "raw", 0, ("L", 0, 1))
        img.im = target
    except _INTERNAL_ERRORS:
        return None
    img.load()
    return out if img.im is target else None


def decode_mask(data: bytes, size: Size | None = None, of: str = "image") -> np.ndarray:
    """Decode a one-channel index-mask PNG into ``(H, W)`` uint8 class indices, checking its size and values.

    ``size`` is the ``(height, width)`` it must have (``None``: any); ``of`` says whose
    size that is, for the message.

    Raises:
        SampleError: If unreadable, of the wrong size, not one channel, or holding
            values other than 0-6 and 255.
    """
    with _open(data, "mask", _MASK_FORMATS, size, of) as img:
        if img.mode not in ("L", "P"):
            raise SampleError(f"mask must be a one-channel PNG, got mode {img.mode}")
        mask = _decode_direct(img)
        if mask is None:
            mask = np.array(img)
    top = int(mask.max()) if mask.size else 0
    if top >= NUM_CLASSES and (top != IGNORE_INDEX or _has_bad_values(mask)):
        bad = sorted(set(np.unique(mask).tolist()) - set(range(NUM_CLASSES)) - {IGNORE_INDEX})
        raise SampleError(f"mask holds values {bad} that are neither classes 0-{NUM_CLASSES - 1} nor {IGNORE_INDEX}")
    return mask


def _has_bad_values(mask: np.ndarray) -> bool:
    """Whether a uint8 mask holds values other than the classes and 255 (in uint8, 255 + 1 wraps to 0)."""
    return bool(mask.size) and int(np.add(mask, 1, dtype=np.uint8).max()) > NUM_CLASSES


def decode_sample(
    raw: Mapping[str, bytes],
    with_mask: bool = True,
    with_captions: bool = True,
    size: Size | None = None,
    channels_first: bool = False,
) -> Sample:
    """Decode one raw webdataset sample, ``{"__key__": key, "image.png": bytes, ...}``.

    Args:
        raw: The sample.
        with_mask: Decode ``mask.png`` when present.
        with_captions: Parse ``captions.json`` when present.
        size: ``(height, width)`` of the set (:func:`manifest_image_size`); a sample of
            another size is refused undecoded. ``None``: any size.
        channels_first: Give the image as ``(3, H, W)`` planes.

    Raises:
        SampleError: If ``image.png`` or ``meta.json`` is missing or corrupt, ``meta.json``
            is not an object, ``captions.json`` not a list, or the mask or a size is wrong
            (the message names the key).
    """
    key = str(raw.get("__key__", "?"))
    try:
        for member in ("image.png", "meta.json"):
            if member not in raw:
                raise SampleError(f"member {member} is missing")
        meta = _parse_json(raw["meta.json"], "meta.json", dict)
        image = decode_image(raw["image.png"], size, channels_first)
        mask = None
        if with_mask and "mask.png" in raw:
            mask = decode_mask(raw["mask.png"], image.shape[1:] if channels_first else image.shape[:2])
        captions = None
        if with_captions and "captions.json" in raw:
            captions = _parse_json(raw["captions.json"], "captions.json", list)
    except SampleError as err:
        raise SampleError(f"sample {key}: {err}") from err
    return Sample(key=key, image=image, mask=mask, meta=meta, captions=captions)


def _parse_json(data: Any, member: str, kind: type) -> Any:
    """Parse a JSON member that must hold a ``kind`` (``dict``: an object, ``list``: a list)."""
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise SampleError(f"{member} is not valid JSON ({err})") from err
    if not isinstance(value, kind):
        got = _JSON_KINDS.get(type(value), type(value).__name__)
        raise SampleError(f"{member} must hold {_JSON_KINDS[kind]}, got {got}")
    return value


#: What a parsed JSON value is, in JSON's words.
_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and rename (:func:`aras400k.files.write_json_atomic`)."""
    _write_json_atomic(path, obj)


#: The tar layout of ``webdataset.TarWriter(mtime=0, encoder=False)``: pax format, mode
#: 0444, owner ``bigdata``, mtime 0 (no pax header), members sorted by name (``docs/data.md``).
_TAR_BLOCK = tarfile.BLOCKSIZE
_TAR_RECORD = tarfile.RECORDSIZE
_TAR_OWNER = "bigdata"
_TAR_MODE = 0o444


@dataclass(frozen=True)
class EncodedSample:
    """One sample ready to append to a shard: its tar members as bytes, and what the manifest counts.

    Made by :func:`encode_sample` (or :meth:`ShardWriter.encode`), possibly in another
    process: it pickles to little more than its bytes, and
    :meth:`ShardWriter.write_encoded` only appends it, so the per-sample work of
    writing (checks, PNG and JSON encoding, pixel counts, tar headers) can run on every
    core while one process writes the shards in order (see ``docs/data.md``).

    Attributes:
        key: The sample key.
        split: The split ``meta.json`` was filled with (a writer accepts only its own).
        source: The source ``meta.json`` was filled with (a writer accepts only its own).
        tar: The sample's tar members (header, content and padding of each, sorted by
            name), exactly as they go into the shard.
        size: ``(height, width)`` of the image.
        pixels: Pixels per class the sample adds to the manifest's ``class_pixels`` (its
            mask's counts, or an unlabelled sample's composition times its pixels), or
            ``None`` when it adds nothing.
        has_mask: Whether the sample has a mask (counted in ``num_masks``).
    """

    key: str
    split: str
    source: str
    tar: bytes
    size: tuple[int, int]
    pixels: tuple[int, ...] | None
    has_mask: bool


def encode_sample(sample: Sample, split: str, source: Source = "real", compress_level: int = 6) -> EncodedSample:
    """Check and encode one sample as a shard holds it, for :meth:`ShardWriter.write_encoded`.

    Everything :meth:`ShardWriter.write` does per sample happens here: the checks, the
    PNGs (unless ``image_png`` / ``mask_png`` are given), ``meta.json`` with
    ``source``, ``split`` and ``composition`` filled in when missing, the pixel counts
    and the tar headers. The result does not depend on the process it runs in, so
    samples encoded in worker processes make the same shard bytes as one process.

    Args:
        sample: The sample (see :meth:`ShardWriter.write`).
        split: The writer's split.
        source: The writer's source: ``real``, ``synth_uncond`` or ``synth_cond``.
        compress_level: PNG zlib level for the image and mask encoded here.

    Returns:
        The :class:`EncodedSample`.

    Raises:
        ValueError: On a bad key, a malformed image or mask, an image over
            :data:`MAX_IMAGE_PIXELS`, a raw member with a bad name or one the writer
            builds itself, or an unknown ``source``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    key = sample.key
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValueError(f"sample key {key!r} may hold only letters, digits, '_' and '-'")
    image = np.asarray(sample.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"sample {key}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    size = (int(image.shape[0]), int(image.shape[1]))
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ValueError(f"sample {key}: image is {size[1]}x{size[0]} px, more than {MAX_IMAGE_PIXELS} pixels")
    raw_members = _check_raw_members(key, sample.raw_members, with_captions=sample.captions is not None)
    for name in ("image_png", "mask_png"):
        value = getattr(sample, name)
        if value is not None and not isinstance(value, bytes):
            raise ValueError(f"sample {key}: {name} must be bytes, got {type(value).__name__}")
    if sample.mask_png is not None and sample.mask is None:
        raise ValueError(f"sample {key}: mask_png needs the decoded mask too (for checks and pixel counts)")
    meta = dict(sample.meta)
    meta.setdefault("source", source)
    meta.setdefault("split", split)
    image_png = sample.image_png if sample.image_png is not None else encode_png(image, compress_level)
    members: dict[str, bytes] = {"image.png": image_png}
    pixels: tuple[int, ...] | None = None
    if sample.mask is not None:
        mask = np.asarray(sample.mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"sample {key}: mask shape {mask.shape} differs from image shape {image.shape[:2]}")
        if mask.dtype != np.uint8:
            raise ValueError(f"sample {key}: mask must be uint8, got {mask.dtype}")
        if _has_bad_values(mask):
            raise ValueError(f"sample {key}: mask holds values outside 0-{NUM_CLASSES - 1} and {IGNORE_INDEX}")
        counts = class_counts(mask)
        pixels = tuple(int(n) for n in counts)
        meta.setdefault("composition", composition_from_counts(counts))
        members["mask.png"] = sample.mask_png if sample.mask_png is not None else encode_png(mask, compress_level)
    elif "composition" in meta:
        # An unlabelled sample may carry a composition from elsewhere (e.g. a CSV);
        # weight it by its pixel count so the dataset total stays pixel-weighted.
        shares = np.array([float(meta["composition"].get(c.name, 0.0)) for c in CLASSES])
        pixels = tuple(int(n) for n in np.rint(shares * size[0] * size[1]).astype(np.int64))
    members["meta.json"] = json.dumps(meta).encode()
    if sample.captions is not None:
        members["captions.json"] = json.dumps(sample.captions).encode()
    members.update(raw_members)
    return EncodedSample(
        key=key,
        split=split,
        source=source,
        tar=_tar_members(key, members),
        size=size,
        pixels=pixels,
        has_mask=sample.mask is not None,
    )


def _tar_members(key: str, members: Mapping[str, bytes]) -> bytes:
    """A sample's members as tar bytes: for each (sorted by name) its header, content and padding."""
    parts: list[bytes] = []
    for name in sorted(members):
        data = members[name]
        info = tarfile.TarInfo(f"{key}.{name}")
        info.size, info.mtime, info.mode = len(data), 0, _TAR_MODE
        info.uname = info.gname = _TAR_OWNER
        parts.append(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        parts.append(data)
        if len(data) % _TAR_BLOCK:
            parts.append(tarfile.NUL * (_TAR_BLOCK - len(data) % _TAR_BLOCK))
    return b"".join(parts)


class ShardWriter:
    """Write samples into a new shard set (a folder of tar shards plus ``manifest.json``).

    Use it as a context manager; the manifest is written when it closes without error::

        with ShardWriter("data/demo/train", split="train", source="real") as writer:
            writer.write(Sample(key="N36E027_000_001", image=rgb, mask=mask))

    Each shard is written as ``NAME.tar.tmp`` and renamed once full (``docs/data.md#writing-shard-sets``).

    Args:
        out_dir: Folder to create; it may hold a manifest only with ``overwrite``.
        split: Split name stored in the manifest and in every sample's meta.
        source: ``real``, ``synth_uncond`` or ``synth_cond``.
        samples_per_shard: Samples per tar file.
        prefix: Shard file name prefix (default: the split name).
        overwrite: Replace an existing shard set in ``out_dir``.
        compress_level: PNG zlib level for images and masks.
        extra: More manifest fields (e.g. how it was made).

    Raises:
        FileExistsError: If ``out_dir`` already holds a shard set and ``overwrite`` is off.
        ValueError: On an unknown ``source``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        split: str,
        source: Source = "real",
        samples_per_shard: int = 1000,
        prefix: str | None = None,
        overwrite: bool = False,
        compress_level: int = 6,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        check_at_least("samples_per_shard", samples_per_shard, 1)
        self.out_dir = Path(out_dir)
        if (self.out_dir / MANIFEST_NAME).exists():
            if not overwrite:
                raise FileExistsError(
                    f"{self.out_dir} already holds a shard set; pass overwrite=True (--overwrite true) to replace it"
                )
            for old in shard_paths(self.out_dir, check=False):
                old.unlink()
            (self.out_dir / MANIFEST_NAME).unlink()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.source = source
        self.samples_per_shard = samples_per_shard
        self.prefix = prefix or split
        if not is_shard_name(self._shard_name(0)):
            raise ValueError(f"shard name prefix {self.prefix!r} must be a plain file name (no path separators)")
        self.compress_level = compress_level
        self.extra = dict(extra or {})
        self.shards: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] = {}
        self.num_samples = 0
        self.num_masks = 0
        #: Every ``(height, width)`` written (one, unless the set mixes sizes).
        self.image_sizes: set[Size] = set()
        self.pixel_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        self._keys: set[str] = set()
        self._file: IO[bytes] | None = None
        self._tmp_path = self.out_dir / (self._shard_name(0) + ".tmp")
        self._digest: Any = None
        self._offset = 0
        self._tar_count = 0
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _shard_name(self, index: int) -> str:
        return f"{self.prefix}-{index:06d}.tar"

    def _open_next(self) -> None:
        name = self._shard_name(len(self.shards))
        self._tmp_path = self.out_dir / (name + ".tmp")
        # Written by hand (the bytes of webdataset's TarWriter, see _TAR_BLOCK), without its copies.
        with naming_path(self._tmp_path):
            self._file = self._tmp_path.open("wb")
        self._digest = hashlib.sha256()
        self._offset = 0
        self._tar_count = 0

    def _append(self, data: bytes) -> None:
        """Append bytes to the open shard, hashing them on the way (no second read for the sha256)."""
        assert self._file is not None
        with naming_path(self._tmp_path):
            self._file.write(data)
        self._digest.update(data)
        self._offset += len(data)

    def _finish_shard(self) -> None:
        if self._file is None:
            return
        # The end of a tar as tarfile writes it: two zero blocks, then zeros up to a whole record.
        end = 2 * _TAR_BLOCK
        end += -(self._offset + end) % _TAR_RECORD
        self._append(tarfile.NUL * end)
        with naming_path(self._tmp_path):
            self._file.close()
        self._file = None
        name = self._shard_name(len(self.shards))
        os.replace(self._tmp_path, self.out_dir / name)
        self.shards.append({"name": name, "num_samples": self._tar_count, "sha256": self._digest.hexdigest()})

    def encode(self, sample: Sample) -> EncodedSample:
        """Check and encode a sample for this writer into what :meth:`write_encoded` appends; writes nothing.

        Raises:
            ValueError: As :func:`encode_sample`.
        """
        return encode_sample(sample, self.split, self.source, self.compress_level)

    def write(self, sample: Sample) -> None:
        """Append one sample; its ``meta`` gets ``source``, ``split`` and ``composition`` (needs a mask) when missing.

        Raises:
            ValueError: On a repeated key, or as :func:`encode_sample`.
        """
        self._check_writable(sample.key)
        self.write_encoded(self.encode(sample))

    def write_encoded(self, encoded: EncodedSample) -> None:
        """Append one sample encoded by :func:`encode_sample` (in any process) for this writer.

        Only the bytes are appended and the counts added: a process feeding samples
        encoded elsewhere does almost nothing per sample.

        Args:
            encoded: The sample, encoded with this writer's split and source.

        Raises:
            ValueError: On a repeated key, or a sample encoded for another split or source.
        """
        self._check_writable(encoded.key)
        if (encoded.split, encoded.source) != (self.split, self.source):
            raise ValueError(
                f"sample {encoded.key} was encoded for split {encoded.split!r} and source {encoded.source!r}, "
                f"but this writer writes split {self.split!r} and source {self.source!r}"
            )
        if self._file is None:
            self._open_next()
        self._append(encoded.tar)
        if encoded.pixels is not None:
            self.pixel_counts += np.asarray(encoded.pixels, dtype=np.int64)
        self.num_masks += int(encoded.has_mask)
        self._keys.add(encoded.key)
        self.image_sizes.add(encoded.size)
        self._tar_count += 1
        self.num_samples += 1
        if self._tar_count >= self.samples_per_shard:
            self._finish_shard()

    def _check_writable(self, key: str) -> None:
        """Refuse a closed writer or a key already written."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if key in self._keys:
            raise ValueError(f"sample key {key!r} is written twice")

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write ``manifest.json``; returns the manifest as written."""
        if self._closed:
            return self.manifest
        self._finish_shard()
        self.manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "classes": [{"index": c.index, "name": c.name, "colour": list(c.colour)} for c in CLASSES],
            "split": self.split,
            "source": self.source,
            "num_samples": self.num_samples,
            "num_masks": self.num_masks,
            "shards": self.shards,
            "class_pixels": {c.name: int(n) for c, n in zip(CLASSES, self.pixel_counts, strict=True)},
            "composition": composition_from_counts(self.pixel_counts),
            **self.extra,
        }
        # The writer's own measurement (a copied-over value is not trusted): the one
        # size of all images, null when they differ, absent when there are none.
        self.manifest.pop("image_size", None)
        if self.image_sizes:
            self.manifest["image_size"] = list(*self.image_sizes) if len(self.image_sizes) == 1 else None
        write_json_atomic(self.out_dir / MANIFEST_NAME, self.manifest)
        self._closed = True
        return self.manifest

    def abort(self) -> None:
        """Stop without writing a manifest, removing the unfinished shard."""
        if self._file is not None:
            self._file.close()
            self._tmp_path.unlink(missing_ok=True)
            self._file = None
        self._closed = True


def _check_raw_members(key: str, raw: Mapping[str, bytes], with_captions: bool) -> dict[str, bytes]:
    """Check the names and types of a sample's verbatim members (before anything is counted)."""
    taken = _WRITER_MEMBERS | ({"captions.json"} if with_captions else set())
    for name, data in raw.items():
        if not name or name.startswith(("_", ".")) or "/" in name:
            raise ValueError(
                f"sample {key}: raw member name {name!r} must not be empty, start with '_' or '.', or hold '/'"
            )
        if name in taken:
            raise ValueError(f"sample {key}: raw member {name!r} would replace a member the writer builds")
        if not isinstance(data, bytes):
            raise ValueError(f"sample {key}: raw member {name!r} must be bytes, got {type(data).__name__}")
    return dict(raw)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check the manifest of a shard set folder (or its ``manifest.json``), local or a URL.

    Raises:
        ManifestError: If the folder or manifest is missing, unreadable or of another
            format, or the spec lists shards instead of naming a folder.
        OSError: If a URL cannot be reached (other than a missing manifest).
        ImportError: If the URL needs fsspec or a backend that is not installed.
    """
    if is_url(directory) or parse_spec(directory).folder is None:  # a URL, or a local shard list
        return _read_manifest_spec(directory)
    path = Path(directory)
    if path.name != MANIFEST_NAME:
        path = path / MANIFEST_NAME
    if not path.parent.is_dir():
        raise ManifestError(f"{path.parent} is not a folder")
    if not path.is_file():
        raise ManifestError(f"{path.parent} is not a shard set: it has no {MANIFEST_NAME}")
    return _load_manifest(path.read_text, str(path))


def _read_manifest_spec(spec: str | Path) -> dict[str, Any]:
    """Read the manifest of a URL folder; refuse a spec that lists shards."""
    parsed = parse_spec(spec)
    if parsed.folder is None:
        raise ManifestError(
            f"{spec} lists {len(parsed.shards)} shard(s), not a shard set folder, so it has no {MANIFEST_NAME}; "
            "point at the folder holding the shards and their manifest (e.g. http://host/train/) for that"
        )
    location = join_location(parsed.folder, MANIFEST_NAME)
    try:
        data = read_location(location)
    except FileNotFoundError as err:
        raise ManifestError(f"{parsed.folder} is not a shard set: it has no {MANIFEST_NAME} ({err})") from err
    return _load_manifest(lambda: data, location)


def _load_manifest(read: Callable[[], str | bytes], where: str) -> dict[str, Any]:
    """Parse (what ``read`` returns) and check a manifest: the one gate of every reader.

    After it every shard ``name`` is plain (:func:`is_shard_name`), so no reader opens,
    and no writer deletes, a file outside the folder because a manifest names it.
    """
    try:
        manifest = json.loads(read())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{where} is not readable JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ManifestError(f"{where} is not an {FORMAT_NAME} manifest")
    version = manifest.get("format_version", 0)
    if not _is_count(version):
        raise ManifestError(f"{where}: format_version must be a whole number, got {brief(version)}")
    if version > FORMAT_VERSION:
        raise ManifestError(f"{where} has format version {version}, newer than this library's {FORMAT_VERSION}")
    for required in ("shards", "num_samples", "split", "source"):
        if required not in manifest:
            raise ManifestError(f"{where} lacks the field {required!r}")
    for name in ("split", "source"):
        if not isinstance(manifest[name], str):
            raise ManifestError(f"{where}: {name} must be a string, got {brief(manifest[name])}")
    if not is_shard_name(f"{manifest['split']}.tar"):
        raise ManifestError(f"{where}: split {brief(manifest['split'])} is not a plain name (it names the shards)")
    for name in ("num_samples", "num_masks"):
        if name in manifest and not _is_count(manifest[name]):
            raise ManifestError(f"{where}: {name} must be a whole number >= 0, got {brief(manifest[name])}")
    _check_shard_entries(manifest["shards"], where)
    pixels = manifest.get("class_pixels")
    if pixels is not None and not (isinstance(pixels, dict) and all(_is_count(n) for n in pixels.values())):
        raise ManifestError(f"{where}: class_pixels must map class names to pixel counts, got {brief(pixels)}")
    if manifest.get("image_size") is not None:
        _check_image_size(manifest["image_size"], where)
    return manifest


def _check_shard_entries(shards: Any, where: str) -> None:
    """Check the ``shards`` list: entries with a plain, unique ``name``, a ``num_samples`` and a string ``sha256``."""
    if not isinstance(shards, list):
        raise ManifestError(f"{where}: shards must be a list of entries, got {brief(shards)}")
    seen: set[str] = set()
    for index, entry in enumerate(shards):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ManifestError(f"{where}: shard entry {index} is not an object with a name, got {brief(entry)}")
        name = entry["name"]
        if not is_shard_name(name):
            raise ManifestError(
                f"{where}: shard entry {index} has name {brief(name)}, not a plain .tar file name inside the set"
            )
        if name in seen:
            raise ManifestError(f"{where}: shard {name} is listed twice")
        seen.add(name)
        if not _is_count(entry.get("num_samples")):
            raise ManifestError(f"{where}: shard {name} needs num_samples, a whole number >= 0")
        if not isinstance(entry.get("sha256", ""), str):
            raise ManifestError(f"{where}: shard {name} has a sha256 that is not a string")


def _check_image_size(size: Any, where: str) -> None:
    """Check a manifest's ``image_size``: ``[height, width]``, positive, at most :data:`MAX_IMAGE_PIXELS`."""
    if not (isinstance(size, list) and len(size) == 2 and all(_is_count(n) and n > 0 for n in size)):
        raise ManifestError(f"{where}: image_size must be [height, width] in pixels, got {brief(size)}")
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ManifestError(f"{where}: image_size {size} exceeds the {MAX_IMAGE_PIXELS} pixels an image may have")


def is_shard_name(name: Any) -> bool:
    """Whether ``name`` is a plain shard file name: ``NAME.tar`` inside the set folder.

    Plain: a string ending in ``.tar``, with no slash, backslash or NUL and no leading ``.``
    (neither ``..`` nor hidden files), so a manifest never points outside its folder.
    ``name`` may be any JSON value.
    """
    return (
        isinstance(name, str)
        and len(name) > len(".tar")
        and name.endswith(".tar")
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
    )


def _is_count(value: Any) -> bool:
    """Whether a JSON value is a whole number >= 0 (``true`` is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def brief(value: Any, limit: int = 60) -> str:
    """A value's repr, cut for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def manifest_image_size(manifest: Mapping[str, Any] | None) -> Size | None:
    """The ``(height, width)`` of every image of a set, as its manifest (or ``None``) records it.

    ``None`` when not recorded or the sizes differ: ``image_size`` is ``null`` where sizes
    differ (:func:`mixes_sizes`) and absent from older manifests; readers then take the
    first sample's size.
    """
    size = manifest.get("image_size") if manifest is not None else None
    return (int(size[0]), int(size[1])) if size is not None else None


def mixes_sizes(manifest: Mapping[str, Any] | None) -> bool:
    """Whether a manifest (or ``None``) says its images differ in size (``image_size`` present and ``null``).

    Such a set suits per-sample tools (labelling, captioning), not batches.
    """
    return manifest is not None and "image_size" in manifest and manifest["image_size"] is None


def shard_paths(directory: str | Path, check: bool = True) -> list[Path]:
    """The paths of a local shard set's tar shards in manifest order (without ``check``: globbed ``*.tar``).

    Raises:
        ValueError: If ``directory`` is a URL or ``pipe:`` spec (use :func:`list_shards`).
    """
    if is_url(directory):
        raise ValueError(f"shard_paths lists local files, but {directory} is a URL spec; use list_shards for it")
    directory = Path(directory)
    if not check:
        return sorted(directory.glob("*.tar"))
    return [directory / s["name"] for s in read_manifest(directory)["shards"]]


@dataclass(frozen=True)
class ShardList:
    """The shards a spec names, with the manifest that counts them when there is one.

    Attributes:
        spec: The spec as given.
        locations: Where each shard is read from, in manifest (or spec) order; pass one to
            :func:`iter_raw_samples`.
        names: Each shard's name: the manifest's, else :func:`~aras400k.data.remote.location_name`.
        manifest: The shard set's manifest, or ``None`` when the spec lists shards.
    """

    spec: str
    locations: tuple[str, ...]
    names: tuple[str, ...]
    manifest: dict[str, Any] | None


def list_shards(spec: str | Path) -> ShardList:
    """Resolve a spec into its shards in order: a folder (local or URL) through its manifest, a shard list as written.

    A shard list: ``train-{000000..000009}.tar``, ``pipe:cat ...``.

    Raises:
        ManifestError: If a folder has no valid manifest.
        OSError: If a URL folder cannot be reached.
        ImportError: If the URL needs fsspec or a backend that is not installed.
    """
    parsed = parse_spec(spec)
    if parsed.folder is None:
        names = tuple(location_name(location) for location in parsed.shards)
        return ShardList(spec=str(spec), locations=parsed.shards, names=names, manifest=None)
    manifest = read_manifest(parsed.folder)
    names = tuple(str(shard["name"]) for shard in manifest["shards"])
    locations = tuple(join_location(parsed.folder, name) for name in names)
    return ShardList(spec=str(spec), locations=locations, names=names, manifest=manifest)


def iter_raw_samples(
    shard: str | Path,
    deadline_s: float | None = None,
    digest: Any | None = None,
    members: Collection[str] | None = None,
) -> Generator[dict[str, Any], None, None]:
    """Iterate the raw samples of one tar shard, grouping members by key.

    The key is a member's file name up to its first dot, the rest its member name
    (``image.png``, ...). A URL or ``pipe:`` shard is streamed, never stored whole; a
    local one is read by a lean tar reader (``docs/data.md#loader-speed``).

    Args:
        shard: Path of a ``.tar`` file, or one shard's URL or ``pipe:`` command (see :func:`list_shards`).
        deadline_s: Seconds the reads of a remote shard may wait in all (:func:`~aras400k.data.remote.open_shard`).
        digest: A :mod:`hashlib` object fed every byte of the shard, then read to its end
            (a remote shard's sha256 checked in the same pass).
        members: Read only these members (the others are skipped unread); ``None``: all.

    Yields:
        ``{"__key__": key, "__shard__": location, member: bytes, ...}``.

    Raises:
        ShardReadError: If the tar is truncated or corrupt, or a member holds more than
            :data:`MAX_MEMBER_BYTES` (after yielding the samples before the damage).
        FileNotFoundError: If a URL does not exist (HTTP 404).
        aras400k.data.remote.ShardTimeoutError: If a remote shard misses its deadline.
        aras400k.data.remote.PipeError: If a ``pipe:`` command fails.
        ImportError: If the URL needs fsspec or a backend that is not installed.
    """
    location, key = str(shard), None
    wanted = None if members is None else frozenset(members)
    try:
        with closing(_read_shard(shard, location, deadline_s, digest, wanted)) as raws:
            for raw in raws:
                key = raw["__key__"]
                yield raw
    except ShardReadError:
        raise
    except (tarfile.TarError, EOFError) as err:
        raise ShardReadError(location, key, str(err) or type(err).__name__) from err


def _read_shard(
    shard: str | Path, location: str, deadline_s: float | None, digest: Any | None, members: frozenset[str] | None
) -> Generator[dict[str, Any], None, None]:
    """The raw samples of one shard, streamed (remote, or hashed) or read by the lean reader, else by tarfile."""
    if is_url(shard) or digest is not None:
        with open_shard(shard, deadline_s) as stream:
            source = stream if digest is None else cast(IO[bytes], _Hashing(stream, digest))
            with tarfile.open(fileobj=source, mode="r|") as tar:
                yield from _group_members(tar, location, members)
            if digest is not None:
                while source.read(1 << 16):
                    pass
        return
    done = 0
    try:
        for raw in _lean_samples(location, members):
            done += 1
            yield raw
        return
    except _NotLean:
        pass  # tarfile reads the shard from here on (it skips the samples already yielded)
    with tarfile.open(shard, mode="r:") as tar:
        yield from _group_members(tar, location, members, skip=done)


class _Hashing:
    """A read-only stream that feeds every byte it reads to a hash."""

    def __init__(self, stream: Any, digest: Any) -> None:
        self._stream = stream
        self._digest = digest

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        self._digest.update(data)
        return data


def _member_too_large(name: str, size: int) -> tarfile.ReadError:
    return tarfile.ReadError(f"member {name!r} holds {size} bytes, over the {MAX_MEMBER_BYTES} limit")


def _group_members(
    tar: tarfile.TarFile, shard: str, members: frozenset[str] | None = None, skip: int = 0
) -> Iterator[dict[str, Any]]:
    """Group a tar's members into samples by key, read in order (so streams work), after ``skip`` samples unread."""
    current: dict[str, Any] | None = None
    for info in tar:
        if not info.isfile():
            continue
        base = info.name.rsplit("/", 1)[-1]
        if "." not in base:
            continue
        key, member = base.split(".", 1)
        if current is not None and current["__key__"] != key:
            if skip:
                skip -= 1
            else:
                yield current
            current = None
        if current is None:
            current = {"__key__": key, "__shard__": shard}
        if skip or (members is not None and member not in members):
            continue
        if info.size > MAX_MEMBER_BYTES:
            raise _member_too_large(info.name, info.size)
        fh = tar.extractfile(info)
        current[member] = fh.read() if fh is not None else b""
    if current is not None and not skip:
        yield current


class _NotLean(Exception):
    """The lean reader met a header it leaves to :mod:`tarfile` (another dialect, or damage)."""


_ZERO_BLOCK = bytes(_TAR_BLOCK)
_CHECKSUM_SPACES = 8 * 0x20  # the checksum field counts as eight spaces
#: (start, end) of the header's number fields: mode, uid, gid, size, mtime, checksum, devmajor, devminor.
_NUMBER_FIELDS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156), (329, 337), (337, 345))
_MAX_PAX_BYTES = 1 << 20  # a larger pax header is left to tarfile
#: pax keywords that change how a member is read; the lean reader leaves those to tarfile.
_PAX_HANDED_ON = (b"GNU.sparse.", b"hdrcharset")


def _lean_samples(path: str, members: frozenset[str] | None) -> Iterator[dict[str, Any]]:
    """Group a local shard's members into samples as :func:`_group_members` would, parsing the headers directly.

    It reads ustar headers (as :class:`ShardWriter` writes them) and pax ``path`` and
    ``size`` (older shards); anything else raises :class:`_NotLean`, and :mod:`tarfile`
    takes over (``docs/data.md#loader-speed``).
    """
    current: dict[str, Any] | None = None
    # Buffered: headers come from the buffer, and a large read goes straight into its bytes
    # object, repeated until complete (a network file system may return less per call).
    with open(path, "rb") as fh:
        read, seek = fh.read, fh.seek
        while True:
            header = read(_TAR_BLOCK)
            if len(header) != _TAR_BLOCK:
                raise _NotLean  # end of file without the end-of-archive blocks, or truncated
            if header == _ZERO_BLOCK:
                break  # end of archive (tarfile stops here too)
            name, size, kind = _parse_header(header)
            if kind == b"x":
                if size > _MAX_PAX_BYTES:
                    raise _NotLean
                name, size = _apply_pax(read(-(-size // _TAR_BLOCK) * _TAR_BLOCK), size, read)
            elif kind not in (b"0", b"\0"):
                raise _NotLean
            base = name.rsplit("/", 1)[-1]
            padded = -(-size // _TAR_BLOCK) * _TAR_BLOCK
            if "." not in base:
                seek(padded, 1)
                continue
            key, member = base.split(".", 1)
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__shard__": path}
            if members is not None and member not in members:
                seek(padded, 1)
                continue
            if size > MAX_MEMBER_BYTES:
                raise _member_too_large(name, size)
            data = read(size)
            if len(data) != size:
                raise _NotLean  # truncated member
            current[member] = data
            if padded != size:
                seek(padded - size, 1)
    if current is not None:
        yield current


def _parse_header(header: bytes) -> tuple[str, int, bytes]:
    """``(name, size, type flag)`` of a plain tar header; :class:`_NotLean` for anything else.

    Every number field is checked as :mod:`tarfile` checks it (a field it cannot read
    ends its archive), so the lean reader never reads on where tarfile would stop.
    """
    try:
        numbers = [int(header[start:end].split(b"\0", 1)[0].strip() or b"0", 8) for start, end in _NUMBER_FIELDS]
        name = header[:100].split(b"\0", 1)[0].decode(tarfile.ENCODING, "surrogateescape")
    except ValueError:  # base-256 numbers (left to tarfile), garbage
        raise _NotLean from None
    size, checksum = numbers[3], numbers[5]
    if checksum != sum(header) - sum(header[148:156]) + _CHECKSUM_SPACES or size < 0 or name.endswith("/"):
        raise _NotLean  # a bad (or signed) checksum, a negative size, a directory: tarfile decides
    return name, size, header[156:157]


def _apply_pax(records: bytes, length: int, read: Any) -> tuple[str, int]:
    """Read the member a pax header describes: its name and size, the pax fields applied."""
    if len(records) < length:
        raise _NotLean
    fields: dict[bytes, bytes] = {}
    position = 0
    while position < length:
        space = records.find(b" ", position, length)
        digits = records[position:space] if space > position else b""
        size = int(digits) if digits.isdigit() else 0  # ASCII digits only, as tarfile's pattern
        end = position + size
        if size <= 0 or end > length or records[end - 1 : end] != b"\n":
            raise _NotLean
        keyword, equals, value = records[space + 1 : end - 1].partition(b"=")
        if not equals or keyword.startswith(_PAX_HANDED_ON):
            raise _NotLean
        fields[keyword] = value
        position = end
    header = read(_TAR_BLOCK)
    if len(header) != _TAR_BLOCK or header == _ZERO_BLOCK:
        raise _NotLean
    name, size, kind = _parse_header(header)
    if kind not in (b"0", b"\0"):
        raise _NotLean
    try:
        if b"path" in fields:
            name = fields[b"path"].decode("utf-8").rstrip("/")
        if b"size" in fields:
            size = int(fields[b"size"])
    except ValueError:
        raise _NotLean from None
    if size < 0:
        raise _NotLean
    return name, size


def iter_samples(
    directory: str | Path, with_mask: bool = True, with_captions: bool = True, shards: Sequence[str] | None = None
) -> Iterator[Sample]:
    """Iterate the decoded samples of a shard set in manifest (or spec) order.

    ``directory`` is any spec :func:`list_shards` takes; ``shards`` keeps only these
    names (:attr:`ShardList.names`; default: all).

    Raises:
        ManifestError: If the folder is not a shard set.
        SampleError: On the first corrupt sample, or one of another size than the set's
            (see :func:`manifest_image_size`); :func:`aras400k.data.verify.verify_shards`
            lists them all.
    """
    listing = list_shards(directory)
    size, learn = manifest_image_size(listing.manifest), not mixes_sizes(listing.manifest)
    for location, name in zip(listing.locations, listing.names, strict=True):
        if shards is not None and name not in shards:
            continue
        for raw in iter_raw_samples(location):
            sample = decode_sample(raw, with_mask=with_mask, with_captions=with_captions, size=size)
            if size is None and learn:
                size = (sample.image.shape[0], sample.image.shape[1])
            yield sample
