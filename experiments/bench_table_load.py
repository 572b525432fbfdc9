"""Loading a 30,000-row table of past evaluations as a `table` family (a command to time whole).

  python experiments/bench_table_load.py make DIR      # writes DIR/space.yaml, DIR/history.csv
  python experiments/bench_table_load.py load DIR      # builds the family: what is timed

The table: 30 tasks x 1,000 configurations of configs/spaces/nn_tuning.yaml (conditional,
constrained; inactive parameters empty), an objective and a cost column. Time the load
command as a whole process (start-up included), several runs, and quote the median.
"""

from __future__ import annotations

import csv
import pathlib
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make(folder: pathlib.Path, num_tasks: int = 30, per_task: int = 1000) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from metatune.space import io, sampling  # pylint: disable=import-outside-toplevel
  folder.mkdir(parents=True, exist_ok=True)
  shutil.copy(REPO / "configs/spaces/nn_tuning.yaml", folder / "space.yaml")
  space = io.load(folder / "space.yaml")
  u, a = sampling.sample(jax.random.key(0), space, num_tasks * per_task)
  configs = space.decode_batch(u, a)
  rng = np.random.default_rng(0)
  with open(folder / "history.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ["task", *space.names, "loss", "seconds"])
    w.writeheader()
    for i, cfg in enumerate(configs):
      w.writerow({"task": f"task{i // per_task:02d}", **cfg, "loss": float(rng.normal()),
                  "seconds": float(rng.uniform(1, 100))})
  print(f"wrote {len(configs)} rows to {folder / 'history.csv'}")


def load(folder: pathlib.Path) -> None:
  start = time.perf_counter()
  from metatune.tasks import table  # pylint: disable=import-outside-toplevel
  fam = table.make_family({"table": str(folder / "history.csv"), "space": str(folder /
                                                                              "space.yaml"),
                           "objective": "loss", "cost": "seconds"})
  sizes = fam.pool_sizes()
  print(f"{sum(sizes.values())} rows, {len(sizes)} tasks, loaded in "
        f"{time.perf_counter() - start:.2f}s after the interpreter started")


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] not in ("make", "load"):
    sys.exit(__doc__)
  (make if sys.argv[1] == "make" else load)(pathlib.Path(sys.argv[2]))
