"""The optimizer of one configuration: a `lax.switch` over optax optimizers, hyperparameters injected.

Every branch is an ``optax.inject_hyperparams`` optimizer whose numeric
hyperparameters (b1, momentum, ...) are traced values and whose learning rate
is the configuration's schedule, so nothing about a configuration is a Python
value and a batch of configurations is one ``vmap``. The state holds every
branch's state; only the chosen branch's changes (under ``vmap`` all branches
run and the results are selected, which costs a few elementwise passes over the
parameters per step).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from metatune.tasks.training.hparams import BRANCHES, HParams


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


def switch(index: jax.Array, transforms: Sequence[optax.GradientTransformation]
           ) -> optax.GradientTransformation:
  """A transformation that applies ``transforms[index]`` (``index`` may be traced).

  Example:
    >>> opt = switch(jnp.int32(1), [optax.sgd(0.1), optax.adam(0.1)])
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = opt.update(params, opt.init(params), params)
  """
  transforms = tuple(transforms)

  def init(params):
    return tuple(t.init(params) for t in transforms)

  def update(updates, state, params=None):
    def branch(i):
      def fn(operands):
        grads, states, p = operands
        new_updates, new_state = transforms[i].update(grads, states[i], p)
        return new_updates, states[:i] + (new_state,) + states[i + 1:]
      return fn

    return jax.lax.switch(index, [branch(i) for i in range(len(transforms))],
                          (updates, state, params))

  return optax.GradientTransformation(init, update)


def optimizer(h: HParams, total_steps: int) -> optax.GradientTransformation:
  """The configuration's optimizer (branches in the order of ``BRANCHES``)."""
  lr = schedule(h, total_steps)
  inject = optax.inject_hyperparams
  branches = {
      "sgd": inject(optax.sgd)(learning_rate=lr, momentum=h.momentum),
      "sgd_nesterov": inject(optax.sgd)(learning_rate=lr, momentum=h.momentum, nesterov=True),
      "adam": inject(optax.adam)(learning_rate=lr, b1=h.b1, b2=h.b2, eps=h.adam_eps),
      "adamw": inject(optax.adamw)(learning_rate=lr, b1=h.b1, b2=h.b2, eps=h.adam_eps,
                                   weight_decay=h.adamw_decay),
      "rmsprop": inject(optax.rmsprop)(learning_rate=lr, decay=h.rms_decay, eps=h.rms_eps),
  }
  return switch(h.branch, [branches[name] for name in BRANCHES])
