"""Early-stopping rules for a study: successive halving, ASHA, surrogate curve extrapolation, none.

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

`CurveStop` also needs the trials' configurations: it says so with
``needs_points = True``, and the study then calls ``should_prune(trial_number,
step, reports, points=...)`` with ``points`` mapping every trial number to its
encoded configuration ``(values, active)``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Protocol

import numpy as np

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


def _reach(values: Mapping[float, float], rung: float) -> tuple[float, float] | None:
  """(step, value) of the first report at or above ``rung``, or None."""
  low = rung * (1 - _EPS)
  s = min((s for s in values if s >= low), default=None)
  return None if s is None else (s, values[s])


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

  def _rung_values(self, rung: float, reports: Reports) -> list[float]:
    """Values (non-finite as inf) of every trial that reached ``rung``."""
    out = []
    for values in reports.values():
      hit = _reach(values, rung)
      if hit is not None:
        v = float(hit[1])
        out.append(v if math.isfinite(v) else math.inf)
    return out

  def _judged_rung(self, own: Mapping[float, float], step: float) -> int | None:
    """The index of the highest rung this report reaches, or None between rungs."""
    for k in range(len(self.rungs) - 1, -1, -1):
      hit = _reach(own, self.rungs[k])
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


def _thin(steps: list[float], num: int) -> list[float]:
  """At most ``num`` of the sorted ``steps``, evenly spread, the first and the last kept."""
  if len(steps) <= num:
    return steps
  if num == 1:
    return steps[-1:]
  return [steps[i] for i in sorted({round(i * (len(steps) - 1) / (num - 1))
                                    for i in range(num)})]


def _load_curve_surrogate(source: Any):
  """``(surrogate, where)``: a fidelity-aware surrogate from a folder (or as given)."""
  if isinstance(source, (str, os.PathLike)):
    where = os.fspath(source)
    if not os.path.isfile(os.path.join(where, "surrogate.json")):
      raise ValueError(f"CurveStop: no surrogate checkpoint at {where} (no surrogate.json): train "
                       f"one with 'metatune surrogate train FAMILY.yaml --dataset DATASET --out "
                       f"{where}' on a meta-dataset with learning curves")
    from metatune.surrogate import checkpoint  # pylint: disable=import-outside-toplevel
    surrogate = checkpoint.load_surrogate(where)
  else:
    surrogate, where = source, "(the surrogate given)"
  if not getattr(surrogate.config, "fidelity", False):
    raise ValueError(f"CurveStop: the surrogate at {where} has no fidelity support (it was "
                     "trained on final values only): train it on a meta-dataset with learning "
                     "curves (a family with a fidelity)")
  return surrogate, where


class CurveStop:
  """Stops a trial whose final value is unlikely to beat the best, by surrogate curve extrapolation.

  At each report, a fidelity-aware meta-surrogate (`metatune.surrogate`,
  trained with ``metatune surrogate train`` on a meta-dataset with learning
  curves) reads the study's curves (the best completed trial's, then the other
  completed ones', then partial ones', most recent first, at most
  ``max_context``) and this trial's reports so far, as points ``[configuration,
  step / max_resource, value]``, and predicts the distribution of this trial's
  final value (at ``max_resource``). The trial stops when the probability that
  it finishes and beats the best final value of the completed trials is below
  ``threshold``. A trial is *completed* here when it reported at or above
  ``max_resource``; before ``min_completed`` such trials, and before step
  ``min_resource``, it never stops. A non-finite report always stops. Curves
  are thinned to ``max_points`` evenly spread reports (the first and last kept).

  Args:
    surrogate: the surrogate's folder (or a loaded `Surrogate`).
    max_resource: the full budget (the step of a final value); > 0.
    threshold: the smallest probability of beating the best that continues (default 0.05).
    min_resource: never stop before this step (default None: from the first report).
    min_completed: completed trials needed before any stop (default 3).
    max_context: most other trials in the context (default: the surrogate's
      training ``max_context``).
    max_points: most reports per curve (default: the training curves' length, else 10).
    space: the study's space, checked against the surrogate's (optional).

  Raises:
    ValueError: naming the path when the folder holds no surrogate or one without
      fidelity support, or naming the argument out of range.

  Example:
    >>> stop = CurveStop("runs/surrogate", max_resource=27)                # doctest: +SKIP
    >>> study.optimize("train.py:objective", num_trials=100, pruner=stop)  # doctest: +SKIP
  """

  needs_points = True

  def __init__(self, surrogate: Any, max_resource: float, threshold: float = 0.05,
               min_resource: float | None = None, min_completed: int = 3,
               max_context: int | None = None, max_points: int | None = None, space: Any = None):
    self.max_resource = _check_number("max_resource", max_resource, 0.0, strict=True)
    self.threshold = _check_number("threshold", threshold, 0.0, strict=False)
    if self.threshold > 1:
      raise ValueError(f"threshold must be <= 1, got {threshold!r}")
    self.min_resource = (None if min_resource is None else
                         _check_number("min_resource", min_resource, 0.0, strict=True))
    for name, v in (("min_completed", min_completed), ("max_context", max_context),
                    ("max_points", max_points)):
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"{name} must be a positive whole number, got {v!r}")
    self.min_completed = min_completed
    self.surrogate, self.where = _load_curve_surrogate(surrogate)
    info = self.surrogate.info
    self.max_context = max_context or int(info.get("train_config", {}).get("max_context", 16))
    self.max_points = max_points or int(info.get("curve_steps", 10))
    if space is not None and space.signature != self.surrogate.space.signature:
      raise ValueError(f"CurveStop: the surrogate at {self.where} models the space "
                       f"{self.surrogate.space.name!r} (signature "
                       f"{self.surrogate.space.signature}), not the study's {space.name!r} "
                       f"({space.signature})")

  def __repr__(self) -> str:
    return (f"CurveStop({self.where!r}, max_resource={self.max_resource:g}, "
            f"threshold={self.threshold:g}, min_resource={self.min_resource}, "
            f"min_completed={self.min_completed})")

  def beat_probability(self, trial_number: int, step: float, reports: Reports,
                       points: Mapping[int, Any]) -> float | None:
    """P(the trial finishes below the best completed final value), or None when not judged.

    Not judged: the trial reached ``max_resource``, or fewer than
    ``min_completed`` other trials completed. ``points``: trial number ->
    ``(values, active)`` (or an object with ``values`` and ``active``).
    """
    full = self.max_resource * (1 - _EPS)
    if step >= full:
      return None
    finals = {}
    for n, values in reports.items():
      hit = None if n == trial_number else _reach(values, self.max_resource)
      if hit is not None and math.isfinite(hit[1]):
        finals[n] = float(hit[1])
    if len(finals) < self.min_completed:
      return None
    if points is None:
      raise ValueError("CurveStop needs the trials' configurations: call should_prune(..., "
                       "points={trial number: (values, active)}) (a Study passes them)")
    best_n = min(finals, key=finals.get)
    others = sorted((n for n in reports if n != trial_number and n in points and reports[n]),
                    key=lambda n: (n != best_n, n not in finals, -n))[:self.max_context]
    size = (self.max_context + 1) * self.max_points
    d = self.surrogate.space.num_params
    values, active = np.zeros((size, d), np.float32), np.zeros((size, d), bool)
    fid, y = np.ones(size, np.float32), np.zeros(size, np.float32)
    used = 0
    curves = [(n, self.max_points, self.max_resource * (1 + _EPS)) for n in others]
    curves.append((trial_number, max(self.max_points - 1, 1), step))
    for n, num, upto in curves:
      u, a = _point(points.get(n), n, d)
      for s in _thin(sorted(s for s in reports[n] if s <= upto), num):
        values[used], active[used] = u, a
        fid[used], y[used] = min(s / self.max_resource, 1.0), reports[n][s]
        used += 1
    failed = ~np.isfinite(y)
    y = np.where(failed, 0.0, y)
    mask = np.arange(size) < used
    qu, qa = _point(points.get(trial_number), trial_number, d)
    p = _beat_fn(self.surrogate)(self.surrogate.params, values, active, fid, y, failed, mask, qu,
                                 qa, np.float32(finals[best_n]))
    return float(p)

  def should_prune(self, trial_number: int, step: float, reports: Reports,
                   points: Mapping[int, Any] | None = None) -> bool:
    own = _check_call(trial_number, step, reports)
    if not math.isfinite(float(own[step])):
      return True
    if self.min_resource is not None and step < self.min_resource * (1 - _EPS):
      return False
    p = self.beat_probability(trial_number, step, reports, points)
    return p is not None and p < self.threshold


_COMPILED: dict = {}  # (space signature, architecture) -> the compiled `_beat_fn`


def _beat_fn(surrogate):
  """A compiled ``fn(params, context..., query..., best) -> P(final < best and no failure)``.

  One per space and architecture, so every `CurveStop` on the same kind of checkpoint shares it.
  """
  key = (surrogate.space.signature, surrogate.config)
  if key not in _COMPILED:
    import dataclasses  # pylint: disable=import-outside-toplevel

    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from metatune.surrogate import predictive  # pylint: disable=import-outside-toplevel
    from metatune.tuners.base import Points  # pylint: disable=import-outside-toplevel

    @jax.jit
    def fn(params, values, active, fidelity, y, failed, mask, query_values, query_active, best):
      out = predictive.predict_curve(
          dataclasses.replace(surrogate, params=params), Points(values, active), fidelity, y,
          failed, Points(query_values[None], query_active[None]), jnp.ones(1), mask,
          levels=(0.5,), prior_loc=best)
      return (1.0 - out.fail_prob[0, 0]) * out.predictive.cdf(best)[0, 0]

    _COMPILED[key] = fn
  return _COMPILED[key]


def _point(point: Any, number: int, num_params: int):
  """``(values f32[D], active bool[D])`` of a trial's configuration."""
  if point is None:
    raise ValueError(f"points has no configuration for trial {number}")
  values, active = (point.values, point.active) if hasattr(point, "values") else point
  values, active = np.asarray(values, np.float32), np.asarray(active, bool)
  if values.shape != (num_params,) or active.shape != (num_params,):
    raise ValueError(f"trial {number}'s configuration has shape {values.shape}; the "
                     f"surrogate's space has {num_params} parameters")
  return values, active
