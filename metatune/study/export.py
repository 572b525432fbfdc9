"""A study's trials as flat records: CSV, JSON (strict, NaN as null) and a pandas DataFrame."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from metatune.study.errors import StudyError


def _clean(v: Any) -> Any:
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def to_records(study) -> list[dict[str, Any]]:
  """One flat dict per trial, by number.

  Columns: ``number``, ``state``, ``reason``, each objective by name (natural
  direction), each constraint, ``feasible``, ``cost``, ``duration``, ``started``,
  ``finished``, ``seed``, ``source``, ``retry_of``, ``executor``, ``params.<name>`` (empty when
  inactive), ``attrs.<name>``, provenance (``space_signature``, ``prior_hash``,
  ``env_id``, ``git_commit``, ``metatune_version``, ``jax_version``, ``host``) and
  ``error``.

  Args:
    study: a `metatune.study.Study`.

  Returns:
    A list of dicts with the same keys.

  Example:
    >>> rows = to_records(Study.load("study.db"))  # doctest: +SKIP
  """
  envs = study.storage.environments()
  names, cons = study.spec.names, list(study.spec.constraints)
  attr_keys = sorted({k for t in study.trials for k in (t.attrs or {})})
  rows = []
  for t in study.trials:
    env = envs.get(t.env_id or "", {})
    row: dict[str, Any] = {"number": t.number, "state": t.state, "reason": t.reason}
    objs = t.objectives or [math.nan] * len(names)
    row.update({n: v for n, v in zip(names, objs)})
    cvals = t.constraints if t.constraints is not None else [math.nan] * len(cons)
    row.update({c: v for c, v in zip(cons, cvals)})
    row["feasible"] = (t.state == "complete" and all(v <= 0 for v in (t.constraints or [])))
    row.update(cost=t.cost, duration=t.duration, started=t.started, finished=t.finished,
               seed=t.seed, source=t.source, retry_of=t.retry_of, executor=t.executor)
    row.update({f"params.{p}": t.config.get(p) for p in study.space.names})
    row.update({f"attrs.{k}": (t.attrs or {}).get(k) for k in attr_keys})
    row.update(space_signature=t.space_signature, prior_hash=t.prior_hash, env_id=t.env_id,
               git_commit=env.get("git_commit"),
               metatune_version=env.get("versions", {}).get("metatune"),
               jax_version=env.get("versions", {}).get("jax"), host=env.get("host"),
               error=t.error)
    rows.append(row)
  return rows


def _check_out(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise StudyError(f"the folder {folder} does not exist", path)
  return path


def to_csv(study, path: str | os.PathLike) -> int:
  """Writes the records as CSV (empty cells for missing values); returns the number of rows.

  Raises:
    StudyError: the output folder does not exist.
  """
  path = _check_out(path)
  rows = to_records(study)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
    writer.writeheader()
    for r in rows:
      writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                       for k, v in r.items()})
  os.replace(tmp, path)
  return len(rows)


def to_json(study, path: str | os.PathLike) -> int:
  """Writes ``{"study": settings, "environments": ..., "trials": records}`` as strict JSON.

  Non-finite numbers become null. Returns the number of trials.

  Raises:
    StudyError: the output folder does not exist.
  """
  path = _check_out(path)
  rows = [{k: _clean(v) for k, v in r.items()} for r in to_records(study)]
  doc = {"study": {"name": study.name, "space_signature": study.space.signature,
                   **study.spec.to_dict()},
         "environments": study.storage.environments(), "trials": rows}
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1, allow_nan=False)
  os.replace(tmp, path)
  return len(rows)


def to_dataframe(study):
  """The records as a pandas DataFrame indexed by trial number.

  Raises:
    StudyError: pandas is not installed.
  """
  try:
    import pandas as pd  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise StudyError("to_dataframe needs pandas: pip install pandas", "to_dataframe") from None
  rows = to_records(study)
  df = pd.DataFrame(rows)
  return df.set_index("number") if rows else df
