"""Parameters, conditions and constraints of a tree-structured search space, checked on construction."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np

from metatune.space import expr as ex
from metatune.space.errors import SpaceError

KINDS = ("float", "int", "categorical", "bool", "ordinal")
Scalar = str | int | float | bool
MAX_NAME_LENGTH = 256
MAX_CHOICES = 10_000
# The encoding and the checks compute in float32 (see `Space`), so bounds and
# numeric choices must be float32 numbers: finite, and either 0 or of a normal size.
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)
MAX_INT = 2**53
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _fmt_where(where: str | None, name: str | None = None) -> str:
  parts = [p for p in (where, f"parameter {name!r}" if name else None) if p]
  return ", ".join(parts)


def did_you_mean(name: str, known: Iterable[str]) -> str:
  close = difflib.get_close_matches(name, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class Param:
  """One hyperparameter.

  Attributes:
    name: unique dotted path, e.g. ``optimizer.sgd.momentum``.
    kind: one of ``float int categorical bool ordinal``.
    low, high: bounds of ``float`` and ``int`` (inclusive).
    log: sample and encode on a log scale (``float``, ``int``).
    choices: values of ``categorical``, the ordered sequence of ``ordinal``,
      ``(False, True)`` for ``bool``.
    weights: sampling weights of ``categorical`` choices (uniform when None).
    default: the default value.
    condition: when the parameter is active, as an expression over other
      parameters; None means always active.
    where: where it was defined (``file:line``), for error messages.
  """
  name: str
  kind: str
  low: float | None = None
  high: float | None = None
  log: bool = False
  choices: tuple[Scalar, ...] = ()
  weights: tuple[float, ...] | None = None
  default: Any = None
  condition: ex.Node | None = None
  condition_text: str | None = None
  where: str | None = None

  @property
  def is_numeric(self) -> bool:
    return self.kind in ("float", "int") or (self.kind in ("ordinal", "categorical") and all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices))

  @property
  def num_choices(self) -> int:
    return len(self.choices)


def _condition(when: str | ex.Node | None, where: str | None, name: str):
  if when is None:
    return None, None
  if isinstance(when, ex.Node):
    text = ex.unparse(when)
    ex.check_depth(when, text, _fmt_where(where, name) + ", condition")
    return when, text
  return ex.parse(when, _fmt_where(where, name) + ", condition"), when


def Float(name: str, low: float, high: float, *, log: bool = False, default: float | None = None,
          when: str | ex.Node | None = None, where: str | None = None) -> Param:
  """A real-valued parameter in ``[low, high]``."""
  node, text = _condition(when, where, name)
  return Param(name, "float", low, high, log, default=default, condition=node,
               condition_text=text, where=where)


def Int(name: str, low: int, high: int, *, log: bool = False, default: int | None = None,
        when: str | ex.Node | None = None, where: str | None = None) -> Param:
  """An integer parameter in ``[low, high]`` (both included)."""
  node, text = _condition(when, where, name)
  return Param(name, "int", low, high, log, default=default, condition=node,
               condition_text=text, where=where)


def Categorical(name: str, choices: Sequence[Scalar], *, weights: Sequence[float] | None = None,
                default: Scalar | None = None, when: str | ex.Node | None = None,
                where: str | None = None) -> Param:
  """An unordered choice."""
  node, text = _condition(when, where, name)
  return Param(name, "categorical", choices=tuple(choices),
               weights=None if weights is None else tuple(weights), default=default,
               condition=node, condition_text=text, where=where)


def Bool(name: str, *, default: bool | None = None, when: str | ex.Node | None = None,
         where: str | None = None) -> Param:
  """A boolean switch."""
  node, text = _condition(when, where, name)
  return Param(name, "bool", choices=(False, True), default=default, condition=node,
               condition_text=text, where=where)


def Ordinal(name: str, values: Sequence[Scalar], *, default: Scalar | None = None,
            when: str | ex.Node | None = None, where: str | None = None) -> Param:
  """An ordered choice such as ``[16, 32, 64]`` or ``['small', 'large']``."""
  node, text = _condition(when, where, name)
  return Param(name, "ordinal", choices=tuple(values), default=default, condition=node,
               condition_text=text, where=where)


@dataclasses.dataclass(frozen=True)
class Constraint:
  """A relation that every configuration must satisfy (``require``) or must not (``forbid``).

  It is enforced only when every parameter it names is active; inside it,
  ``active_or(name, value)`` gives an inactive parameter a value instead and
  ``active(name)`` tests activity.
  """
  text: str
  node: ex.Node
  mode: str  # "require" or "forbid"
  where: str | None = None

  @classmethod
  def require(cls, text: str | ex.Node, where: str | None = None) -> "Constraint":
    return cls._make(text, "require", where)

  @classmethod
  def forbid(cls, text: str | ex.Node, where: str | None = None) -> "Constraint":
    return cls._make(text, "forbid", where)

  @classmethod
  def _make(cls, text, mode, where):
    if isinstance(text, ex.Node):
      unparsed = ex.unparse(text)
      ex.check_depth(text, unparsed, where)
      return cls(unparsed, text, mode, where)
    return cls(text, ex.parse(text, where), mode, where)

  def label(self) -> str:
    verb = "constraint" if self.mode == "require" else "forbidden clause"
    return f"{verb} {self.text!r}" + (f" ({self.where})" if self.where else "")


# ----------------------------------------------------------------- validation
def _is_num(x: Any) -> bool:
  return isinstance(x, int | float) and not isinstance(x, bool)


def is_finite(x: int | float) -> bool:
  """`math.isfinite` that answers False for an int too large for a float instead of raising."""
  try:
    return math.isfinite(x)
  except OverflowError:
    return False


def _f32_number(v: Any, label: str, where: str) -> float:
  """``v`` as a float that float32 represents (finite, 0 or of normal size), or a SpaceError."""
  if not _is_num(v):
    raise SpaceError(f"{label} must be a finite number, got {short(v)}", where)
  try:
    f = float(v)
  except OverflowError:
    f = math.inf
  if not math.isfinite(f):
    raise SpaceError(f"{label} must be a finite number, got {short(v)}", where)
  if abs(f) > F32_MAX:
    raise SpaceError(f"{label} {short(v)} is beyond float32's range (about ±3.4e38), which "
                     f"the encoding uses", where)
  if f != 0 and abs(f) < F32_TINY:
    raise SpaceError(f"{label} {short(v)} is closer to 0 than float32 resolves (its smallest "
                     f"normal number is about 1.2e-38); use 0 or a larger number", where)
  return f


def short(v: Any) -> str:
  """``repr(v)``, cut to 40 characters: messages quote values that may be huge."""
  text = repr(v)
  return text if len(text) <= 40 else text[:37] + "..."


def _check_range(p: Param, where: str):
  """Refuses bounds whose encoding in float32 is degenerate or overflows."""
  if p.kind == "float":
    lo, hi = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
  else:
    lo, hi = (math.log(p.low - 0.5), math.log(p.high + 0.5)) if p.log else (p.low, p.high + 1.0)
  scale = "log " if p.log else ""
  with np.errstate(over="ignore"):
    width = np.float32(hi) - np.float32(lo)
  if not np.isfinite(width):
    raise SpaceError(f"the width of the range [{p.low}, {p.high}] overflows float32, which the "
                     f"encoding uses; narrow it (or use log: true for a positive range)", where)
  if not width > 0:
    raise SpaceError(f"low ({p.low}) and high ({p.high}) are the same number on a {scale}scale "
                     f"in float32, which the encoding uses; widen the range", where)


def bin_edges(p: Param) -> np.ndarray:
  """f64[num_choices + 1]: the edges of each choice's bin of the unit interval, from the weights."""
  w = np.asarray(p.weights if p.weights else [1.0] * p.num_choices, np.float64)
  w = w / w.max()  # so that weights near float64's maximum do not overflow their sum
  e = np.concatenate([[0.0], np.cumsum(w / w.sum())])
  e[-1] = 1.0
  return e


