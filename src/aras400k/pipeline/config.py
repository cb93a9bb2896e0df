"""The pipeline's configuration: one section per stage, each a base config plus overrides.

How sections, ``options`` and the merged ``run_dir/configs/<stage>.yaml`` files work:
``docs/pipeline.md`` ("The config").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "STAGE_NAMES",
    "CaptionModel",
    "CaptionStage",
    "DataStage",
    "PipelineConfig",
    "StageConfig",
]

#: The stages in the order they run (each may use the outputs of the ones before it).
STAGE_NAMES: tuple[str, ...] = (
    "data",
    "segmenter",
    "stylegan3",
    "spade",
    "synth_uncond",
    "synth_cond",
    "label",
    "captions",
    "eval",
    "ablate",
)


@dataclass
class StageConfig:
    """One stage: a base config of its command and options laid over it.

    Attributes:
        config: YAML file the stage's command reads first (``None``: the command's defaults).
        options: Settings laid over it (dotted keys for LightningCLI configs).
    """

    config: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataStage(StageConfig):
    """Where the real shard sets come from.

    Attributes:
        command: ``demo`` (procedural set), ``import`` (the ARAS400k release folders),
            ``prepare`` (Sentinel-2 + WorldCover GeoTIFFs; needs the ``geo`` extra),
            ``download`` (``aras-data download`` of a bounding box into ``run_dir/data/raw``,
            then ``prepare`` of it; see ``docs/mapping.md``) or ``existing`` (shard sets
            already at ``root``, which may be a URL). ``config`` and ``options`` are those of
            the command (of ``prepare`` for ``download``).
        root: For ``existing``: the folder holding ``train``, ``val`` and ``test``.
        download: For ``download``: the ``aras-data download`` config and options
            (``bbox``, ``year``, ``source``, ...); ``out`` is the pipeline's.
    """

    command: Literal["demo", "import", "prepare", "download", "existing"] = "demo"
    root: str | None = None
    download: StageConfig = field(default_factory=StageConfig)


@dataclass
class CaptionModel:
    """One captioning model (backend settings) and the modes it runs.

    Attributes:
        name: Short name used in the sidecar file names (``<set>.<mode>.<name>.jsonl``).
        modes: Captioning modes run with this model.
        config: ``aras-caption`` base config (backend, model path or server URLs, ...).
        options: ``aras-caption`` options laid over it.
    """

    name: str = "template"
    modes: list[Literal["text", "vision", "hybrid"]] = field(default_factory=lambda: ["text", "vision", "hybrid"])
    config: str | None = "configs/caption_template.yaml"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaptionStage:
    """Captioning of the real and synthetic training sets.

    The paper captions every image five times, once per model and mode: Qwen3-4B (text
    mode, from the class composition), Gemma3-4B and Qwen3-VL-8B (vision and hybrid
    modes), i.e. ``captions_per_image: 1`` for each of the five (model, mode) pairs.

    Attributes:
        sets: Which sets to caption: ``real`` (the real train split), ``real_val``,
            ``real_test``, ``synth_uncond`` and ``synth_cond``.
        models: The captioning models; each writes one sidecar per set and mode.
    """

    sets: list[Literal["real", "real_val", "real_test", "synth_uncond", "synth_cond"]] = field(
        default_factory=lambda: ["real", "synth_uncond", "synth_cond"]
    )
    models: list[CaptionModel] = field(default_factory=lambda: [CaptionModel()])


@dataclass
class PipelineConfig:
    """The whole paper as one run (see ``configs/pipeline_demo.yaml``).

    Attributes:
        run_dir: Folder holding every stage's output, the merged stage configs, the
            stage logs and ``index.md``.
        data: Real data: demo, import, prepare or existing shard sets.
        segmenter: Segmenter training (``aras-fit``); it labels the synthetic images and
            gives the feature space of FID and the embedding.
        stylegan3: Unconditional GAN training (``aras-fit``).
        spade: Mask-conditioned GAN training (``aras-fit``).
        synth_uncond: ``aras-synth stylegan3`` options (``n``, ``truncation``, ...).
        synth_cond: ``aras-synth spade`` options (``per_mask``, ...); masks are the real train set's.
        label: ``aras-synth label`` options: pseudo-labels of the unconditional images.
        captions: ``aras-caption``: the sets and the models (each with its modes and backend).
        eval: ``aras-eval`` (base config and options; data sets and paths are filled in).
        ablate: ``aras-ablate`` (base config and options; configurations are filled in).
        map: ``aras-map`` config and options (``scene``, ``reference``, ``tile_size``, ...):
            when they name a ``scene``, the segmenter stage maps it with the trained model
            into ``run_dir/segmenter/map/landcover.tif`` (see ``docs/mapping.md``);
            ``{run_dir}`` in a path stands for the run folder.
        gan_fid: Log ``val_fid`` of both GANs during training in the segmenter's feature space.
        fid_bound: A GAN whose last ``val_fid`` is above this is flagged as not trustworthy.
        skip: Stages not to run (their outputs must then come from an earlier run).
    """

    run_dir: str = "runs/pipeline_demo"
    data: DataStage = field(default_factory=DataStage)
    segmenter: StageConfig = field(default_factory=lambda: StageConfig("configs/seg_unet.yaml"))
    stylegan3: StageConfig = field(default_factory=lambda: StageConfig("configs/gan_stylegan3.yaml"))
    spade: StageConfig = field(default_factory=lambda: StageConfig("configs/gan_spade.yaml"))
    synth_uncond: StageConfig = field(default_factory=StageConfig)
    synth_cond: StageConfig = field(default_factory=StageConfig)
    label: StageConfig = field(default_factory=StageConfig)
    captions: CaptionStage = field(default_factory=CaptionStage)
    eval: StageConfig = field(default_factory=lambda: StageConfig("configs/eval.yaml"))
    ablate: StageConfig = field(default_factory=lambda: StageConfig("configs/ablate.yaml"))
    map: StageConfig = field(default_factory=StageConfig)
    gan_fid: bool = True
    fid_bound: float = 1000.0
    skip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the stage names in ``skip``.

        Raises:
            ValueError: On an unknown stage name.
        """
        unknown = sorted(set(self.skip) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(f"skip names unknown stages {unknown}; the stages are {', '.join(STAGE_NAMES)}")
