"""The functional tuner interface and the fixed-size history every tuner keeps."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from metatune.space import Space


@flax.struct.dataclass
class Points:
  """A batch of encoded configurations: ``values f32[B, D]``, ``active bool[B, D]``."""
  values: jax.Array
  active: jax.Array


@flax.struct.dataclass
class Evaluation:
  """What a task returned for a batch: ``objective f32[B]`` (minimized), ``failed bool[B]``.

  A failed evaluation (flagged, NaN or inf) is recorded but never becomes the incumbent.
  """
  objective: jax.Array
  failed: jax.Array

  @classmethod
  def of(cls, objective: jax.Array, failed: jax.Array | None = None) -> "Evaluation":
    objective = jnp.asarray(objective, jnp.float32)
    bad = ~jnp.isfinite(objective)
    failed = bad if failed is None else (jnp.asarray(failed, bool) | bad)
    return cls(objective, failed)


@flax.struct.dataclass
class History:
  """The last ``capacity`` observations (a ring buffer) and the best ever seen.

  Attributes:
    values, active: f32[H, D], bool[H, D].
    objective: f32[H]; ``inf`` for failed or empty slots.
    failed: bool[H].
    count: i32[] observations ever added (the slot of the next one is ``count % H``).
    best_values, best_active, best_objective: the incumbent (``inf`` when none).
    num_failed: i32[].
  """
  values: jax.Array
  active: jax.Array
  objective: jax.Array
  failed: jax.Array
  count: jax.Array
  best_values: jax.Array
  best_active: jax.Array
  best_objective: jax.Array
  num_failed: jax.Array

  @property
  def capacity(self) -> int:
    return self.objective.shape[-1]

  @property
  def valid(self) -> jax.Array:
    """bool[H]: the slot holds an observation."""
    return jnp.arange(self.capacity) < self.count


def history_init(space: Space, capacity: int) -> History:
  d = space.num_params
  return History(
      values=jnp.zeros((capacity, d), jnp.float32),
      active=jnp.zeros((capacity, d), bool),
      objective=jnp.full((capacity,), jnp.inf, jnp.float32),
      failed=jnp.zeros((capacity,), bool),
      count=jnp.zeros((), jnp.int32),
      best_values=jnp.zeros((d,), jnp.float32),
      best_active=jnp.zeros((d,), bool),
      best_objective=jnp.full((), jnp.inf, jnp.float32),
      num_failed=jnp.zeros((), jnp.int32),
  )


def history_add(h: History, points: Points, evaluation: Evaluation) -> tuple[History, dict]:
  """Appends a batch; returns the new history and metrics (best, failures, improvement)."""
  obj = jnp.asarray(evaluation.objective, jnp.float32)
  failed = jnp.asarray(evaluation.failed, bool) | ~jnp.isfinite(obj)
  obj = jnp.where(failed, jnp.inf, obj)
  b = obj.shape[0]
  slots = (h.count + jnp.arange(b)) % h.capacity
  batch_best = jnp.argmin(obj)
  improved = obj[batch_best] < h.best_objective
  new = h.replace(
      values=h.values.at[slots].set(points.values),
      active=h.active.at[slots].set(points.active),
      objective=h.objective.at[slots].set(obj),
      failed=h.failed.at[slots].set(failed),
      count=h.count + b,
      best_values=jnp.where(improved, points.values[batch_best], h.best_values),
      best_active=jnp.where(improved, points.active[batch_best], h.best_active),
      best_objective=jnp.where(improved, obj[batch_best], h.best_objective),
      num_failed=h.num_failed + failed.sum(dtype=jnp.int32),
  )
  metrics = {
      "best_objective": new.best_objective,
      "num_failed": new.num_failed,
      "count": new.count,
      "improved": improved,
  }
  return new, metrics


class Tuner(NamedTuple):
  """A tuner: pure functions over an explicit state.

  Attributes:
    init: ``init(key) -> state``.
    ask: ``ask(key, state) -> (Points, state)``: a batch of proposals.
    tell: ``tell(key, state, points, evaluation) -> (state, metrics)``.
    space: the space it proposes in.
    batch_size: number of proposals per ask.
    name: label for reports.
    sequential: a hint for code that runs many studies at once: run them one
      after another (``lax.map``) rather than ``vmap``ped, because ``ask`` or
      ``tell`` branch on the state (``lax.cond``), which ``vmap`` turns into
      computing every branch.
    ask_pool: optional ``ask_pool(key, state, pool, available) -> (index i32[B], state)``:
      proposals chosen among a finite pool of configurations (``pool`` Points
      ``[N, D]``, ``available bool[N]`` the ones not taken), distinct within a
      batch; tuners without it get their proposals moved to the nearest
      available record (`metatune.evaluation.runs`).
  """
  init: Callable[[jax.Array], Any]
  ask: Callable[[jax.Array, Any], tuple[Points, Any]]
  tell: Callable[[jax.Array, Any, Points, Evaluation], tuple[Any, dict]]
  space: Space
  batch_size: int
  name: str
  sequential: bool = False
  ask_pool: Callable[..., tuple[jax.Array, Any]] | None = None


def pool_draw(key: jax.Array, available: jax.Array, num: int) -> jax.Array:
  """i32[num]: distinct indices drawn uniformly among the ``available`` ones (Gumbel top-k)."""
  g = jax.random.gumbel(key, available.shape)
  return jax.lax.top_k(jnp.where(available, g, -jnp.inf), num)[1]


def tell_history(key: jax.Array, state: Any, points: Points, evaluation: Evaluation):
  """A ``tell`` for tuners whose state has a ``history`` field and learns nothing else."""
  del key
  history, metrics = history_add(state.history, points, evaluation)
  return state.replace(history=history), metrics


def same_config(values: jax.Array, active: jax.Array, ref_values: jax.Array,
                ref_active: jax.Array) -> jax.Array:
  """bool[..., K]: which of ``K`` reference configurations (``ref_values f32[K, D]``,
  ``ref_active``) each configuration (``values f32[..., D]``, ``active``) is: the same active
  flags and values within 1e-6 in total."""
  d = jnp.sum(jnp.abs(ref_values - values[..., None, :]), -1) + jnp.sum(
      ref_active != active[..., None, :], -1)
  return d < 1e-6


def nearest_available(space: Space, pool: Points, available: jax.Array, points: Points
                      ) -> jax.Array:
  """i32[B]: for each point in turn, the nearest record not yet taken (in `featurize` space).

  Points of one batch take distinct records.
  """
  from metatune.space import sampling  # pylint: disable=import-outside-toplevel
  feats = sampling.featurize(space, pool.values, pool.active)
  f = sampling.featurize(space, points.values, points.active)
  d = (jnp.sum(f * f, -1)[:, None] + jnp.sum(feats * feats, -1)[None, :] - 2.0 * f @ feats.T)

  def one(avail, row):
    j = jnp.argmin(jnp.where(avail, row, jnp.inf))
    return avail.at[j].set(False), j

  _, idx = jax.lax.scan(one, available, d)
  return idx
