"""The in-context model: queries are independent, padding and context order do not matter."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import sampling
from metatune.surrogate import init_surrogate, predict
from metatune.tuners.base import Points

NUM_CTX = 12  # context slots; a mask says how many hold observations


@pytest.fixture(scope="module")
def data(space):
  u, a = sampling.sample(jax.random.key(3), space, 24)
  y = jnp.sin(3 * u[:, 1]) + jnp.asarray(np.arange(24) % 3, jnp.float32)
  return Points(u[:NUM_CTX], a[:NUM_CTX]), y[:NUM_CTX], Points(u[NUM_CTX:], a[NUM_CTX:])


@pytest.fixture(scope="module")
def run(surrogate):
  """One compiled prediction: (context, objective, mask, queries, prior) -> predictive stats."""

  @jax.jit
  def fn(ctx, y, mask, q, prior_loc, prior_scale):
    p = predict(surrogate, ctx, y, jnp.zeros(y.shape, bool), q, mask, prior_loc, prior_scale)
    return p.mean(), p.logits, p.loc, p.scale, p.quantile(0.05), p.quantile(0.95)

  return lambda ctx, y, mask, q, loc=0.0, scale=1.0: fn(ctx, y, mask, q, loc, scale)


def test_a_query_does_not_depend_on_the_rest_of_the_batch(run, data):
  ctx, y, q = data
  mask = jnp.arange(NUM_CTX) < 8
  whole = np.asarray(run(ctx, y, mask, q)[0])
  swapped = Points(q.values[::-1], q.active[::-1])
  np.testing.assert_allclose(np.asarray(run(ctx, y, mask, swapped)[0])[::-1], whole,
                             rtol=1e-5, atol=1e-5)
  # Other queries in the batch changed, one stayed: its prediction stays.
  other = Points(q.values.at[1:].set(q.values[0]), q.active.at[1:].set(q.active[0]))
  np.testing.assert_allclose(float(run(ctx, y, mask, other)[0][0]), whole[0], rtol=1e-5,
                             atol=1e-5)


def test_masked_context_slots_and_context_order_do_not_matter(run, data):
  ctx, y, q = data
  mask = jnp.arange(NUM_CTX) < 8
  base = np.asarray(run(ctx, y, mask, q)[1])
  junk = y.at[8:].set(99.0)
  junk_ctx = Points(ctx.values.at[8:].set(1.0), ctx.active.at[8:].set(True))
  np.testing.assert_allclose(np.asarray(run(junk_ctx, junk, mask, q)[1]), base, atol=1e-4)
  perm = np.concatenate([np.random.default_rng(0).permutation(8), np.arange(8, NUM_CTX)])
  shuffled = run(Points(ctx.values[perm], ctx.active[perm]), y[perm], mask, q)[1]
  np.testing.assert_allclose(np.asarray(shuffled), base, atol=1e-4)


def test_context_values_change_predictions_and_units_follow_the_context(run, data):
  ctx, y, q = data
  mask = jnp.ones(NUM_CTX, bool)
  m1, l1 = run(ctx, y, mask, q)[:2]
  m2 = run(ctx, 10.0 + 5.0 * y, mask, q)[0]
  # An affine change of the context's objective is an affine change of the predictions.
  np.testing.assert_allclose(np.asarray(m2), 10.0 + 5.0 * np.asarray(m1), rtol=1e-4, atol=1e-4)
  l3 = run(ctx, y[::-1], mask, q)[1]
  assert not np.allclose(np.asarray(l3), np.asarray(l1), atol=1e-4)


def test_empty_context_uses_the_prior_units(run, data):
  ctx, y, q = data
  mean, _, loc, scale, lo, hi = run(ctx, y, jnp.zeros(NUM_CTX, bool), q, 3.0, 2.0)
  assert np.all(np.isfinite(np.asarray(mean)))
  np.testing.assert_allclose(np.asarray(loc), 3.0)
  np.testing.assert_allclose(np.asarray(scale), 2.0)
  assert np.all(np.asarray(lo) < np.asarray(hi))


def test_init_rejects_a_config_of_another_space(space, model_config):
  bad = dataclasses.replace(model_config, num_features=model_config.num_features + 1)
  with pytest.raises(ValueError, match="num_features"):
    init_surrogate(jax.random.key(0), space, bad)
