"""The plateau signal: the rule, the message, and bad input."""

import math

import numpy as np
import pytest

from metatune.study.plateau import PlateauReport, plateau_signal


def test_flat_best_after_early_gains_is_a_plateau_with_a_plain_message():
  best = [1.0, 0.6, 0.4] + [0.3] * 25
  r = plateau_signal(best, window=20)
  assert isinstance(r, PlateauReport)
  assert r.plateaued and r.gain_last_window == 0.0 and r.relative_gain == 0.0
  assert r.num_trials == 28
  assert "stopped paying" in r.message and "last 20 trials" in r.message
  assert "0%" in r.message


def test_steady_improvement_is_not_a_plateau():
  best = list(np.linspace(1.0, 0.5, 41))
  r = plateau_signal(best, window=20)
  assert not r.plateaued
  assert r.gain_last_window == pytest.approx(0.25)
  assert r.relative_gain == pytest.approx(0.5)
  assert "Still improving" in r.message and "0.25" in r.message


def test_the_threshold_is_relative_to_the_total_improvement():
  best = [2.0] + [1.0] * 10 + [0.995] * 10  # gain 0.005 of a 1.005 total: 0.5%
  assert plateau_signal(best, window=15, rel_tol=0.01).plateaued
  assert not plateau_signal(best, window=15, rel_tol=0.001).plateaued
  # The same shape at another scale gives the same verdict.
  assert plateau_signal([1000 * b for b in best], window=15, rel_tol=0.01).plateaued


def test_too_few_trials_never_plateau():
  r = plateau_signal([1.0] * 15, window=20, min_trials=10)
  assert not r.plateaued and math.isnan(r.relative_gain)
  assert "Too early" in r.message and "21" in r.message
  assert not plateau_signal([1.0] * 10, window=5, min_trials=12).plateaued
  assert plateau_signal([1.0] * 12, window=5, min_trials=12).plateaued


def test_leading_failures_are_not_counted():
  best = [math.inf] * 5 + [1.0] * 21
  r = plateau_signal(best, window=20)
  assert r.num_trials == 21 and r.plateaued
  assert "did not improve at all" in r.message
  assert not plateau_signal([math.inf] * 30, window=20).plateaued


@pytest.mark.parametrize("best, match", [
    ([1.0, 2.0, 0.5], r"must not increase.*best_so_far\[1\] = 2 > best_so_far\[0\] = 1"),
    ([1.0, math.nan, 0.5], r"best_so_far\[1\] is nan after a finite value"),
    ([[1.0, 2.0]], "one-dimensional"),
    (["a", "b"], "sequence of numbers"),
])
def test_bad_sequences_are_named(best, match):
  with pytest.raises(ValueError, match=match):
    plateau_signal(best)


@pytest.mark.parametrize("kwargs, match", [
    ({"window": 0}, "window must be a whole number >= 1"),
    ({"window": 2.5}, "window must be a whole number"),
    ({"min_trials": 0}, "min_trials must be a whole number >= 1"),
    ({"rel_tol": -0.1}, "rel_tol must be a finite number >= 0"),
    ({"rel_tol": math.nan}, "rel_tol must be a finite number >= 0"),
])
def test_bad_settings_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    plateau_signal([1.0] * 30, **kwargs)
