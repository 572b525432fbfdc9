"""The one error type of search spaces, which always says where the problem is."""

from __future__ import annotations


class SpaceError(ValueError):
  """A malformed space or an invalid configuration.

  The message names the place (file and line when known, the parameter or the
  constraint) and the problem, so that a user can fix it without a traceback.

  Attributes:
    where: a short location such as ``space.yaml:12`` or ``parameter 'lr'``.
    problem: what is wrong.
  """

  def __init__(self, problem: str, where: str | None = None):
    self.where = where
    self.problem = problem
    super().__init__(f"{where}: {problem}" if where else problem)
