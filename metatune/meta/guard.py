"""The negative-transfer guard of the hybrid prior (`metatune.meta.hybrid`): two models and the
weight between them.

Both GPs share one kernel fit. *Scratch* has a constant mean (GP-BO's model); *prior* has the
prior's profile as its mean, ``y = s * (z(x) - mean z over the study) + GP``: the profile says how
configurations differ, the study where its level is. Before each observation is added both
predict it, and the cumulative log predictive densities give the prior's weight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metatune.tuners.gp_model import (GPParams, half_rank_warp, masked_moments, posterior,
                                      predict, scale_inflation)

Prediction = tuple[jax.Array, jax.Array]   # (mean, sd) in the history's standardized units


def slope(y: jax.Array, z: jax.Array, mask: jax.Array, shrinkage: float) -> jax.Array:
  """The profile's slope on the study (centred ``z``; shrunk toward 1 by ``shrinkage``
  pseudo-observations)."""
  zz = jnp.where(mask, z, 0.0)
  return (jnp.sum(zz * jnp.where(mask, y, 0.0)) + shrinkage) / (jnp.sum(zz * zz) + shrinkage)


def models(params: GPParams, layout, x: jax.Array, y: jax.Array, mask: jax.Array, z: jax.Array,
           xq: jax.Array, zq: jax.Array, slope_of) -> tuple[Prediction, Prediction, jax.Array]:
  """Predictive ``(mean, sd)`` of the prior's and the scratch model at queries ``xq`` (profile
  ``zq``), and the slope; ``slope_of(y, centred z, mask)`` gives the slope."""
  n = jnp.sum(mask)
  z_mean = masked_moments(z, mask)[0]
  zc = jnp.where(mask, z - z_mean, 0.0)
  s = slope_of(y, zc, mask)
  scratch = posterior(params, x, y, mask, layout)
  prior_post = posterior(params, x, jnp.where(mask, y - s * zc, 0.0), mask, layout)
  ms, vs = predict(scratch, xq)
  mp, vp = predict(prior_post, xq)
  inflate = scale_inflation(n)
  noise = jnp.exp(params.log_noise)
  return ((mp + s * (zq - z_mean), inflate * jnp.sqrt(vp + noise)),
          (ms, inflate * jnp.sqrt(vs + noise)), s)


def mixture(prior: Prediction, scratch: Prediction, weight: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
  """Mean and sd of the two models' mixture with the prior's ``weight``."""
  (mp, sp), (ms, ss) = prior, scratch
  mean = weight * mp + (1 - weight) * ms
  var = weight * sp ** 2 + (1 - weight) * ss ** 2 + weight * (1 - weight) * (mp - ms) ** 2
  return mean, jnp.sqrt(var)


def log_scores(prior: Prediction, scratch: Prediction, seen: jax.Array, mask: jax.Array,
               new: jax.Array, failed: jax.Array, fitted: jax.Array, output_warp: bool
               ) -> tuple[jax.Array, jax.Array]:
  """Log predictive densities of the new observations ``new`` under each model, summed; the
  history's objectives ``seen`` (``mask``) standardize them. Nothing is scored before a fit,
  with fewer than 3 observations, or for failed or non-finite values."""
  if output_warp:
    seen, warped = half_rank_warp(seen, mask, new)
    new = jnp.where(jnp.isfinite(new), warped, jnp.nan)   # not finite: not scored, as before
  mu, var = masked_moments(seen, mask)
  yq = (new - mu) / jnp.sqrt(jnp.maximum(var, 1e-12))
  ok = ~failed & jnp.isfinite(yq) & fitted & (jnp.sum(mask) >= 3)
  (mp, sp), (ms, ss) = prior, scratch
  lp = jnp.sum(jnp.where(ok, jax.scipy.stats.norm.logpdf(yq, mp, sp), 0.0))
  ls = jnp.sum(jnp.where(ok, jax.scipy.stats.norm.logpdf(yq, ms, ss), 0.0))
  return lp, ls
