"""Trials in worker processes and on Ray: failures of every kind are data, the study completes."""

import os
import subprocess
import sys
import time
import types

import pytest

import objectives
from metatune.study import Study, StudyError
from metatune.study.processes import ProcessExecutor


@pytest.fixture
def space_file(tmp_path):
  return objectives.toy_space_file(tmp_path)


def test_bad_objectives_raise_nan_and_hang_the_study_completes(space_file, tmp_path):
  # 40 trials, 2 workers: trials 3, 18, 33 raise; 8, 23, 38 return NaN; 13, 28 hang (20%).
  with Study.create(space_file, tmp_path / "s.db", "bad", seed=0) as study:
    t0 = time.time()
    res = study.optimize(objectives.bad, num_trials=40, num_workers=2, trial_timeout=1.5,
                         progress=False)
    took = time.time() - t0
    trials = study.trials
    assert res.stop_reason == "trials" and len(trials) == 40
    reasons = {t.number: t.reason for t in trials if t.state == "failed"}
    assert reasons == {3: "exception", 18: "exception", 33: "exception", 8: "nan", 23: "nan",
                       38: "nan", 13: "timeout", 28: "timeout"}
    for t in trials:
      if t.reason == "exception":
        assert "RuntimeError: boom in trial" in t.error and "Traceback" in t.error
      if t.reason == "timeout":
        assert "1.5 s" in t.error and t.duration < 20
    best = study.best_trial
    assert best.state == "complete" and best.number not in reasons
    assert best.objectives[0] == min(t.objectives[0] for t in trials if t.state == "complete")
    study.space.validate(best.config)
    assert took < 60


def test_worker_crash_and_memory_limit(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "c.db", "c") as study:
    study.optimize(objectives.crash, num_trials=4, num_workers=2, progress=False)
    for t in study.trials:
      if t.number % 2 == 0:
        assert (t.state, t.reason) == ("failed", "crashed") and "exited with code 3" in t.error
      else:
        assert t.state == "complete"
  with Study.create(space_file, tmp_path / "m.db", "m") as study:
    study.optimize(objectives.hog, num_trials=2, num_workers=1, memory_limit_mb=512,
                   progress=False)
    first, second = study.trials
    assert (first.state, first.reason) == ("failed", "out_of_memory")
    assert "MemoryError" in first.error
    assert second.state == "complete"  # the worker survived its MemoryError


def test_closures_travel_to_workers_and_reports_reach_the_pruner(space_file, tmp_path):
  offset = 10.0

  def objective(trial):
    for step in (1, 2, 3):
      trial.report(step, offset + step)
      if trial.should_prune():
        return -1.0
    return offset + trial.config["x"]

  class PruneAtTwo:

    def should_prune(self, number, step, reports):
      return step == 2 and reports[number][2] == offset + 2

  with Study.create(space_file, tmp_path / "s.db", "c") as study:
    study.optimize(objective, num_trials=3, num_workers=2, pruner=PruneAtTwo(), progress=False)
    for t in study.trials:
      assert t.objectives == [-1.0] and study.reports[t.number] == {1.0: 11.0, 2.0: 12.0}


def test_objective_paths_are_checked_before_workers_start(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "p") as study:
    with pytest.raises(StudyError, match="no attribute 'nope'"):
      study.optimize("objectives:nope", num_trials=1, progress=False)
    with pytest.raises(StudyError, match="cannot import no_such_module"):
      study.optimize("no_such_module:fn", num_trials=1, progress=False)
    with pytest.raises(StudyError, match="does not exist"):
      study.optimize(str(tmp_path / "missing.py") + ":fn", num_trials=1, progress=False)
    with pytest.raises(StudyError, match="num_workers"):
      ProcessExecutor(objectives.quadratic, num_workers=0)
    assert study.trials == []
    path = os.path.join(os.path.dirname(objectives.__file__), "objectives.py")
    study.optimize(f"{path}:quadratic", num_trials=2, num_workers=1, progress=False)
    assert [t.state for t in study.trials] == ["complete", "complete"]


def test_parallel_workers_get_distinct_proposals_that_reproduce(space_file, tmp_path):
  runs = []
  for name in ("a", "b"):
    with Study.create(space_file, tmp_path / f"{name}.db", "d", seed=7) as study:
      study.optimize(objectives.logged, num_trials=8, num_workers=4, progress=False)
      runs.append([(t.number, t.config, t.seed) for t in study.trials])
  assert len({str(cfg) for _, cfg, _ in runs[0]}) == 8
  # Finishing order differs between runs; quasi-random proposals do not depend on it.
  assert runs[0] == runs[1]


# ray.init starts its processes with fork+exec, which JAX warns about; exec makes it safe.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
@pytest.mark.slow  # ray is optional; starting its processes takes half a minute
def test_ray_executor_runs_a_study(space_file, tmp_path):
  ray = pytest.importorskip("ray")
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  try:
    with Study.create(space_file, tmp_path / "s.db", "ray", seed=1) as study:
      res = study.optimize(objectives.bad, num_trials=16, num_workers=2, executor="ray",
                           trial_timeout=3.0, progress=False)
      trials = study.trials
      reasons = {t.number: t.reason for t in trials if t.state == "failed"}
      assert res.stop_reason == "trials" and len(trials) == 16
      assert reasons == {3: "exception", 8: "nan", 13: "timeout"}
      assert study.best_trial.state == "complete"
      study.optimize(objectives.curve, num_trials=18, num_workers=2, executor="ray",
                     progress=False)
      assert len(study.reports[17]) == 9  # reports crossed the socket
  finally:
    ray.shutdown()


