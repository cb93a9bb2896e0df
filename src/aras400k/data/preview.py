"""A look at a shard set: its first samples drawn as image / mask pairs.

``aras-data preview DIR --out grid.png``: the first ``n`` samples in manifest order (or
evenly spaced), so previews of sets made from the same seeds match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aras400k.data.remote import location_name
from aras400k.data.shards import iter_samples, read_manifest
from aras400k.plotting import plot_sample_grid

__all__ = ["preview_shards"]


def preview_shards(shard_dir: str | Path, out: str | Path, n: int = 16, columns: int = 4, spread: bool = False) -> Path:
    """Draw ``n`` samples of a shard set (or URL folder) as image / mask pairs, ``columns`` per row, into PNG ``out``.

    Fewer if the set is smaller; ``spread`` takes them evenly spaced over the set instead
    of the first ``n``. Returns the PNG's path.

    Raises:
        ValueError: If ``n`` or ``columns`` is below 1 or the set is empty.
        aras400k.data.ManifestError: If the folder is not a shard set.
        aras400k.data.shards.ShardReadError: If a shard is truncated or corrupt (named).
    """
    if n < 1 or columns < 1:
        raise ValueError(f"n and columns must be >= 1, got n={n}, columns={columns}")
    manifest = read_manifest(shard_dir)
    total = int(manifest["num_samples"])
    if total == 0:
        raise ValueError(f"{shard_dir} holds no samples")
    count = min(n, total)
    wanted = set(np.linspace(0, total - 1, count).round().astype(int).tolist()) if spread else set(range(count))
    images, masks, keys = [], [], []
    for position, sample in enumerate(iter_samples(shard_dir, with_captions=False)):
        if position in wanted:
            images.append(sample.image)
            masks.append(sample.mask)
            keys.append(sample.key)
        if len(images) == count:
            break
    name = location_name(str(shard_dir).rstrip("/"))
    source, split = manifest.get("source", "?"), manifest.get("split", "?")
    title = f"{name}: {count} of {total:,} samples ({source}, split {split})"
    return plot_sample_grid(images, masks, out, keys=keys, columns=columns, title=title)
