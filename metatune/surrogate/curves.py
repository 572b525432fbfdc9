"""Training examples from learning curves (in-context curve extrapolation), and a synthetic prior.

A fidelity-aware surrogate (``SurrogateConfig.fidelity``) reads context tokens
``[configuration, fidelity, value]`` and predicts a configuration's value at
any fidelity. `curve_batches` draws its training examples from a `TaskTable`
with curves, as freeze-thaw / ifBO-style in-context extrapolation does: a
context of ``k`` (uniform in ``0..max_context``) configurations, each showing
its full curve (probability ``full_prob``) or a random prefix of it, plus
``query_configs`` query configurations, each of which shows, with probability
``own_prob``, a random prefix (1 to F - 1 steps) of its own curve in the
context; each query asks for one later point of its configuration's curve
(the final value with probability ``final_prob``). Values are normalized by
the median and interquartile range of the context's finished points
(`data.normalizer` with ``robust``: early points of diverging runs are orders of
magnitude off), so `training.train` marks the model ``robust_units``.

`synthetic_curve_table` draws tasks of a simple prior of learning curves
(power-law decays towards a configuration's final value); the tests train on
it, and it can regularize a family with few tasks (`data.mixed_batches`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, sampling
from metatune.surrogate.data import Batch, TaskTable, make_table, normalizer


def curve_batches(space: Space, table: TaskTable, batch_tasks: int, max_context: int,
                  num_queries: int, scale_floor: float = 0.0, query_configs: int = 8,
                  own_prob: float = 0.7, full_prob: float = 0.5, final_prob: float = 0.5
                  ) -> Callable[[jax.Array], Batch]:
  """A jittable ``batch_fn(key) -> Batch`` of curve examples (see the module docstring).

  Every example has ``(max_context + query_configs) * F`` context slots (a
  mask says which hold points) and ``num_queries`` queries, spread over the
  query configurations in turn.

  Args:
    space: the space (for `sampling.featurize`).
    table: tasks with curves (``table.curve``).
    batch_tasks: examples per batch.
    max_context: most context configurations.
    num_queries: queries per example.
    scale_floor: see `data.normalizer`.
    query_configs: configurations the queries ask about.
    own_prob: probability that a query configuration shows a prefix of its curve.
    full_prob: probability that a context configuration shows its full curve.
    final_prob: probability that a query asks for the final value.

  Raises:
    ValueError: a table without curves, or too few configurations per task.

  Example:
    >>> fn = curve_batches(space, table, 16, 12, 16)            # doctest: +SKIP
    >>> batch = jax.jit(fn)(jax.random.key(0))                  # doctest: +SKIP
    >>> batch.f_ctx.shape                                       # doctest: +SKIP
    (16, 200)
  """
  if table.curve is None:
    raise ValueError("the table holds no learning curves (a meta-dataset of a family with a "
                     "fidelity has them)")
  need = max_context + query_configs
  if table.num_configs < need:
    raise ValueError(f"tasks hold {table.num_configs} configurations; max_context + "
                     f"query_configs = {need} needs at least that many")
  if query_configs < 1 or num_queries < 1:
    raise ValueError("query_configs and num_queries must be positive")
  arrays = jax.tree.map(jnp.asarray, table)
  f = table.curve.shape[-1]

  def one(key):
    perm_key, draw_key = jax.random.split(key)
    # One flat uniform draw for every choice: XLA on CPU compiles many small random draws
    # (under vmap) far more slowly than one.
    m, q = max_context, query_configs
    sizes = (1, 1, m, m, q, q, num_queries, num_queries)
    (u_task, u_k, u_full, u_len, u_own, u_own_len, u_final, u_step) = jnp.split(
        jax.random.uniform(draw_key, (sum(sizes),)), np.cumsum(sizes)[:-1])
    pick = lambda u, low, high: jnp.minimum(low + jnp.floor(u * (high - low)).astype(jnp.int32),
                                            high - 1)  # uniform in low..high - 1
    t = pick(u_task[0], 0, table.num_tasks)
    k = pick(u_k[0], 0, m + 1)
    rows = jax.random.permutation(perm_key, table.num_configs)[:need]
    ctx_len = jnp.where(u_full < full_prob, f, pick(u_len, 1, f + 1))
    ctx_len = jnp.where(jnp.arange(m) < k, ctx_len, 0)
    own_len = jnp.where(u_own < own_prob, jnp.minimum(pick(u_own_len, 1, max(f, 2)), f - 1), 0)
    lengths = jnp.concatenate([ctx_len, own_len])
    curve, failed = arrays.curve[t, rows], arrays.failed[t, rows]
    x = sampling.featurize(space, arrays.values[t, rows], arrays.active[t, rows])
    mask = (jnp.arange(f)[None, :] < lengths[:, None]).reshape(-1)
    y = curve.reshape(-1)
    fail = jnp.repeat(failed, f)
    loc, scale = normalizer(y, mask & ~fail, arrays.loc[t], arrays.scale[t], scale_floor,
                            robust=True)
    qrow = max_context + jnp.arange(num_queries) % query_configs
    first = lengths[qrow]
    step = jnp.where(u_final < final_prob, f - 1, pick(u_step, first, f))
    return Batch(jnp.repeat(x, f, axis=0), (y - loc) / scale, fail, mask, x[qrow],
                 (curve[qrow, step] - loc) / scale, failed[qrow], loc, scale,
                 jnp.tile(arrays.fidelity, need), arrays.fidelity[step])

  return lambda key: jax.vmap(one)(jax.random.split(key, batch_tasks))


def synthetic_curve_table(key: jax.Array, space: Space, num_tasks: int, num_configs: int,
                          num_steps: int = 10, noise: float = 0.01) -> TaskTable:
  """Tasks of a prior of learning curves that decay as power laws towards their final values.

  Per task: a random quadratic bowl gives each configuration's final value,
  ``s * sum_active (u - c)^2``; a random linear function of the configuration
  its amplitude ``a``, and a random exponent ``alpha`` in ``[0.3, 1]`` the
  decay: ``y(t) = final + a ((t / T)^-alpha - 1) + noise``, so curves cross
  and early values only partly rank the final ones.

  Args:
    key: PRNG key.
    space: the space of the configurations.
    num_tasks, num_configs: the table's size.
    num_steps: curve length T (fidelities ``(1..T) / T``).
    noise: observation noise per point, relative to the task's scale ``s``.

  Returns:
    A `TaskTable` with curves.

  Example:
    >>> table = synthetic_curve_table(jax.random.key(0), space, 8, 32)  # doctest: +SKIP
  """

  @jax.jit
  def draw(key):
    sample_key, task_key, noise_key = jax.random.split(key, 3)
    u, a = sampling.sample(sample_key, space, num_tasks * num_configs)
    u, a = u.reshape(num_tasks, num_configs, -1), a.reshape(num_tasks, num_configs, -1)
    d = u.shape[-1]
    sizes = (num_tasks * d, num_tasks * d, num_tasks, num_tasks, num_tasks)
    centre, w, s, amp, alpha = jnp.split(jax.random.uniform(task_key, (sum(sizes),)),
                                         np.cumsum(sizes)[:-1])  # one flat draw compiles fast
    centre = 0.2 + 0.6 * centre.reshape(num_tasks, 1, d)
    w = w.reshape(num_tasks, 1, d) / d
    s, amp, alpha = (0.5 + 2.5 * s)[:, None], (0.1 + 0.4 * amp)[:, None], 0.3 + 0.7 * alpha
    final = s * jnp.sum(jnp.where(a, (u - centre) ** 2, 0.0), axis=-1)
    amp = s * amp * (0.5 + jnp.sum(jnp.where(a, u * w, 0.0), axis=-1))
    frac = jnp.arange(1, num_steps + 1) / num_steps
    curve = final[..., None] + amp[..., None] * (frac ** -alpha[:, None, None] - 1.0)
    curve = curve + noise * s[..., None] * jax.random.normal(noise_key, curve.shape)
    return u, a, curve

  u, a, curve = (np.asarray(v) for v in draw(key))
  return make_table(u, a, curve[..., -1], np.zeros(curve.shape[:2], bool),
                    [f"curves-{i}" for i in range(num_tasks)], curve)
