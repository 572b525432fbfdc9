"""A family from a table of past evaluations: tuners choose among recorded configurations.

The table (CSV, JSON, JSON lines or Parquet) has a task-id column, one column
per parameter of the space (empty / null where a parameter is inactive) and
metric columns. Each task is pool-based: a proposal is answered with the
metrics of the nearest recorded configuration of that task (identical ones are
at distance 0), and the task's pool is exposed so pool-aware tuners pick
exactly; regret against the pool's best is then exact.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from metatune.space import Space, SpaceError, io
from metatune.space import sampling
from metatune.tasks.base import REASON_CODE, Metrics, Task, TaskFamily, split_lists
from metatune.tuners.base import Points

MISSING = ("", "na", "nan", "none", "null")


def read_rows(path: str) -> list[tuple[str, dict[str, Any]]]:
  """Rows of a table as ``(location, record)``; location is ``file:line`` or ``file[row]``."""
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == ".csv":
      with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return [(f"{path}:{reader.line_num}", dict(r)) for r in reader]
    if ext in (".jsonl", ".ndjson"):
      with open(path, encoding="utf-8") as f:
        return [(f"{path}:{i + 1}", json.loads(line)) for i, line in enumerate(f) if line.strip()]
    if ext == ".json":
      with open(path, encoding="utf-8") as f:
        doc = json.load(f)
      rows = doc.get("rows") if isinstance(doc, dict) else doc
      if not isinstance(rows, list):
        raise SpaceError("a JSON table must be a list of records or {\"rows\": [...]}", path)
      return [(f"{path}[{i}]", r) for i, r in enumerate(rows)]
    if ext == ".parquet":
      try:
        import pandas as pd  # pylint: disable=import-outside-toplevel
      except ImportError:
        raise SpaceError("reading Parquet needs pandas and pyarrow (pip install pandas "
                         "pyarrow)", path) from None
      frame = pd.read_parquet(path)
      return [(f"{path}[{i}]", {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                for k, v in r.items()})
              for i, r in enumerate(frame.to_dict("records"))]
  except OSError as e:
    raise SpaceError(f"cannot read the table: {e.strerror}", path) from None
  except (json.JSONDecodeError, csv.Error) as e:
    raise SpaceError(f"not a valid table: {e}", path) from None
  raise SpaceError(f"unknown table format {ext!r}; use .csv, .json, .jsonl or .parquet", path)


def _missing(v: Any) -> bool:
  return v is None or (isinstance(v, str) and v.strip().lower() in MISSING) or (
      isinstance(v, float) and math.isnan(v))


def _number(v: Any, where: str, column: str) -> float:
  if _missing(v):
    return math.nan
  try:
    return float(v)
  except (TypeError, ValueError):
    raise SpaceError(f"column {column!r}: {v!r} is not a number", where) from None


def _config(space: Space, record: dict, where: str) -> dict[str, Any]:
  cfg = {}
  for p in space.params:
    v = record.get(p.name)
    if _missing(v):
      continue
    if isinstance(v, str) and p.kind == "bool":
      low = v.strip().lower()
      v = True if low in ("true", "1") else False if low in ("false", "0") else v
    elif isinstance(v, str) and p.kind in ("categorical", "ordinal") and p.is_numeric:
      try:
        v = float(v)
      except ValueError:
        pass
    cfg[p.name] = v
  return cfg


class TableFamily(TaskFamily):
  """Pool-based tasks from a table of past evaluations.

  Args:
    space: the space the configurations belong to.
    rows: ``(location, record)`` pairs, e.g. from `read_rows`.
    task_column, objective: column names.
    direction: ``minimize`` or ``maximize`` (maximized metrics are negated).
    test_objective, cost: optional column names.
    seed: seed of the meta-train / meta-valid / held-out split of task ids.
  """

  cost_unit = "table"

  def __init__(self, space: Space, rows, task_column: str = "task", objective: str = "objective",
               direction: str = "minimize", test_objective: str | None = None,
               cost: str | None = None, seed: int = 0, name: str = "table"):
    if direction not in ("minimize", "maximize"):
      raise ValueError(f"option 'direction' must be minimize or maximize, got {direction!r}")
    self.space = space
    self.name = name
    self.seed = seed
    sign = -1.0 if direction == "maximize" else 1.0
    groups: dict[str, dict[str, list]] = {}
    for where, record in rows:
      if not isinstance(record, dict):
        raise SpaceError("a row must be a record of columns", where)
      for col in (task_column, objective):
        if col not in record:
          raise SpaceError(f"missing column {col!r} (columns: {', '.join(map(str, record))})",
                           where)
      cfg = _config(space, record, where)
      u, a = space.encode(cfg, where)
      g = groups.setdefault(str(record[task_column]), {k: [] for k in (
          "values", "active", "objective", "test", "cost")})
      g["values"].append(u)
      g["active"].append(a)
      g["objective"].append(sign * _number(record[objective], where, objective))
      g["test"].append(sign * _number(record[test_objective], where, test_objective)
                       if test_objective else math.nan)
      g["cost"].append(_number(record[cost], where, cost) if cost else 0.0)
    if not groups:
      raise ValueError("the table has no rows")
    self._pools = {t: {k: np.asarray(v, np.float32 if k != "active" else bool)
                       for k, v in g.items()} for t, g in groups.items()}

  def splits(self) -> dict[str, list[str]]:
    train, valid, held = split_lists(list(self._pools), (0.7, 0.15, 0.15), self.seed)
    return {"meta_train": train, "meta_valid": valid, "heldout_dataset": held,
            "heldout_model": []}

  def pool(self, task_id: str) -> Points:
    g = self._pools[task_id]
    return Points(jnp.asarray(g["values"]), jnp.asarray(g["active"]))

  def task(self, task_id: str) -> Task:
    if task_id not in self._pools:
      raise ValueError(f"unknown task {task_id!r}; the table has {len(self._pools)} tasks")
    g = self._pools[task_id]
    feats = sampling.featurize(self.space, g["values"], g["active"])
    obj = jnp.asarray(g["objective"])
    test = jnp.asarray(g["test"])
    cost = jnp.asarray(g["cost"])
    space = self.space

    def evaluate(key, points: Points) -> Metrics:
      del key  # a recorded evaluation is returned as it was
      f = sampling.featurize(space, points.values, points.active)
      d = jnp.sum((f[:, None, :] - feats[None, :, :]) ** 2, axis=-1)
      j = jnp.argmin(d, axis=-1)
      o = obj[j]
      return Metrics.simple(o, ~jnp.isfinite(o), reason=REASON_CODE["nan"],
                            test_objective=test[j], cost=cost[j])

    info = {"num_records": int(obj.shape[0]), "best": float(np.nanmin(g["objective"]))}
    return Task(task_id, evaluate, info, pool=Points(jnp.asarray(g["values"]),
                                                      jnp.asarray(g["active"])))


def make_family(options: dict, data_dir=None) -> TableFamily:
  """Options: ``table`` and ``space`` (paths), ``task_column``, ``objective``, ``direction``,
  ``test_objective``, ``cost``, ``seed``."""
  del data_dir
  allowed = {"table", "space", "task_column", "objective", "direction", "test_objective",
             "cost", "seed", "name"}
  for k in options:
    if k not in allowed:
      raise ValueError(f"unknown option {k!r} of the table family; allowed: "
                       f"{', '.join(sorted(allowed))}")
  for k in ("table", "space"):
    if k not in options:
      raise ValueError(f"the table family needs option {k!r}")
  opts = dict(options)
  space = io.load(opts.pop("space"))
  rows = read_rows(opts.pop("table"))
  return TableFamily(space, rows, **opts)

