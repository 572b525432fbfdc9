"""`MetatuneSampler`: Optuna studies propose through a metatune tuner, their objectives unchanged.

At the start of every trial the sampler tells its tuner the trials that have
finished since the last one (incrementally; each finished trial is told
exactly once, in trial-number order), asks it for one whole configuration of
the metatune space, and answers the objective's ``trial.suggest_*`` calls for
the space's parameters from that configuration. The configuration is kept in
the trial's system attributes (``metatune:config``), so it survives in the
study's storage.

Parameters the objective asks for that the space does not have (or that the
configuration leaves inactive, or whose Optuna distribution does not contain
the proposed value) are sampled by an independent ``RandomSampler``, with one
warning per parameter name.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Sequence

try:
  import optuna
  from optuna.distributions import BaseDistribution
  from optuna.samplers import BaseSampler, RandomSampler
  from optuna.trial import FrozenTrial, TrialState
except ImportError as e:  # pragma: no cover - exercised only without optuna
  raise ImportError("metatune.study.optuna_bridge needs optuna (pip install 'optuna>=4'); "
                    "the rest of metatune.study works without it") from e

import jax
import numpy as np

from metatune.space import Space, SpaceError, io
from metatune.tuners.base import Evaluation, Points, Tuner
from metatune.tuners.search import TUNERS

CONFIG_ATTR = "metatune:config"
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class MetatuneSampler(BaseSampler):
  """An ``optuna.samplers.BaseSampler`` whose proposals come from a metatune tuner.

  Completed trials are told with their value (negated for a maximized study);
  failed and pruned trials are told as failures (recorded, never the
  incumbent). Single-objective studies only.

  The tuner's state lives in this object: one sampler per study and process.
  Several processes sharing a storage would each run their own tuner.

  Args:
    space: a `metatune.space.Space`, or the path of a space file (metatune YAML
      or ConfigSpace JSON).
    tuner: a name from ``metatune.tuners.TUNERS`` (built with ``batch_size=1``)
      or a `metatune.tuners.Tuner` over the same space; a tuner with a batch
      size above 1 hands out its batch one trial at a time.
    seed: seeds the tuner's key and the fallback random sampler.

  Raises:
    ValueError: an unknown tuner name, a tuner over another space, or a space
      that is not a `Space` or a file path.
    SpaceError: a space file that does not load (naming the file and line).

  Example:
    >>> sampler = MetatuneSampler("configs/spaces/nn_tuning.yaml")  # doctest: +SKIP
    >>> study = optuna.create_study(sampler=sampler)                  # doctest: +SKIP
    >>> study.optimize(objective, n_trials=30)                        # doctest: +SKIP
  """

  def __init__(self, space: Space | str | os.PathLike, tuner: str | Tuner = "quasi_random",
               seed: int = 0):
    if isinstance(space, (str, os.PathLike)):
      space = io.load(space)
    if not isinstance(space, Space):
      raise ValueError(f"space must be a metatune Space or a space file path, got "
                       f"{type(space).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(tuner, str):
      if tuner not in TUNERS:
        raise ValueError(f"tuner: unknown tuner {tuner!r}; known: {', '.join(sorted(TUNERS))}")
      tuner = TUNERS[tuner](space, batch_size=1)
    elif not isinstance(tuner, Tuner):
      raise ValueError(f"tuner must be a tuner name ({', '.join(sorted(TUNERS))}) or a metatune "
                       f"Tuner, got {type(tuner).__name__}")
    elif tuner.space.signature != space.signature:
      raise ValueError(f"tuner: its space {tuner.space.name!r} is not the sampler's space "
                       f"{space.name!r} (signatures {tuner.space.signature} and "
                       f"{space.signature})")
    self.space = space
    self.tuner = tuner
    self._key = jax.random.key(int(seed))
    self._ask = jax.jit(tuner.ask)
    self._tell = jax.jit(tuner.tell)
    self._state = None
    self._seen: set[int] = set()  # finished trials already processed (told or skipped)
    self._num_told = 0
    self._queue: list[tuple[np.ndarray, np.ndarray]] = []
    self._configs: dict[int, dict[str, Any]] = {}
    self._random = RandomSampler(seed=int(seed))
    self._warned: set[tuple[str, str]] = set()
    self._lock = threading.Lock()

  # ------------------------------------------------------------ bookkeeping
  @property
  def num_told(self) -> int:
    """Finished trials told to the tuner so far (those outside the space are skipped)."""
    return self._num_told

  def _split(self, num: int = 1) -> list[jax.Array]:
    keys = jax.random.split(self._key, num + 1)
    self._key = keys[0]
    return list(keys[1:])

  def _warn_once(self, kind: str, name: str, text: str) -> None:
    if (kind, name) not in self._warned:
      self._warned.add((kind, name))
      warnings.warn(text, UserWarning, stacklevel=3)

  def _point(self, trial: FrozenTrial) -> tuple[np.ndarray, np.ndarray] | None:
    """The encoded configuration a finished trial evaluated, or None when it is not one."""
    proposal = trial.system_attrs.get(CONFIG_ATTR)
    asked = {k: v for k, v in trial.params.items() if k in self.space.index}
    # What the objective asked for wins; the proposal fills parameters it never asked for.
    # When an asked value is not valid in the space (a fallback), the trial evaluated a
    # point outside the space and the tuner does not learn from it.
    config = dict(asked) if proposal is None else {**proposal, **asked}
    try:
      return self.space.encode(config)
    except SpaceError as e:
      self._warn_once("untold", "",
                      f"trial {trial.number}'s parameters are not a configuration of the "
                      f"metatune space {self.space.name!r} ({e}); the tuner does not learn "
                      f"from it, nor from later such trials (warned once)")
      return None

  def _tell_finished(self, study: optuna.Study) -> None:
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    finished = study.get_trials(deepcopy=False, states=_FINISHED)
    for trial in sorted(finished, key=lambda t: t.number):
      if trial.number in self._seen:
        continue
      self._seen.add(trial.number)
      point = self._point(trial)
      if point is None:
        continue
      if trial.state == TrialState.COMPLETE and trial.value is not None:
        value = -float(trial.value) if maximize else float(trial.value)
      else:
        value = float("nan")  # failed or pruned: recorded as a failure
      (tell_key,) = self._split()
      points = Points(np.asarray(point[0])[None], np.asarray(point[1])[None])
      self._state, _ = self._tell(tell_key, self._state, points,
                                  Evaluation.of(np.asarray([value], np.float32)))
      self._num_told += 1

  def _next_config(self) -> dict[str, Any]:
    if not self._queue:
      (ask_key,) = self._split()
      points, self._state = self._ask(ask_key, self._state)
      values, active = jax.device_get((points.values, points.active))
      self._queue = [(np.asarray(values[i]), np.asarray(active[i]))
                     for i in range(values.shape[0])]
    values, active = self._queue.pop(0)
    return self.space.decode(values, active)

  # ------------------------------------------------------- the Optuna hooks
  def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
    """Tells the tuner the newly finished trials and asks it for this trial's configuration."""
    if len(study.directions) != 1:
      raise ValueError("MetatuneSampler supports single-objective studies only; this study has "
                       f"{len(study.directions)} objectives")
    with self._lock:
      if self._state is None:
        (init_key,) = self._split()
        self._state = self.tuner.init(init_key)
      self._tell_finished(study)
      config = self._next_config()
      self._configs[trial.number] = config
    # pylint: disable-next=protected-access
    study._storage.set_trial_system_attr(trial._trial_id, CONFIG_ATTR, config)

  def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                  ) -> dict[str, BaseDistribution]:
    del study, trial
    return {}

  def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                      search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
    del study, trial, search_space
    return {}

  def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                         param_distribution: BaseDistribution) -> Any:
    """The configuration's value of ``param_name``, or a random one (warned) if none fits."""
    config = self._configs.get(trial.number, trial.system_attrs.get(CONFIG_ATTR))
    reason = None
    if config is None:
      reason = "the trial has no metatune configuration (it was not started by this sampler)"
    elif param_name not in self.space.index:
      reason = f"it is not a parameter of the metatune space {self.space.name!r}"
    elif param_name not in config:
      p = self.space.params[self.space.index[param_name]]
      reason = (f"it is inactive in the metatune configuration (its condition "
                f"{p.condition_text!r} does not hold), yet the objective asked for it")
    else:
      value = config[param_name]
      try:
        internal = param_distribution.to_internal_repr(value)
        ok = param_distribution._contains(internal)  # pylint: disable=protected-access
      except (ValueError, TypeError):
        ok = False
      if ok:
        return value
      reason = (f"the metatune value {value!r} is not in the objective's distribution "
                f"{param_distribution}")
    self._warn_once("fallback", param_name,
                    f"MetatuneSampler: parameter {param_name!r} is sampled by an independent "
                    f"RandomSampler because {reason}")
    return self._random.sample_independent(study, trial, param_name, param_distribution)

  def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                  values: Sequence[float] | None) -> None:
    del study, state, values
    with self._lock:
      self._configs.pop(trial.number, None)

  def reseed_rng(self) -> None:
    self._random.reseed_rng()
