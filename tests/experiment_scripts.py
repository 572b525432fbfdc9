"""Loads a script of `experiments/` as a module, for the tests that call its functions."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load(name: str) -> ModuleType:
  """``experiments/NAME.py``, executed afresh and registered in ``sys.modules`` (dataclasses
  look their module up there)."""
  spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module
