"""Import of ConfigSpace JSON (the format benchmarks such as YAHPO Gym ship), every condition and forbidden kind.

Names and choice values are kept as they are, so configurations sampled here
are keyed by the original parameter names with the original value types.
Distribution priors of ``normal_*`` and ``beta_*`` parameters are not kept:
they become uniform over their bounds.
"""

from __future__ import annotations

from typing import Any

from metatune.space import expr as ex
from metatune.space import model
from metatune.space import yamlio
from metatune.space.errors import SpaceError
from metatune.space.space import Space

_CMP = {"EQ": "==", "NEQ": "!=", "LT": "<", "GT": ">"}
_REL = {"RELATION_LT": "<", "RELATION_EQ": "==", "RELATION_GT": ">"}
_LEGACY_REL = {"LT": "<", "EQ": "==", "GT": ">"}


def _lit(v: Any, where: str) -> ex.Node:
  if isinstance(v, bool):
    return ex.Bool(0, v)
  if isinstance(v, int | float):
    return ex.Num(0, float(v))
  if isinstance(v, str):
    return ex.Str(0, v)
  raise SpaceError(f"unsupported literal {v!r}", where)


def _get(d: dict, key: str, where: str, what: str) -> Any:
  if key not in d:
    raise SpaceError(f"{what} has no {key!r}", where)
  return d[key]


def _param(h: dict, where: str) -> model.Param:
  name = _get(h, "name", where, "hyperparameter")
  where_p = f"{where}, hyperparameter {name!r}"
  t = _get(h, "type", where_p, "hyperparameter")
  default = h.get("default", h.get("default_value"))
  if t in ("uniform_float", "normal_float", "beta_float", "uniform_int", "normal_int",
           "beta_int"):
    if h.get("lower") is None or h.get("upper") is None:
      raise SpaceError(f"{t} without lower/upper bounds is not supported", where_p)
    make = model.Float if t.endswith("float") else model.Int
    lo, hi = h["lower"], h["upper"]
    if t.endswith("int"):
      lo, hi = int(lo), int(hi)
      default = None if default is None else int(round(default))
    return make(name, lo, hi, log=bool(h.get("log", False)), default=default, where=where)
  if t == "categorical":
    weights = h.get("weights", h.get("probabilities"))
    return model.Categorical(name, _get(h, "choices", where_p, t), weights=weights,
                             default=default, where=where)
  if t == "ordinal":
    return model.Ordinal(name, _get(h, "sequence", where_p, t), default=default, where=where)
  if t == "constant":
    return model.Categorical(name, [_get(h, "value", where_p, t)], where=where)
  raise SpaceError(f"unknown hyperparameter type {t!r} (known: uniform_float, uniform_int, "
                   "normal_float, normal_int, beta_float, beta_int, categorical, ordinal, "
                   "constant)", where_p)


def _condition(c: dict, where: str) -> ex.Node:
  t = _get(c, "type", where, "condition")
  if t in ("AND", "OR"):
    items = tuple(_condition(x, where) for x in _get(c, "conditions", where, f"{t} condition"))
    return ex.Logic(0, t.lower(), items)
  parent = ex.Name(0, _get(c, "parent", where, "condition"))
  if t in _CMP:
    return ex.Compare(0, _CMP[t], parent, _lit(_get(c, "value", where, "condition"), where))
  if t == "IN":
    values = tuple(_lit(v, where) for v in _get(c, "values", where, "IN condition"))
    return ex.Member(0, parent, values, False)
  raise SpaceError(f"unknown condition type {t!r} (known: EQ, NEQ, LT, GT, IN, AND, OR)", where)


def _forbidden(f: dict, where: str) -> ex.Node:
  t = _get(f, "type", where, "forbidden clause")
  if t == "EQUALS":
    return ex.Compare(0, "==", ex.Name(0, _get(f, "name", where, t)),
                      _lit(_get(f, "value", where, t), where))
  if t == "IN":
    values = tuple(_lit(v, where) for v in _get(f, "values", where, t))
    return ex.Member(0, ex.Name(0, _get(f, "name", where, t)), values, False)
  if t == "AND":
    return ex.Logic(0, "and", tuple(_forbidden(x, where) for x in _get(f, "clauses", where, t)))
  if t in _REL or t == "RELATION":
    op = _REL.get(t) or _LEGACY_REL.get(f.get("lambda"))
    if op is None:
      raise SpaceError(f"unknown relation {f.get('lambda')!r}", where)
    return ex.Compare(0, op, ex.Name(0, _get(f, "left", where, t)),
                      ex.Name(0, _get(f, "right", where, t)))
  raise SpaceError(f"unknown forbidden type {t!r} (known: EQUALS, IN, AND, RELATION_LT, "
                   "RELATION_EQ, RELATION_GT)", where)


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
  hps = doc.get("hyperparameters")
  if not isinstance(hps, list):
    raise SpaceError("'hyperparameters' must be a list", source)
  params = [_param(h, at("hyperparameters", i)) for i, h in enumerate(hps)]
  by_name = {p.name: i for i, p in enumerate(params)}
  conds: dict[str, ex.Node] = {}
  for i, c in enumerate(doc.get("conditions") or []):
    where = at("conditions", i)
    child = _get(c, "child", where, "condition")
    if child not in by_name:
      raise SpaceError(f"condition on unknown hyperparameter {child!r}"
                       f"{model.did_you_mean(child, by_name)}", where)
    node = _condition(c, where)
    # ConfigSpace allows one condition per child; several are joined with 'and'.
    conds[child] = ex.Logic(0, "and", (conds[child], node)) if child in conds else node
  for child, node in conds.items():
    j = by_name[child]
    params[j] = model.Param(**{**params[j].__dict__, "condition": node,
                               "condition_text": ex.unparse(node)})
  cons = [model.Constraint.forbid(_forbidden(f, at("forbiddens", i)), at("forbiddens", i))
          for i, f in enumerate(doc.get("forbiddens") or [])]
  return Space(params, cons, name=doc.get("name") or source, source=source)


def from_node(root: yamlio.Node, source: str) -> Space:
  fields = dict(root.items())
  lines = {}
  for section in ("hyperparameters", "conditions", "forbiddens"):
    if section in fields and fields[section].kind == "list":
      for i, item in enumerate(fields[section].list()):
        lines[(section, i)] = item.line
  return from_dict(root.plain(), source, lines)
