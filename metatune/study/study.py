"""`Study`: ask/tell and `optimize` over a structured space, stored in SQLite, resumable exactly.

The study is the imperative shell around a pure `metatune.tuners.Tuner`: it
asks the tuner for configurations, runs the user's objective on them through an
executor, judges each result (failures are data with a reason), tells the tuner,
and commits every finished trial before anything else happens. A study killed
at any point resumes from its file: trials that were running are marked stale
and their configurations asked again, and the tuner state is replayed from the
stored history (see `metatune.study.tuning`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from metatune.space import Space, io
from metatune.study import executors as ex
from metatune.study import optimize as optimize_loop
from metatune.study import lifecycle, pareto, provenance, worker
from metatune.study.errors import StudyError
from metatune.study.optimize import OptimizeResult
from metatune.study.results import StudySpec, normalize_objectives
from metatune.study.storage import TERMINAL, Storage, TrialLog, TrialRecord

STALE_AFTER_S = 300.0  # a driver on another host is presumed dead after this long without a beat


def _open(storage: str | os.PathLike | Storage, synchronous: str, must_exist: bool
          ) -> tuple[Storage, bool]:
  if isinstance(storage, Storage):
    return storage, False
  path = os.fspath(storage)
  if must_exist and not os.path.exists(path):
    raise StudyError("no such study file", path)
  return Storage(path, synchronous), True


class Study(worker.Channel):
  """A tuning study: trials of one space, one objective (or several), one tuner, one file.

  Create with `Study.create`, reopen with `Study.load`. Use ``optimize`` to run an
  objective in parallel, or ``ask``/``tell`` to drive trials yourself. One
  process drives a study at a time (the first ``ask`` or ``optimize`` claims it).

  Attributes:
    ledger: the trials and every change to them (`lifecycle.Ledger`); ``optimize``
      and ``ask``/``tell`` go through it.
    pruner: asked by ``trial.should_prune()`` (set by ``optimize``).

  Example:
    >>> study = Study.create("space.yaml", "study.db", "mlp", seed=0)  # doctest: +SKIP
    >>> study.optimize("train:objective", num_trials=50, num_workers=4)  # doctest: +SKIP
    >>> study.best_trial.config  # doctest: +SKIP
  """

  def __init__(self, storage: Storage, row: Mapping[str, Any], owns_storage: bool):
    self.storage = storage
    self.study_id: int = row["study_id"]
    self.name: str = row["name"]
    self.spec = StudySpec.from_dict(row["spec"])
    source = f"{storage.path}:{self.name}"
    self.space: Space = io.loads(row["space"], source)
    if self.space.signature != row["space_signature"]:
      raise StudyError(f"the stored space reads back with signature {self.space.signature}, "
                       f"not the stored {row['space_signature']}", source)
    self.session_id = uuid.uuid4().hex
    self.ledger = lifecycle.Ledger(storage, self.study_id, self.spec, self.space,
                                   self.session_id)
    self.pruner = None
    self._owns_storage = owns_storage
    self._claimed = False

  # ------------------------------------------------------------ construction
  @classmethod
  def create(cls, space: Space | str | os.PathLike,
             storage: str | os.PathLike | Storage = "metatune-study.db", name: str = "study", *,
             objectives: Any = None, constraints: Sequence[str] = (), tuner: str = "quasi_random",
             tuner_options: Mapping[str, Any] | None = None, seed: int = 0,
             weights: Sequence[float] | None = None, liar: bool | None = None,
             divergence_threshold: float | None = None, prior_hash: str | None = None,
             load_if_exists: bool = False, synchronous: str = "normal") -> "Study":
    """Creates a study in a file (several studies may share one file, by name).

    Args:
      space: a `Space` or a space file.
      storage: the SQLite file (created when missing) or an open `Storage`.
      name: the study's name in the file.
      objectives: ``None`` (one objective, minimized), a direction, or a mapping
        ``name -> "minimize" | "maximize"``.
      constraints: names of outcome constraints (feasible when ``<= 0``).
      tuner: ``quasi_random`` (default), ``random``, ``grid``, ``gp_bo``, or ``prior`` (a
        meta-trained policy: ``tuner_options={"path": PRIOR_DIR}``; its hash is recorded).
      tuner_options: keyword arguments of the tuner.
      seed: the study seed.
      weights, liar, divergence_threshold, prior_hash: see `StudySpec`.
      load_if_exists: reopen a study of that name if its space and settings match.
      synchronous: SQLite durability, ``normal`` or ``full`` (see `Storage`).

    Returns:
      The `Study`.

    Raises:
      StudyError: a bad setting, a study of that name exists (and
        ``load_if_exists`` is False or it differs), or an unreadable file.
      SpaceError: the space file is invalid.
    """
    if not isinstance(space, Space):
      space = io.load(space)
    from metatune.tuners import TUNERS  # pylint: disable=import-outside-toplevel
    if tuner not in TUNERS and tuner != "prior":
      raise StudyError(f"unknown tuner {tuner!r}; choose one of {sorted(TUNERS) + ['prior']}",
                       "tuner")
    if tuner == "prior" and prior_hash is None:
      prior_hash = _prior_hash(dict(tuner_options or {}))
    spec = StudySpec(normalize_objectives(objectives), tuple(constraints), tuner,
                     dict(tuner_options or {}), seed, None if weights is None else tuple(weights),
                     liar, divergence_threshold, prior_hash)
    if not isinstance(name, str) or not name:
      raise StudyError(f"a study name must be a non-empty string, got {name!r}", "name")
    store, owns = _open(storage, synchronous, must_exist=False)
    row = store.find_study(name)
    if row is not None:
      if not load_if_exists:
        raise StudyError(f"a study named {name!r} already exists (resume it with load, or "
                         "load_if_exists=True)", store.path)
      diff = []
      if row["space_signature"] != space.signature:
        diff.append(f"space signature {row['space_signature']} != {space.signature}")
      stored = StudySpec.from_dict(row["spec"]).to_dict()
      diff += [f"{k}: stored {stored[k]!r}, given {v!r}" for k, v in spec.to_dict().items()
               if stored[k] != v]
      if diff:
        raise StudyError(f"study {name!r} exists with other settings: " + "; ".join(diff),
                         store.path)
      return cls(store, row, owns)
    store.create_study(name, io.dumps(space), space.signature, spec.to_dict())
    return cls(store, store.find_study(name), owns)

  @classmethod
  def load(cls, storage: str | os.PathLike | Storage, name: str | None = None,
           synchronous: str = "normal") -> "Study":
    """Opens a stored study (to resume it, or read it).

    Args:
      storage: the study file or an open `Storage`.
      name: the study; may be left out when the file holds exactly one.
      synchronous: SQLite durability for new writes.

    Raises:
      StudyError: no such file or study (the message lists the studies in the file).
    """
    store, owns = _open(storage, synchronous, must_exist=True)
    names = store.study_names()
    if name is None:
      if len(names) != 1:
        raise StudyError(f"the file holds {len(names)} studies {names}; name one", store.path)
      name = names[0]
    row = store.find_study(name)
    if row is None:
      raise StudyError(f"no study named {name!r}; the file holds {names}", store.path)
    return cls(store, row, owns)

  def close(self):
    """Releases the study (another process may drive it) and closes the file if we opened it."""
    if self._claimed:
      self.storage.set_driver(self.study_id, None)
      self._claimed = False
    if self._owns_storage:
      self.storage.close()

  def __enter__(self) -> "Study":
    return self

  def __exit__(self, *exc):
    self.close()

  # ----------------------------------------------------------------- claiming
  def _session_alive(self, session: Mapping[str, Any]) -> bool:
    if session["host"] == socket.gethostname():
      return provenance.process_alive(session["pid"], session["pid_start"])
    return time.time() - session["heartbeat"] < STALE_AFTER_S

  def claim(self):
    """Becomes the study's driver (`ask` and `optimize` do this on first use).

    Trials a dead driver left running become stale (their configurations are
    asked again), the queue is loaded and the tuner state replayed from the file.

    Raises:
      StudyError: another live process drives the study.
    """
    if self._claimed:
      return
    store = self.storage
    pid = os.getpid()
    store.register_session(self.session_id, socket.gethostname(), pid,
                           provenance.process_start(pid))
    other = store.claim(self.study_id, self.session_id, self._session_alive)
    if other is not None:
      raise StudyError(f"study {self.name!r} is being driven by process {other['pid']} on "
                       f"{other['host']}; stop it or wait for it (one driver at a time)",
                       store.path)
    self._claimed = True
    self.ledger.resume()

  # ----------------------------------------------------------------- trials
  @property
  def trials(self) -> list[TrialRecord]:
    """Every trial, by number (copies: changing them changes nothing stored)."""
    trials = self.ledger.trials
    return [dataclasses.replace(trials[n]) for n in sorted(trials)]

  @property
  def reports(self) -> dict[int, dict[float, float]]:
    """Intermediate values: trial number -> {step: value} (natural direction)."""
    return {n: dict(r) for n, r in self.ledger.reports.items()}

  def log(self, number: int) -> TrialLog | None:
    """What trial ``number`` printed (stdout and stderr): the last part kept, and its size.

    Returns:
      A `storage.TrialLog` ``(text, num_bytes)``, or None when the trial printed
      nothing or ran through ask/tell (its output is the caller's).

    Example:
      >>> print(study.log(12).text)  # doctest: +SKIP
    """
    return self.storage.log(self.study_id, number)

  def counts(self) -> dict[str, int]:
    """Trials per state."""
    out = {s: 0 for s in ("complete", "failed", "pruned", "running", "stale")}
    for t in self.ledger.trials.values():
      out[t.state] += 1
    return out

  def _feasible_complete(self) -> list[TrialRecord]:
    done = [t for t in self.ledger.trials.values() if t.state == "complete"]
    if not done or not self.spec.constraints:
      return done
    ok = pareto.feasible(np.array([t.constraints for t in done], np.float64))
    return [t for t, good in zip(done, ok) if good]

  @property
  def best_trials(self) -> list[TrialRecord]:
    """The Pareto front of the complete, feasible trials (failed ones never count), by number."""
    cands = self._feasible_complete()
    if not cands:
      return []
    signed = np.array([[s * v for s, v in zip(self.spec.signs, t.objectives)] for t in cands])
    mask = pareto.pareto_mask(signed)
    return sorted((dataclasses.replace(t) for t, m in zip(cands, mask) if m),
                  key=lambda t: t.number)

  @property
  def best_trial(self) -> TrialRecord | None:
    """The best complete, feasible trial (lowest number among ties); one objective only.

    Raises:
      StudyError: the study has several objectives (use ``best_trials``).
    """
    if len(self.spec.objectives) > 1:
      raise StudyError(f"the study has {len(self.spec.objectives)} objectives; use best_trials "
                       "(the Pareto front)", "best_trial")
    front = self.best_trials
    return front[0] if front else None

  def best_so_far(self) -> list[float]:
    """The best minimized first objective after each finished trial, in the order told."""
    return self.ledger.best_so_far()

  def to_dataframe(self):
    """The trials as a pandas DataFrame indexed by number (columns: `export.to_records`).

    Example:
      >>> study.to_dataframe()[["state", "objective", "params.lr"]]  # doctest: +SKIP
    """
    from metatune.study import export  # pylint: disable=import-outside-toplevel
    return export.to_dataframe(self)

  # -------------------------------------------------------------- ask / tell
  def enqueue(self, config: Mapping[str, Any], where: str | None = None):
    """Queues a configuration to run before the tuner's next proposals.

    Raises:
      SpaceError: the configuration is not valid in the space (nothing is queued).
    """
    self.ledger.enqueue(config, where)

  def ask(self, config: Mapping[str, Any] | None = None) -> worker.Trial:
    """Starts a trial: the next queued configuration, ``config``, or the tuner's proposal.

    Args:
      config: a configuration to run instead of a proposal (active parameters).

    Returns:
      A `worker.Trial` whose ``report``/``should_prune`` talk to this study; finish
      it with `tell`.

    Raises:
      SpaceError: ``config`` is not valid in the space (nothing is stored).
      StudyError: another live process drives the study.
    """
    self.claim()
    (rec,) = self.ledger.start(1, config)
    return worker.Trial(rec.number, rec.config, rec.seed, self)

  def tell(self, trial: worker.Trial | int, value: Any = None, *, state: str = "complete",
           reason: str | None = None, error: str | None = None) -> TrialRecord:
    """Finishes a trial started with `ask`.

    Args:
      trial: the trial or its number.
      value: a number, or a dict with every objective and constraint (and optionally
        ``cost``); ignored unless ``state`` is ``complete``.
      state: ``complete``, ``failed`` or ``pruned``.
      reason, error: why it failed, and the message or traceback.

    Returns:
      The stored record (a NaN value becomes a failure with reason ``nan``).

    Raises:
      StudyError: the trial is not running in this session, or a bad ``state``/``value``.
    """
    number = trial.number if isinstance(trial, worker.Trial) else int(trial)
    running = self.ledger.running
    if number not in running:
      known = self.ledger.trials.get(number)
      raise StudyError(f"trial {number} is not running in this session" +
                       (f" (it is {known.state})" if known else " (no such trial)"), "tell")
    if state not in TERMINAL:
      raise StudyError(f"state must be one of {list(TERMINAL)}, got {state!r}", "tell")
    try:
      plain = worker.plain_value(value, "value") if state == "complete" else None
    except TypeError as e:
      raise StudyError(str(e), "tell") from None
    now = time.time()
    result = {"state": state, "value": plain, "reason": reason or
              (None if state != "failed" else "exception"), "error": error,
              "started": running[number].started, "finished": now}
    return self.ledger.finish(number, result, None)

  # ------------------------------------------------- the executor's handlers
  def report(self, number: int, step: float, value: float) -> None:
    self.on_report(number, step, value)

  def should_prune(self, number: int) -> bool:
    return self.on_should_prune(number)

  def on_report(self, number: int, step: float, value: float) -> None:
    self.ledger.report(number, step, value)

  def on_should_prune(self, number: int) -> bool:
    return self.ledger.should_prune(number, self.pruner)

  def on_result(self, result: dict[str, Any], env: Mapping[str, Any] | None) -> None:
    if result["number"] in self.ledger.running:
      self.ledger.finish(result["number"], result, env)

  # ---------------------------------------------------------------- optimize
  def optimize(self, objective: Callable | str, num_trials: int | None = None,
               num_workers: int = 1, executor: str | ex.Executor = "process",
               timeout: float | None = None, max_cost: float | None = None,
               trial_timeout: float | None = None, memory_limit_mb: float | None = None,
               pruner: Any = None, stop_on_plateau: bool = False, plateau_window: int = 20,
               progress: bool = True, ray_address: str | None = None,
               ray_init: Mapping[str, Any] | None = None,
               callbacks: Sequence[Callable[["Study", TrialRecord], None]] = (),
               log_limit_kb: float = 32.0) -> OptimizeResult:
    """Runs the objective on proposals until a budget is spent.

    Args:
      objective: ``objective(trial) -> float | dict`` (a callable, or
        ``"module:function"`` / ``"file.py:function"``).
      num_trials: the study ends when it holds this many finished trials (complete,
        failed or pruned), earlier runs included: the same call after a crash
        finishes the job.
      num_workers: most trials running at once.
      executor: ``process`` (default: local worker processes, each trial isolated),
        ``ray``, ``inline``, or an `executors.Executor`. ``inline`` runs trials one at
        a time in this process: the least overhead, no isolation (a crash of the
        objective is a crash of this process, and the trial is asked again when the
        study resumes), no per-trial time or memory limit.
      timeout: wall-clock budget of this call in seconds; then no new trial starts
        (running ones finish, within ``trial_timeout``).
      max_cost: budget on the study's total cost (each trial's ``cost`` metric, else
        its duration in seconds).
      trial_timeout: seconds after which a trial is killed and recorded as ``timeout``.
      memory_limit_mb: memory cap of each trial's process.
      pruner: an object with ``should_prune(number, step, reports) -> bool``
        (`metatune.study.pruners`), asked when a trial calls ``should_prune()``.
      stop_on_plateau: end the study when `plateau.plateau_signal` says more trials
        have stopped paying (window ``plateau_window``).
      progress: show a progress bar with the best value so far.
      ray_address, ray_init: the Ray cluster and ``ray.init`` arguments.
      callbacks: ``fn(study, record)`` after each finished trial is committed.
      log_limit_kb: what each trial prints is kept with it, the last this many
        KiB (`log`); nothing reaches this process's stdout. Ray tasks' output
        stays in Ray's logs.

    Returns:
      An `OptimizeResult`.

    Raises:
      StudyError: a bad setting or an objective the workers cannot load.
    """
    return optimize_loop.run(self, objective, num_trials, num_workers, executor, timeout,
                             max_cost, trial_timeout, memory_limit_mb, pruner, stop_on_plateau,
                             plateau_window, progress, ray_address, ray_init, callbacks,
                             log_limit_kb)


def _prior_hash(options: dict) -> str:
  """The policy hash on the card of the prior folder ``options["path"]``."""
  import pathlib  # pylint: disable=import-outside-toplevel
  path = options.get("path")
  card = pathlib.Path(str(path)) / "card.json"
  if path is None or not card.is_file():
    raise StudyError(f"tuner 'prior' needs path=PRIOR_DIR naming a folder written by "
                     f"'metatune meta-train' (no {card})", "tuner_options")
  return str(json.loads(card.read_text()).get("policy_hash"))
