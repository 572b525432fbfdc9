"""Early-stopping rules: rungs, the ASHA and successive-halving quotas, failures, bad input."""

import math

import numpy as np
import pytest

from metatune.study.pruners import ASHA, NopPruner, SuccessiveHalving


def test_rungs_are_geometric_below_the_full_budget():
  assert ASHA(1, 27).rungs == (1.0, 3.0, 9.0)
  assert ASHA(1, 30).rungs == (1.0, 3.0, 9.0, 27.0)
  assert ASHA(2, 50, reduction_factor=4).rungs == (2.0, 8.0, 32.0)
  assert ASHA(5, 5).rungs == ()
  assert not ASHA(5, 5).should_prune(1, 5, {0: {5: 0.0}, 1: {5: 9.0}})


def test_asha_keeps_the_top_third_of_what_the_rung_has_recorded_so_far():
  asha = ASHA(1, 27)
  reports = {0: {1: 0.5}}
  assert not asha.should_prune(0, 1, reports)  # the first arrival always continues
  reports[1] = {1: 0.6}
  assert asha.should_prune(1, 1, reports)  # 2 recorded: keep max(1, 0) = 1, it is not the best
  reports[2] = {1: 0.4}
  assert not asha.should_prune(2, 1, reports)
  for i, v in enumerate([0.7, 0.8, 0.9], start=3):
    reports[i] = {1: v}
  reports[6] = {1: 0.45}  # 7 recorded: keep 2 (0.4 and 0.45)
  assert not asha.should_prune(6, 1, reports)
  reports[7] = {1: 0.45}  # a tie with the last kept value continues
  assert not asha.should_prune(7, 1, reports)
  reports[8] = {1: 0.46}  # 9 recorded: keep 3 (0.4, 0.45, 0.45)
  assert asha.should_prune(8, 1, reports)


def test_a_trial_is_judged_once_per_rung_at_the_report_that_reaches_it():
  asha = ASHA(1, 27)
  reports = {0: {1: 0.1, 3: 0.1}, 1: {1: 0.2, 3: 0.2}, 2: {1: 0.3}}
  reports[2][2] = 0.9  # between rungs: never judged
  assert not asha.should_prune(2, 2, reports)
  reports[2][5] = 0.9  # step 5 reaches rung 3: 3 recorded there, keep 1
  assert asha.should_prune(2, 5, reports)
  reports[3] = {10: 0.05}  # a first report at 10 reaches rungs 1, 3 and 9; judged at 9
  assert not asha.should_prune(3, 10, reports)
  reports[3][27] = 0.9  # the full budget is never judged
  assert not asha.should_prune(3, 27, reports)


def test_non_finite_values_are_pruned_and_never_raise_the_bar():
  asha = ASHA(1, 9)
  assert asha.should_prune(0, 1, {0: {1: float("nan")}})
  assert asha.should_prune(0, 1, {0: {1: float("inf")}})
  reports = {0: {1: float("nan")}, 1: {1: float("nan")}, 2: {1: 5.0}}
  assert not asha.should_prune(2, 1, reports)


def _simulate(pruner, curves):
  """Runs trials one after another, each until pruned or finished; returns the steps reached."""
  reports, reached = {}, []
  for i, curve in enumerate(curves):
    reports[i] = {}
    last = 0
    for step, value in enumerate(curve, start=1):
      reports[i][step] = float(value)
      last = step
      if pruner.should_prune(i, step, reports):
        break
    reached.append(last)
  return np.array(reached)


def _rank_consistent_curves(key, n, epochs=27):
  rng = np.random.default_rng(key)
  quality = rng.uniform(size=n)
  steps = np.arange(1, epochs + 1)
  return quality[:, None] + 1.0 / steps[None, :], quality


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asha_never_stops_the_best_trial_when_curves_do_not_cross(seed):
  curves, quality = _rank_consistent_curves(seed, 60)
  reached = _simulate(ASHA(1, 27), curves)
  assert reached[np.argmin(quality)] == 27
  # The best trial among those that finished is the best overall.
  assert np.argmin(np.where(reached == 27, quality, np.inf)) == np.argmin(quality)


