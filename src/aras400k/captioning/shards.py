"""Write a new shard set with ``captions.json`` from an input shard set and a caption sidecar.

Shards are never edited in place: every sample is copied (``image.png`` byte for byte,
the mask re-encoded losslessly, other members unchanged) with a ``captions.json`` of
its existing captions followed by the sidecar's, as ``{text, model, mode}`` objects.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from aras400k.captioning.sidecar import read_captions
from aras400k.data.remote import as_location
from aras400k.data.shards import (
    MANIFEST_NAME,
    Sample,
    SampleError,
    ShardWriter,
    decode_sample,
    iter_raw_samples,
    list_shards,
    read_manifest,
)

__all__ = ["check_shards_out", "write_captioned_shards"]

_REBUILT = frozenset({"image.png", "mask.png", "meta.json", "captions.json"})


def check_shards_out(
    in_dir: str | Path, shards_out: str | Path, overwrite: bool, sidecar: str | Path | None = None
) -> bool:
    """Check a set captioned from ``in_dir`` and ``sidecar`` may go to ``shards_out``; whether to replace one there.

    ``overwrite`` allows replacing any shard set; one ``aras-caption`` made from the same
    input and sidecar may always be replaced.

    Raises:
        ValueError: If ``shards_out`` is the input folder (shards are never edited in place).
        FileExistsError: If ``shards_out`` holds another shard set and ``overwrite`` is off.
    """
    if str(Path(shards_out).resolve()) == _identity(in_dir):
        raise ValueError(f"shards_out {shards_out} is the input shard set; shards are never edited in place")
    if not (Path(shards_out) / MANIFEST_NAME).exists():
        return False
    if overwrite or (sidecar is not None and _made_from(shards_out, in_dir, sidecar)):
        return True
    raise FileExistsError(
        f"{shards_out} already holds a shard set; give another folder or overwrite it (--overwrite true)"
    )


def _identity(in_dir: str | Path) -> str:
    """The input recorded as ``parent``: a local folder resolved, a URL as given (``Path`` would mangle it)."""
    location = as_location(in_dir)
    return location if isinstance(location, str) else str(location.resolve())


def _made_from(shards_out: str | Path, in_dir: str | Path, sidecar: str | Path) -> bool:
    try:
        manifest = read_manifest(shards_out)
    except ValueError:
        return False
    return (
        manifest.get("made_by") == "aras-caption"
        and manifest.get("parent") == _identity(in_dir)
        and manifest.get("captions_sidecar") == str(Path(sidecar).resolve())
    )


def write_captioned_shards(
    in_dir: str | Path,
    sidecar: str | Path,
    out_dir: str | Path,
    limit: int | None = None,
    overwrite: bool = False,
    samples_per_shard: int | None = None,
) -> dict[str, Any]:
    """Copy a shard set to ``out_dir``, adding the sidecar's captions as ``captions.json``; return its manifest.

    ``limit`` copies only the first samples (those a limited run captioned); ``overwrite``
    replaces a shard set in ``out_dir`` (one made from this input and sidecar always is);
    ``samples_per_shard`` defaults to the input's largest shard.

    Raises:
        ManifestError: If ``in_dir`` is not a shard set.
        ValueError: If ``out_dir`` is ``in_dir`` or the sidecar is malformed.
        FileExistsError: If ``out_dir`` holds another shard set and ``overwrite`` is off.
    """
    replace = check_shards_out(in_dir, out_dir, overwrite, sidecar)
    manifest = read_manifest(in_dir)
    captions = read_captions(sidecar)
    per_shard = samples_per_shard or max((int(s["num_samples"]) for s in manifest["shards"]), default=1000)
    extra = {
        "made_by": "aras-caption",
        "parent": _identity(in_dir),
        "captions_sidecar": str(Path(sidecar).resolve()),
    }
    skipped: list[str] = []
    seen = 0
    with ShardWriter(
        out_dir,
        split=manifest["split"],
        source=manifest["source"],
        samples_per_shard=max(per_shard, 1),
        overwrite=replace,
        extra=extra,
    ) as writer:
        for path in list_shards(in_dir).locations:
            for raw in iter_raw_samples(path):
                if limit is not None and seen >= limit:
                    break
                seen += 1
                try:
                    sample = decode_sample(raw)
                except SampleError as err:
                    skipped.append(str(raw.get("__key__", "?")))
                    warnings.warn(f"not copying a sample of {path}: {err}", stacklevel=2)
                    continue
                added = [
                    {"text": r["text"], "model": r["model"], "mode": r["mode"]} for r in captions.get(sample.key, [])
                ]
                merged = list(sample.captions or []) + added
                writer.write(
                    Sample(
                        key=sample.key,
                        image=sample.image,
                        mask=sample.mask,
                        meta=sample.meta,
                        captions=merged if merged or sample.captions is not None else None,
                        image_png=raw["image.png"],
                        raw_members={
                            name: data
                            for name, data in raw.items()
                            if not name.startswith("__") and name not in _REBUILT
                        },
                    )
                )
    return writer.manifest
