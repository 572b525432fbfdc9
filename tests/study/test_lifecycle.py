"""Trials across drivers: an inline trial that kills its driver is not asked again forever."""

import subprocess
import sys

import pytest

import objectives
from metatune.study import Study


@pytest.fixture
def space_file(tmp_path):
  return objectives.toy_space_file(tmp_path)


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _die(study):
  """The driver dies where it stands (its pid is gone; nothing more is written)."""
  study.storage.conn.execute("UPDATE sessions SET pid=?", (_dead_pid(),))
  study.storage.conn.close()


def test_an_inline_trial_that_killed_its_driver_twice_fails_instead_of_a_third_try(space_file,
                                                                                  tmp_path):
  path = tmp_path / "s.db"
  first = Study.create(space_file, path, "s")
  first.claim()
  (crashing,) = first.ledger.start(1, executor="inline")
  _die(first)
  second = Study.load(path)
  second.claim()  # asked again: the crash may have been a kill of the driver
  assert second.trials[0].state == "stale"
  (retry,) = second.ledger.start(1, executor="inline")
  assert retry.retry_of == 0 and retry.config == crashing.config
  _die(second)
  with Study.load(path) as third:
    third.claim()
    trials = third.trials
    assert (trials[1].state, trials[1].reason) == ("failed", "crashed")
    assert "twice" in trials[1].error and "executor='process'" in trials[1].error
    assert third.storage.queue(third.study_id) == []  # not asked a third time
    third.optimize(objectives.quadratic, num_trials=2, executor="inline", progress=False)
    assert [t.state for t in third.trials] == ["stale", "failed", "complete"]


def test_a_process_trial_left_by_a_dead_driver_is_asked_again_every_time(space_file, tmp_path):
  # A driver killed while process workers ran is not the objective's doing.
  path = tmp_path / "s.db"
  study = Study.create(space_file, path, "s")
  study.claim()
  study.ledger.start(1, executor="process")
  _die(study)
  study = Study.load(path)
  study.claim()
  study.ledger.start(1, executor="process")
  _die(study)
  with Study.load(path) as study:
    study.claim()
    assert [t.state for t in study.trials] == ["stale", "stale"]
    assert [q[2] for q in study.storage.queue(study.study_id)] == [1]


SEGFAULT = """
import ctypes
from metatune.study import Study

def objective(trial):
  if trial.config == {crash!r}:
    ctypes.string_at(0)  # a segfault, in the driver's own process
  return trial.config["x"] ** 2

with Study.create({space!r}, {db!r}, "s", load_if_exists=True) as study:
  study.optimize(objective, num_trials=3, executor="inline", progress=False)
"""


@pytest.mark.slow  # three fresh drivers, each importing jax and compiling its tuner: ~1 min
def test_a_segfaulting_inline_objective_resumes_without_a_trial_left_running(space_file,
                                                                             tmp_path):
  with Study.create(space_file, tmp_path / "probe.db", "s") as probe:
    crash = probe.ask().config  # the study's first proposal: it will crash the driver
  script = tmp_path / "run.py"
  script.write_text(SEGFAULT.format(crash=crash, space=space_file, db=str(tmp_path / "s.db")))
  runs = []
  for _ in range(3):
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    with Study.load(tmp_path / "s.db") as study:
      runs.append((proc.returncode, [(t.state, t.reason) for t in study.trials], proc.stderr))
  (code0, states0, err0), (code1, states1, _), (code2, states2, err2) = runs
  assert code0 == code1 == -11 and "Segmentation fault" in err0  # faulthandler says where
  assert states0 == [("running", None)]  # as the crash left it
  assert states1 == [("stale", None), ("running", None)]  # asked again, crashed again
  assert code2 == 0, err2[-2000:]
  # Three finished trials, the crashed one among them.
  assert states2 == [("stale", None), ("failed", "crashed"), ("complete", None),
                     ("complete", None)]
