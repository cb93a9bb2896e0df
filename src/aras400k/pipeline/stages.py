"""The paper's stages, each a call of one of the library's own commands on a written config.

A :class:`Stage` knows, for a given run (:class:`RunLayout`), the commands it runs
(:class:`Command`), the outputs that prove it finished, and the artefacts ``index.md``
links. A stage only writes a config and calls the command a user would call.
"""

from __future__ import annotations

import copy
import csv
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from aras400k.budget import fid_warning, read_summary
from aras400k.data.remote import is_url, join_location
from aras400k.pipeline.config import CaptionModel, PipelineConfig, StageConfig

__all__ = [
    "STAGES",
    "Artefact",
    "Command",
    "RunLayout",
    "Stage",
    "deep_update",
    "load_yaml",
    "set_dotted",
]

SPLITS = ("train", "val", "test")


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """The YAML mapping in the file at ``path`` (``None`` gives an empty one).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not hold a mapping.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stage config {path} does not exist (paths are relative to the working directory)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping, got {type(data).__name__}")
    return data


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config["a"]["b"]["c"] = value`` for ``key="a.b.c"`` in place, creating mappings on the way.

    Raises:
        ValueError: If a part of the path is not a mapping.
    """
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def deep_update(config: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Lay ``options`` over ``config`` in place and return it: mappings merge key by key, other values replace.

    An empty mapping replaces (clears) the base's mapping, e.g. ``extra_body: {}``.
    """
    for key, value in options.items():
        if isinstance(value, dict) and value and isinstance(config.get(key), dict):
            deep_update(config[key], value)
        else:
            config[key] = value
    return config


@dataclass(frozen=True)
class Command:
    """One command line of a stage.

    Attributes:
        program: Console script (``aras-fit``, ``aras-data``, ...).
        args: Its arguments.
    """

    program: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        """The command line as a user would type it."""
        return " ".join((self.program, *self.args))


@dataclass(frozen=True)
class Artefact:
    """A file ``index.md`` links, with one line saying what it is."""

    path: Path
    what: str


@dataclass
class RunLayout:
    """Where every stage reads and writes inside the pipeline ``config``'s ``run_dir``."""

    config: PipelineConfig
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        """Resolve the run folder."""
        self.run_dir = Path(self.config.run_dir)

    @property
    def configs(self) -> Path:
        """Merged stage configs (each stage can be rerun by hand with its file)."""
        return self.run_dir / "configs"

    @property
    def logs(self) -> Path:
        """One log file per stage (the commands' own output)."""
        return self.run_dir / "logs"

    @property
    def state(self) -> Path:
        """Stage completion records."""
        return self.run_dir / ".pipeline"

    @property
    def data(self) -> Path:
        """Shard sets written by the pipeline."""
        return self.run_dir / "data"

    def real(self, split: str) -> str:
        """Real shard set of a split (``train``, ``val``, ``test``); a URL for remote existing data."""
        data = self.config.data
        if data.command == "existing":
            if not data.root:
                raise ValueError("data.command 'existing' needs data.root (the folder or URL holding train/val/test)")
            return join_location(data.root, split) if is_url(data.root) else str(Path(data.root) / split)
        return str(self.data / "real" / split)

    def real_root(self) -> str:
        """Folder (or URL) holding the real splits."""
        data = self.config.data
        return str(data.root) if data.command == "existing" else str(self.data / "real")

    def figure(self, name: str) -> Path:
        """A figure the pipeline draws itself (sample previews): ``run_dir/figures/<name>.png``."""
        return self.run_dir / "figures" / f"{name}.png"

    def stage_dir(self, name: str) -> Path:
        """Output folder of a training stage."""
        return self.run_dir / name

    def checkpoint(self, name: str) -> Path:
        """``last.ckpt`` of a training stage."""
        return self.stage_dir(name) / "checkpoints" / "last.ckpt"

    def synth(self, name: str) -> Path:
        """A synthetic shard set: ``synth_uncond_unlabelled``, ``synth_uncond`` or ``synth_cond``."""
        return self.data / name

    def caption_file(self, dataset: str, mode: str, model: str) -> Path:
        """Caption sidecar of one set, mode and captioning model."""
        return self.run_dir / "captions" / f"{dataset}.{mode}.{model}.jsonl"

    def caption_input(self, dataset: str) -> str:
        """The shard set a caption set name refers to (``real`` is the real train split)."""
        real = {"real": "train", "real_val": "val", "real_test": "test"}
        return self.real(real[dataset]) if dataset in real else str(self.synth(dataset))


class Stage(ABC):
    """A pipeline stage on a run's ``layout``; subclasses set ``name`` and ``summary`` and implement the methods."""

    name: ClassVar[str]
    #: One line for the progress output and ``index.md``.
    summary: ClassVar[str]

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.config: PipelineConfig = layout.config
        section = getattr(layout.config, self.name)
        self.section: StageConfig = section if isinstance(section, StageConfig) else StageConfig()

    def config_path(self, suffix: str = "") -> Path:
        """``run_dir/configs/<stage><suffix>.yaml`` (``suffix`` tells apart the configs of a stage's commands)."""
        return self.layout.configs / f"{self.name}{suffix}.yaml"

    def write_config(self, data: dict[str, Any], suffix: str = "") -> Path:
        """Write the merged config ``data`` to :meth:`config_path` and return the path (``suffix``: see there)."""
        path = self.config_path(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Written by aras-pipeline for stage {self.name!r}; rerun it by hand with this file.\n"
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        return path

    def flat_config(
        self, required: dict[str, Any], defaults: dict[str, Any] | None = None, section: StageConfig | None = None
    ) -> dict[str, Any]:
        """Base config + pipeline ``defaults`` (options may change them) + options, with ``required`` last.

        ``required`` holds the paths and settings the pipeline must own (inputs, outputs); ``section``
        gives the base config and options (default: the stage's section).
        """
        section = section or self.section
        merged = load_yaml(section.config)
        merged.update(defaults or {})
        deep_update(merged, copy.deepcopy(section.options))
        merged.update(required)
        return merged

    @abstractmethod
    def commands(self) -> list[Command]:
        """Write the stage's configs and return its commands, in order."""

    def preview(self, shard_dir: str | Path, name: str) -> Command:
        """``aras-data preview`` of a shard set the stage wrote, into ``run_dir/figures/<name>.png``."""
        out = self.layout.figure(name)
        return Command("aras-data", ("preview", str(shard_dir), "--out", str(out), "--n", "12", "--spread", "true"))

    @abstractmethod
    def outputs(self) -> list[Path]:
        """Files or shard set folders that exist once the stage has finished."""

    def artefacts(self) -> list[Artefact]:
        """Files ``index.md`` links (only those that exist are listed)."""
        return []

    def results(self) -> str | None:
        """A few lines of Markdown with the stage's headline numbers for ``index.md`` (``None``: none)."""
        return None

    def reset(self) -> list[Path]:
        """Folders and files to delete before the stage runs again from scratch."""
        return self.outputs()

    def warnings(self) -> list[str]:
        """Plain-language reasons not to trust the stage's result (printed and put in ``index.md``)."""
        return []


def _newest(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (p.stat().st_mtime, str(p)))


def _first_table(path: Path, title: str) -> str | None:
    """``title`` and the first Markdown table in a file (its consecutive ``|`` lines); ``None`` without one."""
    if not path.is_file():
        return None
    rows: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return f"{title}:\n\n" + "\n".join(rows) if rows else None


def _versions(stage_dir: Path) -> list[Path]:
    """The Lightning log folders of a training stage, oldest first."""
    return _newest(p for p in (stage_dir / "logs").glob("version_*") if p.is_dir())


class DataStageRunner(Stage):
    """Real shard sets: ``aras-data demo``, ``import`` or ``prepare`` into ``run_dir/data/real``.

    ``download`` fetches the tiles of a bounding box into ``run_dir/data/raw`` first
    (resumable: a rerun fetches only what is missing) and prepares them.
    """

    name = "data"
    summary = "real shard sets (train / val / test)"

    def commands(self) -> list[Command]:
        """``aras-data <command> --config configs/data.yaml``, or nothing for existing sets."""
        data = self.config.data
        if data.command == "existing":
            return []
        out = str(self.layout.data / "real")
        if data.command == "download":
            return [*self.download_commands(out), self.preview(f"{out}/train", "real")]
        path = self.write_config(self.flat_config({"out": out}))
        return [Command("aras-data", (data.command, "--config", str(path))), self.preview(f"{out}/train", "real")]

    def download_commands(self, out: str) -> list[Command]:
        """``aras-data download`` into ``run_dir/data/raw``, then ``aras-data prepare`` of it into ``out``."""
        raw = self.layout.data / "raw"
        fetch = self.write_config(self.flat_config({"out": str(raw)}, section=self.config.data.download), ".download")
        inputs = {"s2": str(raw / "s2"), "worldcover": str(raw / "worldcover"), "out": out}
        prepare = self.write_config(self.flat_config(inputs))
        return [
            Command("aras-data", ("download", "--config", str(fetch))),
            Command("aras-data", ("prepare", "--config", str(prepare))),
        ]

    def outputs(self) -> list[Path]:
        """The three split folders (local data only)."""
        if self.config.data.command == "existing":
            return []
        return [self.layout.data / "real" / split for split in SPLITS]

    def artefacts(self) -> list[Artefact]:
        """The split folders' manifests."""
        found = [
            Artefact(Path(real) / "manifest.json", f"real {split} set: per-shard counts, class pixels")
            for split in SPLITS
            if not is_url(real := self.layout.real(split))
        ]
        return [*found, Artefact(self.layout.figure("real"), "real training patches and their masks")]


class FitStage(Stage):
    """Train with ``aras-fit`` on a LightningCLI config whose paths point into the run."""

    #: Whether the stage trains a GAN (gets the FID callback when ``gan_fid`` is on).
    gan: ClassVar[bool] = False

    def lightning_config(self) -> dict[str, Any]:
        """Base config with the options and the run's paths applied."""
        config = load_yaml(self.section.config)
        for key, value in self.section.options.items():
            set_dotted(config, key, copy.deepcopy(value))
        stage_dir = self.layout.stage_dir(self.name)
        trainer = config.setdefault("trainer", {})
        trainer["default_root_dir"] = str(stage_dir)
        trainer["enable_progress_bar"] = False  # the pipeline prints one line per stage; logs keep the rest
        logger = trainer.get("logger")
        if isinstance(logger, dict) and "save_dir" in logger.get("init_args", {}):
            logger["init_args"]["save_dir"] = str(stage_dir)
        callbacks = trainer.setdefault("callbacks", []) or []
        for callback in callbacks:
            if str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
                callback.setdefault("init_args", {})["dirpath"] = str(stage_dir / "checkpoints")
        if self.gan and self.config.gan_fid:
            fid = {"feature": "segmenter", "path": str(self.layout.checkpoint("segmenter"))}
            callbacks.append({"class_path": "aras400k.callbacks.GeneratorFID", "init_args": fid})
        trainer["callbacks"] = callbacks
        data = config.setdefault("data", {}).setdefault("init_args", {})
        data["root"] = self.layout.real_root()
        data["demo"] = False
        return config

    def commands(self) -> list[Command]:
        """``aras-fit --config configs/<stage>.yaml`` (resuming from ``last.ckpt`` when one exists)."""
        path = self.write_config(self.lightning_config())
        args: tuple[str, ...] = ("--config", str(path))
        last = self.layout.checkpoint(self.name)
        if last.is_file():
            args += ("--ckpt_path", str(last))
        return [Command("aras-fit", args)]

    def outputs(self) -> list[Path]:
        """``last.ckpt``."""
        return [self.layout.checkpoint(self.name)]

    def reset(self) -> list[Path]:
        """The whole stage folder."""
        return [self.layout.stage_dir(self.name)]

    def warnings(self) -> list[str]:
        """The training summary's warnings (undertrained, cut by ``max_time``, ...)."""
        summary = read_summary(self.layout.stage_dir(self.name))
        return list(summary.warnings) if summary is not None else []


class SegmenterStage(FitStage):
    """Train the segmenter, then test it on the real test split (scores table, figures)."""

    name = "segmenter"
    summary = "segmenter training and test (aras-fit, aras test)"

    def commands(self) -> list[Command]:
        """Fit, then ``aras test`` with the last checkpoint, then ``aras-map`` of a scene when ``map`` names one."""
        fit = super().commands()
        test = Command("aras", ("test", "--config", str(self.config_path()), "--ckpt_path", str(self.outputs()[0])))
        commands = [*fit, test]
        if self.maps_a_scene():
            required = {"ckpt_path": str(self.layout.checkpoint(self.name)), "out": str(self.map_path())}
            merged = self.flat_config(required, {"overwrite": True}, self.config.map)
            # "{run_dir}" in a path option stands for the run folder (the scene a data stage downloaded).
            merged = {k: v.replace("{run_dir}", str(self.layout.run_dir)) if isinstance(v, str) else v
                      for k, v in merged.items()}  # fmt: skip
            path = self.write_config(merged, ".map")
            commands.append(Command("aras-map", ("--config", str(path))))
        return commands

    def maps_a_scene(self) -> bool:
        """Whether the pipeline's ``map`` section names a scene to map with the trained segmenter."""
        section = self.config.map
        return bool(section.options.get("scene") or load_yaml(section.config).get("scene"))

    def map_path(self) -> Path:
        """``run_dir/segmenter/map/landcover.tif``."""
        return self.layout.stage_dir(self.name) / "map" / "landcover.tif"

    def outputs(self) -> list[Path]:
        """``last.ckpt`` (and the land-cover map when a scene is mapped)."""
        return [self.layout.checkpoint(self.name), *([self.map_path()] if self.maps_a_scene() else [])]

    def results(self) -> str | None:
        """The test split's macro scores (%)."""
        scores = self.layout.stage_dir(self.name) / "test" / "test_scores.md"
        return _first_table(scores, "Segmenter on the real test split (%)")

    def artefacts(self) -> list[Artefact]:
        """Checkpoints, test table, confusion matrices and prediction grids."""
        stage_dir = self.layout.stage_dir(self.name)
        found = [
            Artefact(self.layout.checkpoint(self.name), "segmenter checkpoint (last epoch); labels synthetic images"),
            Artefact(self.map_path(), "land-cover map of the scene (GeoTIFF, class ids, release colours)"),
            Artefact(self.map_path().with_suffix(".png"), "quicklook of the land-cover map"),
        ]
        found += [
            Artefact(p, "best segmenter checkpoint by validation macro F1")
            for p in _newest((stage_dir / "checkpoints").glob("best-*.ckpt"))
        ]
        found += [
            Artefact(stage_dir / "test" / name, what)
            for name, what in (
                ("test_scores.md", "segmenter test scores on the real test split (macro and per class)"),
                ("test_confusion.png", "segmenter confusion matrix on the test split"),
                ("test_predictions.png", "test images, true masks and predictions"),
            )
        ]
        for version in _versions(stage_dir):
            if confusions := _newest((version / "figures").glob("val_confusion_epoch*.png")):
                found.append(Artefact(confusions[-1], "validation confusion matrix, last epoch"))
            found.append(Artefact(version / "metrics.csv", "training and validation metrics per step (CSV)"))
        return found


class GANStage(FitStage):
    """Train a GAN; sample grids (and FID) are logged."""

    gan = True

    def _fids(self) -> list[float]:
        """Every logged ``val_fid`` of the latest run, in order."""
        versions = _versions(self.layout.stage_dir(self.name))
        metrics = versions[-1] / "metrics.csv" if versions else None
        if metrics is None or not metrics.is_file():
            return []
        with open(metrics, newline="") as handle:
            return [float(row["val_fid"]) for row in csv.DictReader(handle) if row.get("val_fid")]

    def results(self) -> str | None:
        """``val_fid`` at the first and the last validation."""
        if not (fids := self._fids()):
            return None
        first, last = fids[0], fids[-1]
        return f"{self.name} `val_fid`: {first:.1f} at the first validation, {last:.1f} at the last ({len(fids)})."

    def warnings(self) -> list[str]:
        """The training summary's warnings, and a ``val_fid`` above the config's ``fid_bound``."""
        fid = fid_warning(self._fids(), self.config.fid_bound)
        return [*super().warnings(), *([fid] if fid is not None else [])]

    def artefacts(self) -> list[Artefact]:
        """Checkpoint, last sample grid, metrics."""
        found = [Artefact(self.layout.checkpoint(self.name), f"{self.name} checkpoint (generator, EMA, discriminator)")]
        if versions := _versions(self.layout.stage_dir(self.name)):
            if grids := _newest((versions[-1] / "samples").glob("*.png")):
                found.append(Artefact(grids[-1], f"{self.name} samples from fixed seeds, end of training"))
            what = f"{self.name} losses and validation scores (val_fid, ...) per step (CSV)"
            found.append(Artefact(versions[-1] / "metrics.csv", what))
        return found


class StyleGAN3Stage(GANStage):
    """Unconditional StyleGAN3 (or StyleGAN2 config) training."""

    name = "stylegan3"
    summary = "unconditional GAN training (aras-fit StyleGAN3)"


class SpadeStage(GANStage):
    """SPADE generator + U-Net discriminator training."""

    name = "spade"
    summary = "mask-conditioned GAN training (aras-fit SPADE)"

    def lightning_config(self) -> dict[str, Any]:
        """Also score generated images with the segmenter (``val_seg_miou``) when ``gan_fid`` is on."""
        config = super().lightning_config()
        if self.config.gan_fid:
            set_dotted(config, "model.init_args.segmenter_ckpt", str(self.layout.checkpoint("segmenter")))
        return config


class SynthesisStage(Stage):
    """A stage that writes one synthetic shard set with ``aras-synth SUBCOMMAND --config FILE``."""

    #: The ``aras-synth`` subcommand.
    subcommand: ClassVar[str]
    #: The stage whose checkpoint it runs (:meth:`RunLayout.checkpoint`).
    model: ClassVar[str]
    #: The output set's name among the run's synthetic sets, and what it holds.
    output: ClassVar[tuple[str, str]]
    #: The preview figure's name and what it shows; ``None``: no preview.
    figure: ClassVar[tuple[str, str] | None] = None
    #: Settings the pipeline prefers (``progress`` is always off).
    defaults: ClassVar[dict[str, Any]] = {}

    def inputs(self) -> dict[str, str]:
        """The input options (shard sets) besides the checkpoint; none by default."""
        return {}

    def commands(self) -> list[Command]:
        """``aras-synth SUBCOMMAND --config configs/<stage>.yaml``, then the preview if there is one."""
        out = self.outputs()[0]
        required = {"ckpt": str(self.layout.checkpoint(self.model)), **self.inputs(), "out": str(out)}
        path = self.write_config(self.flat_config(required, {**self.defaults, "progress": False}))
        commands = [Command("aras-synth", (self.subcommand, "--config", str(path)))]
        if self.figure is not None:
            commands.append(self.preview(out, self.figure[0]))
        return commands

    def outputs(self) -> list[Path]:
        """The synthetic set."""
        return [self.layout.synth(self.output[0])]

    def artefacts(self) -> list[Artefact]:
        """Its manifest, and the preview figure."""
        found = [Artefact(self.outputs()[0] / "manifest.json", self.output[1])]
        if self.figure is not None:
            found.append(Artefact(self.layout.figure(self.figure[0]), self.figure[1]))
        return found


class SynthUncondStage(SynthesisStage):
    """Sample the unconditional GAN into a shard set (labelled in the ``label`` stage)."""

    name = "synth_uncond"
    summary = "unconditional synthesis (aras-synth stylegan3)"
    subcommand = "stylegan3"
    model = "stylegan3"
    output = ("synth_uncond_unlabelled", "unconditional synthetic set, before labelling")
    defaults: ClassVar[dict[str, Any]] = {"n": 1000}


class SynthCondStage(SynthesisStage):
    """Generate an image for every real training mask with the SPADE GAN."""

    name = "synth_cond"
    summary = "conditional synthesis from real masks (aras-synth spade)"
    subcommand = "spade"
    model = "spade"
    output = ("synth_cond", "conditional synthetic set (masks from the real set)")
    figure = ("synth_cond", "conditional synthetic images with the real masks they follow")

    def inputs(self) -> dict[str, str]:
        """The real training masks."""
        return {"masks": self.layout.real("train")}


class LabelStage(SynthesisStage):
    """Pseudo-label the unconditional images with the segmenter."""

    name = "label"
    summary = "pseudo-labelling of the unconditional images (aras-synth label)"
    subcommand = "label"
    model = "segmenter"
    output = ("synth_uncond", "unconditional synthetic set with pseudo-labels")
    figure = ("synth_uncond", "unconditional synthetic images and their pseudo-labels")

    def inputs(self) -> dict[str, str]:
        """The unlabelled set of the ``synth_uncond`` stage."""
        return {"input": str(self.layout.synth("synth_uncond_unlabelled"))}


class CaptionsStage(Stage):
    """Caption every chosen set with every model in each of its modes."""

    name = "captions"
    summary = "captions (aras-caption, text / vision / hybrid)"

    def _runs(self) -> list[tuple[str, str, CaptionModel]]:
        captions = self.config.captions
        return [
            (dataset, mode, model) for dataset in captions.sets for model in captions.models for mode in model.modes
        ]

    def commands(self) -> list[Command]:
        """One ``aras-caption --config configs/captions.<set>.<mode>.<model>.yaml`` per set, model and mode."""
        commands = []
        for dataset, mode, model in self._runs():
            required = {
                "input": self.layout.caption_input(dataset),
                "out": str(self.layout.caption_file(dataset, mode, model.name)),
                "mode": mode,
                "shards_out": None,
            }
            section = StageConfig(model.config, model.options)
            merged = self.flat_config(required, {"progress": False}, section=section)
            path = self.write_config(merged, suffix=f".{dataset}.{mode}.{model.name}")
            commands.append(Command("aras-caption", ("--config", str(path))))
        return commands

    def outputs(self) -> list[Path]:
        """The sidecars."""
        return [self.layout.caption_file(dataset, mode, model.name) for dataset, mode, model in self._runs()]

    def artefacts(self) -> list[Artefact]:
        """The sidecars."""
        return [
            Artefact(self.layout.caption_file(d, m, model.name), f"captions of {d}, {m} mode, {model.name} (JSONL)")
            for d, m, model in self._runs()
        ]


class EvalStage(Stage):
    """The evaluation report over the real and synthetic sets."""

    name = "eval"
    summary = "evaluation report (aras-eval)"

    FIGURES: ClassVar[dict[str, str]] = {
        "composition.png": "class composition of each set (the paper's Figure 3)",
        "share_distributions.png": "per-image class share distributions, real vs synthetic",
    }
    TABLES: ClassVar[dict[str, str]] = {
        "table1.csv": "caption volume and redundancy per set (Table 1)",
        "table2.csv": "caption redundancy and CLIPScore per mode (Table 2)",
        "consistency.csv": "caption / mask consistency",
        "composition.csv": "composition distances to the real set (JS divergence, Wasserstein)",
        "fid.csv": "FID / KID against the real set, with a real-vs-real floor",
        "embedding.csv": "silhouette scores of the feature embedding (Figure 4)",
    }

    def _datasets(self) -> list[dict[str, Any]]:
        captions = self.config.captions
        captioned = set(captions.sets) if "captions" not in self.config.skip else set()
        sets = []
        for name in ("real", "synth_uncond", "synth_cond"):
            files = [
                str(self.layout.caption_file(name, mode, model.name))
                for model in captions.models
                for mode in model.modes
                if name in captioned
            ]
            sets.append({"name": name, "path": self.layout.caption_input(name), "captions": files})
        return sets

    def commands(self) -> list[Command]:
        """``aras-eval --config configs/eval.yaml``."""
        required = {
            "out_dir": str(self.outputs()[0].parent),
            "datasets": self._datasets(),
            "reference": "real",
            "segmenter": str(self.layout.checkpoint("segmenter")),
        }
        path = self.write_config(self.flat_config(required, {"progress": False}))
        return [Command("aras-eval", ("--config", str(path)))]

    def outputs(self) -> list[Path]:
        """``report.md``."""
        return [self.layout.run_dir / "eval" / "report.md"]

    def results(self) -> str | None:
        """The report's headline table."""
        return _first_table(self.outputs()[0], "Evaluation against the real set")

    def artefacts(self) -> list[Artefact]:
        """Report, tables and figures."""
        out = self.outputs()[0].parent
        found = [Artefact(out / "report.md", "evaluation report: every table and figure below, with notes")]
        found += [Artefact(out / name, what) for name, what in self.TABLES.items()]
        found += [Artefact(out / name, what) for name, what in self.FIGURES.items()]
        known = set(self.FIGURES)
        found += [
            Artefact(p, "feature embedding of real and synthetic samples (Figure 4)")
            for p in sorted(out.glob("*.png"))
            if p.name not in known
        ]
        return found


class AblateStage(Stage):
    """The real / synthetic / mixed study over the pipeline's own synthetic sets."""

    name = "ablate"
    summary = "real / synthetic / mixed study, Tables 3-4 (aras-ablate)"

    def _configurations(self) -> list[dict[str, Any]]:
        real = {"path": self.layout.real("train")}
        uncond = {"path": str(self.layout.synth("synth_uncond"))}
        cond = {"path": str(self.layout.synth("synth_cond"))}
        size = self.config.synth_uncond.options.get("n", 1000)
        small = {**uncond, "num_samples": max(1, int(size) // 3)}  # the paper: 100k of 300k
        return [
            {"name": "real", "train": [real]},
            {"name": "synth_small", "train": [small]},
            {"name": "synth_large", "train": [uncond]},
            {"name": "real+cond", "train": [real, cond]},
            {"name": "real+uncond", "train": [real, uncond]},
            {"name": "real+both", "train": [real, uncond, cond]},
        ]

    def commands(self) -> list[Command]:
        """``aras-ablate --config configs/ablate.yaml``."""
        required = {
            "out_dir": str(self.layout.run_dir / "ablate"),
            "root": self.layout.real_root(),
            "demo": False,
            "demo_stand_ins": [],
        }
        # The pipeline's configurations replace the base file's (its stand-in paths do not apply).
        defaults = {"configurations": self._configurations(), "progress_bar": False}
        path = self.write_config(self.flat_config(required, defaults))
        return [Command("aras-ablate", ("--config", str(path)))]

    def outputs(self) -> list[Path]:
        """``table3.md``."""
        return [self.layout.run_dir / "ablate" / "table3.md"]

    def reset(self) -> list[Path]:
        """The study folder."""
        return [self.layout.run_dir / "ablate"]

    def results(self) -> str | None:
        """Table 3."""
        return _first_table(self.outputs()[0], "Table 3, test scores (%) by training data")

    def artefacts(self) -> list[Artefact]:
        """Tables 3 and 4 and the per-class chart."""
        out = self.layout.run_dir / "ablate"
        return [
            Artefact(out / "table3.md", "Table 3: test scores per training configuration and model"),
            Artefact(out / "table4.md", "Table 4: per-class test F1 per model and configuration"),
            Artefact(out / "per_class_f1.png", "per-class F1 chart of the study"),
            Artefact(out / "summary.json", "every run's scores and checkpoint (JSON)"),
        ]


#: Stage classes in run order (names match :data:`aras400k.pipeline.config.STAGE_NAMES`).
STAGES: tuple[Callable[[RunLayout], Stage], ...] = (
    DataStageRunner,
    SegmenterStage,
    StyleGAN3Stage,
    SpadeStage,
    SynthUncondStage,
    SynthCondStage,
    LabelStage,
    CaptionsStage,
    EvalStage,
    AblateStage,
)
