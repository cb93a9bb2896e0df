"""The whole paper as one run: ``aras-pipeline --config configs/pipeline_demo.yaml``.

Stages, in order (each a call of one of the library's commands, see
:mod:`aras400k.pipeline.stages`): real data → segmenter → StyleGAN3 → SPADE GAN →
unconditional and conditional synthesis → pseudo-labelling → captions → evaluation
report → real/synthetic/mixed study. One run folder holds every output and an
``index.md`` linking them; finished stages are skipped on a rerun and an interrupted
one resumes (:mod:`aras400k.pipeline.runner`).
"""

from aras400k.pipeline.config import STAGE_NAMES, CaptionModel, CaptionStage, DataStage, PipelineConfig, StageConfig
from aras400k.pipeline.runner import PipelineError, PipelineResult, StageRecord, plan_stages, run_pipeline
from aras400k.pipeline.stages import STAGES, Artefact, Command, RunLayout, Stage

__all__ = [
    "STAGES",
    "STAGE_NAMES",
    "Artefact",
    "CaptionModel",
    "CaptionStage",
    "Command",
    "DataStage",
    "PipelineConfig",
    "PipelineError",
    "PipelineResult",
    "RunLayout",
    "Stage",
    "StageConfig",
    "StageRecord",
    "plan_stages",
    "run_pipeline",
]
