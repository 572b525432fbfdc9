"""Import of ConfigSpace JSON (the format benchmarks such as YAHPO Gym ship), every condition and forbidden kind.

Names and choice values are kept as they are, so configurations sampled here
are keyed by the original parameter names with the original value types.
Distribution priors of ``normal_*`` and ``beta_*`` parameters are not kept:
they become uniform over their bounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metatune.space import expr as ex
from metatune.space import model
from metatune.space import yamlio
from metatune.space.errors import SpaceError

if TYPE_CHECKING:
  from metatune.space.space import Space

_CMP = {"EQ": "==", "NEQ": "!=", "LT": "<", "GT": ">"}
_REL = {"RELATION_LT": "<", "RELATION_EQ": "==", "RELATION_GT": ">"}
_LEGACY_REL = {"LT": "<", "EQ": "==", "GT": ">"}
_NUMERIC = ("uniform_float", "normal_float", "beta_float", "uniform_int", "normal_int", "beta_int")
_TYPES = _NUMERIC + ("categorical", "ordinal", "constant")


def _lit(v: Any, where: str, what: str) -> ex.Node:
  if isinstance(v, bool):
    return ex.Bool(0, v)
  if isinstance(v, int | float):
    return ex.Num(0, float(v))
  if isinstance(v, str):
    return ex.Str(0, v)
  raise SpaceError(f"{what}: expected a string, number or bool, got {model.short(v)}", where)


def _get(d: dict, key: str, where: str, what: str, kind: type | tuple[type, ...] | None = None,
         kind_name: str = "") -> Any:
  """``d[key]``, or a SpaceError saying that ``what`` lacks it or that it has the wrong type."""
  if key not in d:
    raise SpaceError(f"{what} has no {key!r}", where)
  v = d[key]
  if kind is not None and (not isinstance(v, kind) or isinstance(v, bool) and bool not in (
      kind if isinstance(kind, tuple) else (kind,))):
    raise SpaceError(f"{what}: {key!r} must be {kind_name}, got {model.short(v)}", where)
  return v


def _mapping(v: Any, where: str, what: str) -> dict:
  if not isinstance(v, dict):
    raise SpaceError(f"{what} must be a JSON object, got {model.short(v)}", where)
  return v


def _list(d: dict, key: str, where: str, what: str) -> list:
  v = _get(d, key, where, what, list, "a list")
  if not v:
    raise SpaceError(f"{what}: {key!r} must not be empty", where)
  return v


def _name(d: dict, key: str, where: str, what: str, known: dict[str, int]) -> str:
  name = _get(d, key, where, what, str, "a parameter name (a string)")
  if name not in known:
    raise SpaceError(f"{what} names unknown hyperparameter {name!r}"
                     f"{model.did_you_mean(name, known)}", where)
  return name


def _param(h: Any, where: str) -> model.Param:
  h = _mapping(h, where, "a hyperparameter")
  name = _get(h, "name", where, "hyperparameter", str, "a string")
  where_p = f"{where}, hyperparameter {name!r}"
  t = _get(h, "type", where_p, "hyperparameter", str, "a string")
  default = h.get("default", h.get("default_value"))
  if t in _NUMERIC:
    if h.get("lower") is None or h.get("upper") is None:
      raise SpaceError(f"{t} without lower/upper bounds is not supported", where_p)
    lo = _get(h, "lower", where_p, t, int | float, "a number")
    hi = _get(h, "upper", where_p, t, int | float, "a number")
    log = h.get("log", False)
    if not isinstance(log, bool):
      raise SpaceError(f"{t}: 'log' must be true or false, got {model.short(log)}", where_p)
    make = model.Float if t.endswith("float") else model.Int
    if t.endswith("int") and isinstance(default, float) and default.is_integer():
      default = int(default)
    return make(name, lo, hi, log=log, default=default, where=where)
  if t == "categorical":
    weights = h.get("weights", h.get("probabilities"))
    if weights is not None and not isinstance(weights, list):
      raise SpaceError(f"categorical: 'weights' must be a list of numbers, got "
                       f"{model.short(weights)}", where_p)
    choices = _get(h, "choices", where_p, t, list, "a list")
    return model.Categorical(name, choices, weights=weights, default=default, where=where)
  if t == "ordinal":
    sequence = _get(h, "sequence", where_p, t, list, "a list")
    return model.Ordinal(name, sequence, default=default, where=where)
  if t == "constant":
    value = _get(h, "value", where_p, t)
    _lit(value, where_p, "constant 'value'")
    return model.Categorical(name, [value], where=where)
  raise SpaceError(f"unknown hyperparameter type {t!r} (known: {', '.join(_TYPES)})", where_p)


def _condition(c: Any, where: str, known: dict[str, int]) -> ex.Node:
  c = _mapping(c, where, "a condition")
  t = _get(c, "type", where, "condition", str, "a string")
  if t in ("AND", "OR"):
    items = tuple(_condition(x, where, known) for x in _list(c, "conditions", where,
                                                             f"{t} condition"))
    return ex.Logic(0, t.lower(), items)
  if t not in _CMP and t != "IN":
    raise SpaceError(f"unknown condition type {t!r} (known: EQ, NEQ, LT, GT, IN, AND, OR)",
                     where)
  parent = ex.Name(0, _name(c, "parent", where, f"{t} condition", known))
  if t in _CMP:
    value = _get(c, "value", where, f"{t} condition")
    return ex.Compare(0, _CMP[t], parent, _lit(value, where, f"{t} condition 'value'"))
  values = tuple(_lit(v, where, "IN condition 'values'")
                 for v in _list(c, "values", where, "IN condition"))
  return ex.Member(0, parent, values, False)


def _forbidden(f: Any, where: str, known: dict[str, int]) -> ex.Node:
  f = _mapping(f, where, "a forbidden clause")
  t = _get(f, "type", where, "forbidden clause", str, "a string")
  if t == "EQUALS":
    return ex.Compare(0, "==", ex.Name(0, _name(f, "name", where, t, known)),
                      _lit(_get(f, "value", where, t), where, "EQUALS 'value'"))
  if t == "IN":
    name = ex.Name(0, _name(f, "name", where, t, known))
    values = tuple(_lit(v, where, "IN 'values'") for v in _list(f, "values", where, t))
    return ex.Member(0, name, values, False)
  if t == "AND":
    return ex.Logic(0, "and", tuple(_forbidden(x, where, known)
                                    for x in _list(f, "clauses", where, t)))
  if t in _REL or t == "RELATION":
    op = _REL.get(t) or _LEGACY_REL.get(f.get("lambda"))
    if op is None:
      raise SpaceError(f"unknown relation {model.short(f.get('lambda'))} (known: LT, EQ, GT)",
                       where)
    return ex.Compare(0, op, ex.Name(0, _name(f, "left", where, t, known)),
                      ex.Name(0, _name(f, "right", where, t, known)))
  raise SpaceError(f"unknown forbidden type {t!r} (known: EQUALS, IN, AND, RELATION_LT, "
                   "RELATION_EQ, RELATION_GT)", where)


def _section(doc: dict, key: str, source: str, lines: dict) -> list:
  items = doc.get(key)
  if items is None:
    return []
  if not isinstance(items, list):
    where = f"{source}:{lines[(key, None)]}" if (key, None) in lines else source
    raise SpaceError(f"{key!r} must be a list, got {model.short(items)}", where)
  return items


def from_dict(doc: dict, source: str = "<configspace>", lines: dict | None = None) -> Space:
  """Builds a `Space` from a ConfigSpace JSON document (already parsed).

  Args:
    doc: the JSON object with ``hyperparameters``, ``conditions``, ``forbiddens``.
    source: file name for messages.
    lines: optional ``(section, index) -> line`` for messages.

  Raises:
    SpaceError: naming the file, line and item.
  """
  lines = lines or {}
  at = lambda section, i: f"{source}:{lines[(section, i)]}" if (section, i) in lines else (
      f"{source}, {section}[{i}]")
  _mapping(doc, source, "a ConfigSpace document")
  hps = _section(doc, "hyperparameters", source, lines)
  params = [_param(h, at("hyperparameters", i)) for i, h in enumerate(hps)]
  by_name = {p.name: i for i, p in enumerate(params)}
  conds: dict[str, list[ex.Node]] = {}
  for i, c in enumerate(_section(doc, "conditions", source, lines)):
    where = at("conditions", i)
    c = _mapping(c, where, "a condition")
    child = _get(c, "child", where, "condition", str, "a parameter name (a string)")
    if child not in by_name:
      raise SpaceError(f"condition on unknown hyperparameter {child!r}"
                       f"{model.did_you_mean(child, by_name)}", where)
    conds.setdefault(child, []).append(_condition(c, where, by_name))
  for child, nodes in conds.items():
    # ConfigSpace allows one condition per child; several are joined with 'and'
    # (in one flat clause, so that many of them do not nest deeply).
    node = nodes[0] if len(nodes) == 1 else ex.Logic(0, "and", tuple(nodes))
    j = by_name[child]
    params[j] = model.Param(**{**params[j].__dict__, "condition": node,
                               "condition_text": ex.unparse(node)})
  cons = [model.Constraint.forbid(_forbidden(f, at("forbiddens", i), by_name),
                                  at("forbiddens", i))
          for i, f in enumerate(_section(doc, "forbiddens", source, lines))]
  name = doc.get("name")
  from metatune.space.space import Space  # pylint: disable=import-outside-toplevel
  return Space(params, cons, name=name if isinstance(name, str) and name else source,
               source=source)


def from_node(root: yamlio.Node, source: str) -> Space:
  fields = dict(root.items())
  lines = {}
  for section in ("hyperparameters", "conditions", "forbiddens"):
    if section in fields:
      lines[(section, None)] = fields[section].line
    if section in fields and fields[section].kind == "list":
      for i, item in enumerate(fields[section].list()):
        lines[(section, i)] = item.line
  return from_dict(root.plain(), source, lines)
