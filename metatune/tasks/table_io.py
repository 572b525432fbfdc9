"""Reading tables of past evaluations column by column, and encoding their configurations.

A table is read into `Columns` (one array per column and a way to name any
row's place, ``file:line`` or ``file[row]``): with pandas / pyarrow where they
are installed (CSV, Parquet), with the standard library otherwise (CSV, JSON,
JSON lines). Configurations are encoded a parameter column at a time (labels
mapped once per distinct value), then checked against the space's conditions
and constraints in one jitted pass, so 30,000 rows take seconds, not minutes;
the first bad row is reported with its place.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from metatune.space import Space, SpaceError
from metatune.space import model

# Strings that mean "no value" in a parameter column (case-insensitive), unless they are
# one of that parameter's labels: a categorical label may be "none" or "na".
MISSING = ("", "na", "nan", "none", "null", "n/a")


@dataclasses.dataclass
class Columns:
  """A table as columns.

  Attributes:
    source: the file it came from (for messages).
    data: column name -> array (object or float) of ``num_rows`` entries.
    where: row index -> its place (``file:line`` or ``file[row]``).
  """
  source: str
  data: dict[str, np.ndarray]
  where: Callable[[int], str]
  num_rows: int

  @classmethod
  def from_rows(cls, rows: Sequence[tuple[str, Any]]) -> "Columns":
    """Columns of ``(location, record)`` rows (`read_rows`); a non-record row is an error."""
    rows = list(rows)
    names: dict[str, None] = {}
    for where, record in rows:
      if not isinstance(record, dict):
        raise SpaceError("a row must be a record of columns", where)
      names.update(dict.fromkeys(record))
    data = {}
    for name in names:
      col = np.empty(len(rows), object)
      col[:] = [r.get(name) for _, r in rows]
      data[name] = col
    places = [w for w, _ in rows]
    source = places[0].rsplit(":", 1)[0] if places else "table"
    return cls(source, data, places.__getitem__, len(rows))

  def require(self, name: str) -> None:
    """Raises SpaceError naming the file and the columns it has when ``name`` is missing."""
    if name not in self.data:
      have = ", ".join(map(str, list(self.data)[:20]))
      raise SpaceError(f"missing column {name!r}{model.did_you_mean(name, self.data)} "
                       f"(columns: {have})", self.source)

  def column(self, name: str) -> np.ndarray:
    self.require(name)
    return self.data[name]


def _csv_columns(path: str) -> Columns:
  try:
    import pandas as pd  # pylint: disable=import-outside-toplevel
  except ImportError:
    pd = None
  if pd is not None:
    try:
      frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
      raise SpaceError(f"not a valid CSV table: {e}", path) from None
    except pd.errors.EmptyDataError:
      raise SpaceError("the table is empty (no header line)", path) from None
    data = {str(c): frame[c].to_numpy(object) for c in frame.columns}
    # Line numbers assume no line breaks inside quoted fields (pandas does not report them).
    return Columns(path, data, lambda i: f"{path}:{i + 2}", len(frame))
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows, lines = [], []
    for r in reader:
      rows.append(r)
      lines.append(reader.line_num)
  names = list(reader.fieldnames or [])
  data = {}
  for n in names:
    col = np.empty(len(rows), object)
    col[:] = [r.get(n) for r in rows]
    data[n] = col
  return Columns(path, data, lambda i: f"{path}:{lines[i]}", len(rows))


def read_table(path: str | os.PathLike) -> Columns:
  """Reads a table (``.csv``, ``.json``, ``.jsonl``/``.ndjson``, ``.parquet``) into columns.

  Raises:
    SpaceError: naming the file (and row) when it cannot be read.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == ".csv":
      return _csv_columns(path)
    if ext == ".parquet":
      try:
        import pandas as pd  # pylint: disable=import-outside-toplevel
        frame = pd.read_parquet(path)
      except ImportError:
        raise SpaceError("reading Parquet needs pandas and pyarrow (pip install pandas "
                         "pyarrow)", path) from None
      data = {}
      for c in frame.columns:
        col = frame[c].to_numpy()
        data[str(c)] = col.astype(np.float64) if col.dtype.kind in "fiu" else col.astype(object)
      return Columns(path, data, lambda i: f"{path}[{i}]", len(frame))
    if ext in (".json", ".jsonl", ".ndjson"):
      return Columns.from_rows(read_rows(path))
  except OSError as e:
    raise SpaceError(f"cannot read the table: {e.strerror}", path) from None
  raise SpaceError(f"unknown table format {ext!r}; use .csv, .json, .jsonl or .parquet", path)


