"""The binned predictive distribution: a proper density whose CDF, quantiles and moments agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.surrogate import bars

BORDERS = jnp.asarray([-2.0, -1.0, -0.2, 0.5, 1.5, 3.0])


@pytest.fixture(scope="module")
def logits():
  return jax.random.normal(jax.random.key(0), (3, 5)) * 2.0


def _density(row, y):
  logp = jax.vmap(lambda v: bars.log_prob(BORDERS, row, v))(y)
  return np.exp(np.asarray(logp, np.float64))


def _grid():
  return np.linspace(-40.0, 40.0, 400_001)


def test_density_integrates_to_one_and_cdf_is_its_integral(logits):
  y = jnp.asarray(_grid(), jnp.float32)
  for row in logits:
    dens = _density(row, y)
    integral = np.trapezoid(dens, _grid())
    assert integral == pytest.approx(1.0, abs=2e-4)
    cum = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(_grid()))])
    for v in (-3.0, -1.0, 0.0, 0.7, 2.9, 5.0):
      i = np.searchsorted(_grid(), v)
      assert float(bars.cdf(BORDERS, row, v)) == pytest.approx(cum[i], abs=3e-4)


def test_quantile_inverts_cdf(logits):
  q = jnp.asarray([0.001, 0.05, 0.3, 0.5, 0.77, 0.95, 0.999])
  for row in logits:
    y = bars.quantile(BORDERS, jnp.broadcast_to(row, (7, 5)), q)
    back = bars.cdf(BORDERS, jnp.broadcast_to(row, (7, 5)), y)
    np.testing.assert_allclose(np.asarray(back), np.asarray(q), atol=1e-4)
    assert np.all(np.diff(np.asarray(y)) > 0)


def test_mean_and_variance_match_numerical_moments(logits):
  grid = _grid()
  y = jnp.asarray(grid, jnp.float32)
  for row in logits:
    dens = _density(row, y)
    m = np.trapezoid(dens * grid, grid)
    v = np.trapezoid(dens * (grid - m) ** 2, grid)
    assert float(bars.mean(BORDERS, row)) == pytest.approx(m, abs=2e-3)
    assert float(bars.variance(BORDERS, row)) == pytest.approx(v, rel=5e-3)


def test_make_borders_is_strictly_increasing_even_with_ties():
  samples = np.concatenate([np.zeros(500), np.random.default_rng(0).normal(size=500)])
  e = bars.make_borders(samples, 16)
  assert e.shape == (17,) and np.all(np.diff(e) > 0)


def test_make_borders_rejects_bad_input():
  with pytest.raises(ValueError, match="at least 3"):
    bars.make_borders(np.zeros(10), 2)
  with pytest.raises(ValueError, match="no finite"):
    bars.make_borders(np.full(10, np.nan), 8)
