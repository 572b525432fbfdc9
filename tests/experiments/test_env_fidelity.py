"""experiments/env_fidelity.py: the ranking and the resolved-difference reading it reports."""

import argparse
import hashlib

import numpy as np
import pytest

import experiment_scripts


def _load_script():
  return experiment_scripts.load("env_fidelity")


def test_order_and_resolved_differences():
  # pylint: disable=protected-access
  exp = _load_script()
  rng = np.random.default_rng(0)
  base = rng.uniform(0.2, 0.4, size=(40, 1)) + rng.normal(0, 0.01, size=(40, 3))
  regrets = {"random": base, "quasi_random": base - 0.002, "gp_bo": base - 0.1}
  assert exp._order(regrets) == ["gp_bo", "quasi_random", "random"]
  resolved = exp._resolved(regrets)
  assert resolved[("gp_bo", "random")] == -1 and resolved[("gp_bo", "quasi_random")] == -1
  # quasi_random - random is -0.002 on average but noise of 0.01 per seed: not resolved.
  noisy = {**regrets, "quasi_random": base + rng.normal(0, 0.05, size=(40, 3))}
  assert exp._resolved(noisy)[("quasi_random", "random")] == 0


def test_missing_surrogate_is_a_clear_error(tmp_path, capsys):
  exp = _load_script()
  dataset = tmp_path / "ds"
  dataset.mkdir()
  (dataset / "manifest.json").write_text("{}")
  with pytest.raises(SystemExit):
    exp.main(["--data-dir", str(tmp_path), "--dataset", str(dataset),
              "--surrogate", str(tmp_path / "none")])
  assert "no saved surrogate there" in capsys.readouterr().err


def test_render_states_the_reading_and_the_surrogate_digest(tmp_path):
  exp = _load_script()
  from metatune.surrogate import EnvConfig  # pylint: disable=import-outside-toplevel
  (tmp_path / "params.npz").write_bytes(b"weights")
  rng = np.random.default_rng(1)
  base = rng.uniform(0.2, 0.4, size=(30, 1)) + rng.normal(0, 0.01, size=(30, 2))
  same = {"random": base, "quasi_random": base - 0.03, "gp_bo": base - 0.08}
  flipped = {"random": base - 0.03, "quasi_random": base, "gp_bo": base - 0.08}
  env = "surrogate env on meta-train contexts (what RL trains in)"
  res = {"regrets": {"real, all tasks": same, env: same,
                     "surrogate twins of the held-out tasks": flipped,
                     "real, held-out tasks only": {n: r[:5] for n, r in same.items()}},
         "seconds": {"real, all tasks": 1.0, env: 2.0,
                     "surrogate twins of the held-out tasks": 3.0},
         "num_all": 30, "num_held": 5, "splits": {str(i): "meta_train" for i in range(30)},
         "env_cfg": EnvConfig()}
  args = argparse.Namespace(seeds=2, trials=20, surrogate=tmp_path)
  text = exp.render(res, args, "cmd", 60.0)
  assert "MATCHES the ranking on all real tasks (gp_bo < quasi_random < random)" in text
  assert "twins of the held-out tasks: gp_bo < random < quasi_random (differs" in text
  assert "every one of them the same way" in text
  assert "sha256 of its params.npz " + hashlib.sha256(b"weights").hexdigest()[:16] in text
  res["regrets"][env] = flipped
  assert "DIFFERS from the ranking" in exp.render(res, args, "cmd", 60.0)
