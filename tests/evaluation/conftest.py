"""A small table family of recorded evaluations (pools of different sizes) for harness tests."""

import csv
import pathlib

import jax
import numpy as np
import pytest

from metatune.space import io, sample
from metatune.tasks import SyntheticConfig, SyntheticFamily
from metatune.tuners import Points

SPACE = """
name: pooled
parameters:
  opt: {type: categorical, choices: [sgd, adam, none]}
  lr: {type: float, low: 1e-4, high: 1.0, log: true}
  momentum: {type: float, low: 0.0, high: 0.99, when: "opt == 'sgd'"}
  layers: {type: ordinal, values: [1, 2, 4]}
"""
POOL_SIZES = (150, 160, 170, 180)


def write_table(folder: pathlib.Path, sizes=POOL_SIZES, fail_every: int = 0) -> dict:
  """space.yaml, history.csv and family.yaml in ``folder``; returns their paths."""
  space_path = folder / "space.yaml"
  space_path.write_text(SPACE)
  space = io.load(space_path)
  family = SyntheticFamily(space, SyntheticConfig(seed=5, noise=0.0))
  rows = []
  for t, n in enumerate(sizes):
    values, active = sample(jax.random.key(t), space, n)
    task = family.task_params(t)
    y = np.asarray(family.clean(task, Points(values, active)))
    for i, cfg in enumerate(space.decode_batch(values, active)):
      failed = fail_every and i % fail_every == 3
      rows.append({"task": f"task{t}", **cfg, "loss": "nan" if failed else float(y[i])})
  table = folder / "history.csv"
  cols = ["task", "opt", "lr", "momentum", "layers", "loss"]
  with open(table, "w", newline="") as f:
    w = csv.DictWriter(f, cols)
    w.writeheader()
    for r in rows:
      w.writerow({c: r.get(c, "") for c in cols})
  fam = folder / "family.yaml"
  fam.write_text("name: pooled\nfamily: table\noptions: {table: history.csv, space: space.yaml, "
                 "objective: loss, split: {heldout_dataset: [task0, task1, task2, task3]}}\n")
  return {"space": space_path, "table": table, "family": fam}


@pytest.fixture
def pooled(tmp_path):
  return write_table(tmp_path)
