"""YAHPO Gym surrogate benchmarks as jittable task families, one dataset instance per task."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, expr, io
from metatune.tasks.base import (REASON_CODE, Fidelity, Metrics, Task, TaskFamily,
                                 configured_splits)
from metatune.tasks.reference import task_reference
from metatune.tuners.base import Evaluation, Points


class Objective(NamedTuple):
  """How a surrogate target becomes a minimized objective: ``sign * scale * target``.

  ``test`` names the target used for ``Metrics.test_objective`` (None: NaN).
  """
  target: str
  sign: float
  scale: float = 1.0
  test: str | None = None


class Scenario(NamedTuple):
  """Static facts about one YAHPO scenario (from ``yahpo_gym/benchmarks/*.py``)."""
  instance: str
  cont_names: tuple[str, ...]
  cat_names: tuple[str, ...]
  targets: tuple[str, ...]
  fidelity_params: tuple[str, ...]
  cost: str
  objectives: Mapping[str, Objective]
  default_objective: str
  curve_param: str | None = None


_MAX = -1.0
_MIN = 1.0
_RBV2_TARGETS = ("acc", "bac", "auc", "brier", "f1", "logloss", "timetrain", "timepredict",
                 "memory")
_RBV2_OBJECTIVES = {"acc": Objective("acc", _MAX), "bac": Objective("bac", _MAX),
                    "auc": Objective("auc", _MAX), "f1": Objective("f1", _MAX),
                    "brier": Objective("brier", _MIN), "logloss": Objective("logloss", _MIN)}

SCENARIOS: dict[str, Scenario] = {
    "lcbench": Scenario(
        instance="OpenML_task_id",
        cont_names=("epoch", "batch_size", "learning_rate", "momentum", "weight_decay",
                    "num_layers", "max_units", "max_dropout"),
        cat_names=("OpenML_task_id",),
        targets=("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy",
                 "test_cross_entropy", "test_balanced_accuracy"),
        fidelity_params=("epoch",), cost="time",
        # val_accuracy is in percent; scaled to a fraction like every other accuracy here.
        # LCBench has no test accuracy, so its test objective is NaN.
        objectives={
            "val_accuracy": Objective("val_accuracy", _MAX, 0.01),
            "val_balanced_accuracy": Objective("val_balanced_accuracy", _MAX, 1.0,
                                               "test_balanced_accuracy"),
            "val_cross_entropy": Objective("val_cross_entropy", _MIN, 1.0, "test_cross_entropy"),
        },
        default_objective="val_accuracy", curve_param="epoch"),
    "rbv2_xgboost": Scenario(
        instance="task_id",
        cont_names=("nrounds", "eta", "gamma", "lambda", "alpha", "subsample", "max_depth",
                    "min_child_weight", "colsample_bytree", "colsample_bylevel", "rate_drop",
                    "skip_drop", "trainsize", "repl"),
        cat_names=("task_id", "booster", "num.impute.selected.cpo"),
        targets=_RBV2_TARGETS, fidelity_params=("trainsize", "repl"), cost="timetrain",
        objectives=_RBV2_OBJECTIVES, default_objective="acc"),
    "rbv2_rpart": Scenario(
        instance="task_id",
        cont_names=("cp", "maxdepth", "minbucket", "minsplit", "trainsize", "repl"),
        cat_names=("task_id", "num.impute.selected.cpo"),
        targets=_RBV2_TARGETS, fidelity_params=("trainsize", "repl"), cost="timetrain",
        objectives=_RBV2_OBJECTIVES, default_objective="acc"),
    "iaml_glmnet": Scenario(
        instance="task_id",
        cont_names=("alpha", "s", "trainsize"),
        cat_names=("task_id",),
        targets=("mmce", "f1", "auc", "logloss", "ramtrain", "rammodel", "rampredict",
                 "timetrain", "timepredict", "mec", "ias", "nf"),
        fidelity_params=("trainsize",), cost="timetrain",
        objectives={"mmce": Objective("mmce", _MIN), "logloss": Objective("logloss", _MIN),
                    "f1": Objective("f1", _MAX), "auc": Objective("auc", _MAX)},
        default_objective="mmce"),
}

OPTIONS = ("scenario", "objective", "fidelity", "seed", "split")


@dataclasses.dataclass(frozen=True)
class YahpoConfig:
  """Settings of a family.

  Attributes:
    scenario: one of `SCENARIOS`.
    objective: a key of the scenario's ``objectives`` (None: its default).
    fidelity: ``(name, value)`` pairs overriding the fixed fidelities (default:
      each at its maximum); lcbench's ``epoch`` is the curve axis and is not fixed.
    seed: of the task split.
    split: the ``split`` option (`configured_splits`): None for 70/15/15 with ``seed``.
  """
  scenario: str
  objective: str | None = None
  fidelity: tuple[tuple[str, float], ...] = ()
  seed: int = 0
  split: Any = None


def scenario_dir(data_dir: str | os.PathLike, scenario: str) -> pathlib.Path:
  """The scenario's folder: ``data_dir/yahpo/<scenario>`` (or ``data_dir/<scenario>``)."""
  root = pathlib.Path(data_dir)
  for d in (root / "yahpo" / scenario, root / scenario):
    if (d / "model.onnx").is_file():
      return d
  raise FileNotFoundError(f"no YAHPO surrogate for scenario {scenario!r} under {root}: expected "
                          f"{root / 'yahpo' / scenario / 'model.onnx'}")


def reduced_space(full: Space, drop: set[str], name: str) -> Space:
  """``full`` without the parameters in ``drop``; conditions and constraints kept."""
  keep = [p for p in full.params if p.name not in drop]
  for p in keep:
    bad = drop & set(full.parents[p.name])
    if bad:
      raise ValueError(f"{full.source}: the condition of {p.name!r} refers to the fixed "
                       f"parameter(s) {sorted(bad)}")
  cons = [c for c in full.constraints if not drop & set(expr.names(c.node, guarded=False))]
  return Space(keep, cons, name=name, source=full.source)


class YahpoFamily(TaskFamily):
  """One YAHPO Gym scenario (Pfisterer et al., 2022); each dataset instance is a task.

  YAHPO ships per scenario a ConfigSpace, an ``encoding.json`` and a surrogate
  network ``model.onnx``, run here through `onnx_jax`. ``BenchmarkSet._config_to_xs``
  (slds-lmu/yahpo_gym, ``yahpo_gym/benchmark_set.py``) feeds the network
  ``x_cont``, the raw values of ``Scenario.cont_names`` (ints as floats, an
  inactive parameter as 0), and ``x_cat``, ``encoding[name][value]`` for each
  of ``Scenario.cat_names`` (instance first, an inactive one as ``"#na#"``).
  Every other transform is inside the graph: ``log(x + 1e-12)`` or
  ``exp(-x / c)`` input transforms with min-max scaling, embeddings, and after
  a sigmoid head the inverse target transforms and de-normalization. Column
  orders are those of the v1.0 surrogates (``yahpo_gym/benchmarks/*.py``, the
  version where ``repl`` is continuous); they match the graphs' input widths
  and per-column scaling constants.

  The tuned space is the scenario's ConfigSpace minus the instance and the
  fidelity parameters, conditions kept (rbv2_xgboost: the tree parameters only
  for ``booster in {gbtree, dart}``, ``rate_drop``/``skip_drop`` only for
  ``dart``). Fidelities are fixed at their maximum (``trainsize = 1``,
  ``repl = 10``; ``YahpoConfig.fidelity`` changes them); lcbench evaluates
  every epoch 1..52 into ``Metrics.curve`` and reads the objective at the last
  (the environment methods below evaluate the last epoch only: what a tuner sees).
  Cost is the predicted training time in seconds (lcbench ``time`` at the last
  epoch, else ``timetrain``). The surrogate is deterministic: ``key`` is unused.
  Tasks (``lcbench/3945``) split 70/15/15 into meta-train, meta-validation and
  held-out datasets unless the ``split`` option says otherwise; a scenario has
  one learner, so ``heldout_model`` is empty. As an environment (``task_params``,
  ``clean``, ``evaluate``, ``reference``) a task is its instance code, so
  meta-training and the evaluation harness compile once for every task.

  Example:
    >>> fam = YahpoFamily(YahpoConfig("rbv2_xgboost"), data_dir)  # doctest: +SKIP
    >>> task = fam.task("rbv2_xgboost/1040")                        # doctest: +SKIP
    >>> metrics = jax.jit(task.evaluate)(key, Points(values, active))  # doctest: +SKIP
  """

  cost_unit = "seconds"

  def __init__(self, config: YahpoConfig, data_dir: str | os.PathLike):
    if config.scenario not in SCENARIOS:
      raise ValueError(f"unknown YAHPO scenario {config.scenario!r}; supported: "
                       f"{', '.join(SCENARIOS)}")
    sc = SCENARIOS[config.scenario]
    objective = config.objective or sc.default_objective
    if objective not in sc.objectives:
      raise ValueError(f"option 'objective': {objective!r} is not available for "
                       f"{config.scenario}; choose one of {', '.join(sc.objectives)}")
    self.config, self.scenario = config, sc
    self.objective = sc.objectives[objective]
    self.name = f"yahpo-{config.scenario}"
    folder = scenario_dir(data_dir, config.scenario)
    full = io.load(folder / "config_space.json")
    self.encoding = json.loads((folder / "encoding.json").read_text(encoding="utf-8"))
    # Imported here so that the package imports without the optional onnx dependency.
    from metatune.tasks import onnx_jax  # pylint: disable=import-outside-toplevel
    self.net = onnx_jax.load(folder / "model.onnx")
    self.space = reduced_space(full, {sc.instance, *sc.fidelity_params}, self.name)
    self.instances = tuple(str(c) for c in full.params[full.index[sc.instance]].choices
                           if str(c) in self.encoding[sc.instance])
    self.fixed = self._fixed_values(full, dict(config.fidelity))
    self.fidelity = None
    if sc.curve_param is not None:
      p = full.params[full.index[sc.curve_param]]
      self.fidelity = Fidelity(sc.curve_param, tuple(float(v) for v in range(p.low, p.high + 1)))
    self._build_tables()
    self._codes = np.asarray([int(self.encoding[sc.instance][i]) for i in self.instances],
                             np.int32)
    self._splits = configured_splits(self.all_task_ids(), config.split, seed=config.seed)

  def _fixed_values(self, full: Space, overrides: dict[str, float]) -> dict[str, float]:
    sc = self.scenario
    for name in overrides:
      if name not in sc.fidelity_params or name == sc.curve_param:
        fixed = [f for f in sc.fidelity_params if f != sc.curve_param]
        raise ValueError(f"option 'fidelity': {name!r} is not a fixed fidelity of "
                         f"{self.config.scenario} (those are: {fixed or 'none'})")
    out = {}
    for name in sc.fidelity_params:
      p = full.params[full.index[name]]
      v = float(overrides.get(name, p.high))
      if not p.low <= v <= p.high or (p.kind == "int" and not v.is_integer()):
        raise ValueError(f"option 'fidelity': {name} = {v} is outside [{p.low}, {p.high}]"
                         + (" or not a whole number" if p.kind == "int" else ""))
      out[name] = v
    return out

  def _build_tables(self):
    """Static gathers from the space's encoding to the network's two input matrices."""
    sc, space = self.scenario, self.space
    want = (("x_cat", len(sc.cat_names)), ("x_cont", len(sc.cont_names)))
    got = tuple((n, shape[-1]) for n, shape in zip(self.net.input_names, self.net.input_shapes))
    if got != want:
      raise ValueError(f"{self.net.source}: inputs {got} do not match the {self.config.scenario} "
                       f"layout {want} (a different YAHPO data version?)")
    self._cont_col = np.array([space.index.get(n, -1) for n in sc.cont_names], np.int32)
    self._cont_fixed = np.array([self.fixed.get(n, 0.0) for n in sc.cont_names], np.float32)
    self._cat_col = np.array([space.index.get(n, -1) for n in sc.cat_names], np.int32)
    codes = np.zeros((len(sc.cat_names), max(space.max_choices, 1)), np.int32)
    na = np.zeros(len(sc.cat_names), np.int32)
    for k, name in enumerate(sc.cat_names):
      enc = self.encoding[name]
      na[k] = enc["#na#"]
      if name in space.index:
        for i, c in enumerate(space.params[space.index[name]].choices):
          codes[k, i] = enc[str(c)]
    self._cat_codes, self._cat_na = codes, na
    self._curve_col = (sc.cont_names.index(sc.curve_param) if sc.curve_param else None)
    self._target = {n: i for i, n in enumerate(sc.targets)}

  # ------------------------------------------------------------ jittable core
  def inputs(self, points: Points, instance: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The network's inputs for a batch, as YAHPO Gym builds them (see the class docstring).

    Args:
      points: ``values f32[B, D]``, ``active bool[B, D]`` on `space`.
      instance: i32[] the instance's code in ``encoding.json``.

    Returns:
      ``(x_cat i32[B, K], x_cont f32[B, C])``; for lcbench ``epoch`` holds its
      maximum (`predict` sweeps it).
    """
    vals = self.space.comparable(points.values)
    idx = self.space.choice_index(points.values)
    col = np.maximum(self._cont_col, 0)
    tuned = self._cont_col >= 0
    cont = jnp.where(tuned & points.active[:, col], vals[:, col], 0.0)
    x_cont = jnp.where(tuned, cont, self._cont_fixed).astype(jnp.float32)  # fidelities fixed
    col = np.maximum(self._cat_col, 0)
    code = jnp.take_along_axis(jnp.asarray(self._cat_codes)[None], idx[:, col][..., None],
                               axis=-1)[..., 0]
    code = jnp.where(points.active[:, col], code, self._cat_na)
    x_cat = jnp.where(self._cat_col >= 0, code, jnp.asarray(instance, jnp.int32))
    return x_cat.astype(jnp.int32), x_cont

  def predict(self, points: Points, instance: jax.Array, curve: bool = True) -> jax.Array:
    """All surrogate targets (``scenario.targets``): f32[B, T], or f32[B, F, T] along the curve.

    ``curve=False``: at the last fidelity step only (f32[B, T]), 1/F of the work.
    """
    x_cat, x_cont = self.inputs(points, instance)
    if self._curve_col is None:
      return self.net(x_cat, x_cont)[0]
    if not curve:
      x_cont = x_cont.at[:, self._curve_col].set(float(self.fidelity.values[-1]))
      return self.net(x_cat, x_cont)[0]
    steps = jnp.asarray(self.fidelity.values, jnp.float32)
    b, f = x_cont.shape[0], steps.shape[0]
    x_cont = jnp.broadcast_to(x_cont[:, None, :], (b, f, x_cont.shape[1]))
    x_cont = x_cont.at[:, :, self._curve_col].set(steps)
    x_cat = jnp.broadcast_to(x_cat[:, None, :], (b, f, x_cat.shape[1]))
    out = self.net(x_cat.reshape(b * f, -1), x_cont.reshape(b * f, -1))[0]
    return out.reshape(b, f, -1)

  def metrics(self, key: jax.Array, points: Points, instance: jax.Array, curve: bool = True
              ) -> Metrics:
    """Metrics of a batch on one instance (an i32 code, so tasks ``vmap`` as data).

    ``curve=False`` evaluates the last fidelity step only (no ``curve`` in the metrics, a
    failure is a non-finite objective or cost there): what the environment methods use,
    since a tuner sees the final objective (lcbench: 52 times less work and memory).
    """
    del key  # deterministic surrogate
    out = self.predict(points, instance, curve)
    if out.ndim == 2:
      out = out[:, None, :]  # a single fidelity step
    column = lambda name: out[:, :, self._target[name]]
    obj = self.objective
    along = obj.sign * obj.scale * column(obj.target)  # f32[B, F]
    test = (obj.sign * obj.scale * column(obj.test)[:, -1] if obj.test else
            jnp.full(along.shape[:1], jnp.nan, jnp.float32))
    cost = column(self.scenario.cost)[:, -1]
    watched = jnp.concatenate([along, cost[:, None]], axis=1)
    failed = jnp.any(~jnp.isfinite(watched), axis=1)
    reason = jnp.where(jnp.any(jnp.isnan(watched), axis=1), REASON_CODE["nan"],
                       REASON_CODE["diverged"])
    extra = {"curve": along} if curve else {}
    return Metrics.simple(along[:, -1], failed, reason, test_objective=test, cost=cost, **extra)

  # ------------------------------------------------------------- the family
  def task_id(self, instance: str) -> str:
    return f"{self.config.scenario}/{instance}"

  def splits(self) -> dict[str, list[str]]:
    return self._splits

  # ------------------------------------------- as a jittable environment
  # The methods meta-training and the evaluation harness use (as on the synthetic family):
  # a task is its instance code, so tasks are data and one compiled function serves all.
  def task_params(self, index: jax.Array) -> jax.Array:
    """i32[]: the instance code of task ``index`` (a position in `all_task_ids`)."""
    return jnp.asarray(self._codes)[index]

  def all_task_ids(self) -> list[str]:
    """Every task of the scenario, in the order `task_params` indexes them."""
    return [self.task_id(i) for i in self.instances]

  def task_indices(self, split: str) -> np.ndarray:
    """i32[N]: the indices of a split's tasks (see `task_params`)."""
    pos = {t: i for i, t in enumerate(self.all_task_ids())}
    return np.asarray([pos[t] for t in self.task_ids(split)], np.int32)

  def clean(self, task: jax.Array, points: Points) -> jax.Array:
    """f32[B]: the objective (the surrogate is noise-free), NaN where the evaluation failed."""
    m = self.metrics(jax.random.key(0), points, task, curve=False)
    return jnp.where(m.failed, jnp.nan, m.objective)

  def evaluate(self, key: jax.Array, task: jax.Array, points: Points) -> Evaluation:
    """What a tuner sees of a batch on the task with instance code ``task``."""
    m = self.metrics(key, points, task, curve=False)
    return Evaluation.of(m.objective, m.failed)

  def reference(self, key: jax.Array, task: jax.Array, num: int = 4096, refine: int = 20
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Estimates ``(optimum, median, worst)`` of a task (see `task_reference`)."""
    return task_reference(key, self, task, num, refine)

  def instance_code(self, task_id: str) -> int:
    """The ``encoding.json`` code of a task's instance; ValueError for an unknown task."""
    prefix = f"{self.config.scenario}/"
    instance = task_id[len(prefix):] if task_id.startswith(prefix) else None
    if instance not in self.instances:
      raise ValueError(f"unknown task {task_id!r} of family {self.name!r} (expected "
                       f"{prefix}<instance>, e.g. {self.task_id(self.instances[0])})")
    return int(self.encoding[self.scenario.instance][instance])

  def task(self, task_id: str) -> Task:
    code = self.instance_code(task_id)
    evaluate = functools.partial(_evaluate_task, self, code)
    info = {"scenario": self.config.scenario, "instance": task_id.split("/", 1)[1],
            "instance_code": code, "objective": self.objective.target}
    return Task(task_id, evaluate, info)


def _evaluate_task(family: YahpoFamily, code: int, key: jax.Array, points: Points) -> Metrics:
  return family.metrics(key, points, jnp.asarray(code, jnp.int32))


def make_family(options: Mapping[str, Any], data_dir: str | os.PathLike | None) -> YahpoFamily:
  """Builds a family from YAML ``options`` (``family: yahpo``).

  Args:
    options: ``scenario`` (required: lcbench, rbv2_xgboost, rbv2_rpart,
      iaml_glmnet), ``objective`` (default per scenario: lcbench
      ``val_accuracy``, rbv2 ``acc``, iaml ``mmce``), ``fidelity`` (mapping of
      fixed fidelity values), ``seed`` (of the split).
    data_dir: the data folder holding ``yahpo/<scenario>/``.

  Raises:
    ValueError: naming the offending option.
    FileNotFoundError: when ``data_dir`` holds no surrogate for the scenario.

  Example:
    >>> fam = make_family({"scenario": "lcbench"}, "../shared/data")  # doctest: +SKIP
  """
  if not isinstance(options, Mapping):
    raise ValueError(f"yahpo options must be a mapping, got {type(options).__name__}")
  for k in options:
    if k not in OPTIONS:
      raise ValueError(f"unknown yahpo option {k!r}; allowed: {', '.join(OPTIONS)}")
  scenario = options.get("scenario")
  if scenario not in SCENARIOS:
    raise ValueError(f"option 'scenario' must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
  sc = SCENARIOS[scenario]
  objective = options.get("objective")
  if objective is not None and objective not in sc.objectives:
    raise ValueError(f"option 'objective' must be one of {', '.join(sc.objectives)} for "
                     f"{scenario}, got {objective!r}")
  fidelity = options.get("fidelity") or {}
  if not isinstance(fidelity, Mapping) or not all(
      isinstance(v, int | float) and not isinstance(v, bool) for v in fidelity.values()):
    raise ValueError(f"option 'fidelity' must map fidelity names to numbers, got {fidelity!r}")
  seed = options.get("seed", 0)
  if not isinstance(seed, int) or isinstance(seed, bool):
    raise ValueError(f"option 'seed' must be an integer, got {seed!r}")
  if data_dir is None:
    raise ValueError("the yahpo family needs a data folder (data_dir, e.g. METATUNE_DATA_DIR)")
  config = YahpoConfig(scenario, objective, tuple(sorted(
      (str(k), float(v)) for k, v in fidelity.items())), seed, options.get("split"))
  return YahpoFamily(config, data_dir)
