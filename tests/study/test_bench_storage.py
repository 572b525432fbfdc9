"""Smoke test of experiments/bench_storage.py in --quick mode (both sides store every trial)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench_storage.py"


@pytest.mark.slow
def test_quick_run_writes_table_and_stores_every_trial(tmp_path):
  pytest.importorskip("optuna")
  spec = importlib.util.spec_from_file_location("bench_storage", SCRIPT)
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench
  spec.loader.exec_module(bench)
  out = tmp_path / "storage.md"
  res = bench.main(["--quick", "--out", str(out)])
  text = out.read_text()
  assert "python experiments/bench_storage.py --quick" in text
  assert "| optuna RandomSampler | 100 |" in text
  assert all(r["trials"] == 100 for r in res.values())
  assert all(r["steady_ms"] > 0 for r in res.values())
