"""Images with the entropy of real Sentinel-2 RGB patches (~150-200 KB PNGs at 256 px).

The procedural demo scenes compress unusually well; real patches are textured. This
adds smooth large-scale colour fields and per-pixel noise to a demo scene, which
brings the PNG size (and so the decode cost) to that of real imagery.
"""

from __future__ import annotations

import numpy as np

from aras400k.data.demo import demo_sample
from aras400k.data.shards import Sample


def realistic_sample(index: int, size: int, noise: float = 9.0) -> Sample:
    """The demo sample ``index`` with textured, real-looking image entropy (same mask).

    Args:
        index: Demo sample index (also seeds the texture).
        size: Side in pixels.
        noise: Standard deviation of the per-pixel noise, in grey levels.

    Returns:
        The sample, its image replaced.
    """
    sample = demo_sample("train", index, size)
    rng = np.random.default_rng(10_000 + index)
    coarse = rng.normal(0.0, 12.0, size=(size // 16 + 1, size // 16 + 1, 3))
    field = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
    textured = sample.image.astype(np.float64) + field + rng.normal(0.0, noise, size=sample.image.shape)
    sample.image = np.clip(np.rint(textured), 0, 255).astype(np.uint8)
    return sample
