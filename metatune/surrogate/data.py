"""Training data for the meta-surrogate: task tables, per-task normalization, context/query batches.

A `TaskTable` holds ``N`` evaluated configurations of each of ``T`` tasks. It
comes from a meta-dataset folder (`load_table`, the output of ``metatune
dataset build``) or from evaluating a family's tasks directly on random
configurations (`family_table`). A training example is one task: a random
context of ``k`` of its observations (``k`` uniform in ``0..max_context``) and
``num_queries`` other observations to predict, all normalized by the
context's mean and standard deviation (`normalizer`), so tasks of different
scales mix. Synthetic families can instead be sampled afresh at every step
(`family_batches`). Tables of meta-datasets with learning curves also hold the
curves; `curves.curve_batches` trains on their points.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, SpaceError, sampling
from metatune.tuners.base import Points
from metatune.tuners.gp_model import masked_moments


@flax.struct.dataclass
class TaskTable:
  """Observations of ``T`` tasks, ``N`` configurations each.

  Attributes:
    values, active: f32[T, N, D], bool[T, N, D] the configurations.
    objective: f32[T, N] minimized objective (finite where not failed).
    failed: bool[T, N].
    loc, scale: f32[T] mean and standard deviation of each task's finished
      observations (the units of predictions from an almost empty context).
    task_ids: the tasks' ids (static).
    curve: f32[T, N, F] the objective after each fidelity step (the last is
      ``objective``; finite, failed rows hold the task's worst final value),
      or None.
    fidelity: f32[F] each step's fraction of the largest fidelity (``epoch /
      epochs``), or None.
  """
  values: jax.Array
  active: jax.Array
  objective: jax.Array
  failed: jax.Array
  loc: jax.Array
  scale: jax.Array
  task_ids: tuple[str, ...] = flax.struct.field(pytree_node=False)
  curve: jax.Array | None = None
  fidelity: jax.Array | None = None

  @property
  def has_curves(self) -> bool:
    """Whether the table holds curves of more than one fidelity step."""
    return self.curve is not None and self.curve.shape[-1] > 1

  @property
  def num_tasks(self) -> int:
    return self.objective.shape[0]

  @property
  def num_configs(self) -> int:
    return self.objective.shape[1]

  def select(self, task_ids: Sequence[str]) -> "TaskTable":
    """The table restricted to ``task_ids`` (in that order).

    Raises:
      ValueError: naming a task the table does not hold.
    """
    index = {t: i for i, t in enumerate(self.task_ids)}
    missing = [t for t in task_ids if t not in index]
    if missing:
      raise ValueError(f"tasks not in the table: {', '.join(missing[:5])}")
    rows = np.asarray([index[t] for t in task_ids], np.int32)
    return TaskTable(self.values[rows], self.active[rows], self.objective[rows],
                     self.failed[rows], self.loc[rows], self.scale[rows], tuple(task_ids),
                     None if self.curve is None else self.curve[rows], self.fidelity)


def make_table(values, active, objective, failed, task_ids: Sequence[str], curve=None,
               fidelity=None) -> TaskTable:
  """Builds a table, cleaning objectives and computing each task's ``loc`` and ``scale``.

  Non-finite objectives count as failed; a failed objective is stored as the
  task's worst finished value (it is never a target). Curve points of failed
  rows and non-finite points are stored as that value too.

  Args:
    values, active: f32[T, N, D], bool[T, N, D].
    objective: f[T, N] minimized.
    failed: bool[T, N].
    task_ids: the T ids.
    curve: optional f[T, N, F] learning curves.
    fidelity: f[F] the curves' fidelity fractions (default ``(1..F) / F``).

  Raises:
    ValueError: shapes that do not agree, or a task with no finished observation.

  Example:
    >>> t = make_table(np.zeros((1, 3, 2)), np.ones((1, 3, 2), bool), [[1., 2., np.nan]],
    ...                np.zeros((1, 3), bool), ["task"])
    >>> t.failed.tolist(), float(t.loc[0])
    ([[False, False, True]], 1.5)
  """
  values = np.asarray(values, np.float32)
  active = np.asarray(active, bool)
  objective = np.asarray(objective, np.float64)
  failed = np.asarray(failed, bool) | ~np.isfinite(objective)
  t, n = objective.shape
  if values.shape[:2] != (t, n) or active.shape != values.shape or failed.shape != (t, n):
    raise ValueError(f"table shapes disagree: values {values.shape}, active {active.shape}, "
                     f"objective {objective.shape}, failed {failed.shape}")
  if len(task_ids) != t:
    raise ValueError(f"{len(task_ids)} task ids for {t} tasks")
  ok = ~failed
  empty = [task_ids[i] for i in range(t) if ok[i].sum() == 0]
  if empty:
    raise ValueError(f"tasks without a single finished evaluation: {', '.join(empty[:5])}")
  loc = np.array([objective[i][ok[i]].mean() for i in range(t)])
  scale = np.array([objective[i][ok[i]].std(ddof=1) if ok[i].sum() > 1 else 1.0
                    for i in range(t)])
  scale = np.maximum(scale, 1e-6 * (1.0 + np.abs(loc)))
  worst = np.array([objective[i][ok[i]].max() for i in range(t)])
  objective = np.where(failed, worst[:, None], objective)
  if curve is not None:
    curve = np.asarray(curve, np.float64)
    if curve.shape[:2] != (t, n) or curve.ndim != 3:
      raise ValueError(f"curve shape {curve.shape} does not fit {t} tasks x {n} configurations")
    bad = failed[..., None] | ~np.isfinite(curve)
    curve = np.where(bad, worst[:, None, None], curve).astype(np.float32)
    f = curve.shape[-1]
    fidelity = (np.arange(1, f + 1) / f if fidelity is None else
                np.asarray(fidelity, np.float64)).astype(np.float32)
    if fidelity.shape != (f,):
      raise ValueError(f"fidelity shape {fidelity.shape} does not fit curves of {f} steps")
  return TaskTable(values, active, objective.astype(np.float32), failed,
                   loc.astype(np.float32), scale.astype(np.float32), tuple(task_ids), curve,
                   None if curve is None else fidelity)


def load_table(folder: str | os.PathLike, space: Space | None = None,
               splits: Sequence[str] | None = None) -> tuple[TaskTable, dict[str, str]]:
  """Reads a meta-dataset folder written by ``metatune dataset build``.

  Args:
    folder: the dataset folder.
    space: when given, the dataset's space signature must match it.
    splits: keep only tasks of these splits (default: all finished tasks).

  Returns:
    The table of finished tasks and ``{task_id: split}``; with the curves when
    the family has a fidelity (the fractions from the manifest's fidelity
    values divided by the largest).

  Raises:
    SpaceError: not a dataset folder, another space, or no finished task; the
      message names the folder.

  Example:
    >>> table, split_of = load_table(".cache_data/training_small")  # doctest: +SKIP
    >>> ids = [t for t, s in split_of.items() if s == "meta_train"]  # doctest: +SKIP
  """
  from metatune.data import builder  # pylint: disable=import-outside-toplevel
  folder = pathlib.Path(folder)
  data = builder.load(folder)
  manifest = data["manifest"]
  if space is not None and manifest.get("space_signature") != space.signature:
    raise SpaceError(f"the dataset's space (signature {manifest.get('space_signature')}) is not "
                     f"the surrogate's ({space.signature})", str(folder))
  split_of = {t: info["split"] for t, info in manifest["tasks"].items()}
  ids = sorted(t for t in data["tasks"] if splits is None or split_of.get(t) in splits)
  if not ids:
    raise SpaceError("no finished task" + (f" of split(s) {', '.join(splits)}" if splits else "")
                     + " in the dataset", str(folder))
  arrays = [data["tasks"][t] for t in ids]
  sizes = {a["objective"].shape[0] for a in arrays}
  if len(sizes) != 1:
    raise SpaceError(f"tasks hold different numbers of configurations {sorted(sizes)}",
                     str(folder))
  stack = lambda name: np.stack([a[name] for a in arrays])
  curve = fidelity = None
  fid = manifest.get("fidelity")
  if fid and all("curve" in a for a in arrays):
    curve = stack("curve")
    steps = np.asarray(fid["values"], np.float64)
    fidelity = steps / steps.max() if steps.shape == curve.shape[-1:] else None
  try:
    table = make_table(stack("values"), stack("active"), stack("objective"), stack("failed"),
                       ids, curve, fidelity)
  except ValueError as e:
    raise SpaceError(str(e), str(folder)) from None
  return table, {t: split_of[t] for t in ids}


def family_table(key: jax.Array, family, task_ids: Sequence[str], num_configs: int,
                 batch_size: int = 4096) -> TaskTable:
  """Evaluates ``num_configs`` random configurations (fresh for each task) on each task.

  YAHPO and synthetic families are evaluated in one ``vmap`` over tasks (their
  tasks are data); other families task by task through
  ``family.task(id).evaluate`` (jitted once per task).

  Args:
    key: PRNG key.
    family: a `TaskFamily`.
    task_ids: the tasks.
    num_configs: configurations per task.
    batch_size: configurations per evaluation call.

  Returns:
    The `TaskTable`.

  Example:
    >>> table = family_table(key, family, family.splits()["meta_train"], 1024)  # doctest: +SKIP
  """
  space = family.space
  sample_key, eval_key = jax.random.split(key)
  t = len(task_ids)
  values, active = jax.jit(lambda k: sampling.sample(k, space, t * num_configs))(sample_key)
  values = np.asarray(values).reshape(t, num_configs, -1)
  active = np.asarray(active).reshape(t, num_configs, -1)
  obj = np.zeros((t, num_configs), np.float32)
  failed = np.zeros((t, num_configs), bool)
  chunks = range(0, num_configs, batch_size)
  from metatune.tasks.synthetic import SyntheticFamily  # pylint: disable=import-outside-toplevel
  if isinstance(family, SyntheticFamily):
    known = set(family.task_ids())
    bad = [t for t in task_ids if t not in known]
    if bad:
      raise ValueError(f"unknown task(s) of family {family.name!r}: {', '.join(bad[:5])}")
    index = jnp.asarray([int(t.rsplit("-", 1)[1]) for t in task_ids])
    seed_key = jax.random.key(family.config.seed)

    @jax.jit
    def run_synthetic(key, u, a):
      # The same task parameters as ``family.task(id)``.
      params = jax.vmap(lambda i: family.sample(jax.random.fold_in(seed_key, i)))(index)
      ev = jax.vmap(family.evaluate)(jax.random.split(key, len(task_ids)), params,
                                     Points(u, a))
      return ev.objective, ev.failed

    obj[:], failed[:] = (np.asarray(x) for x in run_synthetic(eval_key, values, active))
  elif hasattr(family, "instance_code"):  # YAHPO: tasks are data
    codes = jnp.asarray([family.instance_code(i) for i in task_ids], jnp.int32)

    @jax.jit
    def run(key, u, a):
      metrics = jax.vmap(lambda c, uu, aa: family.metrics(key, Points(uu, aa), c))(codes, u, a)
      return metrics.objective, metrics.failed

    for j, lo in enumerate(chunks):
      o, f = run(jax.random.fold_in(eval_key, j), values[:, lo:lo + batch_size],
                 active[:, lo:lo + batch_size])
      obj[:, lo:lo + batch_size], failed[:, lo:lo + batch_size] = np.asarray(o), np.asarray(f)
  else:
    for i, task_id in enumerate(task_ids):
      evaluate = jax.jit(family.task(task_id).evaluate)
      for j, lo in enumerate(chunks):
        k = jax.random.fold_in(jax.random.fold_in(eval_key, i), j)
        m = evaluate(k, Points(values[i, lo:lo + batch_size], active[i, lo:lo + batch_size]))
        obj[i, lo:lo + batch_size] = np.asarray(m.objective)
        failed[i, lo:lo + batch_size] = np.asarray(m.failed)
  return make_table(values, active, obj, failed, list(task_ids))


# ------------------------------------------------------------ normalization
def normalizer(objective: jax.Array, ok: jax.Array, prior_loc: jax.Array, prior_scale: jax.Array,
               scale_floor: float | jax.Array = 0.0, robust: bool = False
               ) -> tuple[jax.Array, jax.Array]:
  """``(loc, scale)`` of a context: mean and sd of its ``ok`` entries (the prior below 2).

  Args:
    objective: f32[K].
    ok: bool[K] finished observations in the context.
    prior_loc, prior_scale: f32[] the units used when fewer than 2 are finished.
    scale_floor: the smallest scale (objective units). A context that happens
      to be nearly constant (a plateau of equal accuracies) would otherwise
      blow every other value up to huge normalized values.
    robust: median and interquartile range / 1.349 (the sd where the IQR is
      0) instead of mean and sd (fidelity models, `SurrogateConfig.robust_units`):
      a context of learning curves mixes early points of diverging runs, orders
      of magnitude above the rest, that would squash every other value to 0.

  Returns:
    ``(loc f32[], scale f32[])``; the scale is at least ``scale_floor`` and
    ``1e-6 (1 + |loc|)``.

  Example:
    >>> normalizer(jnp.array([1., 3.]), jnp.array([True, True]), 0., 1.)  # doctest: +SKIP
    (Array(2.), Array(1.4142135))
  """
  n = jnp.sum(ok)
  mu, var = masked_moments(objective, ok)
  sd = jnp.sqrt(var)
  if robust:
    ranked = jnp.sort(jnp.where(ok, objective, jnp.inf))
    last = jnp.maximum(n - 1, 0)

    def quantile(p):  # linear interpolation among the n finished values
      pos = p * last
      lo = jnp.floor(pos).astype(jnp.int32)
      w = pos - lo
      return (1.0 - w) * ranked[lo] + w * ranked[jnp.minimum(lo + 1, last)]

    mu = quantile(0.5)
    iqr = (quantile(0.75) - quantile(0.25)) / 1.349
    sd = jnp.where(iqr > 0, iqr, sd)
  enough = n >= 2
  loc = jnp.where(enough, mu, prior_loc)
  scale = jnp.where(enough, sd, prior_scale)
  return loc, jnp.maximum(jnp.maximum(scale, scale_floor), 1e-6 * (1.0 + jnp.abs(loc)))


def default_scale_floor(table: TaskTable, fraction: float = 0.05) -> float:
  """A family-level scale floor: ``fraction`` of the median of the tasks' objective sds."""
  return float(fraction * np.median(np.asarray(table.scale)))


