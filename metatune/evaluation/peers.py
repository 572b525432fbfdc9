"""Optuna's samplers as peers in the harness, driven through Optuna's ask/tell.

The metatune space becomes Optuna's define-by-run space: parameters are
suggested in dependency order and a parameter is asked for only when its
condition holds given the values already suggested, so Optuna sees the same
tree metatune does. A suggestion that breaks a constraint is a failed trial
(Optuna's samplers have no notion of metatune constraints). On a pool, the
suggestion is moved to the nearest record not yet taken, and Optuna is told the
record it got (the asked trial is closed as failed, the record added as a
completed trial), so its model learns from what was evaluated.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from metatune.space import Space, SpaceError
from metatune.space import model
from metatune.space import reference as ref

SAMPLERS = {"optuna_tpe": "TPESampler", "optuna_gp": "GPSampler", "optuna_random": "RandomSampler"}


class PeerUnavailable(RuntimeError):
  """An optional peer cannot run here (a missing package); the message says what to install."""


def _optuna():
  try:
    import optuna  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PeerUnavailable("Optuna's samplers need optuna (pip install 'metatune[peers]' or "
                          "pip install optuna)") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def make_sampler(kind: str, seed: int, options: dict[str, Any]):
  """An Optuna sampler of ``kind`` (a key of `SAMPLERS`) with ``options`` as its arguments."""
  optuna = _optuna()
  if kind == "optuna_gp":
    try:
      import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      raise PeerUnavailable("Optuna's GPSampler needs torch (pip install torch)") from None
  cls = getattr(optuna.samplers, SAMPLERS[kind])
  try:
    return cls(seed=seed, **options)
  except TypeError as e:
    raise ValueError(f"bad options {options} for {SAMPLERS[kind]}: {e}") from None


class DefineByRun:
  """The Optuna distributions of a metatune space, suggested in dependency order."""

  def __init__(self, space: Space):
    optuna = _optuna()
    d = optuna.distributions
    self.space = space
    self.dists = {}
    for p in space.params:
      if p.kind == "float":
        self.dists[p.name] = d.FloatDistribution(p.low, p.high, log=p.log)
      elif p.kind == "int":
        self.dists[p.name] = d.IntDistribution(p.low, p.high, log=p.log)
      elif p.kind == "ordinal":  # ordered: an index Optuna can model as a number
        self.dists[p.name] = d.IntDistribution(0, p.num_choices - 1)
      else:
        self.dists[p.name] = d.CategoricalDistribution(list(p.choices))

  def suggest(self, trial) -> dict[str, Any]:
    """A configuration of the active parameters (values of the metatune space)."""
    cfg: dict[str, Any] = {}
    comp: dict[str, float] = {}
    lookup = ref.lookup_from(comp)
    for p, cond in zip(self.space.params, self.space.conditions):
      if cond is not None and not ref.evaluate(cond, lookup, False):
        continue
      dist = self.dists[p.name]
      raw = trial._suggest(p.name, dist)  # pylint: disable=protected-access
      value = p.choices[int(raw)] if p.kind == "ordinal" else raw
      if p.kind == "int":
        value = int(value)
      cfg[p.name] = value
      comp[p.name] = self.space._comparable_py(p, value)  # pylint: disable=protected-access
    return cfg

  def params_of(self, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna ``(params, distributions)`` of a configuration."""
    params, dists = {}, {}
    for name, v in cfg.items():
      p = self.space.params[self.space.index[name]]
      params[name] = p.choices.index(v) if p.kind == "ordinal" else v
      dists[name] = self.dists[name]
    return params, dists


def run_peer(kind: str, space: Space, seed: int, options: dict[str, Any], budget: int,
             evaluate: Callable[[np.ndarray, np.ndarray], float],
             snap: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
             ) -> np.ndarray:
  """One study of an Optuna sampler; returns the minimized value of each trial (NaN: failed).

  Args:
    kind: a key of `SAMPLERS`.
    space: the space.
    seed: the sampler's seed.
    options: the sampler's arguments.
    budget: trials.
    evaluate: ``(values f32[D], active bool[D]) -> value`` (NaN when the evaluation failed).
    snap: on a pool, ``(values, active) -> (values, active)`` of the record the
      trial takes (it is then not available to later trials).
  """
  optuna = _optuna()
  from optuna.trial import TrialState, create_trial  # pylint: disable=import-outside-toplevel
  study = optuna.create_study(sampler=make_sampler(kind, seed, options), direction="minimize")
  space_dbr = DefineByRun(space)
  out = np.full(budget, np.nan)
  for i in range(budget):
    trial = study.ask()
    cfg = space_dbr.suggest(trial)
    try:
      u, a = space.encode(cfg)
    except SpaceError:  # a constraint Optuna cannot see
      if snap is None:  # live: a failed trial
        study.tell(trial, state=TrialState.FAIL)
        continue
      # On a pool every record is valid: take the one nearest to what Optuna asked.
      u, a = _loose_encoding(space, cfg)
    if snap is not None:
      u, a = snap(u, a)
      value = float(evaluate(u, a))
      study.tell(trial, state=TrialState.FAIL)  # closed; the record it got is added instead
      params, dists = space_dbr.params_of(space.decode(u, a))
      if np.isfinite(value):
        study.add_trial(create_trial(params=params, distributions=dists, value=value))
      else:
        study.add_trial(create_trial(params=params, distributions=dists,
                                     state=TrialState.FAIL))
      out[i] = value
      continue
    value = float(evaluate(u, a))
    out[i] = value
    if np.isfinite(value):
      study.tell(trial, value)
    else:
      study.tell(trial, state=TrialState.FAIL)
  return out


def _loose_encoding(space: Space, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """The unit encoding of a configuration that may break a constraint (for the nearest record)."""
  u = np.zeros(space.num_params, np.float32)
  a = np.zeros(space.num_params, bool)
  for name, v in cfg.items():
    i = space.index[name]
    p = space.params[i]
    lo, hi = space.t_low[i], space.t_high[i]
    if p.kind == "float":
      u[i] = ((np.log(v) if p.log else v) - lo) / (hi - lo)
    elif p.kind == "int":
      u[i] = ((np.log(v) if p.log else v + 0.5) - lo) / (hi - lo)
    else:
      u[i] = space.mids[i, model.choice_index(p, v)]
    a[i] = True
  return u, a
