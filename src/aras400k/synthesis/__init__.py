"""Synthetic data: sample the GANs into shard sets and label them with a segmenter.

- :mod:`~aras400k.synthesis.unconditional`: :func:`synthesize_unconditional`, one
  StyleGAN3 image per seed (``aras-synth stylegan3``).
- :mod:`~aras400k.synthesis.conditional`: :func:`synthesize_conditional`, SPADE images
  from real masks (``aras-synth spade``).
- :mod:`~aras400k.synthesis.label`: :func:`label_shards`, the paper's pseudo-labels
  (``aras-synth label``).
- :mod:`~aras400k.synthesis.jobs`: :class:`ShardJob`, the one resumable, splittable job
  engine all three run on (contract: ``docs/architecture.md``, "Resumable jobs over
  shard sets").

Names are loaded on first access, so importing the package costs no torch import.
"""

from typing import TYPE_CHECKING

from aras400k._lazy import lazy_attributes

if TYPE_CHECKING:  # for type checkers and the API docs; loaded by __getattr__ at run time
    from aras400k.synthesis.conditional import SpadeSynthesisReport, sample_seed, synthesize_conditional
    from aras400k.synthesis.jobs import ShardJob
    from aras400k.synthesis.label import LabelReport, label_shards
    from aras400k.synthesis.unconditional import (
        StyleGAN3SynthesisReport,
        load_stylegan3_generator,
        parse_seeds,
        seed_latents,
        synthesize_unconditional,
        worker_chunks,
    )

__all__ = [
    "LabelReport",
    "ShardJob",
    "SpadeSynthesisReport",
    "StyleGAN3SynthesisReport",
    "label_shards",
    "load_stylegan3_generator",
    "parse_seeds",
    "sample_seed",
    "seed_latents",
    "synthesize_conditional",
    "synthesize_unconditional",
    "worker_chunks",
]

_LAZY = {
    "LabelReport": "aras400k.synthesis.label",
    "label_shards": "aras400k.synthesis.label",
    "ShardJob": "aras400k.synthesis.jobs",
    "SpadeSynthesisReport": "aras400k.synthesis.conditional",
    "sample_seed": "aras400k.synthesis.conditional",
    "synthesize_conditional": "aras400k.synthesis.conditional",
    "StyleGAN3SynthesisReport": "aras400k.synthesis.unconditional",
    "load_stylegan3_generator": "aras400k.synthesis.unconditional",
    "parse_seeds": "aras400k.synthesis.unconditional",
    "seed_latents": "aras400k.synthesis.unconditional",
    "synthesize_unconditional": "aras400k.synthesis.unconditional",
    "worker_chunks": "aras400k.synthesis.unconditional",
}

#: Checkpoint readers that lived here before 0.3 (they load models, so they moved below
#: the jobs); importable from here with a ``FutureWarning`` until the next release.
_MOVED = {
    "checkpoint_normalization": "aras400k.checkpoints",
    "generator_from_module": "aras400k.checkpoints",
    "outside_cli_instantiation": "aras400k.checkpoints",
    "read_checkpoint": "aras400k.checkpoints",
    "load_segmentation_task": "aras400k.models.segmentation",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__, _MOVED)
