"""The guard's pieces: the mixture of the two models and the scores of new observations."""

import jax.numpy as jnp
import numpy as np
import pytest

from metatune.meta import guard


def test_mixture_is_each_model_at_the_ends_and_widens_where_they_disagree():
  prior = (jnp.asarray([0.0, 1.0]), jnp.asarray([1.0, 1.0]))
  scratch = (jnp.asarray([0.0, -1.0]), jnp.asarray([2.0, 1.0]))
  for w, want in ((1.0, prior), (0.0, scratch)):
    mean, sd = guard.mixture(prior, scratch, jnp.asarray(w))
    np.testing.assert_allclose(mean, want[0]); np.testing.assert_allclose(sd, want[1])
  mean, sd = guard.mixture(prior, scratch, jnp.asarray(0.5))
  np.testing.assert_allclose(mean, [0.0, 0.0])
  # Agreeing means: the sd mixes the variances; disagreeing ones add their spread.
  np.testing.assert_allclose(sd, [np.sqrt(2.5), np.sqrt(1.0 + 1.0)], rtol=1e-6)


def test_log_scores_favour_the_model_that_predicted_the_value_and_skip_what_cannot_count():
  seen = jnp.asarray([0.0, 1.0, 2.0, 3.0, jnp.nan])
  mask = jnp.asarray([True, True, True, True, False])
  mu, sd = float(np.mean([0, 1, 2, 3])), float(np.std([0, 1, 2, 3], ddof=1))
  new = jnp.asarray([mu + sd])                       # standardized: 1.0
  prior, scratch = (jnp.ones(1), jnp.full(1, 0.5)), (jnp.full(1, -1.0), jnp.full(1, 0.5))
  ok = dict(failed=jnp.zeros(1, bool), fitted=jnp.asarray(True), output_warp=False)
  lp, ls = guard.log_scores(prior, scratch, seen, mask, new, **ok)
  assert float(lp) > float(ls)
  assert float(lp) == pytest.approx(-np.log(0.5 * np.sqrt(2 * np.pi)), rel=1e-5)
  for change in (dict(failed=jnp.ones(1, bool)), dict(fitted=jnp.asarray(False))):
    assert tuple(map(float, guard.log_scores(prior, scratch, seen, mask, new,
                                             **{**ok, **change}))) == (0.0, 0.0)
  few = jnp.asarray([True, True, False, False, False])
  assert float(guard.log_scores(prior, scratch, seen, few, new, **ok)[0]) == 0.0
  assert float(guard.log_scores(prior, scratch, seen, mask, jnp.asarray([jnp.nan]), **ok)[0]) == 0


def test_slope_is_one_without_evidence_and_follows_the_study():
  z = jnp.asarray([-1.0, 0.0, 1.0])
  mask = jnp.ones(3, bool)
  assert float(guard.slope(jnp.zeros(3), jnp.zeros(3), mask, 5.0)) == 1.0
  assert float(guard.slope(-2.0 * z, z, mask, 0.0)) == pytest.approx(-2.0)
  assert 0.0 < float(guard.slope(-2.0 * z, z, mask, 5.0)) < 1.0   # shrunk toward 1
