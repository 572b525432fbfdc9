"""A plain-Python (float32 numpy) evaluator of expressions: the reference for the jitted lowering."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from metatune.space.expr import (Arith, Bool, Call, Compare, Logic, Member, Name, Neg, Node, Not,
                                 Num, Str)

INACTIVE = object()

# The reference computes in float32, like the encoding, so that it agrees with
# the jitted checks exactly at constraint boundaries (``x <= 0.3`` compares
# float32(x) with float32(0.3) in both).
_F = np.float32
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "**": np.power,
}
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "log": np.log,
    "exp": lambda x: np.exp(np.minimum(x, _F(80.0))),
    "sqrt": np.sqrt,
    "abs": np.abs,
    "min": np.minimum,
    "max": np.maximum,
}


def evaluate(node: Node, lookup: Callable[[str], Any], atom_inactive: bool = False) -> Any:
  """Evaluates an expression in plain Python: the reference for the compiled JAX version.

  Args:
    node: the expression.
    lookup: maps a parameter name to its comparable value (a number, or the
      index of a categorical choice), or ``INACTIVE``.
    atom_inactive: the truth value of a comparison that reads an inactive
      parameter (``False`` in conditions).

  Returns:
    A number or a bool.
  """

  def ev(n: Node) -> Any:
    if isinstance(n, Num):
      return _F(n.value)
    if isinstance(n, (Str, Bool)):
      return n.value
    if isinstance(n, Name):
      x = lookup(n.name)
      return x if x is INACTIVE else _F(x)
    if isinstance(n, Neg):
      x = ev(n.x)
      return INACTIVE if x is INACTIVE else -x
    if isinstance(n, Arith):
      a, b = ev(n.a), ev(n.b)
      if a is INACTIVE or b is INACTIVE:
        return INACTIVE
      return _ARITH[n.op](_F(a), _F(b))
    if isinstance(n, Compare):
      a, b = ev(n.a), ev(n.b)
      if a is INACTIVE or b is INACTIVE:
        return atom_inactive
      return bool(_CMP[n.op](a, b))
    if isinstance(n, Member):
      x = ev(n.x)
      if x is INACTIVE:
        return atom_inactive
      hit = any(x == ev(v) for v in n.values)
      return hit != n.negate
    if isinstance(n, Logic):
      vals = [atom_inactive if (v := ev(i)) is INACTIVE else bool(v) for i in n.items]
      return all(vals) if n.op == "and" else any(vals)
    if isinstance(n, Not):
      x = ev(n.x)
      return atom_inactive if x is INACTIVE else not x
    if isinstance(n, Call):
      if n.fn == "active":
        return lookup(n.args[0].name) is not INACTIVE
      if n.fn == "active_or":
        x = lookup(n.args[0].name)
        return ev(n.args[1]) if x is INACTIVE else _F(x)
      args = [ev(a) for a in n.args]
      if any(a is INACTIVE for a in args):
        return INACTIVE
      return _FUNCS[n.fn](*[_F(a) for a in args])
    raise TypeError(n)

  with np.errstate(all="ignore"):
    out = ev(node)
  return atom_inactive if out is INACTIVE else out


def lookup_from(mapping: Mapping[str, Any]) -> Callable[[str], Any]:
  return lambda name: mapping.get(name, INACTIVE)
