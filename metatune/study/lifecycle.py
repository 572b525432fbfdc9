"""A study's trials from ask to finish: records, seeds, provenance, and the tuner told in order.

`Ledger` is the one place where a trial changes state. It starts trials (a
queued configuration, a given one, or the tuner's proposal, each with its seed
and provenance), takes their intermediate reports, judges and commits each
result before anything else sees it, and, when a driver resumes a study, marks
the trials its dead predecessor left running as stale so that they are asked
again. `metatune.study.study.Study` (ask/tell) and `metatune.study.optimize`
(the parallel loop) both drive trials through it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Callable, Mapping

from metatune.space import Space
from metatune.study import provenance, tuning
from metatune.study.results import Outcome, StudySpec, judge
from metatune.study.storage import TERMINAL, Storage, TrialRecord, decode_point, encode_point

HEARTBEAT_S = 10.0  # how often a driver marks itself alive for drivers on other hosts
REPORT_COMMIT_S = 1.0  # intermediate reports are committed at most this long after arriving


class Ledger:
  """The trials of one study as its driver sees them, and every write that changes one.

  Until `resume` is called the ledger is a read-only view of the file (what
  `metatune study show` needs); after it, this process is the study's driver.

  Args:
    storage: the open study file.
    study_id: the study's id in the file.
    spec: the study's settings.
    space: the study's space.
    session_id: this driver's session (recorded on every trial it starts).

  Attributes:
    trials: trial number -> record (the live objects: copy before handing out).
    reports: trial number -> {step: value} (natural direction).
    running: the trials started by this driver and not finished yet, by number.
    tuner: the `tuning.TunerDriver` (None until `resume`).
    callbacks: ``fn(record)`` called after each finished trial is committed.

  Example:
    >>> ledger = Ledger(storage, study_id, spec, space, session_id)  # doctest: +SKIP
    >>> ledger.resume()  # doctest: +SKIP
    >>> (rec,) = ledger.start(1)  # doctest: +SKIP
    >>> ledger.finish(rec.number, {"state": "complete", "value": 0.5}, None)  # doctest: +SKIP
  """

  def __init__(self, storage: Storage, study_id: int, spec: StudySpec, space: Space,
               session_id: str):
    self.storage = storage
    self.study_id = study_id
    self.spec = spec
    self.space = space
    self.session_id = session_id
    self.trials: dict[int, TrialRecord] = {}
    self.reports: dict[int, dict[float, float]] = {}
    self.running: dict[int, TrialRecord] = {}
    self.tuner: tuning.TunerDriver | None = None
    self.callbacks: list[Callable[[TrialRecord], None]] = []
    self._queue: list = []
    self._diverged: set[int] = set()
    self._last_step: dict[int, float] = {}
    self._signed_reports: dict[int, dict[float, float]] = {}
    self._known_envs: set[str] = set()
    self._driver_env_id: str | None = None
    self._num_done = 0
    self._total_cost = 0.0
    self._best_curve: list[float] = []
    self._last_beat = 0.0
    self.reload()

  # ----------------------------------------------------------------- reading
  @property
  def resumed(self) -> bool:
    """Whether this process drives the study (`resume` was called)."""
    return self.tuner is not None

  def reload(self):
    """Reads the trials and reports from the file again."""
    self.trials = {t.number: t for t in self.storage.trials(self.study_id)}
    self.reports = self.storage.reports(self.study_id)

  def next_number(self) -> int:
    return max(self.trials, default=-1) + 1

  @property
  def num_finished(self) -> int:
    """Trials complete, failed or pruned (earlier runs included)."""
    if self.resumed:
      return self._num_done
    return sum(1 for t in self.trials.values() if t.state in TERMINAL)

  @property
  def total_cost(self) -> float:
    """The summed cost of finished trials (kept up to date while driving)."""
    if self.resumed:
      return self._total_cost
    return sum(t.cost or 0.0 for t in self.trials.values() if t.state in TERMINAL)

  def best_so_far(self) -> list[float]:
    """The best minimized first objective after each finished trial, in the order told."""
    if self.resumed:
      return list(self._best_curve)
    return self._compute_best_so_far()

  def _compute_best_so_far(self) -> list[float]:
    told = sorted((t for t in self.trials.values() if t.tell_seq is not None),
                  key=lambda t: t.tell_seq)
    out, best = [], math.inf
    for t in told:
      if t.state == "complete" and (not t.constraints or all(c <= 0 for c in t.constraints)):
        best = min(best, self.spec.signs[0] * t.objectives[0])
      out.append(best)
    return out

  # ---------------------------------------------------------------- resuming
  def resume(self):
    """Takes over the study: stale trials found, queue loaded, tuner state replayed.

    Trials stored as running belong to a driver that is gone (the caller holds
    the study's claim): they become stale and their configurations go to the
    front of the queue, so they are asked again as new trials. One exception: a
    trial that ran inline (in the driver) and was itself the retry of an inline
    trial whose driver also died is failed as ``crashed`` (the objective most
    likely takes the driver down), so that no resume crashes the same way again.
    """
    store = self.storage
    self.reload()  # the file may have changed since it was opened
    running = [n for n, t in self.trials.items() if t.state == "running"]
    crashed = [n for n in running if self._crashed_driver_twice(n)]
    running = [n for n in running if n not in crashed]
    if running:
      stale_before = self.next_number()
      store.mark_stale(self.study_id, running, stale_before)
      for n in running:
        self.trials[n].state, self.trials[n].stale_before = "stale", stale_before
    self._queue = store.queue(self.study_id)
    self._signed_reports = {
        n: {s: self.spec.signs[0] * v for s, v in r.items()} for n, r in self.reports.items()
        if n in self.trials and self.trials[n].state != "stale"}
    tuner = tuning.TunerDriver(self.space, self.spec.tuner, self.spec.tuner_options,
                               self.spec.seed, self.spec.liar)
    tuning.replay(tuner, [self.trials[n] for n in sorted(self.trials)])
    self.tuner = tuner
    self._driver_env_id = self.put_env(provenance.environment())
    store.commit()
    done = [t for t in self.trials.values() if t.state in TERMINAL]
    self._num_done = len(done)
    self._total_cost = sum(t.cost or 0.0 for t in done)
    self._best_curve = self._compute_best_so_far()
    for n in crashed:  # told to the tuner now, like any result
      rec = self.trials[n]
      self.running[n] = rec
      self.fail(n, "crashed", "the driver process died while this configuration ran inline, "
                f"twice (trials {rec.retry_of} and {n}): with executor='inline' a crash of the "
                "objective (a segfault, os._exit, the OOM killer) is a crash of the driver; "
                "use executor='process' to isolate it", time.time())  # no cost: unknown

  def _crashed_driver_twice(self, number: int) -> bool:
    """Whether a trial left running ran inline and repeats one that also died with its driver.

    Asking such a configuration a third time would most likely crash the driver again.
    """
    rec = self.trials[number]
    first = self.trials.get(rec.retry_of) if rec.retry_of is not None else None
    return (rec.executor == "inline" and first is not None and first.state == "stale" and
            first.executor == "inline")

  def put_env(self, env: Mapping[str, Any]) -> str:
    """Stores an environment (versions, commits, host) once; returns its id."""
    env_id = provenance.environment_id(dict(env))
    if env_id not in self._known_envs:
      self.storage.put_environment(env_id, dict(env))
      self._known_envs.add(env_id)
    return env_id

  # ---------------------------------------------------------------- starting
  def enqueue(self, config: Mapping[str, Any], where: str | None = None):
    """Queues a configuration (validated first) to run before the tuner's next proposals.

    Raises:
      SpaceError: the configuration is not valid in the space (nothing is queued).
    """
    cfg = self.space.validate(config, where or "enqueue(config)")
    values, active = self.space.encode(cfg)
    blob = encode_point(values, active)
    (seq,) = self.storage.enqueue(self.study_id, [(json.dumps(cfg), blob)])
    if self.resumed:
      self._queue.append((seq, "user", None, cfg, blob))

  def _new_trial(self, number: int, config: Mapping[str, Any] | None, executor: str | None
                 ) -> tuple[TrialRecord, int | None]:
    seq = None
    retry_of = None
    if config is not None:
      cfg = self.space.validate(config, "ask(config=...)")
      values, active = self.space.encode(cfg)
      source = "user"
    elif self._queue:
      seq, source, retry_of, cfg, blob = self._queue.pop(0)
      values, active = decode_point(blob)
    else:
      pending = [(r.values, r.active) for r in self.running.values()]
      values, active = self.tuner.ask(number, pending)
      cfg = self.space.decode(values, active)
      source = "tuner"
    rec = TrialRecord(number=number, state="running", source=source, config=cfg, values=values,
                      active=active, seed=tuning.trial_seed(self.spec.seed, number),
                      told_before=self.tuner.num_tells, session_id=self.session_id,
                      space_signature=self.space.signature, started=time.time(),
                      retry_of=retry_of, prior_hash=self.spec.prior_hash, executor=executor)
    return rec, seq

  def start(self, num: int, config: Mapping[str, Any] | None = None,
            executor: str | None = None) -> list[TrialRecord]:
    """Starts ``num`` trials (each sees the ones before as pending) and commits them at once.

    Args:
      num: how many.
      config: run this configuration (then ``num`` must be 1) instead of the next
        queued one or the tuner's proposal.
      executor: the name of what runs them (None: the user, through ask/tell).

    Returns:
      The running records (the live objects).

    Raises:
      SpaceError: ``config`` is not valid in the space (nothing is stored).
    """
    recs, seqs = [], []
    first = self.next_number()
    for i in range(num):
      rec, seq = self._new_trial(first + i, config, executor)
      self.trials[rec.number] = rec
      self.running[rec.number] = rec
      recs.append(rec)
      if seq is not None:
        seqs.append(seq)
    self.storage.insert_trials(self.study_id, recs, seqs)
    return recs

  # ------------------------------------------------------------- in progress
  def report(self, number: int, step: float, value: float) -> None:
    """Stores an intermediate value of a running trial (a late one is ignored)."""
    if number not in self.running:
      return  # a late message from a trial already stopped
    self.reports.setdefault(number, {})[step] = value
    signed = self.spec.signs[0] * value
    self._signed_reports.setdefault(number, {})[step] = signed
    self._last_step[number] = step
    self.storage.add_reports(self.study_id, number, [(step, value)])
    self.storage.commit_if_older(REPORT_COMMIT_S)
    t = self.spec.divergence_threshold
    if not math.isfinite(value) or (t is not None and signed > t):
      self._diverged.add(number)

  def should_prune(self, number: int, pruner: Any) -> bool:
    """Whether a running trial stops at its last report: diverged, or ``pruner`` says so."""
    if number in self._diverged:
      return True
    if pruner is None or number not in self._last_step:
      return False
    if getattr(pruner, "needs_points", False):  # e.g. CurveStop: configurations too
      points = {n: (self.trials[n].values, self.trials[n].active)
                for n in self._signed_reports if n in self.trials}
      return bool(pruner.should_prune(number, self._last_step[number], self._signed_reports,
                                      points=points))
    return bool(pruner.should_prune(number, self._last_step[number], self._signed_reports))

  def beat(self, commit: bool = True):
    """Marks this driver alive now and then (for drivers on other hosts to see)."""
    now = time.time()
    if now - self._last_beat > HEARTBEAT_S:
      self.storage.heartbeat(self.session_id)
      self._last_beat = now
    if commit:
      self.storage.commit_if_older(REPORT_COMMIT_S)

  # --------------------------------------------------------------- finishing
  def finish(self, number: int, result: Mapping[str, Any], env: Mapping[str, Any] | None
             ) -> TrialRecord:
    """Judges a running trial's result, tells the tuner, and commits it.

    Args:
      number: the running trial.
      result: ``state``, ``value``, ``reason``, ``error``, ``started``, ``finished``
        (see `worker.run_trial`), and optionally what it printed: ``log`` (the
        last part) and ``log_bytes`` (how much in all).
      env: the environment the trial ran in (None: this driver's).

    Returns:
      A copy of the stored record.
    """
    rec = self.running.pop(number)
    last = self._last_step.pop(number, None)
    last_value = None if last is None else self.reports[number][last]
    out: Outcome = judge(self.spec, result, number in self._diverged, last_value)
    self._diverged.discard(number)
    rec.state, rec.reason, rec.error = out.state, out.reason, out.error
    rec.objectives, rec.constraints, rec.attrs = out.objectives, out.constraints, out.attrs
    rec.finished = float(result.get("finished") or time.time())
    duration = rec.finished - float(result.get("started") or rec.started)
    rec.cost = out.cost if out.cost is not None else duration
    rec.env_id = self._driver_env_id if env is None else self.put_env(env)
    if out.state == "complete" and all(c <= 0 for c in out.constraints):
      rec.tuner_value = self.spec.scalar(out.objectives)
    elif out.state == "pruned" and last_value is not None and math.isfinite(last_value):
      rec.tuner_value = self.spec.signs[0] * last_value
    else:
      rec.tuner_value = None
    rec.tell_seq = self.tuner.num_tells
    report = self.tuner.tell(number, rec.values, rec.active, rec.tuner_value)
    if report:  # e.g. a prior's guard weight and reason after this result
      rec.attrs = {**(rec.attrs or {}), **report}
    self.beat(commit=False)
    if result.get("log_bytes"):
      self.storage.put_log(self.study_id, number, result.get("log") or "", result["log_bytes"])
    self.storage.finish_trial(self.study_id, rec)  # committed: it survives a crash from here
    self._num_done += 1
    self._total_cost += rec.cost
    best = self._best_curve[-1] if self._best_curve else math.inf
    if rec.state == "complete" and all(c <= 0 for c in rec.constraints):
      best = min(best, self.spec.signs[0] * rec.objectives[0])
    self._best_curve.append(best)
    for fn in self.callbacks:
      fn(rec)
    return dataclasses.replace(rec)

  def fail(self, number: int, reason: str, error: str, started: float | None = None,
           log: Mapping[str, Any] | None = None) -> TrialRecord:
    """Finishes a running trial as failed for ``reason`` (a timeout, a crash) now.

    Args:
      log: what it printed, ``{"log", "log_bytes"}`` (as an executor's ``kill`` gives).
    """
    now = time.time()
    return self.finish(number, {"state": "failed", "reason": reason, "error": error,
                                "started": started, "finished": now, **(log or {})}, None)

  def abandon_running(self):
    """Marks this driver's running trials stale now, so the next run asks them again."""
    if not self.running:
      return
    numbers = sorted(self.running)
    stale_before = self.next_number()
    self.storage.mark_stale(self.study_id, numbers, stale_before)
    for n in numbers:
      self.trials[n].state, self.trials[n].stale_before = "stale", stale_before
    self.running.clear()
    self._queue = self.storage.queue(self.study_id)