def read_rows(path: str) -> list[tuple[str, dict[str, Any]]]:
  """Rows of a table as ``(location, record)``; location is ``file:line`` or ``file[row]``."""
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == ".csv":
      with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return [(f"{path}:{reader.line_num}", dict(r)) for r in reader]
    if ext in (".jsonl", ".ndjson"):
      out = []
      with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
          if line.strip():
            try:
              out.append((f"{path}:{i + 1}", json.loads(line)))
            except json.JSONDecodeError as e:
              raise SpaceError(f"not a valid JSON line: {e.msg}", f"{path}:{i + 1}") from None
      return out
    if ext == ".json":
      with open(path, encoding="utf-8") as f:
        doc = json.load(f)
      rows = doc.get("rows") if isinstance(doc, dict) else doc
      if not isinstance(rows, list):
        raise SpaceError("a JSON table must be a list of records or {\"rows\": [...]}", path)
      return [(f"{path}[{i}]", r) for i, r in enumerate(rows)]
    if ext == ".parquet":
      table = read_table(path)
      return [(table.where(i), {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                for k, v in ((k, c[i]) for k, c in table.data.items())})
              for i in range(table.num_rows)]
  except OSError as e:
    raise SpaceError(f"cannot read the table: {e.strerror}", path) from None
  except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as e:
    raise SpaceError(f"not a valid table: {e}", path) from None
  raise SpaceError(f"unknown table format {ext!r}; use .csv, .json, .jsonl or .parquet", path)


# ------------------------------------------------------------ encoding
def _is_missing(v: Any, markers: frozenset[str]) -> bool:
  return v is None or (isinstance(v, float) and math.isnan(v)) or (
      isinstance(v, str) and v.strip().lower() in markers)


def _label_index(p, v: Any) -> int | None:
  """The choice of ``p`` a table cell names, or None."""
  idx = model.choice_index(p, v)
  if idx is not None:
    return idx
  if p.kind == "bool" and isinstance(v, str):
    low = v.strip().lower()
    return {"true": 1, "1": 1, "false": 0, "0": 0}.get(low)
  if p.kind == "bool" and isinstance(v, (int, float)) and v in (0, 1):
    return int(v)
  if isinstance(v, str):
    text = v.strip()
    for i, c in enumerate(p.choices):
      if isinstance(c, str) and c == text:
        return i
    try:
      num = float(text)
    except ValueError:
      return None
    return next((i for i, c in enumerate(p.choices) if model._is_num(c) and c == num), None)
  if model._is_num(v):
    return next((i for i, c in enumerate(p.choices) if model._is_num(c) and c == v), None)
  return None


def _numbers(col: np.ndarray, markers: frozenset[str], bad: Callable[[int, Any], None]
             ) -> np.ndarray:
  """f64[N] of a column of numbers (NaN where missing); calls ``bad(row, value)`` otherwise."""
  if col.dtype.kind in "fiu":
    return col.astype(np.float64)
  values = col.tolist()
  for i, v in enumerate(values):
    if isinstance(v, bool):  # True is an int to Python, not a number to a table
      bad(i, v)
  try:
    import pandas as pd  # pylint: disable=import-outside-toplevel
  except ImportError:
    pd = None
  if pd is not None:
    series = pd.Series(col, dtype=object)
    out = pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
    # Entries that did not parse must be a missing marker (or a written nan / inf).
    text = series.where(series.map(type) == str, "")  # pandas 3 turns None into NaN in .str
    missing = series.isna().to_numpy() | text.str.strip().str.lower().isin(
        markers | {"nan"}).to_numpy()
    unparsed = np.isnan(out) & ~missing
  else:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
      try:
        out[i] = float(v)
      except (TypeError, ValueError):
        pass
    unparsed = np.isnan(out) & ~np.asarray([_is_missing(v, markers | {"nan"}) for v in values])
  for i in np.flatnonzero(unparsed).tolist():
    v = values[i]
    try:
      out[i] = float(v)
    except (TypeError, ValueError):
      bad(i, v)
  return out


