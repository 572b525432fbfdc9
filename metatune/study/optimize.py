"""`Study.optimize`'s loop: keep the executor full, watch budgets and time limits, show progress.

The loop starts and finishes trials through the study's `lifecycle.Ledger`
(``study.ledger``) and hands them to an executor; it lives here to keep
`metatune.study.study` about one idea.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from metatune.study import executors as ex
from metatune.study import plateau, processes
from metatune.study.errors import StudyError

if TYPE_CHECKING:
  from metatune.study.lifecycle import Ledger
  from metatune.study.storage import TrialRecord
  from metatune.study.study import Study

STARTUP_LIMIT_S = 300.0  # a trial whose worker has not begun it by then is stopped too


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
  """What one `Study.optimize` call did.

  Attributes:
    stop_reason: ``trials``, ``time``, ``cost`` or ``plateau``.
    num_finished: trials finished by this call (complete, failed or pruned).
    num_complete, num_failed, num_pruned: of the whole study.
    elapsed: seconds.
    plateau: the plateau check's message (empty when not checked).
  """
  stop_reason: str
  num_finished: int
  num_complete: int
  num_failed: int
  num_pruned: int
  elapsed: float
  plateau: str = ""


def make_executor(executor: str | ex.Executor, objective: Callable | str, num_workers: int,
                  trial_timeout: float | None, memory_limit_mb: float | None,
                  ray_address: str | None, ray_init: Mapping[str, Any] | None,
                  log_limit_kb: float = processes.LOG_LIMIT_KB) -> ex.Executor:
  """An executor by name (``process``, ``ray``, ``inline``), checked against the settings.

  Raises:
    StudyError: an unknown name, or a setting the executor cannot honour.
  """
  if isinstance(executor, ex.Executor):
    runner = executor
  elif executor == "inline":
    if num_workers > 1 or memory_limit_mb:
      raise StudyError("the inline executor runs one trial at a time in this process: no "
                       "num_workers > 1 or memory limit; use executor='process'", "executor")
    runner = ex.InlineExecutor(objective, log_limit_kb)
  elif executor == "process":
    runner = processes.ProcessExecutor(objective, num_workers, memory_limit_mb, log_limit_kb)
  elif executor == "ray":
    runner = ex.RayExecutor(objective, num_workers, ray_address, memory_limit_mb, ray_init)
  else:
    raise StudyError(f"unknown executor {executor!r}; choose one of {list(ex.EXECUTORS)}",
                     "executor")
  if trial_timeout and not runner.supports_timeout:
    raise StudyError("per-trial timeouts need executor='process' or 'ray'", "trial_timeout")
  return runner


def _check(study: "Study", num_trials, num_workers, timeout, max_cost, trial_timeout,
           memory_limit_mb, stop_on_plateau):
  if num_trials is None and timeout is None and max_cost is None and not stop_on_plateau:
    raise StudyError("give num_trials, timeout, max_cost or stop_on_plateau, or the study "
                     "never ends", "optimize")
  for label, v in (("num_trials", num_trials), ("num_workers", num_workers)):
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
      raise StudyError(f"{label} must be a whole number >= 1, got {v!r}", "optimize")
  for label, v in (("timeout", timeout), ("max_cost", max_cost),
                   ("trial_timeout", trial_timeout), ("memory_limit_mb", memory_limit_mb)):
    if v is not None and not (isinstance(v, (int, float)) and v > 0):
      raise StudyError(f"{label} must be a number > 0, got {v!r}", "optimize")
  if stop_on_plateau and len(study.spec.objectives) > 1:
    raise StudyError("stop_on_plateau needs a single objective", "optimize")
  if study.ledger.running:
    raise StudyError(f"trials {sorted(study.ledger.running)} were asked with ask() and are not "
                     "told yet; tell them first", "optimize")


def run(study: "Study", objective: Callable | str, num_trials: int | None, num_workers: int,
        executor: str | ex.Executor, timeout: float | None, max_cost: float | None,
        trial_timeout: float | None, memory_limit_mb: float | None, pruner: Any,
        stop_on_plateau: bool, plateau_window: int, progress: bool, ray_address: str | None,
        ray_init: Mapping[str, Any] | None,
        callbacks: Sequence[Callable[["Study", "TrialRecord"], None]],
        log_limit_kb: float = processes.LOG_LIMIT_KB) -> OptimizeResult:
  """The body of `Study.optimize` (see there for the arguments)."""
  _check(study, num_trials, num_workers, timeout, max_cost, trial_timeout, memory_limit_mb,
         stop_on_plateau)
  if not (isinstance(log_limit_kb, (int, float)) and log_limit_kb >= 0):
    raise StudyError(f"log_limit_kb must be a number >= 0, got {log_limit_kb!r}", "optimize")
  runner = make_executor(executor, objective, num_workers, trial_timeout, memory_limit_mb,
                         ray_address, ray_init, log_limit_kb)
  study.pruner = pruner
  ledger = study.ledger
  t0 = time.time()
  submitted: dict[int, float] = {}
  stop = None
  plateau_msg = ""
  bar = None
  finished_before = 0
  try:
    runner.start(study)  # workers start while the tuner compiles and replays
    study.claim()
    finished_before = ledger.num_finished
    bar = Progress(study, num_trials, progress)
    ledger.callbacks = [bar.callback] + [functools.partial(fn, study) for fn in callbacks]
    while True:
      if stop is None:
        stop, plateau_msg = _stop_reason(ledger, t0, timeout, max_cost, stop_on_plateau,
                                         plateau_window)
      room = runner.free(len(ledger.running))  # a trial is asked when something can run it
      if num_trials is not None:
        room = min(room, num_trials - ledger.num_finished - len(ledger.running))
      if stop is None and room > 0:
        for rec in ledger.start(room, executor=runner.name):
          runner.submit({"number": rec.number, "config": rec.config, "seed": rec.seed})
          submitted[rec.number] = time.time()
      if not ledger.running and (stop is not None or (num_trials is not None and
                                                      ledger.num_finished >= num_trials)):
        break
      runner.poll(0.05)
      ledger.beat()
      if trial_timeout:
        _kill_overdue(ledger, runner, submitted, trial_timeout)
      submitted = {n: t for n, t in submitted.items() if n in ledger.running}
  except BaseException:
    ledger.abandon_running()  # asked again by the next run
    raise
  finally:
    runner.close()
    if bar is not None:
      bar.close()
    ledger.callbacks = []
  c = study.counts()
  return OptimizeResult(stop or "trials", ledger.num_finished - finished_before,
                        c["complete"], c["failed"], c["pruned"], time.time() - t0, plateau_msg)


def _kill_overdue(ledger: "Ledger", runner: ex.Executor, submitted: Mapping[int, float],
                  limit: float):
  """Kills trials past ``limit`` seconds since their objective began (or never began)."""
  now = time.time()
  for n in [n for n in ledger.running if n in submitted]:
    began = runner.started.get(n)
    if began is not None and now - began > limit:
      why = f"ran past the per-trial limit of {limit:g} s and was killed"
    elif began is None and now - submitted[n] > limit + STARTUP_LIMIT_S:
      why = f"its worker did not begin it within {limit + STARTUP_LIMIT_S:g} s"
    else:
      continue
    log = runner.kill(n)
    ledger.fail(n, "timeout", why, began or submitted[n], log)


def _stop_reason(ledger: "Ledger", t0: float, timeout, max_cost, stop_on_plateau, window
                 ) -> tuple[str | None, str]:
  if timeout is not None and time.time() - t0 >= timeout:
    return "time", ""
  if max_cost is not None and ledger.total_cost >= max_cost:
    return "cost", ""
  if stop_on_plateau:
    report = plateau.plateau_signal(ledger.best_so_far(), window=window)
    if report.plateaued:
      return "plateau", report.message
  return None, ""


class Progress:
  """A tqdm bar of finished trials with the best first objective so far (natural direction)."""

  def __init__(self, study: "Study", total: int | None, enabled: bool):
    self.bar = None
    self.names, self.signs = study.spec.names, study.spec.signs
    curve = study.ledger.best_so_far()
    self.best = curve[-1] if curve else math.inf
    if enabled:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      self.bar = tqdm(total=total, initial=study.ledger.num_finished, desc=study.name,
                      unit="trial", file=sys.stderr, dynamic_ncols=True)
      self._show()

  def _show(self):
    if math.isfinite(self.best):
      self.bar.set_postfix_str(f"best {self.names[0]}={self.signs[0] * self.best:.5g}",
                               refresh=False)

  def callback(self, rec: "TrialRecord"):
    if self.bar is None:
      return
    if rec.state == "complete" and all(c <= 0 for c in rec.constraints):
      self.best = min(self.best, self.signs[0] * rec.objectives[0])
    self.bar.update(1)
    self._show()

  def close(self):
    if self.bar is not None:
      self.bar.close()
