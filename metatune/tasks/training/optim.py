"""The optimizer of one configuration: sgd, adam, adamw or rmsprop chosen by a traced index.

All four share one state (a first and a second moment) and one elementwise
update that computes each optimizer's direction and selects by index, in the
exact arithmetic of ``optax.sgd`` (momentum, nesterov), ``optax.adam``,
``optax.adamw`` and ``optax.rmsprop`` (the tests compare them). The whole
optimizer is an optax chain built by `choice_optimizer` and wrapped in
``optax.inject_hyperparams``, so the choice, every numeric hyperparameter and
the learning-rate schedule are traced values and a batch of configurations is
one ``vmap``.

Why not ``lax.switch`` over the optax optimizers: under ``vmap`` a switch runs
every branch and selects every leaf of every branch's state; measured on the
default MLP family (256 configurations, 2 CPU cores) that cost about as much
as the network's own forward and backward pass. The shared state costs two
moments per parameter and one fused elementwise pass.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metatune.tasks.training.hparams import BRANCHES, HParams

SGD, SGD_NESTEROV, ADAM, ADAMW, RMSPROP = (BRANCHES.index(b) for b in BRANCHES)


def schedule(h: HParams, total_steps: int) -> Callable[[jax.Array], jax.Array]:
  """The learning rate at a step count: constant, warmup + cosine, or exponential decay.

  Args:
    h: the configuration.
    total_steps: steps of the whole training run (static).

  Returns:
    ``count -> f32[]`` (jittable; reads ``h`` as traced values).
  """
  total = float(max(total_steps, 1))

  def fn(count):
    t = jnp.asarray(count, jnp.float32)
    warm = h.warmup * total
    ramp = jnp.where(warm > 0, jnp.minimum((t + 1.0) / jnp.maximum(warm, 1.0), 1.0), 1.0)
    frac = jnp.clip((t - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
    cosine = ramp * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    exponential = h.decay_rate ** (t / total)
    factor = jnp.stack([jnp.ones_like(t), cosine, exponential])[h.schedule]
    return h.lr * factor

  return fn


class ScaleByChoiceState(NamedTuple):
  count: jax.Array  # i32[]
  mu: optax.Updates
  nu: optax.Updates


def scale_by_choice(branch: jax.Array, momentum: jax.Array, b1: jax.Array, b2: jax.Array,
                    adam_eps: jax.Array, rms_decay: jax.Array, rms_eps: jax.Array
                    ) -> optax.GradientTransformation:
  """The direction of sgd with momentum (plain or nesterov), adam or rmsprop, by ``branch``.

  Args:
    branch: i32[] index into ``BRANCHES`` (adam and adamw share the direction).
    momentum: sgd's momentum (``optax.trace`` decay).
    b1, b2, adam_eps: adam's moment decays and epsilon (outside the root).
    rms_decay, rms_eps: rmsprop's decay and epsilon (inside the root, optax's default).

  Returns:
    An optax transformation (not yet scaled by the learning rate).

  Example:
    >>> t = scale_by_choice(jnp.int32(ADAM), 0.0, 0.9, 0.999, 1e-8, 0.9, 1e-8)
    >>> g = {"w": jnp.ones(3)}
    >>> direction, state = t.update(g, t.init(g))
  """
  sgd = (branch == SGD) | (branch == SGD_NESTEROV)
  adam = (branch == ADAM) | (branch == ADAMW)
  decay1 = jnp.where(sgd, momentum, jnp.where(adam, b1, 0.0))
  gain1 = jnp.where(adam, 1.0 - b1, 1.0)
  decay2 = jnp.where(adam, b2, rms_decay)

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return ScaleByChoiceState(jnp.zeros([], jnp.int32), zeros, zeros)

  def update(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    # sgd: mu is optax.trace's trace; adam: the first moment; rmsprop: unused (the gradient).
    mu = jax.tree.map(lambda g, m: decay1 * m + gain1 * g, updates, state.mu)
    nu = jax.tree.map(lambda g, n: decay2 * n + (1.0 - decay2) * g * g, updates, state.nu)
    correct1, correct2 = 1.0 - b1 ** t, 1.0 - b2 ** t

    def direction(g, m, n):
      sgd_dir = jnp.where(branch == SGD_NESTEROV, g + momentum * m, m)
      adam_dir = (m / correct1) / (jnp.sqrt(n / correct2) + adam_eps)
      rms_dir = g * jax.lax.rsqrt(n + rms_eps)
      return jnp.where(sgd, sgd_dir, jnp.where(adam, adam_dir, rms_dir))

    return jax.tree.map(direction, updates, mu, nu), ScaleByChoiceState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def choice_optimizer(learning_rate, branch, momentum, b1, b2, adam_eps, adamw_decay, rms_decay,
                     rms_eps) -> optax.GradientTransformation:
  """Direction, adamw's decoupled weight decay (0 unless adamw), then the learning rate."""
  return optax.chain(
      scale_by_choice(branch, momentum, b1, b2, adam_eps, rms_decay, rms_eps),
      optax.add_decayed_weights(jnp.where(branch == ADAMW, adamw_decay, 0.0)),
      optax.scale_by_learning_rate(learning_rate))


def optimizer(h: HParams, total_steps: int) -> optax.GradientTransformation:
  """The configuration's optimizer, hyperparameters injected (visible in its state)."""
  return optax.inject_hyperparams(choice_optimizer)(
      learning_rate=schedule(h, total_steps), branch=h.branch, momentum=h.momentum, b1=h.b1,
      b2=h.b2, adam_eps=h.adam_eps, adamw_decay=h.adamw_decay, rms_decay=h.rms_decay,
      rms_eps=h.rms_eps)
