"""A whole tuning run as one `lax.scan`: the unit that meta-training and evaluation vmap."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from metatune.tuners.base import Evaluation, Points, Tuner

ObjectiveFn = Callable[[jax.Array, Points], Evaluation]


@flax.struct.dataclass
class Trace:
  """Per-step record of a run: ``objective f32[T, B]``, ``failed bool[T, B]``, ``best f32[T]``."""
  objective: jax.Array
  failed: jax.Array
  best: jax.Array
  points: Points


def run_tuning(key: jax.Array, tuner: Tuner, objective_fn: ObjectiveFn, num_steps: int
               ) -> tuple[Any, Trace]:
  """Runs ``num_steps`` ask/evaluate/tell rounds of ``tuner`` on a jittable objective.

  Args:
    key: PRNG key.
    tuner: the tuner.
    objective_fn: ``(key, Points) -> Evaluation`` for a batch.
    num_steps: number of rounds (``num_steps * tuner.batch_size`` trials).

  Returns:
    The final tuner state and the `Trace`.

  Example:
    >>> run = jax.jit(lambda k: run_tuning(k, tuner, fn, 20))  # doctest: +SKIP
  """
  init_key, loop_key = jax.random.split(key)
  state = tuner.init(init_key)

  # The key rides in the carry rather than as scanned-over keys: JAX's key-reuse
  # checker wrongly flags a vmapped scan over an array of keys.
  def step(carry, _):
    state, key = carry
    key, ask_key, eval_key, tell_key = jax.random.split(key, 4)
    points, state = tuner.ask(ask_key, state)
    evaluation = objective_fn(eval_key, points)
    evaluation = Evaluation.of(evaluation.objective, evaluation.failed)
    state, metrics = tuner.tell(tell_key, state, points, evaluation)
    return (state, key), Trace(evaluation.objective, evaluation.failed,
                               metrics["best_objective"], points)

  (state, _), trace = jax.lax.scan(step, (state, loop_key), None, length=num_steps)
  return state, trace


def best_so_far(trace: Trace) -> jax.Array:
  """f32[T * B]: the best non-failed objective after each trial (``inf`` before the first)."""
  obj = jnp.where(trace.failed, jnp.inf, trace.objective).reshape(
      trace.objective.shape[:-2] + (-1,))
  return jax.lax.cummin(obj, axis=obj.ndim - 1)
