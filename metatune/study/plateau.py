"""Tells the user, in plain words, when more trials have stopped paying."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PlateauReport:
  """The plateau check's verdict.

  Attributes:
    plateaued: the best improved by less than ``rel_tol`` of its total
      improvement over the last ``window`` trials.
    gain_last_window: how much the best (minimized) objective dropped over the
      last ``window`` trials (0.0 when there are too few trials to tell).
    relative_gain: ``gain_last_window`` over the total improvement since the
      first successful trial (NaN when there are too few trials to tell, or
      the total is 0).
    num_trials: trials counted from the first successful one.
    message: the verdict in plain words.
  """
  plateaued: bool
  gain_last_window: float
  relative_gain: float
  num_trials: int
  message: str


def _check_int(name: str, value, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
  return int(value)


def plateau_signal(best_so_far: Sequence[float], window: int = 20, min_trials: int = 10,
                   rel_tol: float = 0.01) -> PlateauReport:
  """Says whether the best objective has stopped improving enough to justify more trials.

  The rule. Let ``b`` be the best-so-far sequence (minimized) from the first
  successful trial on (leading ``inf``/NaN entries, trials before any
  success, are dropped), and ``n = len(b)``. The study has plateaued when

  - ``n >= max(min_trials, window + 1)``, and
  - the gain over the last ``window`` trials, ``b[-window - 1] - b[-1]``, is
    at most ``rel_tol`` times the range seen so far, ``b[0] - b[-1]`` (the
    total improvement since the first success).

  With fewer trials it is never a plateau. Zero gain with zero range (the first
  success is still the best after ``window`` more trials) is a plateau.

  Args:
    best_so_far: the best objective after each trial, non-increasing once finite.
    window: trials over which the recent gain is measured (>= 1).
    min_trials: successful trials needed before any verdict (>= 1).
    rel_tol: the fraction of the total improvement below which the recent gain
      counts as a plateau (>= 0).

  Returns:
    A `PlateauReport`.

  Raises:
    ValueError: naming the argument: a non-numeric or increasing
      ``best_so_far``, a NaN after a finite value, or a bad ``window``,
      ``min_trials`` or ``rel_tol``.

  Example:
    >>> r = plateau_signal([5.0] * 3 + [1.0] * 30, window=20)
    >>> r.plateaued, r.gain_last_window
    (True, 0.0)
  """
  window = _check_int("window", window, 1)
  min_trials = _check_int("min_trials", min_trials, 1)
  if isinstance(rel_tol, bool) or not isinstance(rel_tol, (int, float, np.floating)) or not (
      math.isfinite(rel_tol) and rel_tol >= 0):
    raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")
  try:
    b = np.asarray(best_so_far, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"best_so_far must be a sequence of numbers: {e}") from None
  if b.ndim != 1:
    raise ValueError(f"best_so_far must be one-dimensional, got shape {b.shape}")
  finite = np.isfinite(b)
  start = int(np.argmax(finite)) if finite.any() else b.shape[0]
  b = b[start:]
  if b.size and not np.all(np.isfinite(b)):
    bad = int(np.flatnonzero(~np.isfinite(b))[0]) + start
    raise ValueError(f"best_so_far[{bad}] is {float(b[bad - start])!r} after a finite value; a "
                     "best-so-far sequence stays finite once a trial succeeds")
  rises = np.flatnonzero(np.diff(b) > 0)
  if rises.size:
    i = int(rises[0]) + start + 1
    raise ValueError(f"best_so_far must not increase (minimized best so far), but "
                     f"best_so_far[{i}] = {b[i - start]:g} > best_so_far[{i - 1}] = "
                     f"{b[i - 1 - start]:g}; pass the running minimum of the objectives")
  n = int(b.size)
  needed = max(min_trials, window + 1)
  if n < needed:
    msg = (f"Too early to judge: {n} successful trial{'s' if n != 1 else ''} so far; a "
           f"plateau is judged after {needed}.")
    return PlateauReport(False, 0.0, math.nan, n, msg)
  gain = float(b[-window - 1] - b[-1])
  total = float(b[0] - b[-1])
  rel = gain / total if total > 0 else math.nan
  plateaued = gain <= rel_tol * total
  if plateaued:
    if total > 0:
      how = (f"improved by only {gain:.4g} ({rel:.1%} of the {total:.4g} gained since the "
             f"first successful trial)")
    else:
      how = "did not improve at all since the first successful trial"
    msg = (f"More trials have stopped paying: over the last {window} trials the best objective "
           f"{how}, below the {rel_tol:.1%} threshold. Consider stopping, or changing the "
           f"search space or the tuner.")
  else:
    msg = (f"Still improving: over the last {window} trials the best objective improved by "
           f"{gain:.4g} ({rel:.1%} of the {total:.4g} gained since the first successful "
           f"trial), above the {rel_tol:.1%} threshold.")
  return PlateauReport(bool(plateaued), gain, rel, n, msg)
