"""The error of prior folders, which names the file at fault (a leaf: no jax, no imports)."""

from __future__ import annotations


class PriorError(ValueError):
  """A prior folder that cannot be used: a missing or malformed file, or a failed check.

  A ``ValueError`` so that callers that turn bad tuner options into one-line errors (the
  study's tuner factory) treat it as one.

  Attributes:
    where: the file or folder at fault, e.g. ``prior/card.json`` or ``prior/policy``.
    problem: what is wrong.

  Example:
    >>> str(PriorError("not valid JSON (line 1)", "p/card.json"))
    'p/card.json: not valid JSON (line 1)'
  """

  def __init__(self, problem: str, where: str | None = None):
    self.where = where
    self.problem = problem
    super().__init__(f"{where}: {problem}" if where else problem)
