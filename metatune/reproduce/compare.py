"""Compares a regeneration's tables with the committed ones, entry by entry of the registry.

Each entry's tables (its ``*.md`` outputs below ``{paper}``, `registry.is_table`) are read from
both folders and their markdown tables (a ``| a | b |`` header, a ``|---|`` separator, rows)
matched by position in the file; rows are matched by their first cell, columns by their header.
How cells compare is the entry's ``compare`` mode:

- ``exact``: every cell equal as text, except in timing columns (`TIMING_COLUMNS`), which depend
  on the machine and its load; the rows in the same order.
- ``ci``: a committed cell ``m [lo, hi]`` holds the regenerated mean ``m`` (``lo <= m <= hi``);
  text cells (labels, tuner names) are equal; other numbers are not compared.
- ``none``: not compared (the registry says why).

Text outside the tables (titles, the command, dates, wall times, load averages) is never
compared, nor are figures (``.png``), logs, stamps or ``REPRODUCE.md``. A table file missing from
one folder is a difference; an entry with no table in either folder (one that needs a GPU or the
data folder, run on neither side) is reported as absent, not as a difference.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Sequence

from metatune.reproduce.registry import PROFILES, Registry, is_table, order, resolve

# Column headers (lower-cased) of timings and other machine-dependent numbers: such columns are
# never compared. A header matches when any of these patterns is found in it.
TIMING_COLUMNS = (
    r"\bsec(ond)?s?\b",           # seconds, "PPO seconds"
    r"\bwall\b",                  # wall time
    r"\btimes?\b",                # "wall time (s)", "time to ..."
    r"\bminutes?\b|\bhours?\b",
    r"\(s\)|\(ms\b|\bms\b",       # "GP-BO (s)", "overhead (ms)", "total ms"
    r"(?<!\S)s(?![\w'])",         # " s" as a unit: "iteration s", "compile s (iteration)"
    r"/s\b|\bper second\b",      # "configs/s", "evaluations/s"
    r"\bspeed|\bthroughput\b",
    r"\bcompil",                  # compile times
    r"\bload\b",                  # load average
    r"\belapsed\b|\bduration\b",
)
_TIMING = re.compile("|".join(f"(?:{p})" for p in TIMING_COLUMNS))
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CI = re.compile(rf"({_NUMBER})\s*\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_SEPARATOR = re.compile(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
# Cells that stand for "no number" (ignored by ci, like numbers).
_PLACEHOLDERS = ("", "-", "–", "—", "n/a", "na", "nan", "inf", "-inf")


def is_timing(header: str) -> bool:
  """Whether a column holds timings or other machine-dependent numbers (`TIMING_COLUMNS`).

  Example:
    >>> [is_timing(h) for h in ("seconds", "env steps/s", "PPO s", "regret@5", "gp_bo's final")]
    [True, True, True, False, False]
  """
  return bool(_TIMING.search(header.lower()))


@dataclasses.dataclass(frozen=True)
class Table:
  """A markdown table: its header cells and rows of cells (as text, stripped)."""
  header: tuple[str, ...]
  rows: tuple[tuple[str, ...], ...]


def _cells(line: str) -> tuple[str, ...]:
  line = line.strip().removeprefix("|")
  if line.endswith("|") and not line.endswith("\\|"):
    line = line[:-1]
  return tuple(c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line))


def parse_tables(text: str) -> list[Table]:
  """The markdown tables of a text, in order (fenced code blocks left out).

  Example:
    >>> t = parse_tables("# title\\n\\n| a | b |\\n|---|---:|\\n| x | 1 |\\n\\ntext\\n")
    >>> t[0].header, t[0].rows
    (('a', 'b'), (('x', '1'),))
  """
  tables: list[Table] = []
  lines = text.splitlines()
  fenced = False
  k = 0
  while k < len(lines):
    line = lines[k].strip()
    if line.startswith(("```", "~~~")):
      fenced = not fenced
    if (not fenced and line.startswith("|") and k + 1 < len(lines)
        and _SEPARATOR.fullmatch(lines[k + 1].strip())):
      header = _cells(line)
      rows = []
      k += 2
      while k < len(lines) and lines[k].strip().startswith("|"):
        rows.append(_cells(lines[k]))
        k += 1
      tables.append(Table(header, tuple(rows)))
      continue
    k += 1
  return tables


def _plain(cell: str) -> str:
  """The cell without bold or italic markers around it."""
  return cell.strip().strip("*_").strip()


def _ci(cell: str) -> tuple[float, float, float] | None:
  m = _CI.fullmatch(_plain(cell))
  return (float(m.group(1)), float(m.group(2)), float(m.group(3))) if m else None


def _mean(cell: str) -> float | None:
  """The mean of a ``m [lo, hi]`` cell, or the number of a plain numeric cell."""
  ci = _ci(cell)
  if ci:
    return ci[0]
  try:
    return float(_plain(cell))
  except ValueError:
    return None


def _is_text(cell: str) -> bool:
  plain = _plain(cell)
  return plain.lower() not in _PLACEHOLDERS and not any(ch.isdigit() for ch in plain)


def _keyed(rows: Sequence[tuple[str, ...]]) -> dict[tuple[str, int], tuple[str, ...]]:
  """Rows by (first cell, how many earlier rows have that first cell)."""
  seen: dict[str, int] = {}
  out = {}
  for row in rows:
    label = row[0] if row else ""
    out[(label, seen.get(label, 0))] = row
    seen[label] = seen.get(label, 0) + 1
  return out


def _row_name(key: tuple[str, int], keys) -> str:
  label, k = key
  dup = any(other[0] == label and other[1] > 0 for other in keys)
  return f"row {label!r}" + (f" #{k + 1}" if dup else "")


def _cell(row: tuple[str, ...], j: int) -> str:
  return row[j] if j < len(row) else ""


def compare_table(expected: Table, actual: Table, mode: str, where: str) -> list[str]:
  """The differences between a committed table and a regenerated one, in a mode.

  Args:
    expected: the committed table.
    actual: the regenerated table.
    mode: ``exact`` or ``ci`` (see the module's docstring).
    where: how messages name the table (``paper/quick/tables/x.md, table 1``).

  Returns:
    one line per difference, e.g. ``..., row 'prior', column 'regret@5': expected 0.123,
    got 0.125``.

  Example:
    >>> e = Table(("tuner", "regret", "seconds"), (("prior", "0.1 [0.0, 0.2]", "3"),))
    >>> a = Table(("tuner", "regret", "seconds"), (("prior", "0.15 [0.1, 0.2]", "9"),))
    >>> compare_table(e, a, "ci", "t.md, table 1")
    []
    >>> compare_table(e, a, "exact", "t.md, table 1")
    ["t.md, table 1, row 'prior', column 'regret': expected 0.1 [0.0, 0.2], got 0.15 [0.1, 0.2]"]
  """
  if expected.header != actual.header:
    return [f"{where}: columns differ: expected {' | '.join(expected.header)}; got "
            f"{' | '.join(actual.header)}"]
  exp, act = _keyed(expected.rows), _keyed(actual.rows)
  keys = list(exp) + [k for k in act if k not in exp]
  out = [f"{where}, {_row_name(k, keys)}: missing from the regeneration"
         for k in exp if k not in act]
  out += [f"{where}, {_row_name(k, keys)}: not in the committed table" for k in act
          if k not in exp]
  common = [k for k in exp if k in act]
  if mode == "exact" and common != [k for k in act if k in exp]:
    out.append(f"{where}: rows in another order: expected "
               f"{', '.join(k[0] for k in common)}; got "
               f"{', '.join(k[0] for k in act if k in exp)}")
  width = max([len(expected.header)] + [len(r) for k in common for r in (exp[k], act[k])])
  names = expected.header + tuple(f"column {j + 1}" for j in range(len(expected.header), width))
  for key in common:
    for j in range(1, width):
      if is_timing(names[j]):
        continue
      e, a = _cell(exp[key], j), _cell(act[key], j)
      at = f"{where}, {_row_name(key, keys)}, column {names[j]!r}"
      if mode == "exact":
        if e != a:
          out.append(f"{at}: expected {e}, got {a}")
        continue
      ci = _ci(e)
      if ci is not None:
        m = _mean(a)
        if m is None:
          out.append(f"{at}: expected {e}, got {a} (no number to hold against the CI)")
        elif not ci[1] <= m <= ci[2]:
          out.append(f"{at}: expected {e}, got {a} (the mean {_plain(a).split()[0]} lies "
                     "outside the committed CI)")
      elif (_is_text(e) or _is_text(a)) and e != a:
        out.append(f"{at}: expected {e}, got {a}")
  return out


def compare_file(expected: pathlib.Path, actual: pathlib.Path, mode: str, name: str) -> list[str]:
  """The differences between a committed table file and a regenerated one (`compare_table`).

  Args:
    expected: the committed file.
    actual: the regenerated file.
    mode: ``exact`` or ``ci``.
    name: how messages name the file (``paper/quick/tables/x.md``).

  Returns:
    one line per difference; a missing file is one.
  """
  texts = []
  for path, side in ((expected, "the committed folder"), (actual, "the regeneration")):
    try:
      texts.append(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
      return [f"{name}: missing from {side} ({path})"]
    except OSError as e:
      return [f"{name}: cannot read {path}: {e.strerror or e}"]
  exp, act = parse_tables(texts[0]), parse_tables(texts[1])
  out = []
  for k, (e, a) in enumerate(zip(exp, act), 1):
    out += compare_table(e, a, mode, f"{name}, table {k}")
  if len(exp) != len(act):
    out.append(f"{name}: expected {len(exp)} table{'s' * (len(exp) != 1)}, got {len(act)}")
  return out


@dataclasses.dataclass
class Outcome:
  """What a comparison found.

  Attributes:
    differences: one line each.
    exact: table files compared exactly.
    ci: table files compared within their CIs.
    not_compared: ``(entry, why)`` for each entry whose tables are not compared (entries
      that write no table are left out).
    absent: entries with no table in either folder.
  """
  differences: list[str] = dataclasses.field(default_factory=list)
  exact: int = 0
  ci: int = 0
  not_compared: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  absent: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    """``N table files compared exactly, M within their CIs, K entries not compared ...``."""
    text = (f"{self.exact} table file{'s' * (self.exact != 1)} compared exactly, {self.ci} "
            f"within their CIs, {len(self.not_compared)} entr"
            f"{'ies' if len(self.not_compared) != 1 else 'y'} not compared")
    if self.absent:
      text += f", {len(self.absent)} absent from both folders ({', '.join(self.absent)})"
    return text


def _relative(path: str, folder: str) -> str:
  """``path`` relative to ``folder`` (both posix, ``path`` below it).

  Example:
    >>> _relative("paper/quick/tables/x.md", "paper/quick")
    'tables/x.md'
  """
  if not path.startswith(folder + "/"):
    raise ValueError(f"{path} is not below {folder}")
  return path[len(folder) + 1:]

def compare_outputs(registry: Registry, profile: str, expected: str | os.PathLike,
                    actual: str | os.PathLike, only: Sequence[str] = ()) -> Outcome:
  """Compares the tables of a profile's entries in two ``{paper}`` folders.

  Args:
    registry: the registry (its entries' outputs and compare modes).
    profile: ``quick`` or ``full``.
    expected: the committed ``{paper}`` folder (``paper/quick`` of the repository).
    actual: a regeneration's ``{paper}`` folder.
    only: compare only these entries and what they need.

  Returns:
    the differences and what was compared.

  Example:
    >>> from metatune.reproduce.registry import load_registry
    >>> out = compare_outputs(load_registry("configs/reproduce.yaml"), "quick",  # doctest: +SKIP
    ...                       "paper/quick", "/tmp/clone/paper/quick")
    >>> out.differences, out.summary()  # doctest: +SKIP
    ([], '12 table files compared exactly, 0 within their CIs, 9 entries not compared')
  """
  expected, actual = pathlib.Path(expected), pathlib.Path(actual)
  paper = PROFILES[profile]["paper"]
  outcome = Outcome()
  for entry in order(registry, only):
    step = resolve(entry, profile)
    tables = [o for o, w in zip(step.outputs, entry.outputs) if is_table(w)]
    if not tables:
      continue
    if step.skip:
      outcome.not_compared.append((entry.name, f"skipped in the {profile} profile"))
      continue
    if entry.compare == "none":
      outcome.not_compared.append((entry.name, entry.compare_why))
      continue
    rels = [_relative(t, paper) for t in tables]
    if not any((expected / r).exists() or (actual / r).exists() for r in rels):
      outcome.absent.append(entry.name)
      continue
    for table, rel in zip(tables, rels):
      outcome.differences += compare_file(expected / rel, actual / rel, entry.compare, table)
      if entry.compare == "exact":
        outcome.exact += 1
      else:
        outcome.ci += 1
  return outcome

