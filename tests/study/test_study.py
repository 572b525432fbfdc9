"""Study in one process: ask/tell, failures, exact resume, stale trials, budgets, exports."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import objectives
from metatune.space import SpaceError
from metatune.study import Study, StudyError, TrialPruned, export, report, tuning
from metatune.study.storage import Storage


@pytest.fixture
def space_file(tmp_path):
  return objectives.toy_space_file(tmp_path)


def test_ask_tell_best_is_finite_valid_and_never_a_failure(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "t", seed=3) as study:
    for i in range(12):
      trial = study.ask()
      study.space.validate(trial.config)
      if i % 4 == 1:
        rec = study.tell(trial, float("nan"))
        assert rec.state == "failed" and rec.reason == "nan"
      elif i % 4 == 2:
        rec = study.tell(trial, -1e9, state="failed", reason="exception", error="Traceback ...")
        assert rec.state == "failed" and rec.tuner_value is None
      else:
        study.tell(trial, objectives.quadratic(trial))
    best = study.best_trial
    done = [t for t in study.trials if t.state == "complete"]
    assert best.state == "complete" and math.isfinite(best.objectives[0])
    assert best.objectives[0] == min(t.objectives[0] for t in done)
    study.space.validate(best.config)
    assert study.counts() == {"complete": 6, "failed": 6, "pruned": 0, "running": 0,
                              "stale": 0}


def test_user_config_is_validated_before_it_runs(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "t") as study:
    with pytest.raises(SpaceError, match="z.*inactive"):
      study.ask({"x": 0.0, "y": 0.0, "opt": "a", "z": 3})
    with pytest.raises(SpaceError, match="outside"):
      study.enqueue({"x": 50.0, "y": 0.0, "opt": "a"})
    with pytest.raises(SpaceError, match="violates"):
      study.ask({"x": 5.0, "y": 5.0, "opt": "a"})
    assert study.trials == [] and study.storage.queue(study.study_id) == []
    study.enqueue({"x": 1.0, "y": -0.5, "opt": "a"})
    trial = study.ask()
    assert trial.config == {"x": 1.0, "y": -0.5, "opt": "a"}
    assert study.tell(trial, 0.0).source == "user"


def test_trial_seeds_are_derived_from_study_seed_and_number(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "t", seed=5) as study:
    seeds = [study.ask().seed for _ in range(4)]
  assert seeds == [tuning.trial_seed(5, n) for n in range(4)]
  assert len(set(seeds)) == 4 and tuning.trial_seed(6, 0) != seeds[0]


@pytest.mark.parametrize("tuner", [
    pytest.param("random", marks=pytest.mark.slow),  # compiling a second tuner: ~8 s
    "quasi_random"])
def test_resume_continues_exactly_like_an_uninterrupted_study(tuner, space_file, tmp_path):
  with Study.create(space_file, tmp_path / "a.db", "s", tuner=tuner, seed=1) as straight:
    straight.optimize(objectives.quadratic, num_trials=14, executor="inline", progress=False)
    want = [t.config for t in straight.trials]
    want_state = straight.ledger.tuner.state
  with Study.create(space_file, tmp_path / "b.db", "s", tuner=tuner, seed=1) as first:
    first.optimize(objectives.quadratic, num_trials=8, executor="inline", progress=False)
  with Study.load(tmp_path / "b.db") as resumed:
    resumed.optimize(objectives.quadratic, num_trials=14, executor="inline", progress=False)
    assert [t.config for t in resumed.trials] == want
    assert tuning.same_state(resumed.ledger.tuner.state, want_state)


def test_replayed_state_matches_live_state_with_out_of_order_tells(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "s", tuner="quasi_random") as study:
    trials = [study.ask() for _ in range(4)]
    for t in (trials[2], trials[0]):
      study.tell(t, 1.0)
    trials += [study.ask(), study.ask()]
    for t in (trials[5], trials[1], trials[3], trials[4]):
      study.tell(t, 2.0)
    live = study.ledger.tuner.state
  with Study.load(tmp_path / "s.db") as again:
    again.claim()
    assert tuning.same_state(again.ledger.tuner.state, live)
    driver = tuning.TunerDriver(again.space, "quasi_random", {}, 0)
    assert tuning.replay(driver, again.trials, check=True) == []


@pytest.mark.slow  # about 25 s: compiling GP-BO's ask on 2 busy cores
def test_gp_bo_pending_trials_get_a_constant_liar_and_replay_exactly(space_file, tmp_path):
  opts = {"num_candidates": 64, "fit_steps": 5, "history_size": 16, "num_initial": 3,
          "num_rounds": 1}
  with Study.create(space_file, tmp_path / "s.db", "g", tuner="gp_bo", tuner_options=opts,
                    seed=2) as study:
    for _ in range(4):
      t = study.ask()
      study.tell(t, objectives.quadratic(t))
    batch = [study.ask() for _ in range(3)]  # each sees the ones before as pending
    assert len({json.dumps(t.config, sort_keys=True) for t in batch}) == 3
    for t in batch:
      study.tell(t, objectives.quadratic(t))
    live = study.ledger.tuner.state
    assert study.ledger.tuner.liar
  with Study.load(tmp_path / "s.db") as again:
    driver = tuning.TunerDriver(again.space, "gp_bo", opts, 2)
    assert tuning.replay(driver, again.trials, check=True) == []
    assert tuning.same_state(driver.state, live)


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_running_trials_of_a_dead_driver_become_stale_and_run_again(space_file, tmp_path):
  path = tmp_path / "s.db"
  study = Study.create(space_file, path, "s")
  asked = [study.ask() for _ in range(3)]
  study.tell(asked[1], 0.5)
  # The driver dies (its process is gone) without telling trials 0 and 2.
  study.storage.conn.execute("UPDATE sessions SET pid=?", (_dead_pid(),))
  study.storage.conn.close()
  with Study.load(path) as resumed:
    resumed.optimize(objectives.quadratic, num_trials=5, executor="inline", progress=False)
    trials = resumed.trials
  states = {t.number: t.state for t in trials}
  assert states[0] == states[2] == "stale" and states[1] == "complete"
  retries = {t.retry_of: t for t in trials if t.retry_of is not None}
  assert sorted(retries) == [0, 2]
  assert retries[0].config == asked[0].config and retries[2].config == asked[2].config
  assert retries[0].number == 3 and retries[2].number == 4  # asked again first
  assert sum(t.state == "complete" for t in trials) == 5


def test_one_driver_at_a_time(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "s") as first:
    first.ask()
    other = Study.load(tmp_path / "s.db")
    with pytest.raises(StudyError, match="being driven by process"):
      other.ask()
    other.close()


def test_load_errors_name_the_file_and_the_studies(space_file, tmp_path):
  with pytest.raises(StudyError, match="no such study file"):
    Study.load(tmp_path / "nope.db")
  Study.create(space_file, tmp_path / "s.db", "a").close()
  Study.create(space_file, tmp_path / "s.db", "b").close()
  with pytest.raises(StudyError, match=r"holds 2 studies \['a', 'b'\]"):
    Study.load(tmp_path / "s.db")
  with pytest.raises(StudyError, match=r"no study named 'c'"):
    Study.load(tmp_path / "s.db", "c")
  with pytest.raises(StudyError, match="other settings: seed"):
    Study.create(space_file, tmp_path / "s.db", "a", seed=9, load_if_exists=True)
  with pytest.raises(StudyError, match="unknown tuner"):
    Study.create(space_file, tmp_path / "s.db", "z", tuner="bayes")


def test_tell_refuses_unknown_or_finished_trials(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "s") as study:
    t = study.ask()
    study.tell(t, 1.0)
    with pytest.raises(StudyError, match="it is complete"):
      study.tell(t, 1.0)
    with pytest.raises(StudyError, match="no such trial"):
      study.tell(99, 1.0)
    t2 = study.ask()
    with pytest.raises(StudyError, match="str 'high', not a number"):
      study.tell(t2, "high")


class _FakePruner:
  """Prunes any trial whose minimized value at its step is worse than the best seen there."""

  def __init__(self):
    self.calls = 0

  def should_prune(self, trial_number, step, reports):
    self.calls += 1
    here = [r[step] for n, r in reports.items() if step in r]
    return reports[trial_number][step] > min(here)


def test_pruned_trials_keep_their_last_value(space_file, tmp_path):
  pruner = _FakePruner()
  with Study.create(space_file, tmp_path / "s.db", "p", seed=4) as study:
    study.optimize(objectives.curve, num_trials=12, executor="inline", pruner=pruner,
                   progress=False)
    pruned = [t for t in study.trials if t.state == "pruned"]
    assert pruned and pruner.calls > 0
    for t in pruned:
      reports = study.reports[t.number]
      assert t.objectives[0] == reports[max(reports)]
      assert t.tuner_value == t.objectives[0]
    assert study.best_trial.state == "complete"


def test_diverged_reports_fail_the_trial(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "d") as study:
    study.optimize(objectives.diverging, num_trials=6, executor="inline", progress=False)
    for t in study.trials:
      assert (t.state, t.reason) == (("failed", "diverged") if t.number % 2 else
                                     ("complete", None))


def test_divergence_threshold_on_the_final_value(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "d", divergence_threshold=10.0) as study:
    study.optimize(objectives.quadratic, num_trials=10, executor="inline", progress=False)
    for t in study.trials:
      if t.state == "failed":
        assert t.reason == "diverged" and t.objectives[0] > 10.0
      else:
        assert t.objectives[0] <= 10.0
    assert any(t.state == "failed" for t in study.trials)


def test_multi_objective_constraints_pareto_front_and_hypervolume(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "m",
                    objectives={"loss": "minimize", "score": "maximize"},
                    constraints=["limit"], seed=0) as study:
    study.optimize(objectives.multi, num_trials=40, executor="inline", progress=False)
    trials = study.trials
    front = study.best_trials
    feasible = [t for t in trials if t.constraints[0] <= 0]
    assert len(feasible) < len(trials)  # some broke the constraint
    assert front and all(t.constraints[0] <= 0 for t in front)
    signed = np.array([[t.objectives[0], -t.objectives[1]] for t in feasible])
    for t in front:  # nothing feasible dominates a front member
      me = np.array([t.objectives[0], -t.objectives[1]])
      assert not np.any(np.all(signed <= me, axis=1) & np.any(signed < me, axis=1))
    assert trials[0].attrs == {"note": "extra"}
    with pytest.raises(StudyError, match="best_trials"):
      study.best_trial
    hv = report.front_and_hypervolume(study)
    assert hv["hypervolume"] > 0 and sorted(hv["front"]) == [t.number for t in front]


def test_wrong_return_shape_is_a_failure_with_reason(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "m", objectives={"loss": "min"},
                    constraints=["limit"]) as study:
    study.optimize(objectives.quadratic, num_trials=2, executor="inline", progress=False)
    for t in study.trials:
      assert t.state == "failed" and t.reason == "invalid_return"
      assert "return a dict" in t.error


_NOT_NUMBERS = [("0.5", "str '0.5'"), (True, "bool True"), (np.bool_(False), "False"),
                (None, "NoneType None"), ([0.5], "list [0.5]"), (b"1", "bytes b'1'"),
                ({"loss": 0.5}, "lacks ['objective']"), ({"objective": True}, "bool True"),
                ({"objective": "0.5"}, "str '0.5'")]


def test_a_return_that_is_not_a_number_fails_with_what_came_and_what_was_expected(space_file,
                                                                                  tmp_path):
  values = [v for v, _ in _NOT_NUMBERS] + [np.float32(0.25), np.array(2.0), 3]
  with Study.create(space_file, tmp_path / "s.db", "r") as study:
    study.optimize(lambda t: values[t.number], num_trials=len(values), executor="inline",
                   progress=False)
    trials = study.trials
  for t, (value, said) in zip(trials, _NOT_NUMBERS):
    assert (t.state, t.reason) == ("failed", "invalid_return"), value
    assert said in t.error and "expected a number" in t.error and "'objective'" in t.error, t.error
  assert [t.objectives for t in trials[len(_NOT_NUMBERS):]] == [[0.25], [2.0], [3.0]]


def test_tell_refuses_a_value_that_is_not_a_number(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "r") as study:
    trial = study.ask()
    for value in ("0.5", True, None, [1.0]):
      with pytest.raises(StudyError, match="not a number"):
        study.tell(trial, value)
    assert study.tell(trial, 0.5).state == "complete"


def test_budgets_cost_time_and_plateau(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "c.db", "c") as study:
    res = study.optimize(lambda t: {"objective": 1.0, "cost": 2.5}, max_cost=10.0,
                         executor="inline", progress=False)
    assert res.stop_reason == "cost" and len(study.trials) == 4
  with Study.create(space_file, tmp_path / "p.db", "p") as study:
    res = study.optimize(lambda t: 1.0, num_trials=500, stop_on_plateau=True, plateau_window=10,
                         executor="inline", progress=False)
    assert res.stop_reason == "plateau" and len(study.trials) == 11
    assert "stopped paying" in res.plateau
  with Study.create(space_file, tmp_path / "t.db", "t") as study:
    res = study.optimize(lambda t: 1.0, timeout=0.3, executor="inline", progress=False)
    assert res.stop_reason == "time" and res.elapsed >= 0.3
  with Study.create(space_file, tmp_path / "n.db", "n") as study:
    with pytest.raises(StudyError, match="never ends"):
      study.optimize(lambda t: 1.0, executor="inline")
    with pytest.raises(StudyError, match="per-trial timeouts"):
      study.optimize(lambda t: 1.0, num_trials=1, executor="inline", trial_timeout=1.0)


def test_exports_csv_json_dataframe(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "e", seed=1) as study:
    study.optimize(objectives.bad_inline, num_trials=10, executor="inline", progress=False)
    n = export.to_csv(study, tmp_path / "t.csv")
    export.to_json(study, tmp_path / "t.json")
    df = export.to_dataframe(study)
  assert n == 10 and len(df) == 10
  doc = json.loads((tmp_path / "t.json").read_text())  # strict JSON: NaN became null
  assert doc["study"]["tuner"] == "quasi_random" and len(doc["trials"]) == 10
  failed = [r for r in doc["trials"] if r["state"] == "failed"]
  assert failed and all(r["objective"] is None for r in failed if r["reason"] == "nan")
  assert "RuntimeError" in next(r["error"] for r in failed if r["reason"] == "exception")
  assert {"params.x", "params.z", "seed", "space_signature", "git_commit", "jax_version",
          "env_id"} <= set(df.columns)
  assert df.loc[df["params.opt"] == "a", "params.z"].isna().all()
  header = (tmp_path / "t.csv").read_text().splitlines()[0]
  assert header.startswith("number,state,reason,objective")


def test_provenance_is_stored_per_trial(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "v", prior_hash="abc123") as study:
    study.optimize(objectives.quadratic, num_trials=2, executor="inline", progress=False)
    envs = study.storage.environments()
    for t in study.trials:
      assert t.space_signature == study.space.signature and t.prior_hash == "abc123"
      env = envs[t.env_id]
      assert env["versions"]["jax"] and env["versions"]["python"] and env["host"]
      assert "git_commit" in env


def test_trial_pruned_without_reports_keeps_nan(space_file, tmp_path):
  def objective(trial):
    raise TrialPruned()

  with Study.create(space_file, tmp_path / "s.db", "x") as study:
    study.optimize(objective, num_trials=2, executor="inline", progress=False)
    assert all(t.state == "pruned" and math.isnan(t.objectives[0]) for t in study.trials)
    assert study.best_trial is None


def test_storage_file_shared_by_two_studies(space_file, tmp_path):
  store = Storage(tmp_path / "s.db")
  a = Study.create(space_file, store, "a", seed=1)
  b = Study.create(space_file, store, "b", seed=2)
  a.optimize(objectives.quadratic, num_trials=3, executor="inline", progress=False)
  b.optimize(objectives.quadratic, num_trials=2, executor="inline", progress=False)
  assert len(a.trials) == 3 and len(b.trials) == 2
  a.close()
  b.close()
  store.close()


def test_progress_bar_shows_the_best_so_far(space_file, tmp_path, capsys):
  with Study.create(space_file, tmp_path / "s.db", "bar") as study:
    study.optimize(lambda t: 2.0 + t.number, num_trials=5, executor="inline")
  err = capsys.readouterr().err
  assert "5/5" in err and "best objective=2" in err


def test_a_pruner_after_resume_sees_the_stored_reports_but_not_a_killed_trials(space_file,
                                                                                tmp_path):
  from metatune.study.pruners import ASHA  # pylint: disable=import-outside-toplevel
  path = tmp_path / "s.db"
  with Study.create(space_file, path, "r", seed=2) as study:
    for value in (0.1, 0.2, 0.3):
      trial = study.ask()
      trial.report(1, value)
      study.tell(trial, value)
    killed = study.ask()  # running when the driver goes away: stale on resume
    killed.report(1, 0.05)
  with Study.load(path, "r") as study:
    study.pruner = ASHA(1, 9, 3)
    worse = study.ask()
    worse.report(1, 0.9)
    # Only the stored rung-1 values (0.1, 0.2, 0.3) make 0.9 a loser: alone it would continue.
    assert worse.should_prune()
    study.tell(worse, state="pruned")
    good = study.ask()
    good.report(1, 0.08)
    # Best of the live rung-1 values; the killed trial's 0.05 does not count.
    assert not good.should_prune()
    assert study.trials[killed.number].state == "stale"
