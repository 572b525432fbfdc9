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

  def encode(self, x, z, failed, mask, fidelity=None) -> ContextCache:
    """`MetaSurrogate.encode` on these parameters (features already computed)."""
    return nnx.merge(self.graphdef, self.params).encode(x, z, failed, mask, fidelity)

  def query(self, cache: ContextCache, x, fidelity=None) -> tuple[jax.Array, jax.Array]:
    """`MetaSurrogate.query` on these parameters."""
    return nnx.merge(self.graphdef, self.params).query(cache, x, fidelity)


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
            prior_scale: float = 1.0, context_fidelity: jax.Array | None = None,
            query_fidelity: jax.Array | None = None) -> Predictive:
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
    context_fidelity: f32[K] fidelity fraction of each context observation
      (models with ``config.fidelity`` only; default 1.0, final values).
    query_fidelity: f32[Q] the fidelity fraction to predict (default 1.0).

  Returns:
    `Predictive` of shape ``[Q]``.

  Raises:
    ValueError: fidelities given to a surrogate trained without them.

  Example:
    >>> pred = predict(surrogate, ctx, y, jnp.zeros(5, bool), queries)  # doctest: +SKIP
    >>> lo, hi = pred.quantile(0.05), pred.quantile(0.95)                 # doctest: +SKIP
  """
  space = surrogate.space
  objective = jnp.asarray(objective, jnp.float32)
  failed = jnp.asarray(failed, bool) | ~jnp.isfinite(objective)
  mask = jnp.ones(objective.shape, bool) if mask is None else jnp.asarray(mask, bool)
  loc, scale = normalizer(objective, mask & ~failed, jnp.float32(prior_loc),
                          jnp.float32(prior_scale), surrogate.config.scale_floor,
                          surrogate.config.robust_units)
  z = jnp.where(failed, 0.0, (objective - loc) / scale)
  cache = surrogate.encode(sampling.featurize(space, context.values, context.active), z, failed,
                           mask, context_fidelity)
  logits, fail_logit = surrogate.query(
      cache, sampling.featurize(space, queries.values, queries.active), query_fidelity)
  q = logits.shape[:-1]
  return Predictive(logits, fail_logit, jnp.broadcast_to(loc, q), jnp.broadcast_to(scale, q),
                    surrogate.borders)


@flax.struct.dataclass
class CurvePrediction:
  """Predictions of configurations at several fidelities, in the task's units.

  Attributes:
    fidelity: f32[S] the fidelity fractions asked for.
    mean: f32[Q, S] predictive means.
    quantiles: f32[Q, S, L] the requested quantiles (levels in ``levels``).
    levels: f32[L] the quantile levels.
    fail_prob: f32[Q, S] probability that the evaluation fails.
    predictive: the full `Predictive` of shape ``[Q, S]`` (CDF, log density).
  """
  fidelity: jax.Array
  mean: jax.Array
  quantiles: jax.Array
  levels: jax.Array
  fail_prob: jax.Array
  predictive: Predictive


def predict_curve(surrogate: Surrogate, context: Points, context_fidelity: jax.Array,
                  objective: jax.Array, failed: jax.Array, queries: Points,
                  fidelities: jax.Array, mask: jax.Array | None = None,
                  levels=(0.05, 0.5, 0.95), prior_loc: float = 0.0,
                  prior_scale: float = 1.0) -> CurvePrediction:
  """Extrapolates learning curves: each query configuration at each requested fidelity. Jittable.

  The context mixes observations at any fidelities: other configurations'
  full or partial curves, and the query configurations' own first epochs (a
  configuration's points are found by its identical features). One context
  encoding serves every query and fidelity.

  Args:
    surrogate: a surrogate trained with fidelities (``config.fidelity``).
    context: f32[K, D] / bool[K, D] the configuration of each observation (one
      row per curve point).
    context_fidelity: f32[K] each observation's fidelity fraction (``epoch / epochs``).
    objective: f32[K] the observed values (minimized; ignored where failed).
    failed: bool[K].
    queries: f32[Q, D] / bool[Q, D] the configurations to extrapolate.
    fidelities: f32[S] fidelity fractions to predict (1.0: the final value).
    mask: bool[K] which context slots hold observations (default all).
    levels: quantile levels.
    prior_loc, prior_scale: units when fewer than 2 context observations finished.

  Returns:
    A `CurvePrediction` of shape ``[Q, S]``.

  Raises:
    ValueError: the surrogate has no fidelity feature.

  Example:
    >>> ctx = Points(jnp.repeat(u[:3], 10, 0), jnp.repeat(a[:3], 10, 0))  # doctest: +SKIP
    >>> fid = jnp.tile(jnp.arange(1, 11) / 10, 3)                           # doctest: +SKIP
    >>> out = predict_curve(sur, ctx, fid, y, jnp.zeros(30, bool),
    ...                     Points(u[3:5], a[3:5]), jnp.array([0.5, 1.0]))  # doctest: +SKIP
    >>> out.mean.shape                                                      # doctest: +SKIP
    (2, 2)
  """
  if not surrogate.config.fidelity:
    raise ValueError("predict_curve needs a surrogate trained on learning curves "
                     "(config.fidelity is False): train it on a meta-dataset with curves")
  fidelities = jnp.asarray(fidelities, jnp.float32)
  q, s = queries.values.shape[0], fidelities.shape[0]
  rep = lambda a: jnp.repeat(a, s, axis=0)
  pred = predict(surrogate, context, objective, failed, Points(rep(queries.values),
                                                               rep(queries.active)),
                 mask, prior_loc, prior_scale, jnp.asarray(context_fidelity, jnp.float32),
                 jnp.tile(fidelities, q))
  grid = lambda a: a.reshape((q, s) + a.shape[1:])
  pred = Predictive(grid(pred.logits), grid(pred.fail_logit), grid(pred.loc), grid(pred.scale),
                    pred.borders)
  lv = jnp.asarray(levels, jnp.float32)
  quant = jax.vmap(pred.quantile, out_axes=-1)(lv)
  return CurvePrediction(fidelities, pred.mean(), quant, lv, pred.fail_prob(), pred)
