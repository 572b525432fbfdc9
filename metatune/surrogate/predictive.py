"""A trained meta-surrogate as data (`Surrogate`) and its predictions in a task's own units."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from metatune.space import Space, sampling
from metatune.surrogate import bars
from metatune.surrogate.data import normalizer
from metatune.surrogate.model import ContextCache, MetaSurrogate, SurrogateConfig
from metatune.tuners.base import Points


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: usable as a static argument
class Surrogate:
  """A meta-surrogate: its space, architecture, parameters and provenance.

  Attributes:
    space: the search space it models.
    config: the architecture.
    graphdef: the network's static structure (``nnx.split``).
    params: the network's parameters (an ``nnx.State`` pytree).
    info: JSON-able provenance (family, tasks, training record).
  """
  space: Space
  config: SurrogateConfig
  graphdef: Any
  params: Any
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def borders(self) -> jax.Array:
    return jnp.asarray(self.config.borders, jnp.float32)

  def encode(self, x, z, failed, mask) -> ContextCache:
    """`MetaSurrogate.encode` on these parameters (features already computed)."""
    return nnx.merge(self.graphdef, self.params).encode(x, z, failed, mask)

  def query(self, cache: ContextCache, x) -> tuple[jax.Array, jax.Array]:
    """`MetaSurrogate.query` on these parameters."""
    return nnx.merge(self.graphdef, self.params).query(cache, x)


def init_surrogate(key: jax.Array, space: Space, config: SurrogateConfig,
                   info: dict | None = None) -> Surrogate:
  """A freshly initialized surrogate.

  Raises:
    ValueError: when ``config.num_features`` is not the space's feature size.

  Example:
    >>> s = init_surrogate(jax.random.key(0), space, config)  # doctest: +SKIP
  """
  if config.num_features != sampling.feature_size(space):
    raise ValueError(f"config.num_features = {config.num_features}, but the space "
                     f"{space.name!r} has {sampling.feature_size(space)} features")
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: MetaSurrogate(config, rngs=nnx.Rngs(0))))
  # One compiled initialization: eager initializers compile every random draw separately.
  params = jax.jit(lambda k: nnx.split(MetaSurrogate(config, rngs=nnx.Rngs(params=k)))[1])(key)
  return Surrogate(space, config, graphdef, params, dict(info or {}))


@flax.struct.dataclass
class Predictive:
  """Predictive distributions of a batch in the task's units: ``objective = loc + scale * Z``.

  Attributes:
    logits: f32[..., num_bins] of the normalized objective ``Z``.
    fail_logit: f32[...] log-odds that the evaluation fails.
    loc, scale: f32[...] the normalization.
    borders: f32[num_bins + 1].
  """
  logits: jax.Array
  fail_logit: jax.Array
  loc: jax.Array
  scale: jax.Array
  borders: jax.Array

  def mean(self) -> jax.Array:
    return self.loc + self.scale * bars.mean(self.borders, self.logits)

  def std(self) -> jax.Array:
    return self.scale * jnp.sqrt(bars.variance(self.borders, self.logits))

  def quantile(self, q) -> jax.Array:
    return self.loc + self.scale * bars.quantile(self.borders, self.logits, q)

  def log_prob(self, y) -> jax.Array:
    """log density of objective ``y`` (in the task's units)."""
    return bars.log_prob(self.borders, self.logits, (y - self.loc) / self.scale) - jnp.log(
        self.scale)

  def cdf(self, y) -> jax.Array:
    return bars.cdf(self.borders, self.logits, (y - self.loc) / self.scale)

  def fail_prob(self) -> jax.Array:
    return jax.nn.sigmoid(self.fail_logit)


def predict(surrogate: Surrogate, context: Points, objective: jax.Array, failed: jax.Array,
            queries: Points, mask: jax.Array | None = None, prior_loc: float = 0.0,
            prior_scale: float = 1.0) -> Predictive:
  """Predicts ``queries`` on a task from a context of its observations. Jittable.

  Args:
    surrogate: the trained surrogate.
    context: f32[K, D] / bool[K, D] observed configurations (K may be 0).
    objective: f32[K] their objectives (minimized; ignored where failed).
    failed: bool[K].
    queries: f32[Q, D] / bool[Q, D] configurations to predict.
    mask: bool[K] which context slots hold observations (default all).
    prior_loc, prior_scale: the objective's units when fewer than 2 context
      observations finished (e.g. the task's mean and sd over the space).

  Returns:
    `Predictive` of shape ``[Q]``.

  Example:
    >>> pred = predict(surrogate, ctx, y, jnp.zeros(5, bool), queries)  # doctest: +SKIP
    >>> lo, hi = pred.quantile(0.05), pred.quantile(0.95)                 # doctest: +SKIP
  """
  space = surrogate.space
  objective = jnp.asarray(objective, jnp.float32)
  failed = jnp.asarray(failed, bool) | ~jnp.isfinite(objective)
  mask = jnp.ones(objective.shape, bool) if mask is None else jnp.asarray(mask, bool)
  loc, scale = normalizer(objective, mask & ~failed, jnp.float32(prior_loc),
                          jnp.float32(prior_scale), surrogate.config.scale_floor)
  z = jnp.where(failed, 0.0, (objective - loc) / scale)
  cache = surrogate.encode(sampling.featurize(space, context.values, context.active), z, failed,
                           mask)
  logits, fail_logit = surrogate.query(cache, sampling.featurize(space, queries.values,
                                                                 queries.active))
  q = logits.shape[:-1]
  return Predictive(logits, fail_logit, jnp.broadcast_to(loc, q), jnp.broadcast_to(scale, q),
                    surrogate.borders)
