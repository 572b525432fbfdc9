"""Interval bounds of expressions over parameter ranges, to prove a constraint never holds."""

from __future__ import annotations

import math

import numpy as np

from metatune.space import expr as ex

Interval = tuple[float, float]
_ANY: Interval = (-math.inf, math.inf)
# A verdict needs this relative margin, so that float32 rounding at a
# boundary (``x >= 1.0000000001`` on [0, 1]) never turns into a false proof.
_MARGIN = 1e-6


def param_range(space, name: str) -> Interval:
  """The range of a parameter's comparable value (its value, a choice index, 0/1)."""
  p = space.params[space.index[name]]
  if p.kind in ("float", "int"):
    return float(p.low), float(p.high)
  if p.kind == "bool":
    return 0.0, 1.0
  if p.is_numeric:
    return float(min(p.choices)), float(max(p.choices))
  return 0.0, float(p.num_choices - 1)


def _clean(lo: float, hi: float) -> Interval:
  if math.isnan(lo) or math.isnan(hi):
    return _ANY
  return lo, hi


def interval(node: ex.Node, space) -> Interval:
  """Bounds of a resolved numeric expression when every parameter it reads is active."""
  if isinstance(node, ex.Num):
    return node.value, node.value
  if isinstance(node, ex.Name):
    return param_range(space, node.name)
  if isinstance(node, ex.Neg):
    lo, hi = interval(node.x, space)
    return -hi, -lo
  if isinstance(node, ex.Arith):
    (a, b), (c, d) = interval(node.a, space), interval(node.b, space)
    with np.errstate(all="ignore"):
      if node.op == "+":
        return _clean(a + c, b + d)
      if node.op == "-":
        return _clean(a - d, b - c)
      if node.op == "*":
        prods = [a * c, a * d, b * c, b * d]
        return _ANY if any(map(math.isnan, prods)) else (min(prods), max(prods))
      if node.op == "/" and (c > 0 or d < 0):
        quots = [a / c, a / d, b / c, b / d]
        return _ANY if any(map(math.isnan, quots)) else (min(quots), max(quots))
    return _ANY
  if isinstance(node, ex.Call):
    if node.fn == "active_or":
      (a, b), (c, d) = param_range(space, node.args[0].name), interval(node.args[1], space)
      return min(a, c), max(b, d)
    if node.fn == "active":
      return 0.0, 1.0
    args = [interval(a, space) for a in node.args]
    (a, b) = args[0]
    if node.fn == "abs":
      return (0.0 if a <= 0 <= b else min(abs(a), abs(b))), max(abs(a), abs(b))
    if node.fn == "min":
      return min(a, args[1][0]), min(b, args[1][1])
    if node.fn == "max":
      return max(a, args[1][0]), max(b, args[1][1])
    if node.fn == "exp":
      return math.exp(min(a, 80.0)), math.exp(min(b, 80.0))
    if node.fn == "log" and a > 0:
      return math.log(a), math.log(b)
    if node.fn == "sqrt" and a >= 0:
      return math.sqrt(a), math.sqrt(b)
    return _ANY
  # A boolean used as a number.
  return 0.0, 1.0


def _apart(a: Interval, b: Interval, exact: bool = False) -> tuple[bool, bool]:
  """Whether every value of ``a`` is clearly below, or clearly above, every value of ``b``."""
  if exact:
    return a[1] < b[0], a[0] > b[1]
  scale = max(1.0, *(abs(x) for x in a + b if math.isfinite(x)))
  m = _MARGIN * scale
  return a[1] < b[0] - m, a[0] > b[1] + m


def _exact(node: ex.Node) -> bool:
  """A parameter or a literal: compared in float32 without rounding in between."""
  return isinstance(node, (ex.Name, ex.Num))


def _f32(i: Interval) -> Interval:
  return float(np.float32(i[0])), float(np.float32(i[1]))


def truth(node: ex.Node, space) -> bool | None:
  """True or False when a resolved boolean expression has that value everywhere, else None."""
  if isinstance(node, ex.Compare):
    a, b = interval(node.a, space), interval(node.b, space)
    exact = _exact(node.a) and _exact(node.b)
    if exact:  # both sides are float32 numbers as the checks see them
      a, b = _f32(a), _f32(b)
    below, above = _apart(a, b, exact)
    touch_below, touch_above = (a[1] <= b[0], a[0] >= b[1]) if exact else (below, above)
    if node.op == "<":
      return True if below else False if touch_above else None
    if node.op == "<=":
      return True if touch_below else False if above else None
    if node.op == ">":
      return True if above else False if touch_below else None
    if node.op == ">=":
      return True if touch_above else False if below else None
    if node.op == "==":
      return False if below or above else None
    return True if below or above else None
  if isinstance(node, ex.Member):
    x = interval(node.x, space)
    if all(any(_apart(x, (c.value, c.value))) for c in node.values):
      return node.negate
    return None
  if isinstance(node, ex.Logic):
    items = [truth(i, space) for i in node.items]
    if node.op == "and":
      return False if False in items else True if all(i is True for i in items) else None
    return True if True in items else False if all(i is False for i in items) else None
  if isinstance(node, ex.Not):
    t = truth(node.x, space)
    return None if t is None else not t
  return None


def never_satisfied(space, constraint, node: ex.Node) -> bool:
  """Whether a constraint provably fails wherever it applies, on a space where it always applies."""
  if any(space.conditions[space.index[n]] is not None for n in ex.names(node, guarded=False)):
    return False  # it may apply only where its parameters are inactive, which is allowed
  t = truth(node, space)
  return t is (False if constraint.mode == "require" else True)
