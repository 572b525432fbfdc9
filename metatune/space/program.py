"""Conditions and constraints as one flat postfix program, run by a single `lax.fori_loop`.

`lowering.lower` turns every expression into its own small graph of jax.numpy
operations: the fastest to run, but XLA's compile time grows with the number of
distinct expressions stacked into one array (on a CPU, 100 conditions take
seconds and 500 take minutes). Large spaces instead compile their expressions
into the instructions of a small stack machine whose interpreter is one loop
over a fixed set of operations: the compiled code is the same for 10 or 10,000
expressions; only the program, which is data, grows. It computes what
`lowering.lower` computes, in float32, with comparisons that read an inactive
parameter false.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import expr as ex

_ARITH = {"+": jnp.add, "-": jnp.subtract, "*": jnp.multiply, "/": jnp.divide, "**": jnp.power,
          "min": jnp.minimum, "max": jnp.maximum}
_CMP = {"<": jnp.less, "<=": jnp.less_equal, ">": jnp.greater, ">=": jnp.greater_equal,
        "==": jnp.equal, "!=": jnp.not_equal}
_UNARY = {"neg": jnp.negative, "log": jnp.log, "exp": lambda x: jnp.exp(jnp.minimum(x, 80.0)),
          "sqrt": jnp.sqrt, "abs": jnp.abs}
_OPS = (("const", "name", "truth", "and", "or", "not", "member", "member_end", "active",
         "active_or", "store", "store_active") + tuple(_ARITH) + tuple(_CMP) + tuple(_UNARY))
OP = {name: i for i, name in enumerate(_OPS)}


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
  """Instructions ``(op i32[L], arg i32[L], const f32[L])``, the stack size and the outputs.

  ``store`` pops a truth value (false where it read an inactive parameter) into
  output row ``arg``; ``store_active`` also makes it the activity of parameter
  ``arg``, which later instructions read.
  """
  op: np.ndarray
  arg: np.ndarray
  const: np.ndarray
  stack: int
  num_out: int


class _Builder:
  """Emits postfix code; the tree is at most `expr.MAX_DEPTH` deep, so recursion is safe."""

  def __init__(self, index: dict[str, int]):
    self.index = index
    self.code: list[tuple[int, int, float]] = []
    self.depth = 0
    self.max_depth = 0

  def emit(self, op: str, arg: int = 0, const: float = 0.0, push: int = 0):
    self.code.append((OP[op], arg, const))
    self.depth += push
    self.max_depth = max(self.max_depth, self.depth)

  def node(self, n: ex.Node):
    """Emits ``n``: afterwards its (value, known) pair is on top of the stack."""
    if isinstance(n, ex.Num):
      self.emit("const", const=float(n.value), push=1)
    elif isinstance(n, ex.Name):
      self.emit("name", self.index[n.name], push=1)
    elif isinstance(n, ex.Neg):
      self.node(n.x)
      self.emit("neg")
    elif isinstance(n, (ex.Arith, ex.Compare)):
      self.node(n.a)
      self.node(n.b)
      self.emit(n.op, push=-1)
    elif isinstance(n, ex.Member):
      self.node(n.x)
      self.emit("const", const=0.0, push=1)  # the running "hit" under x
      for c in n.values:
        self.emit("member", const=float(c.value))
      self.emit("member_end", int(n.negate), push=-1)
    elif isinstance(n, ex.Logic):
      for i, item in enumerate(n.items):
        self.node(item)
        self.emit("truth")
        if i:
          self.emit(n.op, push=-1)  # folded left to right, as `lowering.lower` does
    elif isinstance(n, ex.Not):
      self.node(n.x)
      self.emit("not")
    elif isinstance(n, ex.Call) and n.fn == "active":
      self.emit("active", self.index[n.args[0].name], push=1)
    elif isinstance(n, ex.Call) and n.fn == "active_or":
      self.node(n.args[1])
      self.emit("active_or", self.index[n.args[0].name])
    elif isinstance(n, ex.Call):
      for a in n.args:
        self.node(a)
      self.emit(n.fn, push=1 - len(n.args))
    else:
      raise TypeError(n)


def compile_program(items: Sequence[tuple[ex.Node | None, int, bool]],
                    index: dict[str, int]) -> Program:
  """Compiles ``(expression, output row, is_activity)`` items, in order, into one program.

  An item whose expression is None stores true (an unconditional parameter).
  """
  b = _Builder(index)
  for node, out, is_activity in items:
    if node is None:
      b.emit("const", const=1.0, push=1)
    else:
      b.node(node)
    b.emit("store_active" if is_activity else "store", out, push=-1)
  op, arg, const = zip(*b.code)
  return Program(np.asarray(op, np.int32), np.asarray(arg, np.int32),
                 np.asarray(const, np.float32), max(b.max_depth, 1),
                 max(o for _, o, _ in items) + 1)


def _at(rows: jax.Array, i) -> jax.Array:
  return jax.lax.dynamic_index_in_dim(rows, i, 0, keepdims=False)


def _put(rows: jax.Array, x: jax.Array, i) -> jax.Array:
  return jax.lax.dynamic_update_index_in_dim(rows, x.astype(rows.dtype), i, 0)


# How each operation moves the stack: the row it writes, relative to the stack
# pointer, and the change of the pointer.
_WRITE = {"const": 0, "name": 0, "active": 0, "member": -1, "member_end": -2, "and": -2,
          "or": -2, "store": -1, "store_active": -1}
_MOVE = {"const": 1, "name": 1, "active": 1, "member_end": -1, "and": -1, "or": -1,
         "store": -1, "store_active": -1}
for _name in _ARITH:
  _WRITE[_name], _MOVE[_name] = -2, -1
for _name in _CMP:
  _WRITE[_name], _MOVE[_name] = -2, -1
_WRITE_AT = np.asarray([_WRITE.get(name, -1) for name in _OPS], np.int32)
_MOVE_BY = np.asarray([_MOVE.get(name, 0) for name in _OPS], np.int32)


def _step(op, arg, c, a, ka, b, kb, v_arg, act_arg):
  """Every operation's result on the top two stack entries, selected by ``op``.

  One straight-line step instead of a `lax.switch` over the operations: XLA
  compiles it faster, and computing all of them costs little next to the loop.
  """
  f32 = jnp.float32
  yes = jnp.ones_like(kb)
  truth_b = jnp.where(kb, b != 0, False)
  results = {
      "const": (jnp.full_like(b, c), yes),
      "name": (v_arg, act_arg),
      "active": (act_arg.astype(f32), yes),
      "active_or": (jnp.where(act_arg, v_arg, b), act_arg | kb),
      "truth": (truth_b.astype(f32), yes),
      "not": (jnp.where(kb, b == 0, False).astype(f32), yes),
      "and": (((a != 0) & (b != 0)).astype(f32), yes),
      "or": (((a != 0) | (b != 0)).astype(f32), yes),
      "member": (((b != 0) | (a == c)).astype(f32), kb),
      "member_end": (jnp.where(ka, (b != 0) != (arg == 1), False).astype(f32), yes),
      "store": (b, kb),
      "store_active": (b, kb),
  }
  for name, fn in _UNARY.items():
    results[name] = (fn(b), kb)
  for name, fn in _ARITH.items():
    results[name] = (fn(a, b), ka & kb)
  for name, fn in _CMP.items():
    results[name] = (jnp.where(ka & kb, fn(a, b), False).astype(f32), yes)
  value = jax.lax.select_n(op, *[results[name][0] for name in _OPS])
  known = jax.lax.select_n(op, *[results[name][1] for name in _OPS])
  return value, known, truth_b


def run(program: Program, vals: jax.Array, active: jax.Array | None = None) -> jax.Array:
  """Runs a program on comparable values.

  Args:
    program: from `compile_program`.
    vals: f32[..., D] comparable values (see `Space.comparable`).
    active: bool[..., D] the activity the program reads; None for a program
      that computes the activity itself (its outputs are the parameters).

  Returns:
    bool[..., num_out]: the stored truth values.
  """
  batch, d = vals.shape[:-1], vals.shape[-1]
  v = jnp.asarray(vals, jnp.float32).reshape(-1, d).T  # rows are parameters: cheap to index
  n = v.shape[1]
  act = (jnp.zeros((d, n), bool) if active is None else
         jnp.asarray(active, bool).reshape(-1, d).T)
  # Two spare rows below the stack, so that reading "the top two" never goes out of bounds.
  size = program.stack + 2
  state = (jnp.zeros((size, n), jnp.float32), jnp.zeros((size, n), bool), jnp.int32(2), act,
           jnp.zeros((program.num_out, n), bool))
  ops, args, consts = (jnp.asarray(program.op), jnp.asarray(program.arg),
                       jnp.asarray(program.const))
  write_at, move_by = jnp.asarray(_WRITE_AT), jnp.asarray(_MOVE_BY)
  store, store_active = OP["store"], OP["store_active"]

  def body(i, st):
    stack, known, sp, act, out = st
    op, arg, c = ops[i], args[i], consts[i]
    value, k, col = _step(op, arg, c, _at(stack, sp - 2), _at(known, sp - 2),
                          _at(stack, sp - 1), _at(known, sp - 1), _at(v, arg), _at(act, arg))
    pos = sp + write_at[op]
    is_store = (op == store) | (op == store_active)
    out = _put(out, jnp.where(is_store, col, _at(out, arg)), arg)
    act = _put(act, jnp.where(op == store_active, col, _at(act, arg)), arg)
    return _put(stack, value, pos), _put(known, k, pos), sp + move_by[op], act, out

  out = jax.lax.fori_loop(0, len(program.op), body, state)[4]
  return out.T.reshape(batch + (program.num_out,))