def test_asha_promotes_about_one_in_eta_and_saves_most_of_the_budget():
  curves, _ = _rank_consistent_curves(7, 300)
  reached = _simulate(ASHA(1, 27), curves)
  beyond_first = np.mean(reached > 1)
  assert 0.25 < beyond_first < 0.45, beyond_first  # about 1/3 continue past the first rung
  assert np.mean(reached > 3) < np.mean(reached > 1)
  assert np.mean(reached == 27) < 0.15
  assert reached.sum() < 0.25 * 27 * len(reached)


def test_successive_halving_quota_counts_the_whole_cohort():
  sh = SuccessiveHalving(1, 27)
  reports = {i: {1: 0.1 * i} for i in range(9)}
  # Rung 1: 9 in the cohort, keep 3 (trials 0, 1, 2).
  assert [sh.should_prune(i, 1, reports) for i in range(4)] == [False, False, False, True]
  reports[0][3], reports[1][3], reports[2][3] = 0.3, 0.2, 0.25
  # Rung 3: keep floor(9 / 9) = 1, where ASHA keeps max(1, floor(3 / 3)) = 1 too.
  assert [sh.should_prune(i, 3, reports) for i in range(3)] == [True, False, True]
  # With 27 in the cohort and 6 at rung 3, SH keeps 3 and ASHA keeps 2.
  reports = {i: {1: 0.1 * i} for i in range(27)}
  for i in range(6):
    reports[i][3] = 0.1 * i
  assert not SuccessiveHalving(1, 27).should_prune(2, 3, reports)
  assert ASHA(1, 27).should_prune(2, 3, reports)


def test_successive_halving_never_stops_the_best_trial_and_saves_most_of_the_budget():
  curves, quality = _rank_consistent_curves(3, 120)
  reached = _simulate(SuccessiveHalving(1, 27), curves)
  assert reached[np.argmin(quality)] == 27
  assert reached.sum() < 0.25 * 27 * len(reached)


def test_nop_pruner_never_prunes():
  assert not NopPruner().should_prune(0, 1, {0: {1: math.nan}})


@pytest.mark.parametrize("kwargs, match", [
    ({"min_resource": 0, "max_resource": 9}, "min_resource must be > 0"),
    ({"min_resource": -1, "max_resource": 9}, "min_resource must be > 0"),
    ({"min_resource": 3, "max_resource": 1}, r"max_resource \(1\) must be >= min_resource"),
    ({"min_resource": 1, "max_resource": 9, "reduction_factor": 1}, "reduction_factor must be > 1"),
    ({"min_resource": 1, "max_resource": "9"}, "max_resource must be a finite number"),
    ({"min_resource": 1, "max_resource": math.inf}, "max_resource must be a finite number"),
    ({"min_resource": True, "max_resource": 9}, "min_resource must be a finite number"),
])
@pytest.mark.parametrize("cls", [ASHA, SuccessiveHalving])
def test_bad_arguments_name_the_parameter(cls, kwargs, match):
  with pytest.raises(ValueError, match=match):
    cls(**kwargs)


@pytest.mark.parametrize("pruner", [ASHA(1, 9), SuccessiveHalving(1, 9), NopPruner()])
def test_bad_calls_name_the_problem(pruner):
  with pytest.raises(ValueError, match="trial_number 3 has no entry in reports"):
    pruner.should_prune(3, 1, {0: {1: 0.1}})
  with pytest.raises(ValueError, match=r"step 2 is not among the steps reported by trial 0"):
    pruner.should_prune(0, 2, {0: {1: 0.1}})
  with pytest.raises(ValueError, match="reports must be a mapping"):
    pruner.should_prune(0, 1, [0.1])
