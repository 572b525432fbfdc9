"""experiments/asha_training.py: the replay of pruner decisions, and a --quick smoke run."""

import numpy as np
import pytest

from metatune.study.pruners import ASHA, NopPruner

import experiment_scripts


def _load_script():
  return experiment_scripts.load("asha_training")


def test_replay_without_pruning_runs_every_trial_to_the_end_in_order():
  exp = _load_script()
  curves = np.array([[0.9, 0.5, 0.4], [0.8, 0.3, 0.2], [0.7, 0.6, 0.1]])
  rep = exp.replay(NopPruner(), curves, np.zeros(3, bool))
  assert rep.reached.tolist() == [3, 3, 3]
  assert rep.epochs.tolist() == list(range(1, 10))
  assert rep.best_at(2) == np.inf and rep.best_at(3) == 0.4 and rep.best_at(6) == 0.2
  assert rep.epochs_to(0.2) == 6 and rep.epochs_to(0.1) == 9 and rep.epochs_to(0.05) is None
  assert [rep.incumbent_at(e) for e in (2, 3, 6, 9)] == [-1, 0, 1, 2]
  # A diverged configuration never becomes the incumbent.
  rep = exp.replay(NopPruner(), curves, np.array([False, True, False]))
  assert rep.best_at(6) == 0.4
  assert [rep.incumbent_at(e) for e in (6, 9)] == [0, 2]


def test_replay_counts_only_the_epochs_asha_runs():
  exp = _load_script()
  # Trial 0 runs to the end (first at every rung); trial 1 is worse at epoch 1 and stops.
  curves = np.array([[0.5, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
                     [0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
                     [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]])
  rep = exp.replay(ASHA(1, 9), curves, np.zeros(3, bool))
  assert rep.reached.tolist() == [9, 1, 9]
  assert int(rep.epochs[-1]) == 19
  assert rep.epochs_to(0.2) == 19
  # Two workers: trials 0 and 1 start together, trial 2 when trial 1 stops.
  rep2 = exp.replay(ASHA(1, 9), curves, np.zeros(3, bool), workers=2)
  assert rep2.reached.tolist() == [9, 1, 9] and int(rep2.epochs[-1]) == 19


@pytest.mark.slow
def test_quick_run_writes_the_table(tmp_path):
  exp = _load_script()
  out = tmp_path / "tables" / "asha_training.md"
  res = exp.main(["--quick", "--out", str(out)])
  text = out.read_text()
  assert "python experiments/asha_training.py --quick" in text
  assert "| task | pruner | runs | full-budget regret |" in text
  assert "| pruner | runs | full-budget test regret |" in text
  st = exp.QUICK
  assert len(res["records"]) == len(st.tasks) * len(st.seeds)
  for rec in res["records"]:
    assert rec["full_regret"] >= 0
    assert rec["full_test_regret"] >= 0
    for p in rec["pruners"].values():
      assert all(v >= 0 for v in p["regret_at"].values())
      assert p["test_regret"] >= 0
      assert p["fraction_to_match"] is None or 0 < p["fraction_to_match"] <= p["pool_fraction"]
  task_id, epochs, count, diff = res["check"]
  assert count == 0 or diff < 1e-6, (task_id, epochs, count, diff)


def test_a_seeds_training_keys_do_not_depend_on_the_other_seeds():
  exp = _load_script()
  import jax  # pylint: disable=import-outside-toplevel
  few = jax.random.key_data(exp.training_keys(7, (0, 1), 4))
  many = jax.random.key_data(exp.training_keys(7, (0, 1, 2), 4))
  assert np.array_equal(np.asarray(few), np.asarray(many)[:8])
  assert not np.array_equal(np.asarray(many)[:4], np.asarray(many)[4:8])
