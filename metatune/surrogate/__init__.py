"""The learned meta-surrogate: in-context prediction of a task's objective, and an environment.

Names are re-exported lazily (PEP 562), so that ``metatune.surrogate.cli`` can be
imported by the command line without importing jax.
"""

import importlib

_EXPORTS = {
    "make_borders": "bars",
    "curve_batches": "curves", "synthetic_curve_table": "curves",
    "load_contexts": "checkpoint", "load_surrogate": "checkpoint", "save_surrogate": "checkpoint",
    "Batch": "data", "TaskTable": "data", "default_scale_floor": "data",
    "family_batches": "data", "family_table": "data", "load_table": "data", "make_table": "data",
    "mixed_batches": "data", "normalizer": "data", "table_batches": "data",
    "EnvConfig": "env", "SurrogateFamily": "env", "SurrogateTask": "env", "reference": "env",
    "ContextCache": "model", "MetaSurrogate": "model", "SurrogateConfig": "model",
    "CurvePrediction": "predictive", "Predictive": "predictive", "Surrogate": "predictive",
    "init_surrogate": "predictive", "predict": "predictive", "predict_curve": "predictive",
    "TrainConfig": "training", "train": "training", "calibrate_temperature": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"metatune.surrogate.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module 'metatune.surrogate' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
