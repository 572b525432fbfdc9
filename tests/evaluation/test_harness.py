"""`metatune evaluate`: honest regret on pools, one compile per tuner, resume, located errors."""

import itertools
import json
import math

import numpy as np
import pytest

from metatune.evaluation import stats
from metatune.evaluation.experiment import load_experiment
from metatune.evaluation.harness import Harness, run_experiment
from metatune.space import SpaceError
from metatune.tasks import registry


def experiment(folder, family, tuners: str, budget=20, seeds=3, extra=""):
  path = folder / "exp.yaml"
  path.write_text(f"name: t\nfamily: {family}\ntasks: heldout_dataset\nbudget: {budget}\n"
                  f"seeds: {seeds}\ncheckpoints: [1, 5, 10, 20, 100]\n{extra}tuners:\n{tuners}")
  return path


def test_exact_random_expectation_matches_brute_force():
  values = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
  for n in range(1, 7):
    brute = np.mean([min(c) for c in itertools.combinations(values, n)])
    assert stats.expected_random_best(values, 6)[n - 1] == pytest.approx(brute)
  with pytest.raises(ValueError, match="exceed the pool"):
    stats.expected_random_best(values, 7)


def test_random_search_matches_the_exact_expectation_on_pools(pooled, tmp_path):
  """The harness is honest: pool runs of random search draw uniformly without replacement."""
  exp = load_experiment(experiment(tmp_path, pooled["family"], "  random: {}\n", budget=100,
                                   seeds=64))
  res = run_experiment(exp, tmp_path / "out", progress=False, log=lambda _: None)
  reg = res["runs"]["random"]["regret"]             # [tasks, seeds, trials]
  exact = res["exact_random"]                        # [tasks, trials]
  for c in (1, 10, 100):
    diff = reg[:, :, c - 1] - exact[:, None, c - 1]  # centred per task
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    assert abs(diff.mean()) <= 2 * se + 1e-9, (c, diff.mean(), se)
  # Without replacement: 100 distinct records per study.
  assert res["compiles"] == {"random": 1}


def test_every_tuner_compiles_once_for_all_tasks(pooled, tmp_path):
  tuners = ("  random: {}\n  quasi_random: {}\n"
            "  gp_bo: {options: {num_candidates: 64, fit_steps: 10, refit_steps: 3}}\n")
  exp = load_experiment(experiment(tmp_path, pooled["family"], tuners, budget=12, seeds=2))
  said = []
  res = run_experiment(exp, tmp_path / "out", progress=False, log=said.append)
  # Four tasks with pools of 150-180 records: one compiled function each.
  assert res["compiles"] == {"random": 1, "quasi_random": 1, "gp_bo": 1}
  # The config's checkpoints 20 and 100 lie past the budget: left out, and said so.
  assert res["checkpoints"] == [1, 5, 10]
  assert sum("checkpoints 20, 100 of" in m and "past the budget of 12" in m for m in said) == 1
  table = (tmp_path / "out" / "table.md").read_text()
  main, _, paired = table.partition("\nPaired difference")
  assert main.count("| gp_bo |") == 1                  # one row per tuner
  assert "| gp_bo |" in paired                         # the reference read against it
  assert f"Produced by `metatune evaluate {tmp_path / 'exp.yaml'} --out {tmp_path / 'out'}`" \
      in table
  assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
  doc = json.loads((tmp_path / "out" / "results.json").read_text())
  assert set(doc["summary"]["rows"]) == {"random", "quasi_random", "gp_bo"}


def test_rerun_continues_and_reuses_finished_cells(pooled, tmp_path):
  path = experiment(tmp_path, pooled["family"], "  random: {}\n  quasi_random: {}\n")
  out = tmp_path / "out"
  first = run_experiment(load_experiment(path), out, progress=False, only=["random"],
                         log=lambda _: None)
  cell = next((out / "cells" / "random").iterdir())
  stamp = cell.stat().st_mtime_ns
  second = run_experiment(load_experiment(path), out, progress=False, log=lambda _: None)
  assert cell.stat().st_mtime_ns == stamp            # not run again
  np.testing.assert_array_equal(first["runs"]["random"]["regret"],
                                second["runs"]["random"]["regret"])
  assert set(second["runs"]) == {"random", "quasi_random"}
  assert second["compiles"] == {"quasi_random": 1}   # only the missing tuner ran
  # --rerun: the named tuner's cells are discarded and run again (same keys: same numbers).
  third = run_experiment(load_experiment(path), out, progress=False, log=lambda _: None,
                         rerun=["random"])
  assert third["compiles"] == {"random": 1} and cell.stat().st_mtime_ns != stamp
  np.testing.assert_array_equal(first["runs"]["random"]["regret"],
                                third["runs"]["random"]["regret"])
  with pytest.raises(SpaceError, match="rerun: 'randomm' is not one of"):
    run_experiment(load_experiment(path), out, progress=False, rerun=["randomm"])
  # Another budget in the same folder is another experiment: refused, nothing lost.
  with pytest.raises(SpaceError, match="another experiment"):
    run_experiment(load_experiment(path).replace(budget=10), out, progress=False)


