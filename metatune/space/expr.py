"""A small, safe expression language for conditions and constraints (parsed, never eval'd).

Grammar (lowest precedence first)::

  expr    := and ('or' and)*
  and     := not ('and' not)*
  not     := 'not' not | compare
  compare := arith [('<'|'<='|'>'|'>='|'=='|'!=') arith | ['not'] 'in' '[' lit (',' lit)* ']']
  arith   := term (('+'|'-') term)*
  term    := unary (('*'|'/') unary)*
  unary   := ('-'|'+') unary | power
  power   := atom ['**' unary]
  atom    := NUMBER | STRING | 'true' | 'false' | NAME | FUNC '(' expr (',' expr)* ')' | '(' expr ')'

Names are dotted paths (``width.l1``) or any text in backticks (```odd name```).
Functions: ``log exp sqrt abs min max`` on numbers, ``active(name)`` and
``active_or(name, value)`` for conditional parameters.

Limits keep every later walk of the tree (type resolution, lowering, the
reference evaluator) far from Python's recursion limit: an expression holds at
most `MAX_LENGTH` characters and its tree is at most `MAX_DEPTH` levels deep
(parentheses, signs, ``not``, and each operator of a chain ``a + b + c`` count).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from metatune.space.errors import SpaceError

COMPARE_OPS = ("<=", ">=", "==", "!=", "<", ">")
NUMERIC_FUNCS = {"log": 1, "exp": 1, "sqrt": 1, "abs": 1, "min": 2, "max": 2}
SPECIAL_FUNCS = {"active": 1, "active_or": 2}
KEYWORDS = {"and", "or", "not", "in", "true", "false", "True", "False"}
MAX_LENGTH = 10_000
MAX_DEPTH = 100
# The recursive-descent parser spends about nine Python frames per level of
# parentheses, so its own nesting has a lower limit than the tree's depth.
_MAX_PARSE_NESTING = 50

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'[^']*'|"[^"]*")
  | (?P<quoted>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<op>\*\*|<=|>=|==|!=|&&|\|\||[-+*/<>(),\[\]!])
  """,
    re.VERBOSE,
)


# --------------------------------------------------------------------------- AST
@dataclasses.dataclass(frozen=True)
class Node:
  pos: int


@dataclasses.dataclass(frozen=True)
class Num(Node):
  value: float


@dataclasses.dataclass(frozen=True)
class Str(Node):
  value: str


@dataclasses.dataclass(frozen=True)
class Bool(Node):
  value: bool


@dataclasses.dataclass(frozen=True)
class Name(Node):
  name: str


@dataclasses.dataclass(frozen=True)
class Neg(Node):
  x: Node


@dataclasses.dataclass(frozen=True)
class Arith(Node):
  op: str  # one of + - * / **
  a: Node
  b: Node


@dataclasses.dataclass(frozen=True)
class Compare(Node):
  op: str  # one of COMPARE_OPS
  a: Node
  b: Node


@dataclasses.dataclass(frozen=True)
class Member(Node):
  x: Node
  values: tuple[Node, ...]
  negate: bool


@dataclasses.dataclass(frozen=True)
class Logic(Node):
  op: str  # and / or
  items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not(Node):
  x: Node


@dataclasses.dataclass(frozen=True)
class Call(Node):
  fn: str
  args: tuple[Node, ...]


