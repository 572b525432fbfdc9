"""What a study optimizes (objectives with directions, constraints) and how a result is judged."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from metatune.study.errors import StudyError

DIRECTIONS = {"minimize": 1.0, "min": 1.0, "maximize": -1.0, "max": -1.0}
RESERVED = ("cost",)
FAILURE_REASONS = ("exception", "nan", "inf", "diverged", "timeout", "out_of_memory", "crashed",
                   "invalid_return", "invalid_config")


@dataclasses.dataclass(frozen=True)
class StudySpec:
  """A study's fixed settings (stored with it; a resumed study must match them).

  Attributes:
    objectives: ``(name, "minimize" | "maximize")`` pairs; one by default.
    constraints: names of outcome constraints the objective returns; a trial is
      feasible when every one is ``<= 0``.
    tuner: a key of `metatune.tuners.TUNERS`.
    tuner_options: keyword arguments of the tuner.
    seed: the study seed (tuner keys and trial seeds derive from it).
    weights: the tuner optimizes ``sum(weights * minimized objectives)`` (default:
      the first objective only); the best trials are the Pareto front regardless.
    liar: whether pending trials get a constant-liar value when asking (None: for
      model-based tuners only).
    divergence_threshold: a reported or final first objective beyond this
      (minimized form: ``sign * value > threshold``) marks the trial diverged.
    prior_hash: the hash of the prior the tuner uses, for provenance (None: none).

  Raises:
    StudyError: naming the setting that is wrong.

  Example:
    >>> spec = StudySpec(objectives=(("loss", "minimize"), ("acc", "maximize")))
    >>> spec.signs, spec.scalar([0.5, 0.9])
    ([1.0, -1.0], 0.5)
  """
  objectives: tuple[tuple[str, str], ...] = (("objective", "minimize"),)
  constraints: tuple[str, ...] = ()
  tuner: str = "quasi_random"
  tuner_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0
  weights: tuple[float, ...] | None = None
  liar: bool | None = None
  divergence_threshold: float | None = None
  prior_hash: str | None = None

  def __post_init__(self):
    names = [n for n, _ in self.objectives]
    if not names:
      raise StudyError("a study needs at least one objective", "objectives")
    for n, d in self.objectives:
      if not isinstance(n, str) or not n:
        raise StudyError(f"objective names must be non-empty strings, got {n!r}", "objectives")
      if d not in DIRECTIONS:
        raise StudyError(f"objective {n!r}: direction must be 'minimize' or 'maximize', got "
                         f"{d!r}", "objectives")
    every = names + list(self.constraints)
    dup = sorted({n for n in every if every.count(n) > 1})
    if dup:
      raise StudyError(f"names used twice among objectives and constraints: {dup}", "objectives")
    bad = [n for n in every if n in RESERVED]
    if bad:
      raise StudyError(f"{bad} is reserved (the trial's cost); rename it", "objectives")
    if self.weights is not None and len(self.weights) != len(names):
      raise StudyError(f"weights has {len(self.weights)} entries for {len(names)} objectives",
                       "weights")
    if not isinstance(self.seed, int) or isinstance(self.seed, bool):
      raise StudyError(f"seed must be a whole number, got {self.seed!r}", "seed")

  @property
  def names(self) -> list[str]:
    return [n for n, _ in self.objectives]

  @property
  def signs(self) -> list[float]:
    """+1 for minimized objectives, -1 for maximized ones."""
    return [DIRECTIONS[d] for _, d in self.objectives]

  def scalar(self, objectives: Sequence[float]) -> float:
    """The minimized value the tuner is told."""
    w = self.weights or (1.0,) + (0.0,) * (len(objectives) - 1)
    return float(sum(wi * s * v for wi, s, v in zip(w, self.signs, objectives) if wi))

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["objectives"] = [list(o) for o in self.objectives]
    d["constraints"] = list(self.constraints)
    d["tuner_options"] = dict(self.tuner_options)
    d["weights"] = None if self.weights is None else list(self.weights)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "StudySpec":
    d = dict(d)
    d["objectives"] = tuple((n, dr) for n, dr in d["objectives"])
    d["constraints"] = tuple(d.get("constraints", ()))
    if d.get("weights") is not None:
      d["weights"] = tuple(d["weights"])
    return cls(**d)


def normalize_objectives(objectives: Any) -> tuple[tuple[str, str], ...]:
  """``None``, ``"maximize"``, ``{"loss": "minimize"}`` or ``[("loss", "min"), ...]`` -> pairs."""
  if objectives is None:
    return (("objective", "minimize"),)
  if isinstance(objectives, str):
    if objectives in DIRECTIONS:
      return (("objective", objectives),)
    raise StudyError(f"expected a direction or a mapping name -> direction, got {objectives!r}",
                     "objectives")
  items = objectives.items() if isinstance(objectives, Mapping) else objectives
  try:
    return tuple((str(n), str(d)) for n, d in items)
  except (TypeError, ValueError):
    raise StudyError(f"expected name -> direction pairs, got {objectives!r}", "objectives"
                     ) from None


@dataclasses.dataclass
class Outcome:
  """A judged result: state, reason, and values ready to store."""
  state: str
  reason: str | None = None
  error: str | None = None
  objectives: list[float] | None = None
  constraints: list[float] | None = None
  cost: float | None = None
  attrs: dict[str, Any] | None = None


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)  # True is not a loss of 1


def expected_return(spec: StudySpec) -> str:
  """What an objective of this study must return, in words (for invalid_return messages).

  Example:
    >>> expected_return(StudySpec())
    "expected a number (int or float, not bool or str) or a dict with a number under 'objective'"
  """
  names = spec.names + list(spec.constraints)
  if len(names) == 1:
    return ("expected a number (int or float, not bool or str) or a dict with a number under "
            f"{names[0]!r}")
  return (f"expected a dict with a number (int or float, not bool or str) under each of "
          f"{names}")


def judge(spec: StudySpec, result: Mapping[str, Any], diverged: bool,
          last_value: float | None) -> Outcome:
  """Turns a worker's result into an `Outcome`: parses the value, finds failures.

  Args:
    spec: the study spec.
    result: ``state``, ``value``, ``reason``, ``error`` from `worker.run_trial`, a
      timeout or a crash.
    diverged: the trial reported a non-finite value or one past the threshold.
    last_value: the trial's last reported value (natural direction), or None.

  Returns:
    The `Outcome`; a pruned trial keeps its last value as its first objective.
  """
  n = len(spec.objectives)
  if result["state"] == "pruned":
    objs = [math.nan] * n
    if last_value is not None:
      objs[0] = float(last_value)
    return Outcome("pruned", objectives=objs)
  if result["state"] == "failed":
    objs = None
    if last_value is not None:  # keep how far it got
      objs = [float(last_value)] + [math.nan] * (n - 1)
    reason = result.get("reason") or "exception"
    error = result.get("error")
    if reason == "invalid_return":  # the worker said what came; the study knows what it wanted
      error = f"{error}; {expected_return(spec)}"
    return Outcome("failed", reason, error, objs)
  value = result["value"]
  attrs: dict[str, Any] = {}
  cost = None
  if isinstance(value, Mapping):
    declared = spec.names + list(spec.constraints)
    missing = [k for k in declared if k not in value]
    if missing:
      return Outcome("failed", "invalid_return", f"the returned dict lacks {missing} (it has "
                     f"{sorted(value)}); {expected_return(spec)}")
    bad = [f"{k!r} is {type(value[k]).__name__} {value[k]!r}" for k in declared + ["cost"]
           if k in value and not _is_number(value[k])]
    if bad:
      return Outcome("failed", "invalid_return", f"in the returned dict {', '.join(bad)}; "
                     f"{expected_return(spec)}")
    objs = [float(value[k]) for k in spec.names]
    cons = [float(value[k]) for k in spec.constraints]
    if "cost" in value and math.isfinite(value["cost"]):
      cost = float(value["cost"])
    attrs = {k: v for k, v in value.items()
             if k not in spec.names and k not in spec.constraints and k != "cost"}
  elif _is_number(value):
    if n > 1 or spec.constraints:
      return Outcome("failed", "invalid_return",
                     f"returned one number, but the study has objectives {spec.names} and "
                     f"constraints {list(spec.constraints)}: return a dict with those keys")
    objs, cons = [float(value)], []
  else:
    return Outcome("failed", "invalid_return",
                   f"returned {type(value).__name__}; {expected_return(spec)}")
  out = Outcome("complete", objectives=objs, constraints=cons, cost=cost, attrs=attrs or None)
  bad = [v for v in objs + cons if not math.isfinite(v)]
  if bad:
    out.state = "failed"
    out.reason = "nan" if any(math.isnan(v) for v in bad) else "inf"
    out.error = f"non-finite value: objectives {objs}, constraints {cons}"
  elif diverged:
    out.state, out.reason = "failed", "diverged"
    out.error = "an intermediate value was non-finite or past the divergence threshold"
  elif (spec.divergence_threshold is not None and
        spec.signs[0] * objs[0] > spec.divergence_threshold):
    out.state, out.reason = "failed", "diverged"
    out.error = (f"{spec.names[0]} = {objs[0]:g} is past the divergence threshold "
                 f"{spec.divergence_threshold:g}")
  return out

