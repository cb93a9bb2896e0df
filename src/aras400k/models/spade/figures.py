"""The sample grid of the mask-conditioned GAN: mask, real image, several generated images per row.

Written as a PNG file (through :func:`aras400k.plotting.save_figure`), so it works with
any logger, or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aras400k.classes import IGNORE_INDEX, index_to_colour
from aras400k.plotting import add_class_legend, save_figure

__all__ = ["plot_conditional_grid", "to_display"]


def to_display(images: torch.Tensor) -> np.ndarray:
    """Turn ``(..., 3, H, W)`` images in ``[-1, 1]`` into ``(..., H, W, 3)`` float32 display arrays in ``[0, 1]``."""
    scaled = ((images.detach().float() + 1) / 2).clamp(0, 1)
    return scaled.movedim(-3, -1).cpu().numpy()


def plot_conditional_grid(
    masks: np.ndarray,
    samples: np.ndarray,
    path: str | Path,
    reals: np.ndarray | None = None,
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw one row per mask: the mask in the release colours, the real image, then the samples.

    Args:
        masks: ``(N, H, W)`` class indices (255 drawn black).
        samples: ``(N, K, H, W, 3)`` generated images in ``[0, 1]`` (``K`` per mask).
        path: Destination PNG.
        reals: ``(N, H, W, 3)`` real images in ``[0, 1]``, or ``None`` to leave the column out.
        keys: Optional sample keys for the row titles.
        title: Optional figure title (e.g. the training step).

    Returns:
        The path written.

    Raises:
        ValueError: If the numbers of masks, samples and real images differ.
    """
    n, k = samples.shape[:2]
    if len(masks) != n or (reals is not None and len(reals) != n):
        raise ValueError(f"need one mask (and real image) per row of samples, got {len(masks)} masks for {n} rows")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = k + (2 if reals is not None else 1)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n + 0.3), dpi=100, squeeze=False)
    for i in range(n):
        panels = [index_to_colour(np.where(masks[i] == IGNORE_INDEX, IGNORE_INDEX, masks[i]))]
        titles = [keys[i] if keys is not None else "mask"]
        if reals is not None:
            panels.append(reals[i])
            titles.append("real")
        panels += list(samples[i])
        titles += [f"sample {j + 1}" for j in range(k)]
        for ax, panel, name in zip(axes[i], panels, titles, strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(name, fontsize=6)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, add_class_legend(fig, fontsize=6), 1, 1))
    return save_figure(fig, path)
