"""Reference values of a jittable task for normalized regret: its optimum, median and worst."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metatune.space import sampling
from metatune.tuners.base import Points


def task_reference(key: jax.Array, family, task, num: int = 4096, refine: int = 20
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`reference` of ``family.clean(task, .)`` over ``family.space``."""
  return reference(key, family.space, lambda p: family.clean(task, p), num, refine)


def reference(key: jax.Array, space, clean_fn, num: int = 4096, refine: int = 20
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Estimates ``(optimum, median, worst)`` of a noise-free objective ``clean_fn(Points)``.

  The optimum comes from ``num`` random feasible configurations refined by
  ``refine`` rounds of local perturbation of the best 64; the median of random
  configurations is the scale of normalized regret, and failed configurations
  count as the worst in it.

  Args:
    key: PRNG key.
    space: the space.
    clean_fn: ``Points -> f32[B]`` (NaN = failure); jittable.
    num: random configurations.
    refine: rounds of local search.
  """
  sample_key, refine_key = jax.random.split(key)
  u, a = sampling.sample(sample_key, space, num)
  f = clean_fn(Points(u, a))
  finite = jnp.isfinite(f)
  worst = jnp.max(jnp.where(finite, f, -jnp.inf))
  median = jnp.median(jnp.where(finite, f, worst))
  f = jnp.where(finite, f, jnp.inf)
  top = jnp.argsort(f)[:min(64, num)]
  u, a, f = u[top], a[top], f[top]

  def body(carry, _):  # the key rides in the carry (see run_tuning)
    u, a, f, key = carry
    key, step_key = jax.random.split(key)
    nu, na = sampling.perturb(step_key, space, u, a, scale=0.05)
    nf = clean_fn(Points(nu, na))
    nf = jnp.where(jnp.isfinite(nf), nf, jnp.inf)
    better = nf < f
    return (jnp.where(better[:, None], nu, u), jnp.where(better[:, None], na, a),
            jnp.where(better, nf, f), key), None

  (u, a, f, _), _ = jax.lax.scan(body, (u, a, f, refine_key), None, length=refine)
  return jnp.min(f), median, worst