def check_name(name: Any, where: str | None) -> None:
  if not isinstance(name, str) or not name.strip():
    raise SpaceError(f"a parameter name must be a non-empty string, got {short(name)}", where)
  if len(name) > MAX_NAME_LENGTH:
    raise SpaceError(f"the parameter name {short(name)} is {len(name)} characters long, more "
                     f"than the limit of {MAX_NAME_LENGTH}", where)
  if _CONTROL.search(name):
    raise SpaceError(f"the parameter name {name!r} holds a control character (a newline, tab "
                     f"or the like)", where)
  check_text(name, "the parameter name", where)


def check_text(text: str, what: str, where: str | None) -> None:
  """Refuses a string that is not valid Unicode text (a lone surrogate, e.g. from ``"\\ud800"``).

  Such a string cannot be written as UTF-8, so printing it would fail later.
  """
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise SpaceError(f"{what} {short(text)} holds {text[e.start]!r} at position {e.start}, a "
                     f"lone surrogate that is not text", where) from None


def check_param(p: Param) -> Param:
  """Checks one parameter's own settings and fills in its default."""
  check_name(p.name, p.where)
  where = _fmt_where(p.where, p.name)
  if p.kind not in KINDS:
    raise SpaceError(f"unknown kind {p.kind!r}; expected one of {', '.join(KINDS)}", where)
  if not isinstance(p.log, bool):
    raise SpaceError(f"log must be true or false, got {short(p.log)}", where)
  default = p.default
  if p.kind in ("float", "int"):
    for label, v in (("low", p.low), ("high", p.high)):
      _f32_number(v, label, where)
      if p.kind == "int" and abs(v) > MAX_INT:
        raise SpaceError(f"{label} {short(v)} of an int parameter is beyond ±2**53, where "
                         f"float64 stops counting whole numbers exactly", where)
      if p.kind == "int" and float(v) != int(v):
        raise SpaceError(f"{label} of an int parameter must be a whole number, got {v!r}", where)
    if p.low >= p.high:
      raise SpaceError(f"low ({p.low}) must be less than high ({p.high})", where)
    if p.log and p.low <= 0:
      raise SpaceError(f"a log-scaled parameter needs low > 0, got low={p.low}", where)
    if p.kind == "int":
      p = dataclasses.replace(p, low=int(p.low), high=int(p.high))
    _check_range(p, where)
    if default is None:
      mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
      default = round(mid) if p.kind == "int" else min(max(mid, p.low), p.high)
    if not _is_num(default):
      raise SpaceError(f"default {short(default)} is not a number", where)
    if not p.low <= default <= p.high:
      raise SpaceError(f"default {short(default)} is outside [{p.low}, {p.high}]", where)
    if p.kind == "int" and float(default) != int(default):
      raise SpaceError(f"default {default!r} of an int parameter must be a whole number", where)
    default = int(default) if p.kind == "int" else float(default)
  else:
    if p.log:
      raise SpaceError(f"log scale applies only to float and int, not {p.kind}", where)
    if not p.choices:
      raise SpaceError("choices must not be empty", where)
    if len(p.choices) > MAX_CHOICES:
      raise SpaceError(f"{len(p.choices)} choices, more than the limit of {MAX_CHOICES}; a "
                       f"numeric range (int or float) may fit better", where)
    for c in p.choices:
      if not isinstance(c, str | int | float | bool):
        raise SpaceError(f"choice {short(c)} is not a string, number or bool", where)
      if _is_num(c):
        _f32_number(c, "choice", where)
      if isinstance(c, str):
        check_text(c, "choice", where)
    seen: dict[Any, Any] = {}
    for c in p.choices:
      key = (type(c) is bool, c)
      if key in seen:
        raise SpaceError(f"choice {short(c)} appears twice", where)
      seen[key] = c
    if p.is_numeric:
      # Conditions and constraints compare numeric choices as float32.
      as32: dict[float, Any] = {}
      for c in p.choices:
        k = float(np.float32(c))
        if k in as32:
          raise SpaceError(f"choices {as32[k]!r} and {c!r} are the same number in float32, "
                           f"which the checks use", where)
        as32[k] = c
    if p.weights is not None:
      if not isinstance(p.weights, tuple | list) or len(p.weights) != len(p.choices):
        count = len(p.weights) if isinstance(p.weights, tuple | list) else short(p.weights)
        raise SpaceError(f"{count} weights for {len(p.choices)} choices", where)
      # A zero weight would give its choice an empty bin of the unit encoding.
      if any(not _is_num(w) or not is_finite(w) or w <= 0 for w in p.weights):
        raise SpaceError(f"weights must be finite and positive (remove a choice that should "
                         f"never be sampled): {short(list(p.weights))}", where)
      # Each choice owns a bin of [0, 1) as wide as its share of the weights;
      # float32 uniform draws resolve about 1e-7, so a share under 1e-6 would
      # be sampled far more or less often than its weight says.
      edges = bin_edges(p)
      narrow = np.flatnonzero(np.diff(edges) < 1e-6)
      if narrow.size:
        raise SpaceError(f"the weight of choice {short(p.choices[narrow[0]])} is too small next "
                         f"to the others (under 1e-6 of the total) for the float32 encoding; "
                         f"raise it or remove the choice", where)
    if default is None:
      default = p.choices[0]
    if choice_index(p, default) is None:
      raise SpaceError(f"default {short(default)} is not one of {short(list(p.choices))}",
                       where)
    default = p.choices[choice_index(p, default)]
  return dataclasses.replace(p, default=default)


