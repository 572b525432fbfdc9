"""Smoke test of experiments/bench_space_sampling.py in --quick mode."""

import importlib.util
from pathlib import Path

import pytest

import experiment_scripts

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench_space_sampling.py"


def _load_script():
  return experiment_scripts.load("bench_space_sampling")


@pytest.mark.slow
def test_quick_run_writes_table_and_finds_no_invalid_configs(tmp_path):
  pytest.importorskip("optuna")
  bench = _load_script()
  out = tmp_path / "tables" / "space_sampling.md"

  res = bench.main(["--quick", "--out", str(out)])

  assert out.exists()
  text = out.read_text()
  assert "python experiments/bench_space_sampling.py" in text
  assert "| method | batch | configs/s | ratio vs Optuna | invalid |" in text
  assert res["metatune_invalid"] and all(n == 0 for n in res["metatune_invalid"].values())
  assert all(n == 0 for n in res["metatune_encoding_bad"].values())
  assert res["optuna_invalid"] == 0
  assert len(res["optuna"].configs) == bench.QUICK.optuna_valid
  assert all(rate > 0 for rate in res["metatune_rate"].values()) and res["optuna_rate"] > 0


@pytest.mark.slow
def test_meta_train_benchmark_quick(tmp_path):
  spec = importlib.util.spec_from_file_location(
      "bench_meta_train", SCRIPT.parent / "bench_meta_train.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = tmp_path / "speed.md"
  assert bench.main(["--quick", "--variants", "--out", str(out)]) == 0
  text = out.read_text()
  assert "| 16 | 320 |" in text and "env steps/s" in text
  assert "| default |" in text and "| update_epochs=1 |" in text and "| policy hidden=16 |" in text
