"""Smoke test of experiments/bench_surrogate.py --quick (no data folder, no trained model)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench_surrogate.py"


@pytest.mark.slow
def test_quick_bench_writes_a_table(tmp_path):
  already = {m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules}
  spec = importlib.util.spec_from_file_location("bench_surrogate", SCRIPT)
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench
  spec.loader.exec_module(bench)
  out = tmp_path / "speed.md"
  res = bench.main(["--quick", "--out", str(out), "--data-dir", ""])
  text = out.read_text()
  assert "| what | first call (s) | median call (s) | evaluations/s |" in text
  assert len(res["rows"]) == 4 and all(r[3] > 0 for r in res["rows"])
  # Nothing on this path imports TensorFlow or tensorflow-datasets.
  assert {m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules} == already
