"""Early-stopping rules for a study: successive halving, asynchronous successive halving, none.

A pruner is asked, each time a trial reports an intermediate value, whether the
trial should stop. It sees every trial's reports, so it holds no state of its
own and a resumed study gets the same answers::

  should_prune(trial_number, step, reports) -> bool

``reports`` maps every trial number (running, completed or pruned) to its
intermediate values ``{step: value}``; values are minimized; ``trial_number``
is the trial asking and ``step`` its latest reported step.

Rungs: with ``min_resource`` r, ``reduction_factor`` eta and ``max_resource``
R, the rungs are the steps ``r * eta**k`` below R. A trial *reaches* a rung at
its first reported step at or above it, and its value there is its value at
the rung. A trial is judged once per rung, at the report that reaches it;
reports between rungs never prune. A non-finite value at a rung always prunes.
"""

from __future__ import annotations

import math
from typing import Mapping, Protocol

Reports = Mapping[int, Mapping[float, float]]

_EPS = 1e-9  # relative slack when comparing steps with rung positions


class Pruner(Protocol):
  """What the study calls after each intermediate report."""

  def should_prune(self, trial_number: int, step: float, reports: Reports) -> bool:
    ...


def _check_number(name: str, value, low: float, strict: bool) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"{name} must be a finite number, got {value!r}")
  if value < low or (strict and value == low):
    raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")
  return float(value)


def _check_call(trial_number: int, step: float, reports: Reports) -> Mapping[float, float]:
  if not isinstance(reports, Mapping):
    raise ValueError(f"reports must be a mapping of trial number -> {{step: value}}, got "
                     f"{type(reports).__name__}")
  if trial_number not in reports:
    raise ValueError(f"trial_number {trial_number!r} has no entry in reports (trials: "
                     f"{sorted(reports)[:10]}{'...' if len(reports) > 10 else ''})")
  own = reports[trial_number]
  if not isinstance(own, Mapping):
    raise ValueError(f"reports[{trial_number!r}] must be a mapping of step -> value, got "
                     f"{type(own).__name__}")
  if step not in own:
    raise ValueError(f"step {step!r} is not among the steps reported by trial {trial_number} "
                     f"({sorted(own)[:10]})")
  return own


class NopPruner:
  """Never prunes.

  Example:
    >>> NopPruner().should_prune(0, 1.0, {0: {1.0: 0.5}})
    False
  """

  def should_prune(self, trial_number: int, step: float, reports: Reports) -> bool:
    _check_call(trial_number, step, reports)
    return False

  def __repr__(self) -> str:
    return "NopPruner()"


class _Halving:
  """Shared rung logic of `SuccessiveHalving` and `ASHA`."""

  def __init__(self, min_resource: float, max_resource: float, reduction_factor: float = 3):
    self.min_resource = _check_number("min_resource", min_resource, 0.0, strict=True)
    self.max_resource = _check_number("max_resource", max_resource, 0.0, strict=True)
    self.reduction_factor = _check_number("reduction_factor", reduction_factor, 1.0, strict=True)
    if self.max_resource < self.min_resource:
      raise ValueError(f"max_resource ({max_resource!r}) must be >= min_resource "
                       f"({min_resource!r})")
    rungs = []
    r = self.min_resource
    while r < self.max_resource * (1 - _EPS):
      rungs.append(r)
      r *= self.reduction_factor
    self.rungs: tuple[float, ...] = tuple(rungs)

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(min_resource={self.min_resource:g}, "
            f"max_resource={self.max_resource:g}, reduction_factor={self.reduction_factor:g})")

  @staticmethod
  def _reach(values: Mapping[float, float], rung: float) -> tuple[float, float] | None:
    """(step, value) of the first report at or above ``rung``, or None."""
    low = rung * (1 - _EPS)
    s = min((s for s in values if s >= low), default=None)
    return None if s is None else (s, values[s])

  def _rung_values(self, rung: float, reports: Reports) -> list[float]:
    """Values (non-finite as inf) of every trial that reached ``rung``."""
    out = []
    for values in reports.values():
      hit = self._reach(values, rung)
      if hit is not None:
        v = float(hit[1])
        out.append(v if math.isfinite(v) else math.inf)
    return out

  def _judged_rung(self, own: Mapping[float, float], step: float) -> int | None:
    """The index of the highest rung this report reaches, or None between rungs."""
    for k in range(len(self.rungs) - 1, -1, -1):
      hit = self._reach(own, self.rungs[k])
      if hit is not None and hit[0] == step:
        return k
    return None

  def _keep(self, k: int, reports: Reports, num_at_rung: int) -> int:
    raise NotImplementedError

  def should_prune(self, trial_number: int, step: float, reports: Reports) -> bool:
    own = _check_call(trial_number, step, reports)
    k = self._judged_rung(own, step)
    if k is None:
      return False
    value = float(own[step])
    if not math.isfinite(value):
      return True
    values = sorted(self._rung_values(self.rungs[k], reports))
    keep = max(1, self._keep(k, reports, len(values)))
    return value > values[min(keep, len(values)) - 1]


