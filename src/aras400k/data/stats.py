"""Dataset composition tables and the paper's Figure 3 bar chart (``aras-data stats``).

Dataset compositions come from the manifests' summed class pixels, so a table over
millions of samples costs one JSON read per shard set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aras400k.classes import CLASS_NAMES, CLASSES
from aras400k.data.remote import is_url, location_name
from aras400k.data.shards import read_manifest
from aras400k.plotting import pyplot, save_figure

__all__ = ["DatasetComposition", "composition_table", "load_compositions", "plot_compositions"]


@dataclass
class DatasetComposition:
    """The summed composition of one shard set.

    Attributes:
        label: Name shown in tables and legends.
        source: ``real``, ``synth_uncond`` or ``synth_cond``.
        num_samples: Samples in the set.
        shares: Class name -> fraction of labelled pixels.
    """

    label: str
    source: str
    num_samples: int
    shares: dict[str, float]


def _labels(dirs: Sequence[str | Path]) -> list[str]:
    """Folder names, with their parent's name when two are alike (``a/train``, ``b/train``)."""
    names = [location_name(str(d).rstrip("/")) for d in dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{location_name(_parent(d))}/{name}" for d, name in zip(dirs, names, strict=True)]


def _parent(spec: str | Path) -> str:
    """The folder holding a shard set folder (local path or URL)."""
    if is_url(spec):
        return str(spec).rstrip("/").rsplit("/", 1)[0]
    return str(Path(spec).parent)


def load_compositions(dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[DatasetComposition]:
    """Read the summed composition of shard set folders (local or URLs) from their manifests.

    ``labels`` are display names (default: the folder names).

    Raises:
        ValueError: If ``labels`` has the wrong length.
        aras400k.data.ManifestError: If a folder is not a shard set.
    """
    if labels is not None and len(labels) != len(dirs):
        raise ValueError(f"got {len(labels)} labels for {len(dirs)} datasets")
    names = list(labels) if labels is not None else _labels(dirs)
    result = []
    for name, spec in zip(names, dirs, strict=True):
        manifest = read_manifest(spec)
        pixels = np.array([manifest.get("class_pixels", {}).get(n, 0) for n in CLASS_NAMES], dtype=np.float64)
        shares = pixels / pixels.sum() if pixels.sum() > 0 else pixels
        result.append(
            DatasetComposition(
                label=name,
                source=manifest["source"],
                num_samples=int(manifest["num_samples"]),
                shares={n: float(s) for n, s in zip(CLASS_NAMES, shares, strict=True)},
            )
        )
    return result


def composition_table(datasets: Sequence[DatasetComposition]) -> str:
    """Per-class shares (in %) of several datasets as a Markdown table, plus a row of sample counts."""
    header = "| class | " + " | ".join(d.label for d in datasets) + " |"
    rule = "|---|" + "---:|" * len(datasets)
    rows = [f"| {n} | " + " | ".join(f"{100 * d.shares[n]:.2f}" for d in datasets) + " |" for n in CLASS_NAMES]
    rows.append("| samples | " + " | ".join(f"{d.num_samples:,}" for d in datasets) + " |")
    return "\n".join([header, rule, *rows])


def plot_compositions(datasets: Sequence[DatasetComposition], path: str | Path, title: str | None = None) -> Path:
    """Draw the grouped per-class bar chart of Figure 3 (first dataset plain, others hatched) to a PNG ``path``."""
    from matplotlib.patches import Patch

    plt = pyplot()
    n = max(1, len(datasets))
    width = 0.8 / n
    x = np.arange(len(CLASSES))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(CLASSES), 4.0), dpi=120)
    handles = []
    for i, data in enumerate(datasets):
        hatch = None if i == 0 else ["//", "xx", "..", "\\\\", "++"][(i - 1) % 5]
        heights = [100 * data.shares[c.name] for c in CLASSES]
        colours = [np.array(c.colour) / 255 for c in CLASSES]
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            heights,
            width,
            color=colours,
            edgecolor="black",
            linewidth=0.6,
            hatch=hatch,
        )
        label = f"{data.label} ({data.source}, n={data.num_samples:,})"
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=hatch, label=label))
    ax.set_xticks(x, [c.name for c in CLASSES])
    ax.set_ylabel("share of pixels (%)")
    ax.set_title(title or "Per-class composition")
    ax.legend(handles=handles, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
