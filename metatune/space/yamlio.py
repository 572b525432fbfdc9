"""A strict YAML reader that keeps line numbers and reads scalars the YAML 1.2 way.

PyYAML follows YAML 1.1: ``1e-5`` becomes a string and ``yes``/``no``/``on``/``off``
become booleans. Here only ``true``/``false`` are booleans and any float
literal (``1e-5``, ``.5``) is a float, so a categorical choice ``no`` stays a string.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import yaml

from metatune.space.errors import SpaceError


class _Loader(yaml.SafeLoader):
  pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:bool",
                                                    "tag:yaml.org,2002:float")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:\d+\.\d*|\.\d+|\d+)[eE][-+]?\d+
                  |[-+]?(?:\d+\.\d*|\.\d+)
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


class Node:
  """A YAML node with its file and line, for error messages."""

  def __init__(self, node: yaml.Node, source: str, loader: _Loader):
    self._node = node
    self.source = source
    self._loader = loader

  @property
  def line(self) -> int:
    return self._node.start_mark.line + 1

  @property
  def where(self) -> str:
    return f"{self.source}:{self.line}"

  def error(self, problem: str) -> SpaceError:
    return SpaceError(problem, self.where)

  @property
  def kind(self) -> str:
    if isinstance(self._node, yaml.MappingNode):
      return "mapping"
    if isinstance(self._node, yaml.SequenceNode):
      return "list"
    return "scalar"

  def scalar(self) -> Any:
    if self.kind != "scalar":
      raise self.error(f"expected a single value, found a {self.kind}")
    return self._loader.construct_object(self._node)

  def items(self) -> Iterator[tuple[str, "Node"]]:
    if self.kind != "mapping":
      raise self.error(f"expected a mapping of keys to values, found a {self.kind}")
    seen: dict[str, int] = {}
    for k, v in self._node.value:
      key = Node(k, self.source, self._loader)
      name = key.scalar()
      if not isinstance(name, str):
        name = str(name)
      if name in seen:
        raise key.error(f"duplicate key {name!r} (first at line {seen[name]})")
      seen[name] = key.line
      yield name, Node(v, self.source, self._loader)

  def list(self) -> list["Node"]:
    if self.kind != "list":
      raise self.error(f"expected a list, found a {self.kind}")
    return [Node(v, self.source, self._loader) for v in self._node.value]

  def plain(self) -> Any:
    """The node as plain Python data."""
    if self.kind == "mapping":
      return {k: v.plain() for k, v in self.items()}
    if self.kind == "list":
      return [v.plain() for v in self.list()]
    return self.scalar()


def read_text(path: str, what: str) -> str:
  """A file's text, or a SpaceError naming the file and ``what`` it was meant to be."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError as e:
    raise SpaceError(f"cannot read the {what}: {e.strerror}", path) from None


def load(text: str, source: str) -> Node:
  """Parses YAML (or JSON) text into a located node.

  Raises:
    SpaceError: with the file and line of a syntax error.
  """
  loader = _Loader(text)
  try:
    node = loader.get_single_node()
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark else source
    raise SpaceError(f"not valid YAML: {getattr(e, 'problem', e)}", where) from None
  finally:
    loader.dispose()
  if node is None:
    raise SpaceError("the file is empty", source)
  return Node(node, source, _Loader(""))
