"""Figures written as PNG files, so they work with any logger (or none).

Each ``plot_*`` function draws masks in the release colours (255 black), writes its
figure to ``path`` with :func:`save_figure` and returns the path written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aras400k.classes import CLASSES, index_to_colour
from aras400k.files import atomic_path

__all__ = ["add_class_legend", "plot_confusion_matrix", "plot_prediction_grid", "plot_sample_grid", "save_figure"]


def pyplot():  # noqa: ANN202 - matplotlib's module type
    """``matplotlib.pyplot`` on the file-only Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def add_class_legend(fig: object, ignore: bool = True, fontsize: int = 7) -> float:
    """Put a legend of the release colours (and, with ``ignore``, of 255) under a matplotlib figure of masks.

    Call it after drawing and before ``tight_layout``; pass the returned height to
    ``fig.tight_layout(rect=(0, height, 1, 1))`` so the panels leave room for it.

    Returns:
        The fraction of the figure's height the legend takes, from the bottom.
    """
    from matplotlib.patches import Patch

    entries = [(c.name, "#{:02x}{:02x}{:02x}".format(*c.colour)) for c in CLASSES]
    if ignore:
        entries.append(("ignore / no data", "#000000"))
    handles = [Patch(facecolor=colour, edgecolor="0.3", linewidth=0.5, label=name) for name, colour in entries]
    fig.legend(  # type: ignore[attr-defined]
        handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, fontsize=fontsize,
        handlelength=1.2, columnspacing=1.0,
    )  # fmt: skip
    height_in = fig.get_size_inches()[1]  # type: ignore[attr-defined]
    rows = -(-len(handles) // 8)
    return min(0.4, 0.28 * rows / height_in)


def save_figure(fig: object, path: str | Path) -> Path:
    """Save a matplotlib figure to the PNG ``path`` atomically (temporary name, then rename) and close it."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, tmp_name=path.name + ".tmp.png") as tmp:
            fig.savefig(tmp)  # type: ignore[attr-defined]
    finally:
        plt.close(fig)
    return path


def plot_confusion_matrix(
    confmat: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Draw a row-normalised ``(C, C)`` confusion matrix of pixel counts (rows: truth, columns: prediction)."""
    plt = pyplot()
    cm = np.asarray(confmat, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=120)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )  # fmt: skip
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), [f"{name} ({int(rows[i, 0]):,})" for i, name in enumerate(class_names)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (pixels)")
    ax.set_title(f"{title} (% of true pixels)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_prediction_grid(
    images: np.ndarray, masks: np.ndarray | None, preds: np.ndarray, path: str | Path, keys: Sequence[str] | None = None
) -> Path:
    """Draw rows of image / true mask / predicted mask.

    Args:
        images: ``(N, H, W, 3)`` floats in ``[0, 1]`` or uint8.
        masks: ``(N, H, W)`` true class indices, or ``None``.
        preds: ``(N, H, W)`` predicted class indices.
        path: Destination PNG.
        keys: Optional sample keys for the row titles.
    """
    plt = pyplot()
    n = len(images)
    cols = 3 if masks is not None else 2
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), dpi=100, squeeze=False)
    for i in range(n):
        panels = [images[i]]
        titles = [keys[i] if keys is not None else "image"]
        if masks is not None:
            panels.append(index_to_colour(masks[i]))
            titles.append("truth")
        panels.append(index_to_colour(preds[i]))
        titles.append("prediction")
        for ax, panel, title in zip(axes[i], panels, titles, strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout(rect=(0, add_class_legend(fig), 1, 1))
    return save_figure(fig, path)


def plot_sample_grid(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    path: str | Path,
    keys: Sequence[str] | None = None,
    columns: int = 4,
    title: str | None = None,
) -> Path:
    """Draw samples as image / mask pairs in a grid.

    Args:
        images: ``(H, W, 3)`` uint8 images.
        masks: ``(H, W)`` class indices per image, or ``None`` for an unlabelled sample
            (its mask tile is left empty).
        path: Destination PNG.
        keys: Sample keys, shown above the images.
        columns: Image / mask pairs per row.
        title: Figure title.

    Raises:
        ValueError: If there are no images, or ``masks``/``keys`` differ in length.
    """
    if not images:
        raise ValueError("plot_sample_grid needs at least one image")
    if len(masks) != len(images) or (keys is not None and len(keys) != len(images)):
        raise ValueError(f"got {len(images)} images, {len(masks)} masks and {len(keys or [])} keys")
    plt = pyplot()
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.0 * columns * 2, 2.1 * rows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        row, col = divmod(i, columns)
        ax_image, ax_mask = axes[row][2 * col], axes[row][2 * col + 1]
        ax_image.imshow(image, interpolation="nearest")
        ax_image.set_title(keys[i] if keys is not None else f"sample {i}", fontsize=7)
        if mask is not None:
            ax_mask.imshow(index_to_colour(mask), interpolation="nearest")
            ax_mask.set_title("mask", fontsize=7)
        else:
            ax_mask.set_title("no mask", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    legend = add_class_legend(fig) if any(mask is not None for mask in masks) else 0.0
    fig.tight_layout(rect=(0, legend, 1, 1))
    return save_figure(fig, path)
