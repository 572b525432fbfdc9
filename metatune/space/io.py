"""Reading and writing spaces: strict metatune YAML/JSON, and ConfigSpace JSON import.

metatune YAML::

  name: mlp
  parameters:
    optimizer: {type: categorical, choices: [sgd, adam]}
    lr: {type: float, low: 1e-5, high: 1.0, log: true}
    optimizer.sgd:                      # a block: its parameters share its condition
      when: "optimizer == 'sgd'"
      parameters:
        momentum: {type: float, low: 0.0, high: 0.99}
        nesterov: {type: bool, when: "optimizer.sgd.momentum > 0.5"}
  constraints: ["batch_size * width.l1 <= 1048576"]   # must hold
  forbidden: ["optimizer == 'sgd' and lr > 0.3"]        # must not hold
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from metatune.space import model
from metatune.space import yamlio
from metatune.space.errors import SpaceError

if TYPE_CHECKING:
  from metatune.space.space import Space

# beliefs: user beliefs for the tuners that read them (metatune.space.beliefs), not the space.
TOP_KEYS = {"name", "description", "parameters", "constraints", "forbidden", "beliefs"}
PARAM_KEYS = {"type", "low", "high", "log", "default", "choices", "values", "weights", "when",
              "description"}
BLOCK_KEYS = {"when", "parameters", "description"}
TYPE_ALIASES = {
    "float": "float", "real": "float", "int": "int", "integer": "int",
    "categorical": "categorical", "choice": "categorical", "bool": "bool", "boolean": "bool",
    "ordinal": "ordinal",
}
ALLOWED = {
    "float": {"type", "low", "high", "log", "default", "when", "description"},
    "int": {"type", "low", "high", "log", "default", "when", "description"},
    "categorical": {"type", "choices", "weights", "default", "when", "description"},
    "bool": {"type", "default", "when", "description"},
    "ordinal": {"type", "values", "choices", "default", "when", "description"},
}


def _unknown(key: str, allowed: set[str], node: yamlio.Node, what: str) -> SpaceError:
  return node.error(f"unknown key {key!r} in {what}{model.did_you_mean(key, allowed)}; "
                    f"allowed: {', '.join(sorted(allowed))}")


def _number(node: yamlio.Node, key: str, name: str) -> float | int:
  v = node.scalar()
  if isinstance(v, str):  # e.g. "1e-5" quoted: accept what parses as a number
    try:
      v = float(v)
    except ValueError:
      raise node.error(f"parameter {name!r}: {key} must be a number, got {v!r}") from None
  if isinstance(v, bool) or not isinstance(v, int | float):
    raise node.error(f"parameter {name!r}: {key} must be a number, got {v!r}")
  return v


def _bool(node: yamlio.Node, key: str, name: str) -> bool:
  v = node.scalar()
  if not isinstance(v, bool):
    raise node.error(f"parameter {name!r}: {key} must be true or false, got {v!r}")
  return v


def _text(node: yamlio.Node, key: str, name: str) -> str:
  v = node.scalar()
  if not isinstance(v, str):
    raise node.error(f"{name}: {key} must be a string expression, got {v!r}")
  return v


def _choices(node: yamlio.Node, key: str, name: str) -> list[Any]:
  out = []
  for item in node.list():
    v = item.scalar()
    if v is None or not isinstance(v, str | int | float | bool):
      raise item.error(f"parameter {name!r}: {key} must hold strings, numbers or bools, "
                       f"got {v!r}")
    out.append(v)
  if not out:
    raise node.error(f"parameter {name!r}: {key} must not be empty")
  return out


def _and(block: str | None, own: str | None) -> str | None:
  if block and own:
    return f"({block}) and ({own})"
  return block or own


def _param(name: str, node: yamlio.Node, block_when: str | None) -> model.Param:
  fields = dict(node.items())
  if "type" not in fields:
    raise node.error(f"parameter {name!r} has no 'type' (and no 'parameters', so it is not a "
                     f"block either); types: {', '.join(model.KINDS)}")
  tname = fields["type"].scalar()
  kind = TYPE_ALIASES.get(str(tname).lower()) if isinstance(tname, str) else None
  if kind is None:
    raise fields["type"].error(f"parameter {name!r}: unknown type {tname!r}; expected one of "
                               f"{', '.join(model.KINDS)}")
  for key, v in fields.items():
    if key not in ALLOWED[kind]:
      raise _unknown(key, ALLOWED[kind], v, f"{kind} parameter {name!r}")
  where = node.where
  when = _and(block_when, _text(fields["when"], "when", f"parameter {name!r}")
              if "when" in fields else None)
  default = fields["default"].scalar() if "default" in fields else None
  if kind in ("float", "int"):
    for key in ("low", "high"):
      if key not in fields:
        raise node.error(f"parameter {name!r}: {kind} needs '{key}'")
    low, high = (_number(fields[k], k, name) for k in ("low", "high"))
    log = _bool(fields["log"], "log", name) if "log" in fields else False
    if default is not None:
      default = _number(fields["default"], "default", name)
    make = model.Float if kind == "float" else model.Int
    return make(name, low, high, log=log, default=default, when=when, where=where)
  if kind == "categorical":
    if "choices" not in fields:
      raise node.error(f"parameter {name!r}: categorical needs 'choices'")
    weights = None
    if "weights" in fields:
      weights = [_number(w, "weights", name) for w in fields["weights"].list()]
    return model.Categorical(name, _choices(fields["choices"], "choices", name), weights=weights,
                             default=default, when=when, where=where)
  if kind == "bool":
    if default is not None and not isinstance(default, bool):
      raise fields["default"].error(f"parameter {name!r}: default must be true or false")
    return model.Bool(name, default=default, when=when, where=where)
  key = "values" if "values" in fields else "choices"
  if key not in fields:
    raise node.error(f"parameter {name!r}: ordinal needs 'values'")
  return model.Ordinal(name, _choices(fields[key], key, name), default=default, when=when,
                       where=where)


def _params(node: yamlio.Node, prefix: str, block_when: str | None, out: list[model.Param]):
  for key, value in node.items():
    name = f"{prefix}{key}"
    if value.kind != "mapping":
      raise value.error(f"parameter {name!r} must be a mapping with a 'type' (or a block with "
                        f"'parameters')")
    fields = dict(value.items())
    if "parameters" in fields and "type" not in fields:
      for k, v in fields.items():
        if k not in BLOCK_KEYS:
          raise _unknown(k, BLOCK_KEYS, v, f"block {name!r}")
      when = _and(block_when, _text(fields["when"], "when", f"block {name!r}")
                  if "when" in fields else None)
      _params(fields["parameters"], name + ".", when, out)
    else:
      out.append(_param(name, value, block_when))


def space_from_node(root: yamlio.Node, source: str) -> Space:
  """Builds a `Space` from a parsed metatune YAML/JSON document."""
  fields = dict(root.items())
  for k, v in fields.items():
    if k not in TOP_KEYS:
      raise _unknown(k, TOP_KEYS, v, "the space")
  if "parameters" not in fields:
    raise root.error("a space needs 'parameters'")
  params: list[model.Param] = []
  _params(fields["parameters"], "", None, params)
  cons = []
  for key, mode in (("constraints", "require"), ("forbidden", "forbid")):
    if key in fields:
      for i, item in enumerate(fields[key].list()):
        text = _text(item, f"{key}[{i}]", "the space")
        cons.append(model.Constraint._make(text, mode, f"{item.where}, {key}[{i}]"))
  name = fields["name"].scalar() if "name" in fields else os.path.splitext(
      os.path.basename(source))[0]
  from metatune.space.space import Space  # pylint: disable=import-outside-toplevel
  return Space(params, cons, name=str(name), source=source)


def loads(text: str, source: str = "<string>") -> Space:
  """Reads a space from YAML or JSON text (metatune format, or ConfigSpace JSON)."""
  root = yamlio.load(text, source)
  if root.kind == "mapping" and "hyperparameters" in dict(root.items()):
    from metatune.space import configspace  # pylint: disable=import-outside-toplevel
    return configspace.from_node(root, source)
  return space_from_node(root, source)


def load(path: str | os.PathLike) -> Space:
  """Reads a space file: metatune ``.yaml``/``.yml``/``.json`` or ConfigSpace ``.json``.

  Raises:
    SpaceError: naming the file, the line and the problem.
  """
  path = os.fspath(path)
  return loads(yamlio.read_text(path, "space file"), path)


def to_dict(space: Space) -> dict[str, Any]:
  """A space as a metatune document (flat dotted names); `loads` reads it back."""
  params = {}
  for p, cond in zip(space.params, space.conditions):
    d: dict[str, Any] = {"type": p.kind}
    if p.kind in ("float", "int"):
      d.update(low=p.low, high=p.high, log=p.log)
    elif p.kind == "categorical":
      d["choices"] = list(p.choices)
      if p.weights:
        d["weights"] = list(p.weights)
    elif p.kind == "ordinal":
      d["values"] = list(p.choices)
    d["default"] = p.default
    if cond is not None:
      d["when"] = p.condition_text
    params[p.name] = d
  doc: dict[str, Any] = {"name": space.name, "parameters": params}
  req = [c.text for c in space.constraints if c.mode == "require"]
  forb = [c.text for c in space.constraints if c.mode == "forbid"]
  if req:
    doc["constraints"] = req
  if forb:
    doc["forbidden"] = forb
  return doc


def dumps(space: Space) -> str:
  return json.dumps(to_dict(space), indent=2)

