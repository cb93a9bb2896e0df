"""The evaluation report of ``aras-eval``: the paper's Tables 1-2, consistency, Figures 3-4, FID/KID.

- :mod:`~aras400k.evaluation.config`: :class:`EvalConfig`, :class:`DatasetSpec` and the
  input checks (one-line errors naming the missing input and the command that makes it).
- :mod:`~aras400k.evaluation.captions`: one pass over each dataset's captions for the
  redundancy, CLIPScore and consistency tables.
- :mod:`~aras400k.evaluation.distributions`: composition (Figure 3), FID/KID and the
  t-SNE/UMAP embedding (Figure 4) against the reference dataset.
- :mod:`~aras400k.evaluation.report`: :func:`run_evaluation`, which writes ``report.md``,
  ``report.json``, CSV tables and PNG figures.

The metrics themselves are :mod:`aras400k.metrics`; this package reads shard sets and
sidecars into them and lays out their results. The report's names load the metrics
(torch) on first access, so that ``aras-eval --help`` starts quickly.
"""

from typing import TYPE_CHECKING

from aras400k._lazy import lazy_attributes
from aras400k.evaluation.config import DatasetInputs, DatasetSpec, EvalConfig, check_config, check_inputs
from aras400k.evaluation.tables import Section

if TYPE_CHECKING:  # for type checkers and the API docs; loaded by __getattr__ at run time
    from aras400k.evaluation.report import EvalResult, run_evaluation, write_report

__all__ = [
    "DatasetInputs",
    "DatasetSpec",
    "EvalConfig",
    "EvalResult",
    "Section",
    "check_config",
    "check_inputs",
    "run_evaluation",
    "write_report",
]

_LAZY = {name: "aras400k.evaluation.report" for name in ("EvalResult", "run_evaluation", "write_report")}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