# ------------------------------------------------------------------------ parser
def _caret(text: str, pos: int, width: int = 100) -> str:
  """The text (a window of it around ``pos`` when long) with a caret under ``pos``."""
  start = max(0, min(pos - width // 2, len(text) - width))
  shown = text[start:start + width].replace("\n", " ").replace("\t", " ")
  left = "..." if start > 0 else ""
  right = "..." if start + width < len(text) else ""
  return f"\n    {left}{shown}{right}\n    {' ' * (len(left) + pos - start)}^"


class ExprError(SpaceError):
  """A parse or type error inside an expression, pointing at the column."""

  def __init__(self, problem: str, text: str, pos: int, where: str | None = None):
    self.text = text
    self.pos = pos
    super().__init__(f"{problem} at column {pos + 1}{_caret(text, pos)}", where)


def _tokenize(text: str, where: str | None):
  tokens = []
  pos = 0
  while pos < len(text):
    m = _TOKEN_RE.match(text, pos)
    if m is None:
      raise ExprError(f"unexpected character {text[pos]!r}", text, pos, where)
    kind = m.lastgroup
    tok = m.group()
    if kind == "op":
      tok = {"&&": "and", "||": "or", "!": "not"}.get(tok, tok)
      kind = "name" if tok in ("and", "or", "not") else "op"
    if kind == "quoted":
      kind, tok = "qname", tok[1:-1]
    if kind != "ws":
      tokens.append((kind, tok, pos))
    pos = m.end()
  tokens.append(("end", "", len(text)))
  return tokens


class _Parser:

  def __init__(self, text: str, where: str | None):
    self.text = text
    self.where = where
    self.tokens = _tokenize(text, where)
    self.i = 0
    self.nesting = 0

  def enter(self, pos: int):
    self.nesting += 1
    if self.nesting > _MAX_PARSE_NESTING:
      raise self.error(f"the expression is nested more than {_MAX_PARSE_NESTING} levels deep "
                       f"(parentheses, signs, 'not', '**'); simplify it", pos)

  def error(self, problem: str, pos: int | None = None):
    if pos is None:
      pos = self.peek()[2]
    return ExprError(problem, self.text, pos, self.where)

  def peek(self):
    return self.tokens[self.i]

  def take(self):
    tok = self.tokens[self.i]
    self.i += 1
    return tok

  def accept(self, tok: str) -> bool:
    kind, value, _ = self.peek()
    if kind in ("op", "name") and value == tok:
      self.i += 1
      return True
    return False

  def expect(self, tok: str):
    if not self.accept(tok):
      kind, value, pos = self.peek()
      found = "end of expression" if kind == "end" else repr(value)
      raise self.error(f"expected {tok!r} but found {found}", pos)

  def parse(self) -> Node:
    if self.peek()[0] == "end":
      raise self.error("empty expression")
    node = self.or_()
    kind, value, pos = self.peek()
    if kind != "end":
      raise self.error(f"unexpected {value!r}", pos)
    return node

  def or_(self) -> Node:
    pos = self.peek()[2]
    items = [self.and_()]
    while self.accept("or"):
      items.append(self.and_())
    return items[0] if len(items) == 1 else Logic(pos, "or", tuple(items))

  def and_(self) -> Node:
    pos = self.peek()[2]
    items = [self.not_()]
    while self.accept("and"):
      items.append(self.not_())
    return items[0] if len(items) == 1 else Logic(pos, "and", tuple(items))

  def not_(self) -> Node:
    pos = self.peek()[2]
    if self.accept("not"):
      self.enter(pos)
      node = Not(pos, self.not_())
      self.nesting -= 1
      return node
    return self.compare()

  def compare(self) -> Node:
    pos = self.peek()[2]
    a = self.arith()
    kind, value, op_pos = self.peek()
    if kind == "op" and value in COMPARE_OPS:
      self.take()
      node = Compare(op_pos, value, a, self.arith())
    elif self.accept("in"):
      node = Member(op_pos, a, self.literal_list(), False)
    elif kind == "name" and value == "not" and self.tokens[self.i + 1][1] == "in":
      self.i += 2
      node = Member(op_pos, a, self.literal_list(), True)
    else:
      return a
    kind, value, pos2 = self.peek()
    if kind == "op" and value in COMPARE_OPS:
      raise self.error("chained comparisons are not supported; join them with 'and'", pos2)
    del pos
    return node

  def literal_list(self) -> tuple[Node, ...]:
    self.expect("[")
    items = []
    if not self.accept("]"):
      while True:
        node = self.unary()
        if not isinstance(node, (Num, Str, Bool)) and not (
            isinstance(node, Neg) and isinstance(node.x, Num)):
          raise self.error("a list after 'in' may hold only literal values", node.pos)
        items.append(Num(node.pos, -node.x.value) if isinstance(node, Neg) else node)
        if self.accept("]"):
          break
        self.expect(",")
    if not items:
      raise self.error("empty list after 'in'")
    return tuple(items)

  def arith(self) -> Node:
    node = self.term()
    while True:
      kind, value, pos = self.peek()
      if kind == "op" and value in ("+", "-"):
        self.take()
        node = Arith(pos, value, node, self.term())
      else:
        return node

  def term(self) -> Node:
    node = self.unary()
    while True:
      kind, value, pos = self.peek()
      if kind == "op" and value in ("*", "/"):
        self.take()
        node = Arith(pos, value, node, self.unary())
      else:
        return node

  def unary(self) -> Node:
    kind, value, pos = self.peek()
    self.enter(pos)
    if kind == "op" and value in ("-", "+"):
      self.take()
      x = self.unary()
      node = Neg(pos, x) if value == "-" else x
    else:
      node = self.power()
    self.nesting -= 1
    return node

  def power(self) -> Node:
    node = self.atom()
    kind, value, pos = self.peek()
    if kind == "op" and value == "**":
      self.take()
      node = Arith(pos, "**", node, self.unary())
    return node

  def atom(self) -> Node:
    kind, value, pos = self.take()
    if kind == "num":
      return Num(pos, float(value))
    if kind == "str":
      return Str(pos, value[1:-1])
    if kind == "qname":
      return Name(pos, value)
    if kind == "name":
      if value in ("true", "True"):
        return Bool(pos, True)
      if value in ("false", "False"):
        return Bool(pos, False)
      if value in KEYWORDS:
        raise self.error(f"unexpected keyword {value!r}", pos)
      if self.peek()[1] == "(" and self.peek()[0] == "op":
        return self.call(value, pos)
      return Name(pos, value)
    if kind == "op" and value == "(":
      node = self.or_()
      self.expect(")")
      return node
    if kind == "end":
      raise self.error("unexpected end of expression", pos)
    raise self.error(f"unexpected {value!r}", pos)

  def call(self, fn: str, pos: int) -> Node:
    arity = {**NUMERIC_FUNCS, **SPECIAL_FUNCS}.get(fn)
    if arity is None:
      known = ", ".join(sorted({**NUMERIC_FUNCS, **SPECIAL_FUNCS}))
      raise self.error(f"unknown function {fn!r} (known: {known})", pos)
    self.expect("(")
    args = [self.or_()]
    while self.accept(","):
      args.append(self.or_())
    self.expect(")")
    if len(args) != arity:
      raise self.error(f"{fn}() takes {arity} argument(s), got {len(args)}", pos)
    if fn in SPECIAL_FUNCS and not isinstance(args[0], Name):
      raise self.error(f"the first argument of {fn}() must be a parameter name", args[0].pos)
    return Call(pos, fn, tuple(args))


def parse(text: str, where: str | None = None) -> Node:
  """Parses an expression.

  Args:
    text: the expression, e.g. ``"batch_size * width.l1 <= 1048576"``.
    where: where the text came from, for error messages.

  Returns:
    The root node of the syntax tree.

  Raises:
    ExprError: with the column of the problem and a caret under it.

  Example:
    >>> parse("a + 1 > 2").op
    '>'
  """
  if not isinstance(text, str):
    shown = repr(text)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise SpaceError(f"an expression must be a string, got {type(text).__name__} {shown}",
                     where)
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise SpaceError(f"the expression holds {text[e.start]!r} at column {e.start + 1}, a lone "
                     f"surrogate that is not text", where) from None
  if len(text) > MAX_LENGTH:
    raise SpaceError(f"the expression is {len(text)} characters long, more than the limit of "
                     f"{MAX_LENGTH}; split it into several constraints", where)
  node = _Parser(text, where).parse()
  check_depth(node, text, where)
  return node


def check_depth(node: Node, text: str, where: str | None = None) -> None:
  """Refuses a tree deeper than `MAX_DEPTH` (walked without recursion).

  Raises:
    ExprError: at the column of the first node past the limit.
  """
  stack = [(node, 1)]
  while stack:
    n, depth = stack.pop()
    if depth > MAX_DEPTH:
      raise ExprError(f"the expression is more than {MAX_DEPTH} levels deep (parentheses, "
                      f"signs, 'not', or a chain of more than {MAX_DEPTH} terms joined by "
                      f"+ - * /); split it into several constraints or simplify it",
                      text, min(n.pos, max(len(text) - 1, 0)), where)
    stack.extend((c, depth + 1) for c in children(n))


# --------------------------------------------------------------------- utilities
def children(node: Node) -> tuple[Node, ...]:
  if isinstance(node, (Neg, Not)):
    return (node.x,)
  if isinstance(node, (Arith, Compare)):
    return (node.a, node.b)
  if isinstance(node, Member):
    return (node.x,) + node.values
  if isinstance(node, (Logic,)):
    return node.items
  if isinstance(node, Call):
    return node.args
  return ()


def names(node: Node, guarded: bool = True) -> list[str]:
  """Parameter names an expression reads, in order of appearance.

  Args:
    node: the expression.
    guarded: include names that appear only inside ``active()`` or as the
      first argument of ``active_or()`` (whose inactivity is handled).
  """
  out: list[str] = []

  def walk(n: Node):
    if isinstance(n, Name):
      if n.name not in out:
        out.append(n.name)
      return
    if isinstance(n, Call) and n.fn in SPECIAL_FUNCS:
      if guarded and n.args[0].name not in out:
        out.append(n.args[0].name)
      for a in n.args[1:]:
        walk(a)
      return
    for c in children(n):
      walk(c)

  walk(node)
  return out


def unparse(node: Node) -> str:
  """Writes an expression back as text that ``parse`` reads to the same tree."""

  def name(n: str) -> str:
    return n if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", n) and (
        n not in KEYWORDS) else f"`{n}`"

  def lit(v: Any) -> str:
    if isinstance(v, bool):
      return "true" if v else "false"
    if isinstance(v, str):
      return repr(v) if "'" not in v else f'"{v}"'
    return repr(float(v))

  if isinstance(node, Num):
    return lit(node.value) if node.value >= 0 else f"({lit(node.value)})"
  if isinstance(node, Str):
    return lit(node.value)
  if isinstance(node, Bool):
    return lit(node.value)
  if isinstance(node, Name):
    return name(node.name)
  if isinstance(node, Neg):
    return f"(-{unparse(node.x)})"
  if isinstance(node, Arith):
    return f"({unparse(node.a)} {node.op} {unparse(node.b)})"
  if isinstance(node, Compare):
    return f"({unparse(node.a)} {node.op} {unparse(node.b)})"
  if isinstance(node, Member):
    vals = ", ".join(unparse(v) for v in node.values)
    return f"({unparse(node.x)} {'not in' if node.negate else 'in'} [{vals}])"
  if isinstance(node, Logic):
    return "(" + f" {node.op} ".join(unparse(i) for i in node.items) + ")"
  if isinstance(node, Not):
    return f"(not {unparse(node.x)})"
  if isinstance(node, Call):
    return f"{node.fn}(" + ", ".join(unparse(a) for a in node.args) + ")"
  raise TypeError(node)
