"""A strict YAML reader that keeps line numbers and reads scalars the YAML 1.2 way.

PyYAML follows YAML 1.1: ``1e-5`` becomes a string and ``yes``/``no``/``on``/``off``
become booleans. Here only ``true``/``false`` are booleans and any float
literal (``1e-5``, ``.5``) is a float, so a categorical choice ``no`` stays a string.

Hostile files end in a located `SpaceError`, never a traceback: files over
`MAX_FILE_BYTES`, text that is not UTF-8 (a UTF-8 byte-order mark is accepted),
NUL bytes, lists and mappings nested deeper than `MAX_NESTING`, and aliases
(``*name``), which would let a small file expand to an exponential size.
"""

from __future__ import annotations

import codecs
import re
from typing import Any, Iterator

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from metatune.space.errors import SpaceError

MAX_FILE_BYTES = 8 << 20
# A space nests a few levels per block (block -> parameters -> parameter -> choices);
# 64 leaves room for deep blocks and stays far below Python's recursion limit,
# which PyYAML's recursive composer would otherwise hit on a deep list.
MAX_NESTING = 64

_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


class _Refused(yaml.YAMLError):

  def __init__(self, problem: str, mark):
    super().__init__(problem)
    self.problem = problem
    self.problem_mark = mark


class _Strict:
  """Composes nodes with a nesting limit and no aliases (mixed into both loaders)."""

  def compose_node(self, parent, index):
    event = self.peek_event()
    if isinstance(event, yaml.AliasEvent):
      raise _Refused("aliases (*name) are not supported; write the value out", event.start_mark)
    depth = getattr(self, "_depth", 0) + 1
    if depth > MAX_NESTING:
      raise _Refused(f"lists and mappings are nested deeper than {MAX_NESTING} levels",
                     event.start_mark)
    self._depth = depth
    try:
      return Composer.compose_node(self, parent, index)
    finally:
      self._depth = depth - 1


class _Loader(_Strict, yaml.SafeLoader):
  """The pure-Python loader: constructs scalars, and parses where libyaml is missing."""


if getattr(yaml, "__with_libyaml__", False):
  from yaml._yaml import CParser  # pylint: disable=no-name-in-module,wrong-import-position

  class _FastLoader(_Strict, CParser, SafeConstructor, Resolver):
    """libyaml's scanner and parser (5x faster on large files) under the Python composer."""

    def __init__(self, stream):
      CParser.__init__(self, stream)
      SafeConstructor.__init__(self)
      Resolver.__init__(self)
      Composer.__init__(self)

    # The Python composer, not CParser's own, so that `_Strict` applies.
    get_single_node = Composer.get_single_node
    compose_document = Composer.compose_document
    compose_scalar_node = Composer.compose_scalar_node
    compose_sequence_node = Composer.compose_sequence_node
    compose_mapping_node = Composer.compose_mapping_node
else:  # pragma: no cover
  _FastLoader = _Loader


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
_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


# Attribute of a raw yaml node that came from a command-line setting: the setting's text.
_SETTING = "metatune_setting"


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
    # A node grafted from a command-line setting (`parse_setting`) names the setting.
    return getattr(self._node, _SETTING, None) or f"{self.source}:{self.line}"

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
    try:
      return self._loader.construct_object(self._node)
    except (yaml.YAMLError, ValueError, OverflowError) as e:
      # An unknown tag (!!python/object), an integer of more digits than Python
      # converts, a malformed !!timestamp ...
      text = self._node.value if isinstance(self._node.value, str) else ""
      shown = repr(text[:40] + ("..." if len(text) > 40 else ""))
      why = getattr(e, "problem", None) or str(e).splitlines()[0]
      raise self.error(f"cannot read the value {shown} ({self._node.tag}): {why}") from None

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


def _line_of(data: bytes | str, offset: int) -> int:
  return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, offset) + 1


def decode(data: bytes, source: str, what: str = "file") -> str:
  """UTF-8 bytes -> text, or a SpaceError with the byte offset and line of the first bad byte.

  A UTF-8 byte-order mark is dropped; UTF-16 and UTF-32 (recognized by their
  byte-order marks) and NUL bytes are refused with what to do instead.
  """
  if data.startswith(codecs.BOM_UTF8):
    data = data[len(codecs.BOM_UTF8):]
  for bom, name in _BOMS:
    if data.startswith(bom):
      raise SpaceError(f"the {what} is {name} text (it starts with a {name} byte-order mark); "
                       f"save it as UTF-8", source)
  nul = data.find(b"\0")
  if nul >= 0:
    line = _line_of(data, nul)
    raise SpaceError(f"NUL byte at byte offset {nul} (line {line}): the {what} must be UTF-8 "
                     f"text (is it UTF-16 without a byte-order mark, or a binary file?)",
                     f"{source}:{line}")
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = _line_of(data, e.start)
    raise SpaceError(f"byte 0x{data[e.start]:02x} at byte offset {e.start} (line {line}) is "
                     f"not UTF-8 ({e.reason}); save the {what} as UTF-8",
                     f"{source}:{line}") from None


