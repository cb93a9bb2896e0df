"""What ``aras-eval`` evaluates (:class:`EvalConfig`) and the checks of its inputs.

Every input is checked before any long work starts (:func:`check_inputs`): a missing
shard set, caption sidecar, segmenter checkpoint, Inception weights file or CLIP folder
stops the run with one line that names it and says which command makes it.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aras400k.captioning.sidecar import read_captions
from aras400k.data.remote import as_location, open_shard
from aras400k.data.shards import ManifestError, list_shards, read_manifest
from aras400k.errors import check_at_least

__all__ = [
    "CLIP_HINT",
    "SEGMENTER_HINT",
    "DatasetInputs",
    "DatasetSpec",
    "EvalConfig",
    "check_config",
    "check_inputs",
    "evaluated_keys",
]

#: How to make a segmenter checkpoint, named when one is missing.
SEGMENTER_HINT = (
    "train one with `aras-fit --config configs/seg_unet.yaml` (it writes runs/seg_unet/checkpoints/last.ckpt), "
    "or set segmenter: null to skip FID/KID and the embedding"
)
#: How to provide a CLIP model, named when the folder is missing.
CLIP_HINT = (
    "save a CLIP there with CLIPModel.save_pretrained(DIR) and CLIPProcessor.save_pretrained(DIR) "
    "(e.g. a copy of openai/clip-vit-base-patch32 made on a machine with network access), "
    "or set clip: null to report CLIPScore as n/a"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class DatasetSpec:
    """One shard set to evaluate.

    Attributes:
        name: Label in tables, legends and ``report.json`` (unique; letters, digits, ``_ . + -``).
        path: Shard set folder, relative to the working directory, or a URL folder
            (``http://host/train/``, ``s3://bucket/train/``).
        captions: Caption sidecars of this shard set (JSONL files written by ``aras-caption``).
        shard_captions: Also count the ``captions.json`` members stored in the shards
            (e.g. the published captions of an imported release).
        make: The command that builds this shard set; the error for a missing set names it.
    """

    name: str
    path: str
    captions: list[str] = field(default_factory=list)
    shard_captions: bool = False
    make: str | None = None


@dataclass
class EvalConfig:
    """Everything ``aras-eval --config FILE.yaml`` reads.

    Attributes:
        datasets: Shard sets to evaluate, in report order.
        out_dir: Folder for ``report.md``, ``report.json``, the CSV tables and the figures.
        reference: Name of the dataset the others are compared with (composition distances,
            FID/KID); default: the first.
        segmenter: Checkpoint of a trained ``SegmentationTask``: the feature space of
            FID/KID and of the embedding. ``None`` skips them (unless ``inception`` is given).
        inception: Local Inception-v3 weights file for FID/KID (never downloaded); ``None``: none.
        inception_backend: ``torchvision`` (a torchvision ``inception_v3`` state dict) or
            ``torch-fidelity`` (its FID Inception weights; needs the package).
        clip: Local ``save_pretrained`` folder of a CLIP model and processor; ``None``: n/a.
        max_samples: Evaluate at most the first this many samples of every dataset; ``None``: all.
        seed: Seed of the KID subsets, the split-half FID floor and the embeddings.
        batch_size: Images per forward pass (features, CLIP) and samples per caption batch.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        num_threads: CPU threads of torch and of the embeddings (``None``: the libraries'
            defaults); on a shared machine 1 or 2 avoids oversubscription.
        normalize: Caption normalisation before counting unique captions: ``none`` (the
            paper: exact strings) or ``basic`` (case, spaces, trailing punctuation folded).
        salient_share: Consistency: a class covering at least this share should be mentioned.
        present_share: Consistency: a mentioned class counts as present above this share.
        lexicon: Consistency: class name -> words and synonyms (default: the built-in lexicon).
        num_bins: Bins of the per-image share histograms (Wasserstein exact to ``1 / num_bins``).
        kid_subsets: Random subsets KID is averaged over.
        kid_subset_size: Samples per KID subset (lowered to the smaller set's size).
        embedding_methods: Projections drawn: ``tsne`` and/or ``umap`` (skipped with a
            notice without the optional umap-learn package).
        embedding_max_per_source: Samples per dataset in the embedding (a seeded subset).
        perplexity: t-SNE perplexity.
        n_neighbors: UMAP neighbours.
        progress: Print a line per section and show progress bars.
    """

    datasets: list[DatasetSpec] = field(default_factory=list)
    out_dir: str = "runs/eval"
    reference: str | None = None
    segmenter: str | None = None
    inception: str | None = None
    inception_backend: Literal["torchvision", "torch-fidelity"] = "torchvision"
    clip: str | None = None
    max_samples: int | None = 1000
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    num_threads: int | None = None
    normalize: Literal["none", "basic"] = "none"
    salient_share: float = 0.05
    present_share: float = 0.0
    lexicon: dict[str, list[str]] | None = None
    num_bins: int = 100
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    embedding_methods: list[Literal["tsne", "umap"]] = field(default_factory=lambda: ["tsne", "umap"])
    embedding_max_per_source: int | None = 1000
    perplexity: float = 30.0
    n_neighbors: int = 15
    progress: bool = True

    @property
    def reference_name(self) -> str:
        """The reference dataset's name (``reference``, else the first dataset's)."""
        if self.reference is not None:
            return self.reference
        return self.datasets[0].name if self.datasets else ""

    def ordered(self) -> list[DatasetSpec]:
        """The datasets with the reference first, the others in configured order."""
        ref = self.reference_name
        return [d for d in self.datasets if d.name == ref] + [d for d in self.datasets if d.name != ref]


@dataclass
class DatasetInputs:
    """A checked dataset: its manifest, the keys evaluated, and its captions.

    Attributes:
        spec: The configured dataset.
        manifest: Its ``manifest.json``.
        keys: Keys of the evaluated samples (the first ``max_samples``, manifest order).
        captions: Evaluated key -> caption records (``text``, ``model``, ``mode``) from the sidecars.
        captions_outside: Sidecar captions of samples that are not evaluated (or not in the set).
    """

    spec: DatasetSpec
    manifest: dict[str, Any]
    keys: list[str]
    captions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    captions_outside: int = 0

    @property
    def has_captions(self) -> bool:
        """Whether any caption source is configured for this dataset."""
        return bool(self.spec.captions) or self.spec.shard_captions

    @property
    def total_samples(self) -> int:
        """Samples in the whole shard set (from its manifest)."""
        return int(self.manifest["num_samples"])


def _fail_if(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(message)


def check_config(config: EvalConfig) -> None:
    """Check the settings that need no file (names, counts, ranges).

    Raises:
        ValueError: On no datasets, a bad or repeated name, an unknown reference or an
            out-of-range setting; the message names it.
    """
    _fail_if(not config.datasets, "no datasets to evaluate: give datasets: [{name: ..., path: ...}, ...]")
    names = [d.name for d in config.datasets]
    for name in names:
        _fail_if(
            not _NAME_RE.match(name), f"dataset name {name!r} must start with a letter or digit and use [A-Za-z0-9_.+-]"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    _fail_if(bool(repeated), f"dataset names must be unique; repeated: {', '.join(repeated)}")
    _fail_if(
        config.reference is not None and config.reference not in names,
        f"reference {config.reference!r} is not one of the datasets ({', '.join(names)})",
    )
    _fail_if(config.max_samples is not None and config.max_samples < 2, "max_samples must be >= 2 (or null for all)")
    check_at_least("batch_size", config.batch_size, 1)
    check_at_least("num_bins", config.num_bins, 1)
    _fail_if(config.kid_subsets < 1 or config.kid_subset_size < 2, "kid_subsets must be >= 1 and kid_subset_size >= 2")
    if config.num_threads is not None:
        check_at_least("num_threads", config.num_threads, 1)
    unknown = [m for m in config.embedding_methods if m not in ("tsne", "umap")]
    _fail_if(bool(unknown), f"unknown embedding_methods {unknown}; choose from tsne, umap")


def evaluated_keys(shard_dir: str | Path, limit: int | None = None) -> list[str]:
    """Keys of the first ``limit`` (``None``: all) samples of a shard set, in manifest order, from the tar headers.

    Raises:
        aras400k.data.ManifestError: If the folder is not a shard set.
        ValueError: If a shard is missing or not a readable tar file.
    """
    keys: list[str] = []
    for path in list_shards(shard_dir).locations:
        try:
            with open_shard(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    base = info.name.rsplit("/", 1)[-1]
                    if not info.isfile() or "." not in base:
                        continue
                    key = base.split(".", 1)[0]
                    if not keys or keys[-1] != key:
                        if limit is not None and len(keys) >= limit:
                            return keys
                        keys.append(key)
        except (OSError, tarfile.TarError) as err:
            raise ValueError(f"shard {path} is missing or not a readable tar file ({err})") from err
    return keys


def _check_dataset(spec: DatasetSpec, max_samples: int | None) -> DatasetInputs:
    path = as_location(spec.path)
    if isinstance(path, Path) and not path.exists():
        default = "build it with aras-data (demo, import, prepare) or aras-synth"
        how = f"make it with `{spec.make}`" if spec.make else default
        raise FileNotFoundError(f"dataset {spec.name!r}: shard set {spec.path} does not exist; {how}")
    try:
        manifest = read_manifest(path)
    except ManifestError as err:
        raise ValueError(f"dataset {spec.name!r}: {err}") from err
    keys = evaluated_keys(path, max_samples)
    _fail_if(not keys, f"dataset {spec.name!r}: shard set {spec.path} holds no samples")
    return DatasetInputs(spec=spec, manifest=manifest, keys=keys)


def _read_sidecars(inputs: DatasetInputs) -> None:
    """Load the dataset's sidecars, keep the captions of evaluated keys, count the rest."""
    spec = inputs.spec
    wanted = set(inputs.keys)
    seen: set[Path] = set()
    for sidecar in spec.captions:
        path = Path(sidecar)
        _fail_if(path.resolve() in seen, f"dataset {spec.name!r}: caption sidecar {sidecar} is listed twice")
        seen.add(path.resolve())
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {spec.name!r}: caption sidecar {sidecar} does not exist; make it with "
                f"`aras-caption --config configs/caption_template.yaml --input {spec.path} --out {sidecar}` "
                "(add --mode text|vision|hybrid), or remove it from the dataset's captions"
            )
        grouped = read_captions(path)
        matched = 0
        for key, records in grouped.items():
            if key in wanted:
                inputs.captions.setdefault(key, []).extend(records)
                matched += len(records)
            else:
                inputs.captions_outside += len(records)
        if grouped and not matched:
            sample = next(iter(grouped))
            raise ValueError(
                f"dataset {spec.name!r}: caption sidecar {sidecar} holds no caption of the evaluated samples "
                f"(its keys look like {sample!r}, the shard set's like {inputs.keys[0]!r}); "
                "is it the sidecar of another shard set?"
            )


def _check_file(path: str | None, what: str, hint: str) -> None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {hint}")


def check_inputs(config: EvalConfig) -> list[DatasetInputs]:
    """Check every configured input and read what the report needs up front.

    Returns:
        One :class:`DatasetInputs` per dataset, the reference first.

    Raises:
        ValueError: On a bad setting, a folder that is not a shard set, a malformed
            sidecar or one that belongs to another shard set.
        FileNotFoundError: On a missing shard set, sidecar, checkpoint, weights file or
            CLIP folder; the message says which command or file makes it.
    """
    check_config(config)
    datasets = [_check_dataset(spec, config.max_samples) for spec in config.ordered()]
    for inputs in datasets:
        _read_sidecars(inputs)
    _check_file(config.segmenter, "segmenter checkpoint", SEGMENTER_HINT)
    _check_file(
        config.inception,
        "Inception weights file",
        "copy inception_v3_google-0cc3c7bd.pth (torchvision) there, or set inception: null",
    )
    if config.clip is not None and not (Path(config.clip) / "config.json").is_file():
        state = "does not exist" if not Path(config.clip).exists() else "holds no config.json"
        raise FileNotFoundError(f"CLIP folder {config.clip} {state}; {CLIP_HINT}")
    return datasets
