"""Meta-training of the surrogate with optax: the log score of held-back observations of a task."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from metatune.space import Space, sampling
from metatune.surrogate import bars
from metatune.surrogate.data import Batch
from metatune.surrogate.model import MetaSurrogate, SurrogateConfig
from metatune.surrogate.predictive import Surrogate, init_surrogate

BatchFn = Callable[[jax.Array], Batch]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of meta-training (static; saved with the surrogate).

  Attributes:
    num_steps: optimizer steps.
    batch_tasks: examples (tasks) per step.
    max_context: largest context size; each example's is uniform in ``0..max_context``.
    num_queries: held-back observations predicted per example.
    query_configs: with curves (`curves.curve_batches`), the configurations
      the queries ask about (``max_context`` is then in configurations).
    learning_rate, warmup_steps, weight_decay, grad_clip: AdamW with linear
      warm-up, cosine decay and global-norm clipping.
    fail_weight: weight of the failure head's cross-entropy.
    target_clip: normalized targets are clipped to ``±target_clip`` in the loss
      (a near-constant context makes a few targets huge).
    eval_every: steps between validation checks (the best check is kept).
    calibrate: after training, fit the output temperature on the validation
      batches (`calibrate_temperature`).
    num_valid_batches: fixed validation batches per check (as many batches place the bins).
    width, depth, num_heads, num_bins: the architecture (`SurrogateConfig`).
  """
  num_steps: int = 3000
  batch_tasks: int = 16
  max_context: int = 48
  num_queries: int = 64
  query_configs: int = 8
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  weight_decay: float = 1e-4
  grad_clip: float = 1.0
  fail_weight: float = 0.1
  target_clip: float = 30.0
  eval_every: int = 250
  calibrate: bool = True
  num_valid_batches: int = 16
  width: int = 64
  depth: int = 3
  num_heads: int = 4
  num_bins: int = 64

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def example_losses(surrogate_fn, borders: jax.Array, batch: Batch, target_clip: float,
                   temperature: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Per-example mean NLL of the finished queries and failure cross-entropy, ``f32[B]`` each.

  Args:
    surrogate_fn: ``() -> MetaSurrogate`` (merged inside the traced function).
    borders: the bins.
    batch: the examples.
    target_clip: clip of the normalized targets.
    temperature: an extra divisor of the logits (for `calibrate_temperature`).
  """

  def one(ex: Batch):
    model = surrogate_fn()
    cache = model.encode(ex.x_ctx, ex.z_ctx, ex.fail_ctx, ex.mask_ctx, ex.f_ctx)
    logits, fail_logit = model.query(cache, ex.x_q, ex.f_q)
    nll = -bars.log_prob(borders, logits / temperature,
                         jnp.clip(ex.z_q, -target_clip, target_clip))
    ok = ~ex.fail_q
    nll = jnp.sum(jnp.where(ok, nll, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
    bce = jnp.mean(optax.sigmoid_binary_cross_entropy(fail_logit, ex.fail_q.astype(jnp.float32)))
    return nll, bce

  return jax.vmap(one)(batch)


def fit_borders(batches: Batch, num_bins: int, target_clip: float) -> np.ndarray:
  """Bin borders at quantiles of the finished normalized targets of ``batches``."""
  z = np.asarray(batches.z_q)[~np.asarray(batches.fail_q)]
  return bars.make_borders(np.clip(z, -target_clip, target_clip), num_bins)


# Candidate temperatures: 0.5 to 4, evenly spaced in log, including 1.
TEMPERATURES = tuple(float(t) for t in np.round(np.geomspace(0.5, 4.0, 22), 3))


def calibrate_temperature(surrogate: Surrogate, batches: Batch, target_clip: float,
                          grid: tuple[float, ...] = TEMPERATURES) -> tuple[Surrogate, dict]:
  """Temperature scaling (Guo et al., 2017): the grid value with the lowest NLL on ``batches``.

  Args:
    surrogate: a trained surrogate (its current temperature is the starting point).
    batches: validation examples (a stacked `Batch` with a leading axis of batches).
    target_clip: as in training.
    grid: candidate temperatures, relative to the current one.

  Returns:
    The surrogate with the chosen temperature, and ``{temperature: NLL}``.

  Example:
    >>> batches = jax.vmap(valid_fn)(jax.random.split(key, 16))              # doctest: +SKIP
    >>> surrogate, scores = calibrate_temperature(surrogate, batches, 30.0)  # doctest: +SKIP
  """
  base = surrogate.config
  fn = lambda: nnx.merge(surrogate.graphdef, surrogate.params)

  @jax.jit
  def nll(temperature):
    per = jax.vmap(lambda b: example_losses(fn, surrogate.borders, b, target_clip,
                                            temperature)[0])(batches)
    return jnp.mean(per)

  scores = {t: float(nll(jnp.float32(t))) for t in grid}
  best = min(scores, key=scores.get)
  config = dataclasses.replace(base, temperature=float(base.temperature * best))
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: MetaSurrogate(config, rngs=nnx.Rngs(0))))
  return dataclasses.replace(surrogate, config=config, graphdef=graphdef), scores


def train(key: jax.Array, space: Space, batch_fn: BatchFn, config: TrainConfig = TrainConfig(),
          valid_fn: BatchFn | None = None, log: Callable[[str], None] | None = None,
          info: dict | None = None, scale_floor: float = 0.0) -> tuple[Surrogate, list[dict]]:
  """Meta-trains a surrogate on examples from ``batch_fn``.

  Args:
    key: PRNG key.
    space: the space of the tasks.
    batch_fn: jittable ``key -> Batch`` of training examples (`data.table_batches`,
      `data.family_batches`, or `curves.curve_batches`: batches with fidelities
      train a fidelity-aware model, ``SurrogateConfig.fidelity``).
    config: the settings.
    valid_fn: examples from validation tasks; the parameters with the lowest
      validation NLL (checked every ``eval_every`` steps) are returned. None:
      the last parameters.
    log: called with a progress line after each check.
    info: provenance stored in the surrogate.
    scale_floor: the normalization floor the batches use (`data.normalizer`);
      stored in the surrogate so that predictions normalize the same way.

  Returns:
    The trained `Surrogate` and the record of the checks (step, train and
    validation losses, seconds).

  Example:
    >>> fn = table_batches(space, table, 16, 48, 64)                  # doctest: +SKIP
    >>> surrogate, record = train(jax.random.key(0), space, fn)        # doctest: +SKIP
  """
  border_key, init_key, loop_key, valid_key = jax.random.split(key, 4)
  # One compiled sampler of a fixed number of batches serves the borders and validation.
  compiled: dict = {}

  def many(fn, k):
    if fn not in compiled:
      compiled[fn] = jax.jit(jax.vmap(fn))
    return compiled[fn](jax.random.split(k, config.num_valid_batches))

  border_batches = many(batch_fn, border_key)
  borders = fit_borders(border_batches, config.num_bins, config.target_clip)
  fidelity = border_batches.f_ctx is not None
  # With curves a context holds up to (configurations x steps) points, where the count saturates.
  max_context = border_batches.x_ctx.shape[-2] if fidelity else config.max_context
  model_config = SurrogateConfig(
      num_features=sampling.feature_size(space), borders=tuple(float(b) for b in borders),
      width=config.width, depth=config.depth, num_heads=config.num_heads,
      max_context=max(max_context, 1), scale_floor=float(scale_floor), fidelity=fidelity,
      robust_units=fidelity)  # curve batches normalize robustly (`curves.curve_batches`)
  surrogate = init_surrogate(init_key, space, model_config, info)
  graphdef = surrogate.graphdef
  borders_j = jnp.asarray(borders, jnp.float32)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, min(config.warmup_steps, max(config.num_steps - 1, 1)),
      max(config.num_steps, 2), config.learning_rate * 0.05)
  opt = optax.chain(optax.clip_by_global_norm(config.grad_clip),
                    optax.adamw(schedule, weight_decay=config.weight_decay))

  def loss_fn(params, batch):
    nll, bce = example_losses(lambda: nnx.merge(graphdef, params), borders_j, batch,
                              config.target_clip)
    return jnp.mean(nll) + config.fail_weight * jnp.mean(bce), (jnp.mean(nll), jnp.mean(bce))

  def chunk(params, opt_state, key, num):
    def step(carry, _):  # the key rides in the carry (see run_tuning)
      params, opt_state, key = carry
      key, batch_key = jax.random.split(key)
      (loss, (nll, _)), grad = jax.value_and_grad(loss_fn, has_aux=True)(params,
                                                                         batch_fn(batch_key))
      updates, opt_state = opt.update(grad, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state, key), nll
    (params, opt_state, _), nlls = jax.lax.scan(step, (params, opt_state, key), None, length=num)
    return params, opt_state, jnp.mean(nlls)

  chunk_jit = jax.jit(chunk, static_argnums=3)
  valid_batches = None if valid_fn is None else many(valid_fn, valid_key)
  valid_loss = jax.jit(lambda params: jax.vmap(lambda b: loss_fn(params, b)[1][0])(
      valid_batches).mean()) if valid_batches is not None else None

  params, opt_state = surrogate.params, opt.init(surrogate.params)
  best = (float("inf"), params, 0)
  record: list[dict] = []
  done, start = 0, time.perf_counter()
  while done < config.num_steps:
    num = min(config.eval_every, config.num_steps - done)
    loop_key, chunk_key = jax.random.split(loop_key)
    params, opt_state, train_nll = chunk_jit(params, opt_state, chunk_key, num)
    done += num
    row = {"step": done, "train_nll": float(train_nll),
           "seconds": round(time.perf_counter() - start, 1)}
    if valid_loss is not None:
      row["valid_nll"] = float(valid_loss(params))
      if row["valid_nll"] < best[0]:
        best = (row["valid_nll"], params, done)
    record.append(row)
    if log is not None:
      log("step {step}: train NLL {train_nll:.3f}".format(**row) +
          (f", valid NLL {row['valid_nll']:.3f}" if "valid_nll" in row else "") +
          f" ({row['seconds']} s)")
  if valid_loss is not None:
    params = best[1]
  trained = Surrogate(space, model_config, graphdef, params,
                      {**(info or {}), "train_config": config.to_dict(), "record": record,
                       "selected_step": best[2] if valid_loss is not None else done})
  if config.calibrate and valid_batches is not None:
    trained, scores = calibrate_temperature(trained, valid_batches, config.target_clip)
    trained.info["temperature_nll"] = {str(t): v for t, v in scores.items()}
    if log is not None:
      log(f"temperature {trained.config.temperature:.3g}: validation NLL "
          f"{min(scores.values()):.3f} (at 1: {scores.get(1.0, float('nan')):.3f})")
  return trained, record