def read_text(path: str, what: str) -> str:
  """A file's text, or a SpaceError naming the file and ``what`` it was meant to be."""
  try:
    with open(path, "rb") as f:
      data = f.read(MAX_FILE_BYTES + 1)
  except OSError as e:
    raise SpaceError(f"cannot read the {what}: {e.strerror or e}", path) from None
  if len(data) > MAX_FILE_BYTES:
    raise SpaceError(f"the {what} is larger than {MAX_FILE_BYTES >> 20} MiB, the limit for "
                     f"a text file of settings", path)
  return decode(data, path, what)


def load(text: str, source: str) -> Node:
  """Parses YAML (or JSON) text into a located node.

  Raises:
    SpaceError: with the file and line of a syntax error.
  """
  if not isinstance(text, str):
    raise SpaceError(f"expected text, got {type(text).__name__}", source)
  loader = None
  try:
    loader = _FastLoader(text)
    node = loader.get_single_node()
  except yaml.reader.ReaderError as e:
    # Raised for a character YAML does not allow (a control character); it has
    # an offset into the text but no line.
    line = _line_of(text, e.position)
    char = e.character if isinstance(e.character, int) else ord(e.character)
    raise SpaceError(f"not valid YAML: character U+{char:04X} at offset {e.position} "
                     f"(line {line}) is not allowed ({e.reason})", f"{source}:{line}") from None
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark else source
    column = f" at column {mark.column + 1}" if mark else ""
    context = f" ({e.context})" if getattr(e, "context", None) else ""
    raise SpaceError(f"not valid YAML: {getattr(e, 'problem', None) or e}{column}{context}",
                     where) from None
  finally:
    if loader is not None:
      loader.dispose()
  if node is None:
    raise SpaceError("the file is empty", source)
  return Node(node, source, _Loader(""))


def _mark(node: yaml.Node, where: str) -> None:
  setattr(node, _SETTING, where)
  if isinstance(node, yaml.SequenceNode):
    for child in node.value:
      _mark(child, where)
  elif isinstance(node, yaml.MappingNode):
    for key, child in node.value:
      _mark(key, where)
      _mark(child, where)


def parse_setting(text: str) -> tuple[list[str], Node]:
  """A command-line setting ``a.b.c=VALUE``: its dotted key and its value as a node.

  The value is YAML, read as it would be in a file (``3``, ``false``, ``[1, 5]``,
  ``{x: 1}``, a string). Errors about the setting, and later errors about the
  value, name ``--set TEXT`` instead of a file and line.

  Raises:
    SpaceError: no ``=``, an empty key part or value, or a value that is not YAML.

  Example:
    >>> keys, node = parse_setting("tuners.gp_bo.options={num_candidates: 64}")
    >>> keys, node.plain()
    (['tuners', 'gp_bo', 'options'], {'num_candidates': 64})
    >>> node.where
    '--set tuners.gp_bo.options={num_candidates: 64}'
  """
  where = f"--set {text}"
  key, sep, value = text.partition("=")
  keys = key.strip().split(".")
  if not sep or not all(keys):
    raise SpaceError("expected KEY=VALUE with a dotted KEY, e.g. seeds=3 or "
                     "tuners.gp_bo.options.num_candidates=256", where)
  if not value.strip():
    raise SpaceError("no value after '=' (write null for none)", where)
  try:
    node = load(value, where)
  except SpaceError as e:
    raise SpaceError(e.problem, where) from None
  _mark(node._node, where)  # pylint: disable=protected-access
  return keys, node


def set_path(root: Node, keys: list[str], value: Node) -> None:
  """Puts ``value`` at ``root[keys[0]][keys[1]]...`` (a setting over a config), in place.

  Missing mappings on the way are created, an empty (null) value becomes a mapping;
  the config is then read as usual, so its schema checks the keys and the value.

  Raises:
    SpaceError: a key on the way holds a value that is not a mapping (at the setting).
  """
  # pylint: disable=protected-access
  where = value.where
  mark = value._node.start_mark
  node = root._node
  for i, k in enumerate(keys):
    if not isinstance(node, yaml.MappingNode):
      raise SpaceError(f"{'.'.join(keys[:i])} is not a mapping in {root.source}, so it has no "
                       f"key {k!r}", where)
    pairs = node.value
    j = next((j for j, (kn, _) in enumerate(pairs)
              if isinstance(kn, yaml.ScalarNode) and kn.value == k), None)
    if j is None:
      kn = yaml.ScalarNode("tag:yaml.org,2002:str", k, mark, mark)
      setattr(kn, _SETTING, where)
      new = yaml.MappingNode("tag:yaml.org,2002:map", [], mark, mark)
      setattr(new, _SETTING, where)
      pairs.append((kn, new))
      j = len(pairs) - 1
    kn, child = pairs[j]
    if i == len(keys) - 1:
      pairs[j] = (kn, value._node)
      return
    if isinstance(child, yaml.ScalarNode) and child.tag.endswith(":null"):
      child = yaml.MappingNode("tag:yaml.org,2002:map", [], mark, mark)
      setattr(child, _SETTING, where)
      pairs[j] = (kn, child)
    node = child
