"""The errors of studies, and the exceptions an objective raises to stop a trial on purpose."""

from __future__ import annotations


class StudyError(ValueError):
  """A bad study setting, storage file or objective, named with its place.

  Attributes:
    where: a short location such as ``study.db``, ``--objective`` or ``configs.jsonl:3``.
    problem: what is wrong.

  Example:
    >>> str(StudyError("no study named 'x'", "study.db"))
    "study.db: no study named 'x'"
  """

  def __init__(self, problem: str, where: str | None = None):
    self.where = where
    self.problem = problem
    super().__init__(f"{where}: {problem}" if where else problem)


class TrialPruned(Exception):
  """Raised by an objective after ``trial.should_prune()`` said yes: the trial stops as pruned.

  Example:
    >>> def objective(trial):  # doctest: +SKIP
    ...   for epoch in range(10):
    ...     trial.report(epoch, loss)
    ...     if trial.should_prune():
    ...       raise TrialPruned()
  """


class Diverged(Exception):
  """Raised by an objective whose training diverged: recorded as a failure, reason ``diverged``."""