@flax.struct.dataclass
class Batch:
  """Training examples, one task each (leading axis ``B``).

  Attributes:
    x_ctx: f32[B, K, F] context features; z_ctx f32[B, K] normalized objectives;
    fail_ctx, mask_ctx: bool[B, K].
    x_q: f32[B, Q, F]; z_q f32[B, Q]; fail_q bool[B, Q].
    loc, scale: f32[B] the normalization (objective = loc + scale * z).
    f_ctx, f_q: f32[B, K], f32[B, Q] fidelity fractions of the context and
      the queries (`curves.curve_batches`), or None (final values only).
  """
  x_ctx: jax.Array
  z_ctx: jax.Array
  fail_ctx: jax.Array
  mask_ctx: jax.Array
  x_q: jax.Array
  z_q: jax.Array
  fail_q: jax.Array
  loc: jax.Array
  scale: jax.Array
  f_ctx: jax.Array | None = None
  f_q: jax.Array | None = None


def make_example(space: Space, values, active, objective, failed, num_context,
                 prior_loc, prior_scale, max_context: int, scale_floor: float = 0.0) -> Batch:
  """One example from ``max_context + Q`` rows: the first ``num_context`` are the context.

  Args:
    space: the space (for `sampling.featurize`).
    values, active: f32[M, D], bool[M, D] with ``M = max_context + Q``.
    objective, failed: f32[M], bool[M].
    num_context: i32[] how many of the first ``max_context`` rows are context.
    prior_loc, prior_scale: units when the context has fewer than 2 finished rows.
    max_context: K.
    scale_floor: see `normalizer`.

  Returns:
    An unbatched `Batch`.
  """
  x = sampling.featurize(space, values, active)
  mask = jnp.arange(max_context) < num_context
  fail_ctx = failed[:max_context]
  loc, scale = normalizer(objective[:max_context], mask & ~fail_ctx, prior_loc, prior_scale,
                          scale_floor)
  z = (objective - loc) / scale
  return Batch(x[:max_context], z[:max_context], fail_ctx, mask, x[max_context:],
               z[max_context:], failed[max_context:], loc, scale)


