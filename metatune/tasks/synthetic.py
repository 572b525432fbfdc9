"""A jittable synthetic task family over any space: shared structure, per-task variation.

Every task of a family is a sum of per-parameter terms over the active
parameters: a quadratic bowl around a centre for numbers (in the unit
encoding) and an offset per choice for categorical, bool and ordinal
parameters, then scaled, shifted and observed with noise. Centres and offsets
are drawn around family-wide means, so which branch tends to be good and where
the optimum tends to lie transfer across tasks, while each task differs.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, io
from metatune.tasks.base import (REASON_CODE, Metrics, Task, TaskFamily, numbered_task,
                                 split_lists)
from metatune.tasks.reference import task_reference
from metatune.tuners.base import Evaluation, Points


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Settings of a family (static).

  Attributes:
    seed: fixes the family-wide structure.
    center_spread: std of per-task centre shifts (unit space).
    offset_spread: std of per-task choice offsets, relative to the family's.
    noise: observation noise std, relative to the task's scale.
    fail_param: a float parameter whose top ``1 - fail_above`` of the unit
      range diverges (objective NaN, flagged as failed); None for no failures.
    fail_above: see ``fail_param``.
    num_tasks: tasks of the family.
    mirror: the family's good region is the opposite of the unmirrored one's
      (centres ``c -> 1 - c``, each choice offset ``o -> max(o) - o``): a
      misleading source or target for transfer experiments.
  """
  seed: int = 0
  center_spread: float = 0.08
  offset_spread: float = 0.3
  noise: float = 0.01
  fail_param: str | None = None
  fail_above: float = 0.95
  num_tasks: int = 100
  mirror: bool = False


@flax.struct.dataclass
class SyntheticTask:
  """Parameters of one task (numeric; a batch of tasks is one vmap)."""
  center: jax.Array        # f32[D]
  weight: jax.Array        # f32[D]
  offset: jax.Array        # f32[D, C]
  scale: jax.Array         # f32[]
  shift: jax.Array         # f32[]
  noise: jax.Array         # f32[]


