"""Experiment configs of `metatune evaluate` (strict YAML; errors name the file and line).

An experiment config::

  name: rbv2-xgboost-heldout
  family: ../families/yahpo_rbv2_xgboost_transfer.yaml  # relative to this file
  tasks: heldout_dataset         # a split of the family, or a list of task ids
  max_tasks: null                # keep only the first N tasks (quick runs)
  budget: 100                    # trials per study
  seeds: 10                      # studies per task (paired across tuners)
  seed: 0
  checkpoints: [1, 5, 10, 25, 50, 100]  # those past the budget are left out (and said so)
  reference: gp_bo               # trials each tuner needs to reach this one's final regret
  no_transfer: gp_bo             # negative-transfer rate of transfer tuners against this one
  worse_tolerance: 0.0           # a run is "worse" when its regret exceeds the other's by more
  reference_samples: 4096        # live tasks: random configurations for f* and the median
  reference_refine: 20
  tuners:                        # label: settings (an empty mapping: the tuner of that name)
    random: {}
    gp_bo: {options: {num_candidates: 512}}
    portfolio: {build: {dataset: ../../.cache_data/xgb, split: meta_train, size: 100}}
    tpe: {tuner: optuna_tpe}

Settings override the file (``metatune evaluate --set seeds=3 --set max_tasks=4``): a dotted key
``FIELD`` or ``tuners.LABEL.KEY...`` and a YAML value, read as if written in the file (relative
paths are relative to the config); the table says which settings were overridden.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Sequence

from metatune.space import SpaceError, yamlio
from metatune.space.model import did_you_mean
from metatune.tasks.base import SPLITS

# Tuner kinds the harness knows; "jax" tuners run compiled, peers in a Python loop.
JAX_TUNERS = ("random", "quasi_random", "grid", "gp_bo", "portfolio", "prior")
PEERS = ("optuna_tpe", "optuna_gp", "optuna_random")
TUNER_KINDS = JAX_TUNERS + PEERS
TRANSFER = ("portfolio", "prior")

TOP_KEYS = {"name", "description", "family", "tasks", "max_tasks", "budget", "seeds", "seed",
            "checkpoints", "reference", "no_transfer", "reference_samples", "reference_refine",
            "tuners", "worse_tolerance", "pairs"}
TUNER_KEYS = {"tuner", "options", "batch_size", "transfer", "build"}
BUILD_KEYS = {"dataset", "split", "size"}
DEFAULT_CHECKPOINTS = (1, 5, 10, 25, 50, 100)


@dataclasses.dataclass(frozen=True)
class TunerSpec:
  """One tuner of an experiment.

  Attributes:
    label: its name in tables.
    kind: one of `TUNER_KINDS`.
    options: keyword arguments of its constructor (paths resolved).
    batch_size: proposals per ask.
    transfer: it learns from other tasks (negative-transfer rates are reported).
    build: for a portfolio built by the harness: ``dataset``, ``split``, ``size``.
    where: the config file and line.
  """
  label: str
  kind: str
  options: dict
  batch_size: int = 1
  transfer: bool = False
  build: dict | None = None
  where: str = ""

  def fingerprint(self) -> dict:
    return {"kind": self.kind, "options": self.options, "batch_size": self.batch_size,
            "build": self.build}


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  family_path: str
  tasks: str | tuple[str, ...]
  max_tasks: int | None
  budget: int
  seeds: int
  seed: int
  checkpoints: tuple[int, ...]
  reference: str | None
  no_transfer: str | None
  reference_samples: int
  reference_refine: int
  tuners: tuple[TunerSpec, ...]
  source: str
  description: str = ""
  worse_tolerance: float = 0.0
  overrides: tuple[str, ...] = ()
  pairs: tuple[tuple[str, str], ...] = ()

  def replace(self, **changes) -> "Experiment":
    return dataclasses.replace(self, **changes)


def _positive(node, name: str, allow_zero: bool = False) -> int:
  v = node.scalar()
  if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
    raise node.error(f"{name} must be a {'non-negative' if allow_zero else 'positive'} whole "
                     f"number, got {v!r}")
  return v


def _resolve(folder: pathlib.Path, value: Any) -> Any:
  if isinstance(value, str) and value and not os.path.isabs(value):
    return str((folder / value).resolve())
  return value


def _override(root, text: str) -> None:
  """Applies one ``KEY=VALUE`` setting to the config's node tree (checked like the file)."""
  keys, value = yamlio.parse_setting(text)
  if keys[0] not in TOP_KEYS:
    raise value.error(f"unknown field {keys[0]!r}{did_you_mean(keys[0], TOP_KEYS)}; the fields "
                      f"of an experiment config: {', '.join(sorted(TOP_KEYS))}")
  if keys[0] == "tuners" and len(keys) > 1:
    node = dict(root.items()).get("tuners")
    labels = [k for k, _ in node.items()] if node is not None and node.kind == "mapping" else []
    if keys[1] not in labels:
      raise value.error(f"no tuner {keys[1]!r} in {root.source}{did_you_mean(keys[1], labels)}; "
                        f"its tuners: {', '.join(labels) or 'none'}")
  yamlio.set_path(root, keys, value)


