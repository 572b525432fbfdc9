"""Curve-extrapolation scores: the baselines on curves of known shape, and refused inputs."""

import jax
import numpy as np
import pytest

from metatune.surrogate import make_table
from metatune.surrogate.evaluate import draw_rows
from metatune.surrogate.extrapolation import (baseline_finals, evaluate_extrapolation, fit_final,
                                              scores)

K = 5


@pytest.fixture(scope="module")
def power_table(table):
  """The conftest table's configurations with curves a + b / sqrt(t), t = (1..5) / 5."""
  rng = np.random.default_rng(0)
  t = np.arange(1, 6) / 5
  a = rng.uniform(0, 1, table.objective.shape)
  b = rng.uniform(0.1, 1, table.objective.shape)
  curve = a[..., None] + b[..., None] / np.sqrt(t)
  return make_table(table.values, table.active, curve[..., -1], table.failed, table.task_ids,
                    curve, t)


def test_the_curve_fit_recovers_power_laws_that_the_last_value_overestimates(power_table):
  rows = draw_rows(jax.random.key(0), power_table, 2)
  fit = scores(baseline_finals("fit", power_table, rows, K, 2), power_table, rows, K)
  last = scores(baseline_finals("last", power_table, rows, K, 2), power_table, rows, K)
  assert np.all(fit["mae"] < 1e-5) and np.all(fit["spearman"] > 0.99)
  assert np.all(last["mae"] > 0.1)
  # With one point the fit is the last value.
  np.testing.assert_array_equal(fit_final(np.asarray(power_table.curve), power_table.fidelity, 1),
                                np.asarray(power_table.curve)[..., 0])
  # The last value's interval comes from its errors on the context curves: it covers most.
  assert np.mean(last["coverage"]) > 0.5


def test_refuses_tables_without_curves_and_surrogates_without_fidelity(surrogate, table,
                                                                        power_table):
  with pytest.raises(ValueError, match="no learning curves"):
    evaluate_extrapolation(jax.random.key(0), surrogate, table)
  with pytest.raises(ValueError, match="without fidelities"):
    evaluate_extrapolation(jax.random.key(0), surrogate, power_table)