def test_portfolio_is_built_from_training_tasks_and_used_zero_shot(tmp_path):
  from metatune.tuners import portfolio as pf
  regret = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [1.0, 1.0, 0.4]])
  order, curve = pf.greedy_order(regret, 3)
  assert order[0] == 2 and curve[0] == pytest.approx(0.4667, abs=1e-3)
  assert curve == sorted(curve, reverse=True)


def test_bad_inputs_are_located_errors(pooled, tmp_path):
  fam = pooled["family"]
  bad = experiment(tmp_path, fam, "  random: {}\n  bogus: {tuner: hyperband}\n")
  with pytest.raises(SpaceError, match=r"exp.yaml:\d+: unknown tuner 'hyperband'"):
    load_experiment(bad)
  path = tmp_path / "tasks.yaml"
  path.write_text(f"family: {fam}\ntasks: [task0, task9]\ntuners: {{random: {{}}}}\n")
  with pytest.raises(SpaceError, match="task 'task9' is not a task of the family"):
    Harness(load_experiment(path), tmp_path / "o1", progress=False)
  path.write_text(f"family: {fam}\nbudget: 500\ntuners: {{random: {{}}}}\n")
  with pytest.raises(SpaceError, match="budget 500 exceeds the pool of task 'task0' "
                                       r"\(150 recorded"):
    Harness(load_experiment(path), tmp_path / "o2", progress=False)
  broken = tmp_path / "broken.yaml"
  broken.write_text(fam.read_text().replace("objective: loss", "objective: accuracy"))
  path.write_text(f"family: {broken}\ntuners: {{random: {{}}}}\n")
  with pytest.raises(SpaceError, match=r"history.csv: missing column 'accuracy'"):
    Harness(load_experiment(path), tmp_path / "o3", progress=False)
  path.write_text(f"family: {fam}\ntuners: {{random: {{}}}}\nreference: gp\n")
  with pytest.raises(SpaceError, match=r"tasks.yaml:3: reference: 'gp' is not one of"):
    load_experiment(path)
  # A tuner option its tuner refuses (a ValueError, not a TypeError) is located too, and it
  # fails before any cell runs: random search's cells are not written first.
  bad = experiment(tmp_path, fam,
                   "  random: {}\n  gp: {tuner: gp_bo, options: {fantasy: optimist}}\n")
  with pytest.raises(SpaceError, match=r"exp.yaml:\d+: tuner 'gp': bad options .*fantasy"):
    run_experiment(load_experiment(bad), tmp_path / "o4", progress=False, log=lambda m: None)
  assert not (tmp_path / "o4" / "cells").exists()


def test_optuna_tpe_runs_on_a_pool_and_takes_distinct_records(pooled, tmp_path):
  pytest.importorskip("optuna")
  exp = load_experiment(experiment(tmp_path, pooled["family"], "  tpe: {tuner: optuna_tpe}\n",
                                   budget=15, seeds=2, extra="max_tasks: 2\n"))
  res = run_experiment(exp, tmp_path / "out", progress=False, log=lambda _: None)
  reg = res["runs"]["tpe"]["regret"]
  assert reg.shape == (2, 2, 15) and np.all(np.diff(reg, axis=-1) <= 1e-12)
  assert np.all(reg >= -1e-9)  # a pool's best is exact: no tuner goes below it


def test_table_family_reads_labels_splits_and_many_rows(pooled):
  fam = registry.make_family(registry.load_family_config(pooled["family"]))
  assert fam.pool_sizes() == {"task0": 150, "task1": 160, "task2": 170, "task3": 180}
  assert fam.task_ids("heldout_dataset") == ["task0", "task1", "task2", "task3"]
  assert fam.task_ids("meta_train") == []
  # 'none' is a label of opt here, not a missing value.
  text = pooled["table"].read_text()
  assert ",none," in text
  space = fam.space
  pool = fam.pool("task0")
  configs = space.decode_batch(np.asarray(pool.values), np.asarray(pool.active))
  assert any(c["opt"] == "none" for c in configs)


def test_a_priors_cells_are_keyed_by_its_beliefs_file(pooled, tmp_path):
  # Edited beliefs are another tuner: their cells are not reused (as for a retrained prior).
  beliefs = tmp_path / "beliefs.yaml"
  beliefs.write_text("beliefs:\n  x: {prefer: [0.1, 0.2]}\n")
  path = experiment(tmp_path, pooled["family"],
                    f"  prior: {{options: {{path: {tmp_path}, beliefs: {beliefs}}}}}\n")
  exp = load_experiment(path)
  first = Harness(exp, tmp_path / "out", progress=False)._spec_hash(exp.tuners[0])
  beliefs.write_text("beliefs:\n  x: {prefer: [0.3, 0.4]}\n")
  second = Harness(exp, tmp_path / "out", progress=False)._spec_hash(exp.tuners[0])
  assert first != second
