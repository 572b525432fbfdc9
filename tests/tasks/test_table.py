"""Past-evaluations family: CSV/JSON tables with a space, pool-based tasks, exact regret."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import SpaceError, io, sample
from metatune.tasks import check_metrics, registry, table
from metatune.tuners import Points

SPACE = """
parameters:
  opt: {type: categorical, choices: [sgd, adam]}
  lr: {type: float, low: 1e-4, high: 1.0, log: true}
  momentum: {type: float, low: 0.0, high: 0.99, when: "opt == 'sgd'"}
  layers: {type: ordinal, values: [1, 2, 4]}
"""


@pytest.fixture
def files(tmp_path):
  space_path = tmp_path / "space.yaml"
  space_path.write_text(SPACE)
  space = io.load(space_path)
  values, active = sample(jax.random.key(0), space, 40)
  configs = space.decode_batch(values, active)
  rows = []
  for i, cfg in enumerate(configs):
    task = f"t{i % 4}"
    acc = 0.5 + 0.1 * (cfg["opt"] == "adam") + 0.01 * i / 40
    rows.append({"task": task, **cfg, "accuracy": acc if i != 7 else "nan",
                 "test_accuracy": acc - 0.01, "seconds": 1.0 + i})
  csv_path = tmp_path / "history.csv"
  cols = ["task", "opt", "lr", "momentum", "layers", "accuracy", "test_accuracy", "seconds"]
  with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, cols)
    w.writeheader()
    for r in rows:
      w.writerow({c: r.get(c, "") for c in cols})
  json_path = tmp_path / "history.json"
  json_path.write_text(json.dumps(rows))
  return space_path, csv_path, json_path, configs, rows


def make(space_path, table_path):
  return table.make_family({"table": str(table_path), "space": str(space_path),
                            "objective": "accuracy", "direction": "maximize",
                            "test_objective": "test_accuracy", "cost": "seconds"})


@pytest.mark.parametrize("which", ["csv", "json"])
def test_pool_lookup_is_exact(files, which):
  space_path, csv_path, json_path, configs, rows = files
  fam = make(space_path, csv_path if which == "csv" else json_path)
  assert sorted(fam.task_ids()) == ["t0", "t1", "t2", "t3"]
  task = fam.task("t1")
  pool = task.pool
  metrics = jax.jit(task.evaluate)(jax.random.key(0), pool)
  check_metrics(metrics, pool.values.shape[0])
  expect = [-r["accuracy"] if r["accuracy"] != "nan" else np.nan
            for r in rows if r["task"] == "t1"]
  got = np.asarray(metrics.objective)
  np.testing.assert_allclose(got[np.isfinite(expect)], np.asarray(expect)[np.isfinite(expect)],
                             rtol=1e-6)
  assert bool(metrics.failed[np.isnan(expect)].all()) if np.isnan(expect).any() else True
  # Proposals off the pool get the nearest recorded configuration's metrics.
  jitter = Points(jnp.clip(pool.values + 0.001 * pool.active, 0, 1), pool.active)
  near = jax.jit(task.evaluate)(jax.random.key(1), jitter)
  np.testing.assert_allclose(np.asarray(near.objective), got, rtol=1e-6)


def test_failed_row_is_a_failure_with_reason(files):
  space_path, csv_path, *_ = files
  fam = make(space_path, csv_path)
  task = fam.task("t3")  # row 7 (nan accuracy) belongs to t3
  m = task.evaluate(jax.random.key(0), task.pool)
  assert bool(m.failed.any()) and int(m.reason.max()) > 0
  assert not bool(jnp.isnan(jnp.where(m.failed, 0.0, m.objective)).any())


def test_bad_rows_name_the_line(files, tmp_path):
  space_path, csv_path, *_ = files
  text = csv_path.read_text().splitlines()
  text[3] = text[3].replace("sgd", "sgdd").replace("adam", "adamm")
  bad = tmp_path / "bad.csv"
  bad.write_text("\n".join(text) + "\n")
  with pytest.raises(SpaceError, match=r"bad.csv:4.*not one of"):
    make(space_path, bad)
  with pytest.raises(ValueError, match="unknown option 'objectve'"):
    table.make_family({"table": str(csv_path), "space": str(space_path), "objectve": "x"})


def test_table_family_through_a_config(files, tmp_path):
  space_path, csv_path, *_ = files
  cfg = tmp_path / "fam.yaml"
  cfg.write_text(f"family: table\noptions: {{table: {csv_path.name}, space: {space_path.name}, "
                 "objective: accuracy, direction: maximize}\n")
  fam = registry.make_family(registry.load_family_config(cfg))
  assert len(fam.task_ids()) == 4
