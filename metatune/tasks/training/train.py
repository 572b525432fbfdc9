"""Trains one configuration as a pure function, so a batch of configurations is one ``vmap``.

``make_train(setup)`` returns ``train(key, values, active, data) -> Metrics``
(scalar fields; ``jax.vmap`` over the first three arguments gives a batch), in
the purejaxrl style: nested ``lax.scan`` over epochs and steps, no Python in
the loop. What differs between configurations is data, never shape:

- continuous hyperparameters reach optax through ``inject_hyperparams``, the
  optimizer is a ``lax.switch`` and the schedule is computed from the step
  count (`optim`);
- depth, widths, activation and dropout are masks over the maximal network
  (`models`);
- the batch size masks a fixed maximal batch: each step draws ``max_batch``
  indices (with replacement) and averages the loss over the first
  ``batch_size``. An epoch is a fixed number of steps for every configuration.

A configuration whose loss or parameters become non-finite is flagged failed
with reason ``diverged``; its objective, curve and test objective are then the
worst value (classification error 1, or the regression MSE of the training
mean, 1 after standardization), never NaN.

Cost is in FLOPs of the live architecture (not the padded one): forward and
backward for every example of every batch, forward for every evaluated
example. Memory is an estimate in bytes (float32) of parameters, gradients,
optimizer moments and one batch's activations and their gradients.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from metatune.space import Space
from metatune.tasks.base import REASON_CODE, Metrics
from metatune.tasks.training import hparams as hp
from metatune.tasks.training import models, optim
from metatune.tasks.training.data import Data


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """Everything static about a training run (hashable: one compiled function per setup).

  Attributes:
    space: the training space (passed `hparams.check_space`).
    model: the network's static shape.
    kind: ``classification`` or ``regression``.
    num_epochs: fidelity steps; the curve has one point per epoch.
    steps_per_epoch: optimizer steps per epoch, the same for every configuration.
    eval_chunk: examples per chunk when evaluating (bounds memory under vmap).
  """
  space: Space
  model: models.ModelSpec
  kind: str = "classification"
  num_epochs: int = 10
  steps_per_epoch: int = 16
  eval_chunk: int = 1024

  @property
  def max_batch(self) -> int:
    return max(hp.check_space(self.space)[2])

  @property
  def total_steps(self) -> int:
    return self.num_epochs * self.steps_per_epoch

  @property
  def worst(self) -> float:
    """The objective recorded for a failed configuration."""
    return 1.0


def _per_example_loss(kind: str, out: jax.Array, y: jax.Array) -> jax.Array:
  if kind == "classification":
    return optax.softmax_cross_entropy_with_integer_labels(out, y)
  return (out[:, 0] - y) ** 2


def _objective(setup: TrainSetup, params, arch: models.Arch, x: jax.Array, y: jax.Array
               ) -> jax.Array:
  """Classification error (1 - accuracy) or MSE on a whole split, evaluated in chunks."""
  n = x.shape[0]
  chunk = min(setup.eval_chunk, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_chunks, chunk, -1)
  ys = jnp.pad(y, (0, pad)).reshape(num_chunks, chunk)
  weights = (jnp.arange(num_chunks * chunk) < n).reshape(num_chunks, chunk)

  def one(args):
    xc, yc, wc = args
    out = models.apply(params, setup.model, arch, xc)
    if setup.kind == "classification":
      err = (jnp.argmax(out, -1) != yc).astype(jnp.float32)
    else:
      err = (out[:, 0] - yc) ** 2
    return jnp.sum(jnp.where(wc, err, 0.0))

  return jnp.sum(jax.lax.map(one, (xs, ys, weights))) / n


def make_train(setup: TrainSetup) -> Callable[[jax.Array, jax.Array, jax.Array, Data], Metrics]:
  """Builds ``train(key, values f32[D], active bool[D], data) -> Metrics`` for one configuration.

  Args:
    setup: the static settings.

  Returns:
    A pure, jittable function; its `Metrics` have scalar fields and a curve of
    ``f32[num_epochs]``. ``jax.vmap(train, in_axes=(0, 0, 0, None))`` trains a
    batch of configurations on the same data.

  Example:
    >>> train = make_train(TrainSetup(space, models.ModelSpec("mlp", 64, 10)))  # doctest: +SKIP
    >>> batch = jax.jit(jax.vmap(train, in_axes=(0, 0, 0, None)))
    >>> metrics = batch(keys, points.values, points.active, data)
  """
  hp.check_space(setup.space)
  max_batch = setup.max_batch
  total = setup.total_steps

  def train(key: jax.Array, values: jax.Array, active: jax.Array, data: Data) -> Metrics:
    h = hp.decode(setup.space, values, active)
    arch = h.arch
    init_key, loop_key = jax.random.split(key)
    params = models.init(init_key, setup.model, arch)
    l2_mask = models.weight_mask(params)
    opt = optim.optimizer(h, total)
    n_train = data.x_train.shape[0]
    in_batch = jnp.arange(max_batch) < h.batch_size

    def loss_fn(p, x, y, dropout_key):
      out = models.apply(p, setup.model, arch, x, dropout_key)
      data_loss = jnp.sum(jnp.where(in_batch, _per_example_loss(setup.kind, out, y), 0.0))
      l2 = sum(jnp.sum(w ** 2) for w, m in zip(jax.tree.leaves(p), jax.tree.leaves(l2_mask))
               if m)
      return data_loss / h.batch_size + 0.5 * h.weight_decay * l2

    # Keys ride in the carries (split once per step) rather than as pre-split scan
    # inputs, which JAX's key-reuse checker rejects under vmap.
    def step(carry, _):
      p, opt_state, bad, key = carry
      key, batch_key, dropout_key = jax.random.split(key, 3)
      idx = jax.random.randint(batch_key, (max_batch,), 0, n_train)
      loss, grads = jax.value_and_grad(loss_fn)(p, data.x_train[idx], data.y_train[idx],
                                                dropout_key)
      updates, opt_state = opt.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state, bad | ~jnp.isfinite(loss), key), None

    def epoch(carry, _):
      carry, _ = jax.lax.scan(step, carry, None, length=setup.steps_per_epoch)
      p, opt_state, bad, key = carry
      bad = bad | ~_all_finite(p)
      valid = _objective(setup, p, arch, data.x_valid, data.y_valid)
      return (p, opt_state, bad, key), (valid, bad)

    carry = (params, opt.init(params), jnp.zeros((), bool), loop_key)
    (params, _, bad, _), (curve, bad_at) = jax.lax.scan(epoch, carry, None,
                                                        length=setup.num_epochs)
    test = _objective(setup, params, arch, data.x_test, data.y_test)
    failed = bad | ~jnp.isfinite(curve[-1]) | ~jnp.isfinite(test)
    worst = jnp.float32(setup.worst)
    curve = jnp.where(bad_at | ~jnp.isfinite(curve), worst, curve)

    num_params, macs, acts = models.size(setup.model, arch)
    evals = setup.num_epochs * data.x_valid.shape[0] + data.x_test.shape[0]
    batch = h.batch_size.astype(jnp.float32)
    return Metrics(
        objective=jnp.where(failed, worst, curve[-1]),
        test_objective=jnp.where(failed, worst, test),
        curve=curve,
        cost=2.0 * macs * (3.0 * batch * total + evals),  # FLOPs: forward + 2x backward
        num_params=num_params,
        memory=4.0 * (num_params * (2.0 + h.slots) + 2.0 * batch * acts),
        failed=failed,
        reason=jnp.where(failed, REASON_CODE["diverged"], 0).astype(jnp.int32))

  return train


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_batch_train(setup: TrainSetup
                     ) -> Callable[[jax.Array, jax.Array, jax.Array, Data], Metrics]:
  """``(key, values f32[B, D], active bool[B, D], data) -> Metrics`` with ``[B]`` fields.

  One key for the batch, split per configuration; not jitted (the caller decides).
  """
  batched = jax.vmap(make_train(setup), in_axes=(0, 0, 0, None))

  def train_batch(key, values, active, data):
    return batched(jax.random.split(key, values.shape[0]), values, active, data)

  return train_batch


def default_steps_per_epoch(num_train: int, batch: int = 64, low: int = 10, high: int = 100
                            ) -> int:
  """Steps in which batches of 64 show each training example about once, clipped to [10, 100].

  The floor keeps an "epoch" of a tiny dataset (iris: 90 examples) long enough to learn in.
  """
  return max(low, min(high, math.ceil(num_train / batch)))
