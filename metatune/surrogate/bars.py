"""A binned ("Riemann") predictive distribution with half-normal tails, as in PFNs.

``n`` bins with borders ``e_0 < ... < e_n`` carry probabilities ``softmax(logits)``.
Inner bins are uniform on ``[e_i, e_{i+1})``; the first and the last bin are
half-normal tails that cover everything below ``e_1`` and above ``e_{n-1}``
(scale chosen so that half the tail's mass lies inside the nominal bin), so
every real number has a positive density (Müller et al., 2022, "Transformers
can do Bayesian inference": the full-support bar distribution). Density, CDF,
quantiles, mean and variance are closed-form and jittable; every function
broadcasts over leading dimensions of ``logits f32[..., n]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_HALF_NORMAL_MEDIAN = 0.6744897501960817  # median of |N(0, 1)|
_EPS = 1e-6


def make_borders(samples: np.ndarray, num_bins: int, min_width: float = 1e-3) -> np.ndarray:
  """Bin borders at the empirical quantiles of ``samples`` (more bins where targets are dense).

  Args:
    samples: f[N] target values in the model's normalized units (finite).
    num_bins: number of bins (at least 3: two tails and one inner bin).
    min_width: the smallest allowed bin width (ties in the samples would
      otherwise give empty bins).

  Returns:
    f64[num_bins + 1] strictly increasing borders.

  Raises:
    ValueError: fewer than 3 bins or no finite sample.

  Example:
    >>> make_borders(np.random.default_rng(0).normal(size=1000), 8).shape
    (9,)
  """
  if num_bins < 3:
    raise ValueError(f"num_bins must be at least 3 (two tails and an inner bin), got {num_bins}")
  samples = np.asarray(samples, np.float64)
  samples = samples[np.isfinite(samples)]
  if samples.size == 0:
    raise ValueError("no finite target values to place the bins of the predictive distribution")
  edges = np.quantile(samples, np.linspace(0.0, 1.0, num_bins + 1))
  for i in range(1, num_bins + 1):  # strictly increasing, at least min_width apart
    edges[i] = max(edges[i], edges[i - 1] + min_width)
  return edges


def _parts(borders: jax.Array):
  e = jnp.asarray(borders, jnp.float32)
  width = e[1:] - e[:-1]
  sigma_left = width[0] / _HALF_NORMAL_MEDIAN
  sigma_right = width[-1] / _HALF_NORMAL_MEDIAN
  return e, width, sigma_left, sigma_right


def log_prob(borders: jax.Array, logits: jax.Array, y: jax.Array) -> jax.Array:
  """log density at ``y f32[...]`` (same leading shape as ``logits f32[..., n]``).

  Example:
    >>> log_prob(jnp.array([-1., 0., 1.]), jnp.zeros(2), jnp.array(0.5)).shape
    ()
  """
  e, width, sl, sr = _parts(borders)
  n = width.shape[0]
  logp = jax.nn.log_softmax(logits, axis=-1)
  y = jnp.asarray(y, jnp.float32)
  idx = jnp.clip(jnp.searchsorted(e, y, side="right") - 1, 0, n - 1)
  inner = jnp.take_along_axis(logp, idx[..., None], axis=-1)[..., 0] - jnp.log(width[idx])
  c = math.log(2.0) - 0.5 * math.log(2.0 * math.pi)
  left = logp[..., 0] + c - jnp.log(sl) - 0.5 * ((e[1] - y) / sl) ** 2
  right = logp[..., -1] + c - jnp.log(sr) - 0.5 * ((y - e[-2]) / sr) ** 2
  return jnp.where(y < e[1], left, jnp.where(y >= e[-2], right, inner))


def cdf(borders: jax.Array, logits: jax.Array, y: jax.Array) -> jax.Array:
  """P(Y <= y), same shapes as `log_prob`."""
  e, width, sl, sr = _parts(borders)
  n = width.shape[0]
  p = jax.nn.softmax(logits, axis=-1)
  before = jnp.cumsum(p, axis=-1) - p  # mass of the bins left of each bin
  y = jnp.asarray(y, jnp.float32)
  idx = jnp.clip(jnp.searchsorted(e, y, side="right") - 1, 1, n - 2)
  take = lambda a: jnp.take_along_axis(a, idx[..., None], axis=-1)[..., 0]
  inner = take(before) + take(p) * jnp.clip((y - e[idx]) / width[idx], 0.0, 1.0)
  erf = jax.scipy.special.erf
  left = p[..., 0] * (1.0 - erf(jnp.maximum(e[1] - y, 0.0) / (sl * math.sqrt(2.0))))
  right = before[..., -1] + p[..., -1] * erf(jnp.maximum(y - e[-2], 0.0) / (sr * math.sqrt(2.0)))
  return jnp.where(y < e[1], left, jnp.where(y >= e[-2], right, inner))


def quantile(borders: jax.Array, logits: jax.Array, q: jax.Array) -> jax.Array:
  """The ``q``-quantile (inverse CDF); ``q f32[...]`` broadcasts against ``logits[..., 0]``.

  Example:
    >>> float(quantile(jnp.array([-1., 0., 1.]), jnp.zeros(2), 0.5))
    0.0
  """
  e, width, sl, sr = _parts(borders)
  n = width.shape[0]
  p = jax.nn.softmax(logits, axis=-1)
  after = jnp.cumsum(p, axis=-1)
  before = after - p
  q = jnp.clip(jnp.asarray(q, jnp.float32), _EPS, 1.0 - _EPS)
  q = jnp.broadcast_to(q, logits.shape[:-1])
  idx = jnp.clip(jnp.sum(after[..., :-1] < q[..., None], axis=-1), 0, n - 1)
  take = lambda a: jnp.take_along_axis(a, idx[..., None], axis=-1)[..., 0]
  inner_idx = jnp.clip(idx, 1, n - 2)
  inner = e[inner_idx] + width[inner_idx] * jnp.clip(
      (q - take(before)) / jnp.maximum(take(p), 1e-12), 0.0, 1.0)
  erfinv = jax.scipy.special.erfinv
  # Inside a tail, the fraction of the tail's own mass decides the distance from its border.
  frac_left = jnp.clip(1.0 - q / jnp.maximum(p[..., 0], 1e-12), 0.0, 1.0 - _EPS)
  left = e[1] - sl * math.sqrt(2.0) * erfinv(frac_left)
  frac_right = jnp.clip((q - before[..., -1]) / jnp.maximum(p[..., -1], 1e-12), 0.0, 1.0 - _EPS)
  right = e[-2] + sr * math.sqrt(2.0) * erfinv(frac_right)
  return jnp.where(idx == 0, left, jnp.where(idx == n - 1, right, inner))


def mean(borders: jax.Array, logits: jax.Array) -> jax.Array:
  """The mean, f32[...]."""
  e, width, sl, sr = _parts(borders)
  p = jax.nn.softmax(logits, axis=-1)
  centre = (e[:-1] + e[1:]) / 2
  centre = centre.at[0].set(e[1] - sl * math.sqrt(2.0 / math.pi))
  centre = centre.at[-1].set(e[-2] + sr * math.sqrt(2.0 / math.pi))
  return jnp.sum(p * centre, axis=-1)


def variance(borders: jax.Array, logits: jax.Array) -> jax.Array:
  """The variance, f32[...]."""
  e, width, sl, sr = _parts(borders)
  p = jax.nn.softmax(logits, axis=-1)
  m = mean(borders, logits)
  second = (e[:-1] ** 2 + e[:-1] * e[1:] + e[1:] ** 2) / 3
  tl, tr = sl * math.sqrt(2.0 / math.pi), sr * math.sqrt(2.0 / math.pi)
  second = second.at[0].set(e[1] ** 2 - 2 * e[1] * tl + sl ** 2)
  second = second.at[-1].set(e[-2] ** 2 + 2 * e[-2] * tr + sr ** 2)
  return jnp.maximum(jnp.sum(p * second, axis=-1) - m ** 2, 0.0)