def table_batches(space: Space, table: TaskTable, batch_tasks: int, max_context: int,
                  num_queries: int, scale_floor: float = 0.0) -> Callable[[jax.Array], Batch]:
  """A jittable ``batch_fn(key) -> Batch`` drawing examples from ``table``.

  Each example picks a task uniformly, a random permutation of its rows, a
  context size uniform in ``0..max_context`` and the next ``num_queries`` rows
  as queries. ``scale_floor``: see `normalizer` (the trained surrogate must use the same).

  Raises:
    ValueError: when the table has fewer than ``max_context + num_queries`` rows per task.

  Example:
    >>> batch = jax.jit(table_batches(space, table, 16, 32, 32))(key)  # doctest: +SKIP
  """
  need = max_context + num_queries
  if table.num_configs < need:
    raise ValueError(f"tasks hold {table.num_configs} configurations; max_context + num_queries "
                     f"= {need} needs at least that many (lower --max-context or queries)")
  arrays = jax.tree.map(jnp.asarray, table)

  def one(key):
    task_key, perm_key, k_key = jax.random.split(key, 3)
    t = jax.random.randint(task_key, (), 0, table.num_tasks)
    rows = jax.random.permutation(perm_key, table.num_configs)[:need]
    k = jax.random.randint(k_key, (), 0, max_context + 1)
    return make_example(space, arrays.values[t, rows], arrays.active[t, rows],
                        arrays.objective[t, rows], arrays.failed[t, rows], k, arrays.loc[t],
                        arrays.scale[t], max_context, scale_floor)

  return lambda key: jax.vmap(one)(jax.random.split(key, batch_tasks))