class ASHA(_Halving):
  """Asynchronous successive halving (Li et al., 2020), as a stopping rule.

  At each rung, a trial continues only if its value is among the best
  ``max(1, floor(n / reduction_factor))`` of the ``n`` values recorded at that
  rung so far (its own included; ties continue). A trial never waits for
  others, so the first trials to arrive at a rung continue, and the bar rises
  as the rung fills.

  Args:
    min_resource: the first rung (e.g. 1 epoch); > 0.
    max_resource: the full budget; trials reaching it are not judged; >= min_resource.
    reduction_factor: eta > 1; about 1/eta of the trials at a rung continue.

  Raises:
    ValueError: naming the argument that is not a finite number in range.

  Example:
    >>> asha = ASHA(1, 27)
    >>> asha.rungs
    (1.0, 3.0, 9.0)
    >>> asha.should_prune(2, 1, {0: {1: 0.2}, 1: {1: 0.3}, 2: {1: 0.4}})
    True
  """

  def _keep(self, k: int, reports: Reports, num_at_rung: int) -> int:
    del k, reports
    return int(math.floor(num_at_rung / self.reduction_factor + _EPS))


class SuccessiveHalving(_Halving):
  """Synchronous successive halving's promotion rule, evaluated on the reports available.

  Synchronous SH starts ``n0`` trials at the first rung and promotes the best
  ``floor(n0 / eta**(k + 1))`` of rung ``k`` to rung ``k + 1``. Here ``n0`` is
  the number of trials that reached the first rung so far, and a trial at rung
  ``k`` continues only if its value is among the best ``max(1, floor(n0 /
  eta**(k + 1)))`` values recorded at rung ``k`` (ties continue). Unlike `ASHA`,
  whose quota at a rung counts the trials that reached that rung, the quota
  here counts the whole cohort, so deeper rungs keep fewer trials.

  Args:
    min_resource: the first rung; > 0.
    max_resource: the full budget; >= min_resource.
    reduction_factor: eta > 1.

  Raises:
    ValueError: naming the argument that is not a finite number in range.

  Example:
    >>> sh = SuccessiveHalving(1, 9)
    >>> reports = {i: {1: 0.1 * i} for i in range(9)}
    >>> reports[0][3] = 0.5
    >>> reports[1][3] = 0.4
    >>> sh.should_prune(0, 3, reports), sh.should_prune(1, 3, reports)
    (True, False)
  """

  def _keep(self, k: int, reports: Reports, num_at_rung: int) -> int:
    del num_at_rung
    n0 = len(self._rung_values(self.rungs[0], reports))
    return int(math.floor(n0 / self.reduction_factor ** (k + 1) + _EPS))