def choice_index(p: Param, value: Any) -> int | None:
  """Index of ``value`` among ``p.choices``, matching bools only to bools."""
  for i, c in enumerate(p.choices):
    if isinstance(c, bool) != isinstance(value, bool):
      continue
    if c == value and (isinstance(c, str) == isinstance(value, str)):
      return i
  return None


# ------------------------------------------------------- expression resolution
NUM, IDX, BOOL = "number", "choice", "bool"


class _Resolver:
  """Type-checks an expression against the parameters and rewrites choice literals to indices.

  After resolution every leaf is a number: numeric parameters read their value,
  categorical (and non-numeric ordinal) parameters their choice index, bools 0/1.
  """

  def __init__(self, params: dict[str, Param], text: str, where: str | None,
               check_atoms: bool = False):
    self.params = params
    self.text = text
    self.where = where
    self.check_atoms = check_atoms  # conditions: a comparison nothing satisfies is an error

  def error(self, problem: str, node: ex.Node) -> ex.ExprError:
    return ex.ExprError(problem, self.text, node.pos, self.where)

  def param(self, node: ex.Name) -> Param:
    p = self.params.get(node.name)
    if p is None:
      raise self.error(f"unknown parameter {node.name!r}{did_you_mean(node.name, self.params)}",
                       node)
    return p

  def kind_of(self, p: Param) -> str:
    if p.kind == "bool":
      return BOOL
    return NUM if p.is_numeric else IDX

  def boolean(self, node: ex.Node) -> ex.Node:
    out, t = self.resolve(node)
    if t != BOOL:
      raise self.error("expected a true/false expression (a comparison, 'in', 'and', 'or', "
                       "'not' or a bool parameter)", node)
    return out

  def number(self, node: ex.Node) -> ex.Node:
    out, t = self.resolve(node)
    if t == IDX:
      raise self.error("a categorical parameter can only be compared with ==, !=, in, or "
                       "(ordinal) <, >", node)
    return out

  def literal_for(self, p: Param, lit: ex.Node, for_node: ex.Node) -> ex.Node:
    """A literal compared with parameter ``p``, as the comparable number."""
    if isinstance(lit, ex.Bool):
      value: Any = lit.value
    elif isinstance(lit, ex.Str):
      value = lit.value
    elif isinstance(lit, ex.Num):
      value = lit.value
    else:
      raise self.error("expected a literal value", lit)
    if p.kind in ("float", "int"):
      if not isinstance(value, float):
        raise self.error(f"{p.name!r} is a number; cannot compare it with {value!r}", lit)
      return ex.Num(lit.pos, value)
    idx = choice_index(p, value)
    if idx is None and isinstance(value, float):  # 2.0 written for an int choice 2
      idx = next((i for i, c in enumerate(p.choices) if _is_num(c) and c == value), None)
    if idx is None:
      if p.kind == "ordinal" and p.is_numeric and isinstance(value, float):
        return ex.Num(lit.pos, value)
      raise self.error(f"{value!r} is not a possible value of {p.name!r} "
                       f"(choices: {list(p.choices)})", lit)
    if p.kind == "bool":
      return ex.Num(lit.pos, float(idx))
    if p.is_numeric:
      return ex.Num(lit.pos, float(p.choices[idx]))
    del for_node
    return ex.Num(lit.pos, float(idx))

  def resolve(self, node: ex.Node) -> tuple[ex.Node, str]:
    if isinstance(node, ex.Num):
      return node, NUM
    if isinstance(node, ex.Bool):
      return ex.Num(node.pos, float(node.value)), NUM
    if isinstance(node, ex.Str):
      raise self.error("a string can only be compared with a categorical or ordinal parameter",
                       node)
    if isinstance(node, ex.Name):
      p = self.param(node)
      return node, self.kind_of(p)
    if isinstance(node, ex.Neg):
      return ex.Neg(node.pos, self.number(node.x)), NUM
    if isinstance(node, ex.Arith):
      return ex.Arith(node.pos, node.op, self.number(node.a), self.number(node.b)), NUM
    if isinstance(node, ex.Compare):
      return self.compare(node), BOOL
    if isinstance(node, ex.Member):
      if not isinstance(node.x, ex.Name):
        x = self.number(node.x)
        vals = tuple(self.number(v) for v in node.values)
        return ex.Member(node.pos, x, vals, node.negate), BOOL
      p = self.param(node.x)
      vals = tuple(self.literal_for(p, v, node) for v in node.values)
      return ex.Member(node.pos, node.x, vals, node.negate), BOOL
    if isinstance(node, ex.Logic):
      return ex.Logic(node.pos, node.op, tuple(self.boolean(i) for i in node.items)), BOOL
    if isinstance(node, ex.Not):
      return ex.Not(node.pos, self.boolean(node.x)), BOOL
    if isinstance(node, ex.Call):
      if node.fn == "active":
        self.param(node.args[0])
        return node, BOOL
      if node.fn == "active_or":
        p = self.param(node.args[0])
        if self.kind_of(p) == IDX:
          raise self.error("active_or() needs a numeric or bool parameter", node)
        return ex.Call(node.pos, node.fn, (node.args[0], self.number(node.args[1]))), NUM
      return ex.Call(node.pos, node.fn, tuple(self.number(a) for a in node.args)), NUM
    raise TypeError(node)

  def compare(self, node: ex.Compare) -> ex.Node:
    a, b = (ex.Num(x.pos, -x.x.value) if isinstance(x, ex.Neg) and isinstance(x.x, ex.Num)
            else x for x in (node.a, node.b))
    lits = (ex.Num, ex.Str, ex.Bool)
    for x, y, flip in ((a, b, False), (b, a, True)):
      if isinstance(x, ex.Name) and isinstance(y, lits):
        p = self.param(x)
        if self.kind_of(p) == IDX and node.op not in ("==", "!=") and p.kind != "ordinal":
          raise self.error(f"{node.op!r} needs an ordered parameter; {p.name!r} is categorical",
                           node)
        lit = self.literal_for(p, y, node)
        out = ex.Compare(node.pos, node.op, lit, x) if flip else ex.Compare(node.pos, node.op,
                                                                             x, lit)
        if self.check_atoms:
          self.check_satisfiable(p, out)
        return out
    ra, ta = self.resolve(a)
    rb, tb = self.resolve(b)
    if IDX in (ta, tb):
      raise self.error("a categorical parameter can only be compared with a literal value", node)
    return ex.Compare(node.pos, node.op, ra, rb)

  def check_satisfiable(self, p: Param, node: ex.Compare):
    """Rejects a comparison that no value of ``p`` can make true (an impossible condition)."""
    if not p.is_numeric:
      return  # choices were checked by literal_for
    name_left = isinstance(node.a, ex.Name)
    c = (node.b if name_left else node.a).value
    op = node.op if name_left else {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(
        node.op, node.op)
    if p.kind in ("float", "int"):
      lo, hi = p.low, p.high
      ok = {
          "<": lo < c,
          "<=": lo <= c,
          ">": hi > c,
          ">=": hi >= c,
          "==": lo <= c <= hi and (p.kind == "float" or float(c).is_integer()),
          "!=": True,
      }[op]
      values = f"[{lo}, {hi}]"
    else:
      cmp = {"<": lambda v: v < c, "<=": lambda v: v <= c, ">": lambda v: v > c,
             ">=": lambda v: v >= c, "==": lambda v: v == c, "!=": lambda v: v != c}[op]
      ok = any(cmp(v) for v in p.choices)
      values = str(list(p.choices))
    if not ok:
      raise self.error(f"no value of {p.name!r} in {values} satisfies this comparison", node)


def resolve_condition(node: ex.Node, text: str, params: dict[str, Param],
                      where: str | None) -> ex.Node:
  return _Resolver(params, text, where, check_atoms=True).boolean(node)


def dependency_order(params: Sequence[Param], parents: dict[str, list[str]]) -> list[str]:
  """Orders parameters so that every parent comes before its children (stable), or reports a cycle.

  A depth-first walk with an explicit stack, so that a chain of thousands of
  conditions does not reach Python's recursion limit.
  """
  order: list[str] = []
  state: dict[str, int] = {}  # 1: on the current path, 2: placed
  position = {p.name: i for i, p in enumerate(params)}
  for p in params:
    if state.get(p.name) == 2:
      continue
    path = [p.name]
    todo = [iter(parents[p.name])]
    state[p.name] = 1
    while todo:
      parent = next(todo[-1], None)
      if parent is None:
        todo.pop()
        name = path.pop()
        state[name] = 2
        order.append(name)
      elif state.get(parent) == 1:
        cycle = path[path.index(parent):] + [parent]
        q = params[position[parent]]
        raise SpaceError("conditions form a cycle: " + " -> ".join(cycle),
                         _fmt_where(q.where, parent))
      elif state.get(parent) != 2:
        state[parent] = 1
        path.append(parent)
        todo.append(iter(parents[parent]))
  return order