def family_batches(family, batch_tasks: int, max_context: int, num_queries: int,
                   scale_floor: float = 0.0) -> Callable[[jax.Array], Batch]:
  """A jittable ``batch_fn(key) -> Batch`` of fresh tasks of a ``sample``/``evaluate`` family.

  For families whose tasks are data (`SyntheticFamily`): every example is a new
  task with new random configurations. The task's own units (``loc``,
  ``scale`` for small contexts) are estimated from the example's rows.

  Example:
    >>> fn = family_batches(SyntheticFamily(default_space()), 16, 48, 64)  # doctest: +SKIP
  """
  space = family.space
  need = max_context + num_queries

  def one(key):
    task_key, sample_key, eval_key, k_key = jax.random.split(key, 4)
    task = family.sample(task_key)
    u, a = sampling.sample(sample_key, space, need)
    ev = family.evaluate(eval_key, task, Points(u, a))
    failed = ev.failed | ~jnp.isfinite(ev.objective)
    ok = ~failed
    y = jnp.where(ok, ev.objective, jnp.max(jnp.where(ok, ev.objective, -jnp.inf)))
    y = jnp.where(jnp.isfinite(y), y, 0.0)
    loc, scale = normalizer(y, ok, jnp.float32(0.0), jnp.float32(1.0))
    k = jax.random.randint(k_key, (), 0, max_context + 1)
    return make_example(space, u, a, y, failed, k, loc, scale, max_context, scale_floor)

  return lambda key: jax.vmap(one)(jax.random.split(key, batch_tasks))


def mixed_batches(*batch_fns: Callable[[jax.Array], Batch]) -> Callable[[jax.Array], Batch]:
  """One ``batch_fn`` whose examples concatenate those of ``batch_fns`` (same K and Q).

  For example real tasks plus synthetic tasks over the same space, a prior that
  regularizes a family with few tasks.

  Example:
    >>> fn = mixed_batches(table_batches(space, table, 8, 32, 32),
    ...                    family_batches(SyntheticFamily(space), 8, 32, 32))  # doctest: +SKIP
  """
  def fn(key):
    keys = jax.random.split(key, len(batch_fns))
    parts = [f(k) for f, k in zip(batch_fns, keys)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
  return fn


def describe(table: TaskTable) -> dict[str, Any]:
  """A JSON-able summary of a table (for training records)."""
  return {"tasks": table.num_tasks, "configs_per_task": table.num_configs,
          "failed_fraction": float(np.mean(np.asarray(table.failed)))}
