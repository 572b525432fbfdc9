"""Studies of one tuner on one task, many seeds at once: live tasks and pools of recorded ones.

A task is data (a pytree from ``family.task_params``), so the function that runs
a tuner compiles once and serves every task of the family; pools of different
tasks are padded to one shape. Each run returns the best noise-free objective
after every trial (``inf`` before the first success), the failure flags and,
on pools, which record each trial took.

Pool runs draw without replacement. A tuner with an ``ask_pool`` method picks
records itself (random search: uniformly; GP-BO: by expected improvement over
the whole pool); any other tuner's proposals are moved to the nearest record
not taken yet.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from metatune.tuners.base import Evaluation, Points, Tuner, nearest_available
from metatune.tuners.run import run_tuning


def live_run(tuner: Tuner, family, budget: int) -> Callable:
  """``run(key, task) -> (best f32[budget], failed bool[budget])`` on a live jittable family.

  Regret is measured on ``family.clean`` of the proposals; a family whose ``noise_free``
  is true (its ``evaluate`` is its ``clean``, e.g. real training with one fixed key) gives
  the objectives the tuner saw, so they are not evaluated a second time.
  """
  steps = -(-budget // tuner.batch_size)
  d = tuner.space.num_params
  noise_free = family.noise_free

  def run(key, task):
    _, trace = run_tuning(key, tuner, lambda k, p: family.evaluate(k, task, p), steps)
    if noise_free:
      clean = jnp.where(trace.failed, jnp.nan, trace.objective).reshape(-1)[:budget]
    else:
      pts = Points(trace.points.values.reshape(-1, d)[:budget],
                   trace.points.active.reshape(-1, d)[:budget])
      clean = family.clean(task, pts)
    clean = jnp.where(jnp.isfinite(clean), clean, jnp.inf)
    return jax.lax.cummin(clean), trace.failed.reshape(-1)[:budget]

  return run


def pool_run(tuner: Tuner, family, budget: int) -> Callable:
  """``run(key, task) -> (best f32[budget], failed bool[budget], index i32[budget])`` on a pool.

  ``family.pool_data(task)`` gives the records, their objectives and which slots hold one.
  """
  space = tuner.space
  b = tuner.batch_size
  steps = -(-budget // b)
  ask_pool = getattr(tuner, "ask_pool", None)

  def run(key, task):
    pool, objective, valid = family.pool_data(task)
    init_key, loop_key = jax.random.split(key)

    def step(carry, _):
      state, available, key = carry
      key, ask_key, tell_key = jax.random.split(key, 3)
      if ask_pool is not None:
        idx, state = ask_pool(ask_key, state, pool, available)
      else:
        points, state = tuner.ask(ask_key, state)
        idx = nearest_available(space, pool, available, points)
      taken = Points(pool.values[idx], pool.active[idx])
      value = objective[idx]
      evaluation = Evaluation.of(value)
      state, _ = tuner.tell(tell_key, state, taken, evaluation)
      return (state, available.at[idx].set(False), key), (value, idx)

    carry = (tuner.init(init_key), valid, loop_key)
    _, (value, idx) = jax.lax.scan(step, carry, None, length=steps)
    value, idx = value.reshape(-1)[:budget], idx.reshape(-1)[:budget]
    failed = ~jnp.isfinite(value)
    return jax.lax.cummin(jnp.where(failed, jnp.inf, value)), failed, idx

  return run


def many_seeds(run: Callable, sequential: bool) -> Callable:
  """``runs(keys[S], task)``: ``run`` for every key, ``lax.map``ped or ``vmap``ped."""
  if sequential:
    return lambda keys, task: jax.lax.map(lambda k: run(k, task), keys)
  return jax.vmap(run, in_axes=(0, None))