def load_experiment(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Experiment:
  """Reads an experiment config, with command-line settings over it.

  Args:
    path: the config (YAML).
    overrides: ``KEY=VALUE`` settings (``seeds=3``, ``tuners.prior.options.path=DIR``),
      applied in order; each is checked as the file is, and recorded in the experiment.

  Raises:
    SpaceError: an unknown key, tuner or split, a bad value; naming the file and line, or
      the setting (``--set TEXT``) that brought it.

  Example:
    >>> exp = load_experiment("configs/experiments/synthetic.yaml", ["seeds=2"])  # doctest: +SKIP
    >>> exp.seeds, exp.overrides                                                 # doctest: +SKIP
    (2, ('seeds=2',))
  """
  path = os.fspath(path)
  root = yamlio.load(yamlio.read_text(path, "experiment config"), path)
  if root.kind != "mapping":
    raise root.error("an experiment config must be a mapping")
  for text in overrides:
    _override(root, text)
  fields = dict(root.items())
  for k, v in fields.items():
    if k not in TOP_KEYS:
      raise v.error(f"unknown key {k!r} in the experiment config{did_you_mean(k, TOP_KEYS)}; "
                    f"allowed: {', '.join(sorted(TOP_KEYS))}")
  for k in ("family", "tuners"):
    if k not in fields:
      raise root.error(f"an experiment config needs {k!r}")
  folder = pathlib.Path(path).resolve().parent
  family_path = _resolve(folder, str(fields["family"].scalar()))
  if not os.path.isfile(family_path):
    raise fields["family"].error(f"family config {family_path} does not exist")
  tasks: str | tuple[str, ...] = "heldout_dataset"
  if "tasks" in fields:
    node = fields["tasks"]
    if node.kind == "list":
      tasks = tuple(str(t.scalar()) for t in node.list())
      if not tasks:
        raise node.error("tasks: the list is empty")
    else:
      tasks = str(node.scalar())
      if tasks not in SPLITS:
        raise node.error(f"tasks must be a split ({', '.join(SPLITS)}) or a list of task ids, "
                         f"got {tasks!r}{did_you_mean(tasks, SPLITS)}")
  ints = {k: _positive(fields[k], k) for k in ("budget", "seeds", "reference_samples")
          if k in fields}
  if "reference_refine" in fields:
    ints["reference_refine"] = _positive(fields["reference_refine"], "reference_refine", True)
  seed = fields["seed"].scalar() if "seed" in fields else 0
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise fields["seed"].error(f"seed must be an integer, got {seed!r}")
  max_tasks = None
  if "max_tasks" in fields and fields["max_tasks"].scalar() is not None:
    max_tasks = _positive(fields["max_tasks"], "max_tasks")
  checkpoints = DEFAULT_CHECKPOINTS
  if "checkpoints" in fields:
    node = fields["checkpoints"]
    if node.kind != "list":
      raise node.error("checkpoints must be a list of trial counts")
    checkpoints = tuple(sorted({_positive(c, "a checkpoint") for c in node.list()}))
  tuners = _tuners(fields["tuners"], folder)
  labels = [t.label for t in tuners]
  refs = {}
  for k in ("reference", "no_transfer"):
    if k in fields:
      v = str(fields[k].scalar())
      if v not in labels:
        raise fields[k].error(f"{k}: {v!r} is not one of this experiment's tuners "
                              f"({', '.join(labels)}){did_you_mean(v, labels)}")
      refs[k] = v
  tolerance = 0.0
  if "worse_tolerance" in fields:
    tolerance = fields["worse_tolerance"].scalar()
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
      raise fields["worse_tolerance"].error(f"worse_tolerance must be a non-negative number, "
                                            f"got {tolerance!r}")
  pairs = _pairs(fields["pairs"], labels) if "pairs" in fields else ()
  name = str(fields["name"].scalar()) if "name" in fields else pathlib.Path(path).stem
  description = str(fields["description"].scalar()) if "description" in fields else ""
  return Experiment(name, family_path, tasks, max_tasks, ints.get("budget", 100),
                    ints.get("seeds", 10), seed, checkpoints, refs.get("reference"),
                    refs.get("no_transfer"), ints.get("reference_samples", 4096),
                    ints.get("reference_refine", 20), tuple(tuners), path, description,
                    float(tolerance), tuple(overrides), pairs)


def _pairs(node, labels: list[str]) -> tuple[tuple[str, str], ...]:
  """``pairs: [[A, B], ...]``: paired comparisons ``A - B`` the table reports besides the
  reference's and each prior's (between two priors, say)."""
  if node.kind != "list":
    raise node.error("pairs must be a list of [tuner, tuner] pairs, e.g. [[prior, gp_bo]]")
  out = []
  for item in node.list():
    two = item.list() if item.kind == "list" else []
    if len(two) != 2:
      raise item.error("each of pairs must be [tuner, tuner]")
    a, b = (str(x.scalar()) for x in two)
    for x, name in zip(two, (a, b)):
      if name not in labels:
        raise x.error(f"pairs: {name!r} is not one of this experiment's tuners "
                      f"({', '.join(labels)}){did_you_mean(name, labels)}")
    if a == b:
      raise item.error(f"pairs: {a!r} is compared with itself")
    out.append((a, b))
  return tuple(out)


def _tuners(node, folder: pathlib.Path) -> list[TunerSpec]:
  if node.kind != "mapping":
    raise node.error("tuners must be a mapping of labels to settings, e.g. {random: {}, "
                     "tpe: {tuner: optuna_tpe}}")
  out = []
  for label, spec in node.items():
    settings = dict(spec.items()) if spec.kind == "mapping" else None
    if settings is None:
      if spec.scalar() is not None:
        raise spec.error(f"tuner {label!r}: settings must be a mapping (or empty)")
      settings = {}
    for k, v in settings.items():
      if k not in TUNER_KEYS:
        raise v.error(f"tuner {label!r}: unknown key {k!r}{did_you_mean(k, TUNER_KEYS)}; "
                      f"allowed: {', '.join(sorted(TUNER_KEYS))}")
    kind = str(settings["tuner"].scalar()) if "tuner" in settings else label
    if kind not in TUNER_KINDS:
      where = settings["tuner"] if "tuner" in settings else spec
      raise where.error(f"unknown tuner {kind!r}{did_you_mean(kind, TUNER_KINDS)}; known: "
                        f"{', '.join(TUNER_KINDS)}")
    options = settings["options"].plain() if "options" in settings else {}
    if not isinstance(options, dict):
      raise settings["options"].error(f"tuner {label!r}: options must be a mapping")
    for k in ("path", "beliefs"):  # files: relative to this config
      if isinstance(options.get(k), str):
        options[k] = _resolve(folder, options[k])
    batch = _positive(settings["batch_size"], "batch_size") if "batch_size" in settings else 1
    transfer = kind in TRANSFER
    if "transfer" in settings:
      transfer = settings["transfer"].scalar()
      if not isinstance(transfer, bool):
        raise settings["transfer"].error(f"tuner {label!r}: transfer must be true or false")
    build = None
    if "build" in settings:
      if kind != "portfolio":
        raise settings["build"].error(f"tuner {label!r}: only a portfolio is built by the "
                                      "harness")
      bnode = settings["build"]
      build = {}
      for k, v in bnode.items():
        if k not in BUILD_KEYS:
          raise v.error(f"tuner {label!r}: unknown build key {k!r}; allowed: "
                        f"{', '.join(sorted(BUILD_KEYS))}")
        build[k] = v.scalar()
      if "dataset" not in build:
        raise bnode.error(f"tuner {label!r}: build needs 'dataset' (a folder written by "
                          "'metatune dataset build')")
      build["dataset"] = _resolve(folder, str(build["dataset"]))
      build.setdefault("split", "meta_train")
      if build["split"] not in SPLITS:
        raise bnode.error(f"tuner {label!r}: build.split must be one of {', '.join(SPLITS)}")
      build["size"] = int(build.get("size", 100))
    if kind == "portfolio" and build is None and "path" not in options:
      raise spec.error(f"tuner {label!r}: a portfolio needs options: {{path: FILE}} or build: "
                       "{dataset: DIR, split: meta_train, size: N}")
    if kind == "prior" and "path" not in options:
      raise spec.error(f"tuner {label!r}: a prior needs options: {{path: PRIOR_DIR}}")
    out.append(TunerSpec(str(label), kind, options, batch, transfer, build, spec.where))
  if not out:
    raise node.error("tuners: name at least one tuner")
  return out


def error_at(exp: Experiment, problem: str) -> SpaceError:
  return SpaceError(problem, exp.source)
