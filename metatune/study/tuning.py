"""The tuner inside a study: ask and tell with keys from the study seed, replayable exactly.

A study's tuner state is a function of what is stored. Each trial records how
many results the tuner had been told when it was asked (``told_before``), and
each result its place in the order results were told (``tell_seq``). Replaying
asks in trial order and tells in ``tell_seq`` order, each with the key derived
from the study seed and the trial number, rebuilds the state the driver had,
bit for bit, so a resumed study continues exactly where the stored history
says it was.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space
from metatune.study.errors import StudyError
from metatune.study.storage import TrialRecord
from metatune.tuners.base import Evaluation, Points, history_add
from metatune.tuners.search import TUNERS

# Tuners whose ask reads the history (pending trials get a lie), and tuners
# whose ask returns the state it was given (replay can skip their asks).
MODEL_BASED = frozenset({"gp_bo"})
STATELESS_ASK = frozenset({"random", "gp_bo"})

_INIT, _ASK, _TELL = 0, 1, 2


def trial_seed(seed: int, number: int) -> int:
  """The seed handed to trial ``number``'s objective: a hash of the study seed and the number.

  Example:
    >>> trial_seed(0, 1) != trial_seed(0, 2) != trial_seed(1, 1)
    True
  """
  return int(np.random.SeedSequence([seed % 2**32, number]).generate_state(1)[0] >> 1)


def _key(seed, stream: int, number):
  # A fresh root key each time (used once): under jit, from traced integers.
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), number)


_COMPILED: dict[tuple[str, str, str], tuple] = {}


def _compiled(space: Space, name: str, options: dict[str, Any]) -> tuple:
  """The jitted init/ask/tell/lie of a tuner, shared by drivers of structurally equal spaces.

  Keyed by the space signature: a study reopened in the same process (a resume,
  a second study on the same space) reuses the compiled functions.
  """
  cache_key = (space.signature, name, repr(sorted(options.items())))
  if cache_key in _COMPILED:
    return _COMPILED[cache_key]
  factory = TUNERS.get(name)
  if name == "prior":  # a meta-trained policy: --tuner prior --tuner-option path=PRIOR_DIR
    from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
    factory = prior_tuner
  if factory is None:
    raise StudyError(f"unknown tuner {name!r}; choose one of {sorted(TUNERS) + ['prior']}",
                     "tuner")
  try:
    tuner = factory(space, batch_size=1, **options)
  except (TypeError, ValueError, FileNotFoundError) as e:
    raise StudyError(f"bad options {options} for tuner {name!r}: {e}", "tuner") from None
  init = jax.jit(lambda seed: tuner.init(_key(seed, _INIT, 0)))
  ask = jax.jit(lambda seed, number, state: tuner.ask(_key(seed, _ASK, number), state))
  tell = jax.jit(lambda seed, number, state, values, active, value, failed: tuner.tell(
      _key(seed, _TELL, number), state, Points(values[None], active[None]),
      Evaluation.of(value[None], failed[None])))
  lie = jax.jit(lambda history, values, active, value: history_add(
      history, Points(values[None], active[None]), Evaluation.of(value[None]))[0])
  _COMPILED[cache_key] = (init, ask, tell, lie)
  return _COMPILED[cache_key]


class TunerDriver:
  """A `metatune.tuners.Tuner` (one proposal per ask) driven by a study.

  Args:
    space: the space.
    name: a key of `metatune.tuners.TUNERS`.
    options: keyword arguments of the tuner's constructor (``batch_size`` is 1).
    seed: the study seed.
    liar: give pending trials a lie (the incumbent's value, the constant liar)
      before asking; default: for model-based tuners only. Other tuners make a
      batch diverse by themselves (fresh keys, the quasi-random sequence).

  Raises:
    StudyError: unknown tuner or options.

  Example:
    >>> drv = TunerDriver(space, "quasi_random", {}, seed=0)  # doctest: +SKIP
    >>> values, active = drv.ask(0, [])  # doctest: +SKIP
  """

  def __init__(self, space: Space, name: str, options: Mapping[str, Any], seed: int,
               liar: bool | None = None):
    self.space = space
    self.name = name
    self.seed = int(seed) % 2**32
    self.liar = (name in MODEL_BASED) if liar is None else bool(liar)
    self._init, self._ask, self._tell, self._lie = _compiled(space, name, dict(options))
    self.state = self._init(np.uint32(self.seed))
    self.num_tells = 0

  def _args(self, number: int):
    return np.uint32(self.seed), np.int32(number)

  def ask(self, number: int, pending: Sequence[tuple[np.ndarray, np.ndarray]]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Proposes trial ``number``'s point, given the points still running.

    Returns:
      ``(values f32[D], active bool[D])``.
    """
    state = self.state
    lied = False
    if self.liar and pending and hasattr(state, "history"):
      best = float(state.history.best_objective)
      if np.isfinite(best):  # before any success there is nothing to lie with
        history = state.history
        for values, active in pending:
          history = self._lie(history, values, active, np.float32(best))
        state = state.replace(history=history)
        lied = True
    points, new_state = self._ask(*self._args(number), state)
    if lied:  # the lies were for this proposal only
      new_state = new_state.replace(history=self.state.history)
    self.state = new_state
    return np.asarray(points.values)[0], np.asarray(points.active)[0]

  def advance(self, number: int, pending: Sequence[tuple[np.ndarray, np.ndarray]]):
    """Replays trial ``number``'s ask for its effect on the state only."""
    if self.name not in STATELESS_ASK:
      self.ask(number, pending)

  def tell(self, number: int, values: np.ndarray, active: np.ndarray, value: float | None
           ) -> dict[str, Any]:
    """Tells trial ``number``'s minimized value (None: a failure) and counts the tell.

    Returns:
      What the tuner reports about itself after this result, for the trial's record:
      a prior's negative-transfer guard gives ``{"tuner.guard_weight": float,
      "tuner.guard_reason": str}`` and, with user beliefs, ``"tuner.belief_weight": float``;
      other tuners give ``{}``.
    """
    failed = value is None or not np.isfinite(value)
    v = np.float32(np.nan if value is None else value)
    self.state, metrics = self._tell(*self._args(number), self.state,
                                     np.asarray(values, np.float32), np.asarray(active, bool), v,
                                     np.bool_(failed))
    self.num_tells += 1
    return tuner_report(metrics)


def tuner_report(metrics: Mapping[str, Any]) -> dict[str, Any]:
  """The part of a tuner's ``tell`` metrics that a trial records (see `TunerDriver.tell`)."""
  out: dict[str, Any] = {}
  if "guard_weight" in metrics:
    out["tuner.guard_weight"] = float(np.asarray(metrics["guard_weight"]))
  if "belief_weight" in metrics:
    out["tuner.belief_weight"] = float(np.asarray(metrics["belief_weight"]))
  if "guard_reason" in metrics:
    from metatune.meta.hybrid import REASONS  # pylint: disable=import-outside-toplevel
    code = int(np.asarray(metrics["guard_reason"]))
    out["tuner.guard_reason"] = REASONS[code] if 0 <= code < len(REASONS) else str(code)
  return out


def replay(driver: TunerDriver, trials: Sequence[TrialRecord], check: bool = False) -> list[int]:
  """Rebuilds ``driver``'s state from stored trials (asks by number, tells by ``tell_seq``).

  Args:
    driver: a fresh driver.
    trials: every trial of the study, by number.
    check: also replay the asks of tuners whose ask leaves the state unchanged, and
      compare every replayed proposal with the stored one.

  Returns:
    With ``check``, the numbers of tuner trials whose replayed proposal differs from
    the stored one (empty: the replay is exact); else an empty list.

  Raises:
    StudyError: the stored order is inconsistent (a damaged file).
  """
  tells = sorted((t for t in trials if t.tell_seq is not None), key=lambda t: t.tell_seq)
  if [t.tell_seq for t in tells] != list(range(len(tells))):
    raise StudyError("the stored order of results has gaps; the file was changed outside "
                     "metatune", "storage")
  by_number = {t.number: t for t in trials}
  pos = 0
  mismatched = []
  for t in trials:
    while pos < len(tells) and tells[pos].tell_seq < t.told_before:
      r = tells[pos]
      if r.number >= t.number:
        raise StudyError(f"trial {r.number} was told before trial {t.number} was asked, but "
                         "has a larger number", "storage")
      driver.tell(r.number, r.values, r.active, r.tuner_value)
      pos += 1
    if t.source != "tuner":
      continue
    pending = [] if not driver.liar else [
        (p.values, p.active) for m, p in by_number.items() if m < t.number and
        (p.tell_seq is None or p.tell_seq >= t.told_before) and
        (p.stale_before is None or p.stale_before > t.number)]
    if check:
      values, active = driver.ask(t.number, pending)
      if not (np.array_equal(values, t.values) and np.array_equal(active, t.active)):
        mismatched.append(t.number)
    else:
      driver.advance(t.number, pending)
  for r in tells[pos:]:
    driver.tell(r.number, r.values, r.active, r.tuner_value)
  return mismatched


@functools.lru_cache(maxsize=None)
def _leaves_equal_fn():
  return jax.jit(lambda a, b: jnp.all(jnp.stack(
      [jnp.all((x == y) | (jnp.isnan(x) & jnp.isnan(y))) if jnp.issubdtype(x.dtype, jnp.floating)
       else jnp.all(x == y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))])))


def same_state(a: Any, b: Any) -> bool:
  """Whether two tuner states are equal leaf by leaf (NaN equals NaN)."""
  a = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                   else x, a)
  b = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                   else x, b)
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return bool(_leaves_equal_fn()(a, b))