def number_column(table: Columns, name: str) -> np.ndarray:
  """A metric column as f64[N] (NaN where missing or written as nan / inf stays inf).

  Raises:
    SpaceError: naming the row of an entry that is not a number.
  """
  def bad(i, v):
    raise SpaceError(f"column {name!r}: {v!r} is not a number", table.where(i))
  return _numbers(table.column(name), frozenset(MISSING), bad)


def encode_configs(space: Space, table: Columns, missing: Sequence[str] = MISSING
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The table's configurations as ``(values f32[N, D], active bool[N, D])``, checked.

  A parameter column may be absent (the parameter is then inactive in every
  row). Values are encoded as `Space.encode` does; each row must then be a
  valid configuration (conditions and constraints).

  Raises:
    SpaceError: naming the row and column of the first bad value or row.
  """
  markers = frozenset(m.strip().lower() for m in missing)
  n = table.num_rows
  u = np.zeros((n, space.num_params), np.float64)
  act = np.zeros((n, space.num_params), bool)
  for i, p in enumerate(space.params):
    if p.name not in table.data:
      continue
    col = table.data[p.name]
    where = lambda r, p=p: f"{table.where(r)} (column {p.name!r})"
    lo, hi = space.t_low[i], space.t_high[i]
    if p.kind in ("float", "int"):
      def bad(r, v, p=p):
        raise SpaceError(f"expected a number, got {v!r}", where(r))
      v = _numbers(col, markers, bad)
      on = ~np.isnan(v)
      vals = v[on]
      rows = np.flatnonzero(on)
      for check, problem in (
          (~np.isfinite(vals), "expected a finite number, got {v!r}"),
          ((vals < p.low) | (vals > p.high), f"value {{v!r}} is outside [{p.low}, {p.high}]"),
          ((p.kind == "int") & (vals != np.round(vals)), "expected a whole number, got {v!r}")):
        if np.any(check):
          r = rows[np.argmax(check)]
          raise SpaceError(problem.format(v=col[r] if col.dtype == object else v[r]), where(r))
      t = np.log(vals) if p.log else (vals + 0.5 if p.kind == "int" else vals)
      u[rows, i] = (t - lo) / (hi - lo)
      act[rows, i] = True
      continue
    cache: dict[Any, int] = {}
    idx = np.full(n, -1, np.int64)
    for r, v in enumerate(col.tolist()):
      key = (type(v), v) if not (isinstance(v, float) and math.isnan(v)) else ("nan",)
      hit = cache.get(key)
      if hit is None:
        j = _label_index(p, v)
        if j is None:
          if not _is_missing(v, markers):
            raise SpaceError(f"value {v!r} is not one of {list(p.choices)}", where(r))
          j = -1
        hit = cache[key] = j
      idx[r] = hit
    on = idx >= 0
    u[on, i] = space.mids[i, idx[on]]
    act[on, i] = True
  u = u.astype(np.float32)
  _check_rows(space, table, u, act)
  return u, act


def _check_rows(space: Space, table: Columns, u: np.ndarray, act: np.ndarray) -> None:
  """Every row's activity follows the conditions and every constraint holds (one jitted pass)."""
  if table.num_rows == 0:
    return
  check = jax.jit(lambda u, a: (space.activity(u), space.constraint_ok(u, a)))
  want, ok = (np.asarray(x) for x in check(u, act))
  wrong = np.argwhere(want != act)
  if wrong.size:
    r, j = wrong[0]
    p = space.params[j]
    if act[r, j]:
      raise SpaceError(f"parameter {p.name!r} is set but inactive: its condition "
                       f"{p.condition_text!r} does not hold", table.where(r))
    why = f" (its condition {p.condition_text!r} holds)" if p.condition_text else ""
    raise SpaceError(f"active parameter {p.name!r} is missing{why}", table.where(r))
  broken = np.argwhere(~ok)
  if broken.size:
    r, c = broken[0]
    cfg = space.decode(u[r], act[r])
    raise SpaceError(f"configuration violates {space.constraints[c].label()} with "
                     f"{', '.join(f'{k}={v!r}' for k, v in cfg.items())}", table.where(r))
