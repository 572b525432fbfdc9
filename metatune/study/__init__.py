"""Studies: ask/tell and parallel optimize over structured spaces, SQLite storage, resume, exports.

Names load on first use, so a worker process that imports `metatune.study.worker`
(or the command line) does not pay for jax until it needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Study": "metatune.study.study",
    "OptimizeResult": "metatune.study.optimize",
    "StudySpec": "metatune.study.results",
    "Storage": "metatune.study.storage",
    "TrialRecord": "metatune.study.storage",
    "Trial": "metatune.study.worker",
    "load_objective": "metatune.study.worker",
    "StudyError": "metatune.study.errors",
    "TrialPruned": "metatune.study.errors",
    "Diverged": "metatune.study.errors",
    "InlineExecutor": "metatune.study.executors",
    "ProcessExecutor": "metatune.study.processes",
    "RayExecutor": "metatune.study.executors",
    "to_records": "metatune.study.export",
    "to_csv": "metatune.study.export",
    "to_json": "metatune.study.export",
    "to_dataframe": "metatune.study.export",
    "failure_report": "metatune.study.report",
    "summary": "metatune.study.report",
    "SuccessiveHalving": "metatune.study.pruners",
    "ASHA": "metatune.study.pruners",
    "CurveStop": "metatune.study.pruners",
    "pareto_mask": "metatune.study.pareto",
    "hypervolume": "metatune.study.pareto",
    "plateau_signal": "metatune.study.plateau",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f"module 'metatune.study' has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return __all__
