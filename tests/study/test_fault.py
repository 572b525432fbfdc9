"""Kill -9 and resume (experiments/fault_study.py): nothing committed is lost or duplicated."""

import pytest

import experiment_scripts


def _load_script():
  return experiment_scripts.load("fault_study")


def _assert_clean(res, num_trials, num_kills):
  assert [r["killed"] for r in res["runs"]] == [True] * num_kills + [False]
  assert res["runs"][-1]["returncode"] == 0
  assert res["finished"] == num_trials
  # A line is printed after its commit, so a kill between the two leaves a stored trial
  # unprinted; never the other way round.
  assert num_trials - num_kills * 4 <= res["printed"] <= num_trials
  assert res["lost"] == [] and res["printed_twice"] == [] and res["changed"] == []
  assert res["stale_not_retried_once"] == [] and res["retried"] == res["stale"]
  assert res["configs_finished_twice"] == 0 and res["evaluated_unaccounted"] == []
  assert res["replay_mismatches"] == []
  assert all(r["orphans"] == 0 for r in res["runs"])
  assert res["ok"]


def test_one_kill_twenty_trials(tmp_path):
  fault = _load_script()
  res = fault.run(num_trials=20, num_workers=4, num_kills=1, seed=1, workdir=str(tmp_path))
  _assert_clean(res, 20, 1)
  # The kill landed mid-study: this run's seed leaves trials running at the kill.
  assert res["runs"][0]["committed"] < 20 and res["stale"] > 0


@pytest.mark.slow
def test_three_kills_sixty_trials(tmp_path):
  fault = _load_script()
  res = fault.run(num_trials=60, num_workers=4, num_kills=3, seed=2, workdir=str(tmp_path))
  _assert_clean(res, 60, 3)
