"""Lowers resolved expressions to jittable functions of the value matrix and the active mask."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from metatune.space import expr as ex

# (values f32[..., D], active bool[..., D]) -> (value f32|bool[...], ok bool[...])
Lowered = Callable[[jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]

_ARITH = {
    "+": jnp.add,
    "-": jnp.subtract,
    "*": jnp.multiply,
    "/": jnp.divide,
    "**": jnp.power,
}
_CMP = {
    "<": jnp.less,
    "<=": jnp.less_equal,
    ">": jnp.greater,
    ">=": jnp.greater_equal,
    "==": jnp.equal,
    "!=": jnp.not_equal,
}
_FUNCS = {
    "log": jnp.log,
    "exp": lambda x: jnp.exp(jnp.minimum(x, 80.0)),
    "sqrt": jnp.sqrt,
    "abs": jnp.abs,
    "min": jnp.minimum,
    "max": jnp.maximum,
}


def _num(x: jnp.ndarray) -> jnp.ndarray:
  # A comparison used as a number is 0 or 1 in float32, as in the reference:
  # jnp adds two bools as a logical or (True + True == True), not 2.
  return x.astype(jnp.float32) if x.dtype == jnp.bool_ else x


def lower(node: ex.Node, index: dict[str, int], atom_inactive: bool) -> Lowered:
  """Mirrors ``reference.evaluate`` with jax.numpy, over the comparable values of a space.

  Args:
    node: a resolved expression (every leaf numeric).
    index: parameter name -> column.
    atom_inactive: truth value of a comparison that reads an inactive parameter.

  Returns:
    A function of ``(values, active)`` returning ``(value, ok)``, where ``ok``
    is False wherever the value depends on an inactive parameter.
  """
  true = lambda v: jnp.ones(v.shape[:-1], bool)

  def boolean(fn: Lowered) -> Lowered:
    def f(v, a):
      x, ok = fn(v, a)
      return jnp.where(ok, x != 0, atom_inactive), true(v)
    return f

  def go(n: ex.Node) -> Lowered:
    if isinstance(n, ex.Num):
      c = float(n.value)
      return lambda v, a: (jnp.full(v.shape[:-1], c, v.dtype), true(v))
    if isinstance(n, ex.Name):
      i = index[n.name]
      return lambda v, a: (v[..., i], a[..., i])
    if isinstance(n, ex.Neg):
      fx = go(n.x)
      return lambda v, a: (lambda x, ok: (-_num(x), ok))(*fx(v, a))
    if isinstance(n, ex.Arith):
      fa, fb, op = go(n.a), go(n.b), _ARITH[n.op]

      def arith(v, a):
        xa, oka = fa(v, a)
        xb, okb = fb(v, a)
        return op(_num(xa), _num(xb)), oka & okb
      return arith
    if isinstance(n, ex.Compare):
      fa, fb, op = go(n.a), go(n.b), _CMP[n.op]

      def compare(v, a):
        xa, oka = fa(v, a)
        xb, okb = fb(v, a)
        return jnp.where(oka & okb, op(xa, xb), atom_inactive), true(v)
      return compare
    if isinstance(n, ex.Member):
      fx = go(n.x)
      consts = np.asarray([float(c.value) for c in n.values], np.float32)
      negate = n.negate

      def member(v, a):
        x, ok = fx(v, a)
        hit = jnp.any(x[..., None] == consts, axis=-1)
        return jnp.where(ok, hit != negate, atom_inactive), true(v)
      return member
    if isinstance(n, ex.Logic):
      items = [boolean(go(i)) for i in n.items]
      combine = jnp.logical_and if n.op == "and" else jnp.logical_or

      def logic(v, a):
        out = items[0](v, a)[0]
        for f in items[1:]:
          out = combine(out, f(v, a)[0])
        return out, true(v)
      return logic
    if isinstance(n, ex.Not):
      fx = go(n.x)

      def negation(v, a):
        x, ok = fx(v, a)
        return jnp.where(ok, x == 0, atom_inactive), true(v)
      return negation
    if isinstance(n, ex.Call):
      if n.fn == "active":
        i = index[n.args[0].name]
        return lambda v, a: (a[..., i], true(v))
      if n.fn == "active_or":
        i = index[n.args[0].name]
        fd = go(n.args[1])

        def active_or(v, a):
          d, okd = fd(v, a)
          act = a[..., i]
          return jnp.where(act, v[..., i], d), act | okd
        return active_or
      fargs = [go(x) for x in n.args]
      fn = _FUNCS[n.fn]

      def call(v, a):
        outs = [f(v, a) for f in fargs]
        ok = outs[0][1]
        for _, o in outs[1:]:
          ok = ok & o
        return fn(*[_num(x) for x, _ in outs]), ok
      return call
    raise TypeError(n)

  return go(node)


def lower_predicate(node: ex.Node, index: dict[str, int], atom_inactive: bool):
  """A boolean expression as ``(values, active) -> bool[...]``."""
  fn = lower(node, index, atom_inactive)

  def pred(v, a):
    x, ok = fn(v, a)
    return jnp.where(ok, x != 0, atom_inactive)
  return pred


def lower_violation(node: ex.Node, index: dict[str, int]):
  """How far a boolean expression is from true, and from false: a guide for searching.

  Each is 0 exactly where the expression is true (respectively false) and grows
  with the distance of the comparisons that fail, so a local search can descend
  it toward a configuration that satisfies a constraint; it mirrors `lower` with
  comparisons that read an inactive parameter false.

  Args:
    node: a resolved boolean expression.
    index: parameter name -> column.

  Returns:
    ``(values, active) -> (to_true f32[...], to_false f32[...])``.
  """

  def cost(ok, gap):
    # 1 per failed comparison, plus a compressed distance, so that
    # comparisons on very different scales do not swamp one another.
    return jnp.where(ok, 0.0, 1.0 + jnp.log1p(jnp.maximum(gap, 0.0)))

  def go(n: ex.Node):
    if isinstance(n, ex.Compare):
      fa, fb = lower(n.a, index, False), lower(n.b, index, False)

      def compare(v, a):
        xa, oka = fa(v, a)
        xb, okb = fb(v, a)
        known = oka & okb
        # An inactive side makes the comparison false, and no distance helps.
        true = known & _CMP[n.op](xa, xb)
        to_true = {"<": xa - xb, "<=": xa - xb, ">": xb - xa, ">=": xb - xa,
                   "==": jnp.abs(xa - xb), "!=": jnp.zeros_like(xa)}[n.op]
        to_false = jnp.abs(xa - xb) if n.op == "!=" else -to_true
        return (cost(true, jnp.where(known, to_true, 0.0)),
                cost(~true, jnp.where(known, to_false, 0.0)))
      return compare
    if isinstance(n, ex.Member):
      fx = lower(n.x, index, False)
      consts = np.asarray([float(c.value) for c in n.values], np.float32)

      def member(v, a):
        x, ok = fx(v, a)
        hit = jnp.any(x[..., None] == consts, axis=-1)
        gap = jnp.where(ok, jnp.min(jnp.abs(x[..., None] - consts), axis=-1), 0.0)
        true = ok & (hit != n.negate)
        if n.negate:
          return cost(true, 0.0), cost(~true, gap)
        return cost(true, gap), cost(~true, 0.0)
      return member
    if isinstance(n, ex.Logic):
      items = [go(i) for i in n.items]

      def logic(v, a):
        outs = [f(v, a) for f in items]
        ts = jnp.stack([t for t, _ in outs])
        fs = jnp.stack([f for _, f in outs])
        if n.op == "and":
          return ts.sum(0), fs.min(0)
        return ts.min(0), fs.sum(0)
      return logic
    if isinstance(n, ex.Not):
      fx = go(n.x)
      return lambda v, a: fx(v, a)[::-1]
    # Anything else (a bool parameter, active(x)) is true where it is known and nonzero.
    fn = lower(n, index, False)

    def truth(v, a):
      x, ok = fn(v, a)
      hit = ok & (x != 0)
      return cost(hit, 0.0), cost(~hit, 0.0)
    return truth

  return go(node)
