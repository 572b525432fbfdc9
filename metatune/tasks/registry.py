"""Family configs (strict YAML) and the registry that turns them into task families.

A family config::

  name: synthetic-default            # optional label
  family: synthetic                  # one of FAMILIES
  options: {num_tasks: 100, seed: 0, fail_param: lr}
  dataset:                           # how `metatune dataset build` samples it
    configs_per_task: 64
    design: quasi_random             # or random
    seed: 0
    batch_size: 64
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
from typing import Any

from metatune.space import SpaceError, yamlio
from metatune.space.model import did_you_mean
from metatune.tasks.base import TaskFamily

# family name -> "module:function" with signature (options: dict, data_dir) -> TaskFamily
FAMILIES = {
    "surrogate": "metatune.surrogate.env:make_family",
    "synthetic": "metatune.tasks.synthetic:make_family",
    "table": "metatune.tasks.table:make_family",
    "training": "metatune.tasks.training.family:make_family",
    "yahpo": "metatune.tasks.yahpo:make_family",
}
PATH_OPTIONS = ("space", "table", "surrogate")
TOP_KEYS = {"name", "family", "options", "dataset", "description", "meta_train"}
DATASET_KEYS = {"configs_per_task": int, "design": str, "seed": int, "batch_size": int}
DESIGNS = ("quasi_random", "random")


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
  configs_per_task: int = 64
  design: str = "quasi_random"
  seed: int = 0
  batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class FamilyConfig:
  name: str
  family: str
  options: dict
  dataset: DatasetSettings
  source: str
  folder: pathlib.Path  # relative paths in options are relative to the config's folder
  meta_train: Any = None  # the ``meta_train`` section as a yamlio node (read by metatune.meta)

  def to_dict(self) -> dict[str, Any]:
    return {"name": self.name, "family": self.family, "options": self.options,
            "dataset": dataclasses.asdict(self.dataset)}


def load_family_config(path: str | os.PathLike) -> FamilyConfig:
  """Reads a family YAML, rejecting unknown keys; errors name the file and line."""
  path = os.fspath(path)
  root = yamlio.load(yamlio.read_text(path, "family config"), path)
  fields = dict(root.items())
  for k, v in fields.items():
    if k not in TOP_KEYS:
      raise v.error(f"unknown key {k!r} in the family config{did_you_mean(k, TOP_KEYS)}; "
                    f"allowed: {', '.join(sorted(TOP_KEYS))}")
  if "family" not in fields:
    raise root.error(f"a family config needs 'family' (one of {', '.join(FAMILIES)})")
  family = fields["family"].scalar()
  if family not in FAMILIES:
    raise fields["family"].error(f"unknown family {family!r}{did_you_mean(str(family), FAMILIES)}"
                                 f"; known: {', '.join(FAMILIES)}")
  options = fields["options"].plain() if "options" in fields else {}
  if not isinstance(options, dict):
    raise fields["options"].error("options must be a mapping")
  settings: dict[str, Any] = {}
  if "dataset" in fields:
    for k, v in fields["dataset"].items():
      if k not in DATASET_KEYS:
        raise v.error(f"unknown key {k!r} in dataset{did_you_mean(k, DATASET_KEYS)}; allowed: "
                      f"{', '.join(DATASET_KEYS)}")
      value = v.scalar()
      want = DATASET_KEYS[k]
      if want is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise v.error(f"dataset.{k} must be a non-negative whole number, got {value!r}")
      if k == "design" and value not in DESIGNS:
        raise v.error(f"dataset.design must be one of {', '.join(DESIGNS)}, got {value!r}")
      settings[k] = value
  for k in ("configs_per_task", "batch_size"):
    if settings.get(k) == 0:
      raise fields["dataset"].error(f"dataset.{k} must be positive")
  name = str(fields["name"].scalar()) if "name" in fields else pathlib.Path(path).stem
  return FamilyConfig(name, family, options, DatasetSettings(**settings), path,
                      pathlib.Path(path).resolve().parent, fields.get("meta_train"))


def default_data_dir() -> pathlib.Path | None:
  """The data folder setting: ``METATUNE_DATA_DIR`` or None."""
  value = os.environ.get("METATUNE_DATA_DIR")
  return pathlib.Path(value) if value else None


def make_family(config: FamilyConfig, data_dir: str | os.PathLike | None = None) -> TaskFamily:
  """Builds the family a config names.

  Raises:
    SpaceError: naming the config file and the bad option.
  """
  module_name, fn_name = FAMILIES[config.family].split(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise SpaceError(f"family {config.family!r} is not available: {e}", config.source) from None
  options = dict(config.options)
  for key in PATH_OPTIONS:  # relative to the config file's folder
    value = options.get(key)
    if isinstance(value, str) and value != "default" and not os.path.isabs(value):
      options[key] = str(config.folder / value)
  data = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
  try:
    return getattr(module, fn_name)(options, data)
  except (ValueError, KeyError, TypeError) as e:
    raise SpaceError(f"family {config.family!r}: {e}", config.source) from None
