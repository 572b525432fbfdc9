"""Parameters, conditions and constraints of a tree-structured search space, checked on construction."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Iterable, Sequence

from metatune.space import expr as ex
from metatune.space.errors import SpaceError

KINDS = ("float", "int", "categorical", "bool", "ordinal")
Scalar = str | int | float | bool


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
    return when, ex.unparse(when)
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
      return cls(ex.unparse(text), text, mode, where)
    return cls(text, ex.parse(text, where), mode, where)

  def label(self) -> str:
    verb = "constraint" if self.mode == "require" else "forbidden clause"
    return f"{verb} {self.text!r}" + (f" ({self.where})" if self.where else "")


# ----------------------------------------------------------------- validation
def _is_num(x: Any) -> bool:
  return isinstance(x, int | float) and not isinstance(x, bool)


def check_param(p: Param) -> Param:
  """Checks one parameter's own settings and fills in its default."""
  where = _fmt_where(p.where, p.name if isinstance(p.name, str) else None)
  if not isinstance(p.name, str) or not p.name.strip():
    raise SpaceError(f"a parameter name must be a non-empty string, got {p.name!r}", p.where)
  if p.kind not in KINDS:
    raise SpaceError(f"unknown kind {p.kind!r}; expected one of {', '.join(KINDS)}", where)
  default = p.default
  if p.kind in ("float", "int"):
    for label, v in (("low", p.low), ("high", p.high)):
      if not _is_num(v) or not math.isfinite(v):
        raise SpaceError(f"{label} must be a finite number, got {v!r}", where)
      if p.kind == "int" and float(v) != int(v):
        raise SpaceError(f"{label} of an int parameter must be a whole number, got {v!r}", where)
    if p.low >= p.high:
      raise SpaceError(f"low ({p.low}) must be less than high ({p.high})", where)
    if p.log and p.low <= 0:
      raise SpaceError(f"a log-scaled parameter needs low > 0, got low={p.low}", where)
    if p.kind == "int":
      p = dataclasses.replace(p, low=int(p.low), high=int(p.high))
    if default is None:
      mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
      default = round(mid) if p.kind == "int" else mid
    if not _is_num(default) or not p.low <= default <= p.high:
      raise SpaceError(f"default {default!r} is outside [{p.low}, {p.high}]", where)
    if p.kind == "int" and float(default) != int(default):
      raise SpaceError(f"default {default!r} of an int parameter must be a whole number", where)
    default = int(default) if p.kind == "int" else float(default)
  else:
    if p.log:
      raise SpaceError(f"log scale applies only to float and int, not {p.kind}", where)
    if not p.choices:
      raise SpaceError("choices must not be empty", where)
    for c in p.choices:
      if not isinstance(c, str | int | float | bool):
        raise SpaceError(f"choice {c!r} is not a string, number or bool", where)
    seen = set()
    for c in p.choices:
      key = (type(c) is bool, c)
      if key in seen:
        raise SpaceError(f"choice {c!r} appears twice", where)
      seen.add(key)
    if p.weights is not None:
      if len(p.weights) != len(p.choices):
        raise SpaceError(f"{len(p.weights)} weights for {len(p.choices)} choices", where)
      # A zero weight would give its choice an empty bin of the unit encoding.
      if any(not _is_num(w) or w <= 0 or not math.isfinite(w) for w in p.weights):
        raise SpaceError(f"weights must be finite and positive (remove a choice that should "
                         f"never be sampled): {list(p.weights)}", where)
    if default is None:
      default = p.choices[0]
    if choice_index(p, default) is None:
      raise SpaceError(f"default {default!r} is not one of {list(p.choices)}", where)
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
  """Orders parameters so that every parent comes before its children (stable), or reports a cycle."""
  order: list[str] = []
  state: dict[str, int] = {}
  position = {p.name: i for i, p in enumerate(params)}

  def visit(name: str, stack: list[str]):
    if state.get(name) == 2:
      return
    if state.get(name) == 1:
      cycle = stack[stack.index(name):] + [name]
      p = params[position[name]]
      raise SpaceError("conditions form a cycle: " + " -> ".join(cycle),
                       _fmt_where(p.where, name))
    state[name] = 1
    for parent in parents[name]:
      visit(parent, stack + [name])
    state[name] = 2
    order.append(name)

  for p in params:
    visit(p.name, [])
  return order