def test_inline_trials_output_is_kept_with_the_trial(space_file, tmp_path, capsys):
  def objective(trial):
    print("hello from", trial.number)
    print("x" * 5000, file=sys.stderr)
    return 1.0

  with Study.create(space_file, tmp_path / "s.db", "i") as study:
    study.optimize(objective, num_trials=1, executor="inline", progress=False,
                   log_limit_kb=1)
    out, err = capsys.readouterr()
    assert "hello" not in out + err
    log = study.log(0)
    assert log.num_bytes == len("hello from 0\n") + 5001 and log.text == "x" * 1023 + "\n"


def test_worker_output_is_captured_bounded_and_kept_with_the_trial(space_file, tmp_path, capfd):
  with Study.create(space_file, tmp_path / "s.db", "o") as study:
    study.optimize(objectives.chatty, num_trials=2, num_workers=1, progress=False)
    out, err = capfd.readouterr()
    assert "line 00000" not in out + err and "done 0" not in out + err  # not on the driver's
    first, second = study.trials
    logs = [study.log(0), study.log(1)]
  assert first.state == "complete" and (second.state, second.reason) == ("failed", "crashed")
  for n, log in enumerate(logs):
    assert log.num_bytes > 1_000_000 and len(log.text.encode()) <= 32 * 1024
    assert log.text.rstrip().endswith(f"done {n}") and f"stderr of trial {n}" in log.text
    assert "line 19999" in log.text and "line 00000" not in log.text  # the tail is kept


def test_children_of_a_trial_end_with_it(space_file, tmp_path, monkeypatch):
  path = tmp_path / "pids"
  monkeypatch.setenv("SPAWN_LOG", str(path))
  with Study.create(space_file, tmp_path / "s.db", "k") as study:
    study.optimize(objectives.spawner, num_trials=3, num_workers=1, progress=False)
    # Each trial saw the child of the trial before it gone.
    assert [t.objectives for t in study.trials] == [[0.0], [0.0], [0.0]]
  last = int(path.read_text().split()[-1])
  deadline = time.time() + 5
  while objectives.pid_alive(last) and time.time() < deadline:
    time.sleep(0.05)
  assert not objectives.pid_alive(last)  # nor does the last one outlive the study


def test_workers_dying_while_starting_stop_the_study_without_failed_trials(space_file, tmp_path):
  with Study.create(space_file, tmp_path / "s.db", "w") as study:
    with pytest.raises(StudyError, match="die while starting.*code 3"):
      study.optimize(objectives.DiesWhenLoaded(), num_trials=4, num_workers=2, progress=False)
    assert study.counts()["failed"] == 0 and study.counts()["complete"] == 0


def test_workers_do_not_run_the_drivers_script_again(space_file, tmp_path, monkeypatch):
  # Under multiprocessing's spawn they did (as __mp_main__): a script without a main guard
  # then ran its study again in every worker.
  marker = tmp_path / "ran"
  script = tmp_path / "driver_script.py"
  script.write_text("import os\nopen(os.environ['MAIN_RAN'], 'a').write('again\\n')\n")
  monkeypatch.setenv("MAIN_RAN", str(marker))
  main = types.ModuleType("__main__")
  main.__file__, main.__spec__ = str(script), None  # as for `python driver_script.py`
  monkeypatch.setitem(sys.modules, "__main__", main)
  with Study.create(space_file, tmp_path / "s.db", "m") as study:
    study.optimize(objectives.quadratic, num_trials=2, num_workers=2, progress=False)
    assert study.counts()["complete"] == 2
  assert not marker.exists()


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
STUB = """
import random
def train_one_epoch(config, seed):  # the user's training, cheaply
  return (config["x"] - 1.0) ** 2 + random.Random(seed).random()
"""


def _readme_snippet():
  text = open(README, encoding="utf-8").read()
  start = text.index("```python\nfrom metatune.study import Study")
  return text[start + len("```python\n"):text.index("```", start + 10)]


@pytest.mark.slow  # two fresh drivers, each importing jax and compiling its tuner: ~1 min
def test_the_readme_snippet_runs_as_written_and_without_its_main_guard(space_file, tmp_path):
  snippet = _readme_snippet()
  guard = 'if __name__ == "__main__":'
  assert guard in snippet
  head, body = snippet.split(guard)
  unguarded = head + "\n".join(line[2:] for line in body.split("\n", 1)[1].splitlines())
  for name, code in (("guarded", snippet), ("unguarded", unguarded)):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "space.yaml").write_text(open(space_file, encoding="utf-8").read())
    (folder / "tune_me.py").write_text(code.replace("from metatune.study import Study",
                                                    "from metatune.study import Study" + STUB))
    proc = subprocess.run([sys.executable, "tune_me.py"], capture_output=True, text=True,
                          timeout=600, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout.startswith("{"), name
    with Study.load(folder / "runs.db") as study:
      c = study.counts()
      assert c["failed"] == c["running"] == c["stale"] == 0, (name, c)
      assert c["complete"] + c["pruned"] == 200