class SyntheticFamily(TaskFamily):
  """Tasks over ``space`` sharing a structure.

  As a `TaskFamily` it has ``config.num_tasks`` tasks ``synthetic-0000``...,
  split 70/15/15 into meta-train, meta-validation and held-out (there is no
  model axis, so ``heldout_model`` is empty).

  Example:
    >>> fam = SyntheticFamily(default_space())
    >>> task = fam.sample(jax.random.key(0))
    >>> ev = fam.evaluate(jax.random.key(1), task, points)  # doctest: +SKIP
  """

  name = "synthetic"
  cost_unit = "evaluations"

  def __init__(self, space: Space, config: SyntheticConfig = SyntheticConfig()):
    self.space = space
    self.config = config
    self.name = f"synthetic-{space.name}"
    rng = np.random.default_rng(config.seed)
    d, c = space.num_params, space.max_choices
    self._center = rng.uniform(0.15, 0.85, d).astype(np.float32)
    self._weight = rng.uniform(0.5, 2.0, d).astype(np.float32)
    offset = rng.uniform(0.0, 1.0, (d, c)).astype(np.float32)
    offset[np.arange(c)[None, :] >= space.num_choices[:, None]] = 0.0
    if config.mirror:
      self._center = (1.0 - self._center).astype(np.float32)
      top = offset.max(axis=1, keepdims=True)
      offset = np.where(np.arange(c)[None, :] < space.num_choices[:, None], top - offset, 0.0)
    self._offset = offset.astype(np.float32)
    self._discrete = space.kind_code >= 2
    # A resource proxy (like a parameter count): grows with a few numeric parameters.
    res = rng.uniform(0.0, 1.0, d) * (space.kind_code <= 1)
    self._resource = (res / max(res.sum(), 1e-12)).astype(np.float32)
    self._fail_col = None
    if config.fail_param is not None:
      if config.fail_param not in space.index:
        raise ValueError(f"fail_param {config.fail_param!r} is not a parameter of the space")
      self._fail_col = space.index[config.fail_param]

  def sample(self, key: jax.Array) -> SyntheticTask:
    """Draws one task's parameters."""
    c_key, w_key, o_key, s_key, h_key = jax.random.split(key, 5)
    cfg = self.config
    center = jnp.clip(self._center + cfg.center_spread * jax.random.normal(c_key, self._center.shape),
                      0.02, 0.98)
    weight = self._weight * jnp.exp(0.3 * jax.random.normal(w_key, self._weight.shape))
    offset = self._offset * (1.0 + cfg.offset_spread * jax.random.normal(o_key, self._offset.shape))
    scale = jnp.exp(0.5 * jax.random.normal(s_key, ()))
    shift = jax.random.normal(h_key, ())
    return SyntheticTask(center, weight, offset, scale, shift, cfg.noise * scale)

  def clean(self, task: SyntheticTask, points: Points) -> jax.Array:
    """f32[B]: the noise-free objective (NaN where the configuration diverges)."""
    u, act = points.values, points.active
    idx = self.space.choice_index(u)
    choice = jnp.take_along_axis(jnp.broadcast_to(task.offset, u.shape + task.offset.shape[-1:]),
                                 idx[..., None], axis=-1)[..., 0]
    bowl = task.weight * (u - task.center) ** 2
    term = jnp.where(self._discrete, choice, bowl)
    f = task.scale * jnp.sum(jnp.where(act, term, 0.0), axis=-1) + task.shift
    if self._fail_col is not None:
      f = jnp.where(u[..., self._fail_col] > self.config.fail_above, jnp.nan, f)
    return f

  def secondary(self, task: SyntheticTask, points: Points) -> jax.Array:
    """f32[B] in [0, 1]: a second objective to trade off (a resource such as model size).

    A fixed positive combination of the unit values of the active numeric
    parameters, the same for every task of the family.
    """
    del task
    return jnp.sum(jnp.where(points.active, points.values * self._resource, 0.0), axis=-1)

  def evaluate(self, key: jax.Array, task: SyntheticTask, points: Points) -> Evaluation:
    """Noisy objective of a batch; diverging configurations come back failed."""
    f = self.clean(task, points)
    noisy = f + task.noise * jax.random.normal(key, f.shape)
    return Evaluation.of(noisy, jnp.isnan(f))

  def splits(self) -> dict[str, list[str]]:
    ids = [f"synthetic-{i:04d}" for i in range(self.config.num_tasks)]
    train, valid, held = split_lists(ids, (0.7, 0.15, 0.15), self.config.seed)
    return {"meta_train": train, "meta_valid": valid, "heldout_dataset": held,
            "heldout_model": []}

  def task(self, task_id: str) -> Task:
    index = numbered_task(self.name, "synthetic", task_id, self.config.num_tasks)
    params = self.task_params(index)

    def evaluate(key, points):
      f = self.clean(params, points)
      noisy = f + params.noise * jax.random.normal(key, f.shape)
      return Metrics.simple(noisy, jnp.isnan(f), reason=REASON_CODE["diverged"],
                            cost=jnp.ones(f.shape, jnp.float32))

    return Task(task_id, evaluate, {"index": index})

  def task_params(self, index: jax.Array) -> SyntheticTask:
    """The parameters of task ``synthetic-{index:04d}`` (jittable in ``index``)."""
    return self.sample(jax.random.fold_in(jax.random.key(self.config.seed), index))

  def all_task_ids(self) -> list[str]:
    """Every task, in the order `task_params` indexes them."""
    return [f"synthetic-{i:04d}" for i in range(self.config.num_tasks)]

  def task_indices(self, split: str) -> np.ndarray:
    """i32[N]: the indices of the tasks of a split (see `task_params`)."""
    return np.asarray([numbered_task(self.name, "synthetic", t, self.config.num_tasks)
                       for t in self.task_ids(split)], np.int32)

  def reference(self, key: jax.Array, task: SyntheticTask, num: int = 4096, refine: int = 20
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Estimates ``(optimum, median, worst)`` of a task's clean objective (see `task_reference`)."""
    return task_reference(key, self, task, num, refine)


@functools.lru_cache(maxsize=1)
def default_space() -> Space:
  """The embedded default space (``metatune/tasks/spaces/synthetic_mlp.yaml``)."""
  ref = importlib.resources.files("metatune.tasks") / "spaces" / "synthetic_mlp.yaml"
  return io.loads(ref.read_text(encoding="utf-8"), "metatune/tasks/spaces/synthetic_mlp.yaml")


def make_family(options: dict, data_dir=None) -> SyntheticFamily:
  """Builds a family from config options: ``space`` (``default`` or a path) and `SyntheticConfig` fields.

  Raises:
    ValueError: naming an unknown or mistyped option.
  """
  del data_dir  # synthetic tasks need no data
  options = dict(options)
  space_opt = options.pop("space", "default")
  fields = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
  for k, v in options.items():
    if k not in fields:
      raise ValueError(f"unknown option {k!r} of the synthetic family; allowed: space, "
                       f"{', '.join(fields)}")
    want = {"int": int, "float": float, "str | None": str, "bool": bool}[fields[k].type]
    ok = (isinstance(v, bool) if want is bool else
          isinstance(v, want) and not isinstance(v, bool) or (want is float and isinstance(
              v, int) and not isinstance(v, bool)))
    if not ok:
      raise ValueError(f"option {k!r} must be {want.__name__}, got {v!r}")
  space = default_space() if space_opt == "default" else io.load(space_opt)
  return SyntheticFamily(space, SyntheticConfig(**options))
