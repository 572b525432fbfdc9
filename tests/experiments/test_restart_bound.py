"""experiments/restart_bound.py: the no-transfer tuner's own run, started k trials late."""

import json

import numpy as np

import experiment_scripts


def _load_script():
  return experiment_scripts.load("restart_bound")


def _result(base, prior, tol=0.01):
  return {"runs": {"gp_bo": {"regret": base.tolist(), "transfer": False},
                   "prior": {"regret": prior.tolist(), "transfer": True}},
          "no_transfer": "gp_bo", "worse_tolerance": tol, "experiment": "t",
          "tasks": ["a"], "seeds": base.shape[1], "budget": base.shape[2]}


def test_a_late_start_is_worse_only_where_the_last_trials_improved():
  """Seed 0 improves by 0.5 at the last trial, seed 1 by 0.005 (within the tolerance), seed 2
  never after trial 2: one k=1 start in three ends worse; k=3 reaches seed 2's gain too."""
  base = np.array([[[1.0, 0.9, 0.9, 0.9, 0.4],
                    [1.0, 0.8, 0.8, 0.8, 0.795],
                    [1.0, 0.2, 0.2, 0.2, 0.2]]])
  exp = _load_script()
  out = exp.shares(_result(base, base + 0.1), checkpoint=5)
  assert out["late"][0] == 0.0
  assert abs(out["late"][1] - 1 / 3) < 1e-9
  assert abs(out["late"][4] - 1.0) < 1e-9          # started at the 5th trial: only its first
  assert out["rows"] == {"prior": 1.0} and out["runs"] == 3
  assert 5 not in out["late"]                       # no run is left when k reaches the checkpoint


def test_the_command_writes_the_table_and_refuses_a_folder_without_results(tmp_path, capsys):
  exp = _load_script()
  base = np.random.default_rng(0).uniform(size=(2, 3, 6))
  base = np.minimum.accumulate(base, axis=2)
  (tmp_path / "results.json").write_text(json.dumps(_result(base, base)))
  out = tmp_path / "t.md"
  assert exp.main([str(tmp_path), "--out", str(out)]) == 0
  text = out.read_text()
  assert "| k | 0 | 1 | 2 | 3 | 4 | 5 |" in text and "| gp_bo (another seed) |" in text
  assert exp.main([str(tmp_path / "none")]) == 2
  assert "no results.json" in capsys.readouterr().err
  assert exp.main([str(tmp_path), "--checkpoint", "7"]) == 2
