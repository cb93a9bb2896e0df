"""The procedural demo set: the embedded default every config runs on with no data given.

:func:`make_demo` renders :func:`aras400k.data.scenes.generate_scene` scenes into
``OUT/{train,val,test}`` shard sets, each sample from its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from aras400k.data.scenes import generate_scene
from aras400k.data.shards import MANIFEST_NAME, Sample, ShardWriter, Source
from aras400k.data.splits import SPLIT_NAMES

__all__ = ["DEFAULT_DEMO_SAMPLES", "demo_is_ready", "demo_sample", "make_demo"]

#: Default train/val/test sizes: enough for a visible learning curve in a few CPU minutes.
DEFAULT_DEMO_SAMPLES: tuple[int, int, int] = (1600, 200, 200)


def demo_sample(split: str, index: int, image_size: int = 64, seed: int = 0) -> Sample:
    """Render sample ``index`` of demo split ``split``, keyed ``demo_{split}_{index:06d}``.

    ``image_size`` is its side in pixels, ``seed`` that of the whole demo set.
    """
    rng = np.random.default_rng([seed, SPLIT_NAMES.index(split), index])
    image, mask = generate_scene(rng, image_size)
    return Sample(key=f"demo_{split}_{index:06d}", image=image, mask=mask, meta={"tile": "DEMO"})


def demo_is_ready(root: str | Path) -> bool:
    """Whether ``root`` holds all three demo splits as finished shard sets."""
    return all((Path(root) / split / MANIFEST_NAME).is_file() for split in SPLIT_NAMES)


def make_demo(
    out_dir: str | Path,
    num_samples: Sequence[int] = DEFAULT_DEMO_SAMPLES,
    image_size: int = 64,
    seed: int = 0,
    samples_per_shard: int = 200,
    overwrite: bool = False,
    progress: bool = True,
    source: Source = "real",
) -> dict[str, int]:
    """Write the procedural demo set as ``out_dir/{train,val,test}`` shard sets; count the samples of each.

    Args:
        out_dir: Destination folder.
        num_samples: Samples in train, val and test.
        image_size: Side of the square patches (the paper's 256; 64 trains in CPU minutes).
        seed: Seed of the whole set; the same seed gives byte-identical shards.
        samples_per_shard: Samples per tar file.
        overwrite: Replace existing shard sets.
        progress: Show a progress bar.
        source: ``source`` recorded: with another seed, ``synth_uncond`` or ``synth_cond`` is stand-in synthetic data.

    Raises:
        ValueError: On a size below 32 px or a wrong number of split sizes.
        FileExistsError: If a split exists and ``overwrite`` is off.
    """
    if len(num_samples) != 3 or any(n < 0 for n in num_samples):
        raise ValueError(f"num_samples must be three non-negative counts (train, val, test), got {tuple(num_samples)}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 px, got {image_size}")
    out_dir = Path(out_dir)
    written: dict[str, int] = {}
    extra = {"made_by": "aras-data demo", "demo": {"seed": seed, "image_size": image_size}}
    with tqdm(total=sum(num_samples), desc="demo scenes", unit="sample", disable=not progress) as bar:
        for split, count in zip(SPLIT_NAMES, num_samples, strict=True):
            with ShardWriter(
                out_dir / split,
                split=split,
                source=source,
                samples_per_shard=samples_per_shard,
                overwrite=overwrite,
                extra=extra,
            ) as writer:
                for index in range(count):
                    writer.write(demo_sample(split, index, image_size, seed))
                    bar.update()
            written[split] = count
    return written
