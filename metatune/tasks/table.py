"""A family from a table of past evaluations: tuners choose among recorded configurations.

The table (CSV, JSON, JSON lines or Parquet) has a task-id column, one column
per parameter of the space (empty / null where a parameter is inactive) and
metric columns. Each task is pool-based: a proposal is answered with the
metrics of the nearest recorded configuration of that task (identical ones are
at distance 0), and the task's pool is exposed so pool-aware tuners pick
exactly; regret against the pool's best is then exact.

Reading is column by column (`metatune.tasks.table_io`), so a table of tens of
thousands of rows loads in seconds. As an environment (``task_params``,
``clean``, ``evaluate``, ``reference``, ``pool_data``) the pools are padded to
one shape, so meta-training and the evaluation harness compile once for every
task.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, io, sampling
from metatune.tasks.base import REASON_CODE, Metrics, Task, TaskFamily, configured_splits
from metatune.tasks.table_io import MISSING, Columns, encode_configs, number_column, read_rows
from metatune.tasks.table_io import read_table as read_columns
from metatune.tuners.base import Evaluation, Points

__all__ = ["MISSING", "TableFamily", "TablePool", "make_family", "read_columns", "read_rows"]


@flax.struct.dataclass
class TablePool:
  """One task's recorded evaluations, padded to the family's largest pool.

  Attributes:
    values, active: f32[N, D], bool[N, D] the recorded configurations.
    objective: f32[N] minimized objective (NaN for failed records and padding).
    test: f32[N] test objective (NaN where none).
    cost: f32[N].
    valid: bool[N] the slot holds a record (False for padding).
  """
  values: jax.Array
  active: jax.Array
  objective: jax.Array
  test: jax.Array
  cost: jax.Array
  valid: jax.Array


def _nearest(space: Space, pool: TablePool, points: Points) -> jax.Array:
  """i32[B]: the record nearest to each point (featurized squared distance; padding never)."""
  feats = sampling.featurize(space, pool.values, pool.active)
  f = sampling.featurize(space, points.values, points.active)
  d = (jnp.sum(f * f, -1)[:, None] + jnp.sum(feats * feats, -1)[None, :]
       - 2.0 * f @ feats.T)
  return jnp.argmin(jnp.where(pool.valid[None, :], d, jnp.inf), axis=-1)


class TableFamily(TaskFamily):
  """Pool-based tasks from a table of past evaluations.

  Args:
    space: the space the configurations belong to.
    table: a `Columns` table (`read_columns`) or ``(location, record)`` rows
      (`read_rows`).
    task_column, objective: column names.
    direction: ``minimize`` or ``maximize`` (maximized metrics are negated).
    test_objective, cost: optional column names.
    seed: seed of the default 70/15/15 split of task ids.
    split: the ``split`` option (`configured_splits`).
    missing: strings that mean "inactive / no value" in a parameter column
      (case-insensitive) unless they are a label of that parameter.
  """

  cost_unit = "table"

  def __init__(self, space: Space, table, task_column: str = "task", objective: str = "objective",
               direction: str = "minimize", test_objective: str | None = None,
               cost: str | None = None, seed: int = 0, name: str = "table", split: Any = None,
               missing=MISSING):
    if direction not in ("minimize", "maximize"):
      raise ValueError(f"option 'direction' must be minimize or maximize, got {direction!r}")
    self.space = space
    self.name = name
    self.seed = seed
    if not isinstance(table, Columns):
      table = Columns.from_rows(table)
    if table.num_rows == 0:
      raise ValueError("the table has no rows")
    for col in (task_column, objective) + tuple(c for c in (test_objective, cost) if c):
      table.require(col)
    sign = -1.0 if direction == "maximize" else 1.0
    values, active = encode_configs(space, table, tuple(missing))
    obj = sign * number_column(table, objective)
    test = (sign * number_column(table, test_objective) if test_objective
            else np.full(table.num_rows, np.nan))
    cst = number_column(table, cost) if cost else np.zeros(table.num_rows)
    task_col = np.asarray([str(t) for t in table.column(task_column)], object)
    ids, inverse = np.unique(task_col, return_inverse=True)
    self._ids = [str(t) for t in ids]
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(ids))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self._pools = {}
    width = int(counts.max())
    padded = {k: [] for k in ("values", "active", "objective", "test", "cost", "valid")}
    for t, (s, n) in enumerate(zip(starts, counts)):
      rows = order[s:s + n]
      g = {"values": values[rows], "active": active[rows],
           "objective": obj[rows].astype(np.float32), "test": test[rows].astype(np.float32),
           "cost": cst[rows].astype(np.float32)}
      self._pools[self._ids[t]] = g
      pad = width - n
      padded["values"].append(np.pad(g["values"], ((0, pad), (0, 0))))
      padded["active"].append(np.pad(g["active"], ((0, pad), (0, 0))))
      for k in ("objective", "test", "cost"):
        padded[k].append(np.pad(g[k], (0, pad), constant_values=np.nan))
      padded["valid"].append(np.arange(width) < n)
    self._padded = TablePool(**{k: np.stack(v) for k, v in padded.items()})
    self._splits = configured_splits(self._ids, split, seed=seed)

  # ------------------------------------------------------------ the family
  def splits(self) -> dict[str, list[str]]:
    return self._splits

  def pool(self, task_id: str) -> Points:
    g = self._pools[self._check(task_id)]
    return Points(jnp.asarray(g["values"]), jnp.asarray(g["active"]))

  def _check(self, task_id: str) -> str:
    if task_id not in self._pools:
      raise ValueError(f"unknown task {task_id!r}; the table has {len(self._pools)} tasks "
                       f"({', '.join(self._ids[:5])}{', ...' if len(self._ids) > 5 else ''})")
    return task_id

  def task(self, task_id: str) -> Task:
    g = self._pools[self._check(task_id)]
    n = g["objective"].shape[0]
    pool = TablePool(g["values"], g["active"], g["objective"], g["test"], g["cost"],
                     np.ones(n, bool))
    space = self.space

    def evaluate(key, points: Points) -> Metrics:
      del key  # a recorded evaluation is returned as it was
      j = _nearest(space, pool, points)
      o = jnp.asarray(pool.objective)[j]
      return Metrics.simple(o, ~jnp.isfinite(o), reason=REASON_CODE["nan"],
                            test_objective=jnp.asarray(pool.test)[j],
                            cost=jnp.asarray(pool.cost)[j])

    info = {"num_records": int(n), "best": float(np.nanmin(g["objective"]))
            if np.isfinite(g["objective"]).any() else None}
    return Task(task_id, evaluate, info, pool=Points(jnp.asarray(g["values"]),
                                                      jnp.asarray(g["active"])))

  # ------------------------------------------- as a jittable environment
  def all_task_ids(self) -> list[str]:
    """Every task, in the order `task_params` indexes them."""
    return list(self._ids)

  @property
  def pool_size(self) -> int:
    """The padded pool size (the largest task's number of records)."""
    return int(self._padded.valid.shape[1])

  def pool_sizes(self, task_ids=None) -> dict[str, int]:
    """Records per task."""
    ids = self._ids if task_ids is None else task_ids
    return {t: int(self._pools[self._check(t)]["objective"].shape[0]) for t in ids}

  def task_params(self, index: jax.Array) -> TablePool:
    """The padded pool of task ``index`` (a position in `all_task_ids`); jittable in ``index``."""
    return jax.tree.map(lambda a: jnp.asarray(a)[index], self._padded)

  def task_indices(self, split: str) -> np.ndarray:
    pos = {t: i for i, t in enumerate(self._ids)}
    return np.asarray([pos[t] for t in self.task_ids(split)], np.int32)

  def pool_data(self, task: TablePool) -> tuple[Points, jax.Array, jax.Array]:
    """``(configurations, objective f32[N] (NaN: failed), valid bool[N])`` of a task's pool."""
    return Points(task.values, task.active), task.objective, task.valid

  def clean(self, task: TablePool, points: Points) -> jax.Array:
    """f32[B]: the recorded objective of the nearest record (NaN where it failed)."""
    return task.objective[_nearest(self.space, task, points)]

  def evaluate(self, key: jax.Array, task: TablePool, points: Points) -> Evaluation:
    del key
    return Evaluation.of(self.clean(task, points))

  def reference(self, key: jax.Array, task: TablePool, num: int = 0, refine: int = 0
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Exact ``(optimum, median, worst)`` over the pool (failed records count as the worst)."""
    del key, num, refine
    ok = task.valid & jnp.isfinite(task.objective)
    best = jnp.min(jnp.where(ok, task.objective, jnp.inf))
    worst = jnp.max(jnp.where(ok, task.objective, -jnp.inf))
    filled = jnp.where(ok, task.objective, worst)
    # The median of the valid slots: padding sorts last.
    sorted_ = jnp.sort(jnp.where(task.valid, filled, jnp.inf))
    n = jnp.sum(task.valid)
    lo, hi = sorted_[(n - 1) // 2], sorted_[n // 2]
    return best, 0.5 * (lo + hi), worst


def make_family(options: dict, data_dir=None) -> TableFamily:
  """Options: ``table`` and ``space`` (paths), ``task_column``, ``objective``, ``direction``,
  ``test_objective``, ``cost``, ``seed``, ``split``, ``missing``, ``name``."""
  del data_dir
  allowed = {"table", "space", "task_column", "objective", "direction", "test_objective",
             "cost", "seed", "name", "split", "missing"}
  for k in options:
    if k not in allowed:
      raise ValueError(f"unknown option {k!r} of the table family; allowed: "
                       f"{', '.join(sorted(allowed))}")
  for k in ("table", "space"):
    if k not in options:
      raise ValueError(f"the table family needs option {k!r}")
  opts = dict(options)
  missing = opts.pop("missing", MISSING)
  if isinstance(missing, str) or not all(isinstance(m, str) for m in missing):
    raise ValueError(f"option 'missing' must be a list of strings, got {missing!r}")
  space = io.load(opts.pop("space"))
  table = read_columns(opts.pop("table"))
  return TableFamily(space, table, missing=tuple(missing), **opts)
