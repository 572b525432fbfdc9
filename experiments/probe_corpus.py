"""The corpus of `probe_hostile.py`: hostile space files and objectives, written to a folder."""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
from pathlib import Path

OK = "parameters:\n  x: {type: float, low: 0, high: 1}\n"
_FLOAT = {"type": "float", "low": 0, "high": 1}


@dataclasses.dataclass
class SpaceProbe:
  """A space file; ``expect`` is ``error``, ``accept`` or ``either``."""
  name: str
  path: Path
  expect: str
  timeout: float = 120.0
  cli: list[str] | None = None  # the command line to run instead of ``space check``
  cli_place: str | None = None  # what its error must name instead of the file
  cli_expect: str | None = None


@dataclasses.dataclass
class ObjectiveProbe:
  name: str
  fn: str
  expect: str  # "error" (a failed trial or a StudyError), "accept" or "either"
  trial_timeout: float = 20.0
  check_child: bool = False


def _yaml_params(params: dict) -> str:
  return "parameters:\n" + "".join(f"  {k}: {v}\n" for k, v in params.items())


def _cs(hps, conditions=None, forbiddens=None, **extra) -> str:
  doc = {"hyperparameters": hps, **extra}
  if conditions is not None:
    doc["conditions"] = conditions
  if forbiddens is not None:
    doc["forbiddens"] = forbiddens
  return json.dumps(doc, indent=1)


_X = {"name": "x", "type": "uniform_float", "lower": 0, "upper": 1}
_C = {"name": "c", "type": "categorical", "choices": ["a", "b"]}


def _chain(n: int) -> str:
  lines = ["parameters:", "  p0: {type: float, low: 0, high: 1}"]
  lines += [f"  p{i}: {{type: float, low: 0, high: 1, when: 'p{i - 1} > 0.01'}}"
            for i in range(1, n)]
  return "\n".join(lines) + "\n"


def _flat(n: int) -> str:
  return "parameters:\n" + "".join(f"  p{i}: {{type: float, low: 0, high: 1}}\n"
                                   for i in range(n))


def _blocks(depth: int) -> str:
  out, pad = ["parameters:"], "  "
  for i in range(depth):
    out.append(f"{pad}b{i}:")
    out.append(f"{pad}  parameters:")
    pad += "    "
  out.append(f"{pad}x: {{type: float, low: 0, high: 1}}")
  return "\n".join(out) + "\n"


def _constraint(text: str) -> str:
  return OK + "  y: {type: float, low: 0, high: 1}\nconstraints:\n  - " + json.dumps(text) + "\n"


def _space_texts() -> list[tuple[str, str, str | bytes, str]]:
  """(name, file name, content, expect)."""
  laughs = "".join(f"  l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}]\n" for i in range(1, 25))
  t = [
      # --- YAML structure
      ("empty file", "s.yaml", "", "error"),
      ("only a comment", "s.yaml", "# nothing here\n", "error"),
      ("unclosed brace", "s.yaml", "parameters:\n  x: {type: float, low: 0\n", "error"),
      ("tab indentation", "s.yaml", "parameters:\n\tx: {type: bool}\n", "error"),
      ("top level is a list", "s.yaml", "- parameters\n", "error"),
      ("top level is a scalar", "s.yaml", "42\n", "error"),
      ("two documents", "s.yaml", OK + "---\n" + OK, "error"),
      ("duplicate top-level key", "s.yaml", OK + OK, "error"),
      ("unknown top-level key", "s.yaml", OK + "constrains: []\n", "error"),
      ("parameters is a list", "s.yaml", "parameters: [x, y]\n", "error"),
      ("no parameters", "s.yaml", "parameters: {}\n", "error"),
      ("parameter is a scalar", "s.yaml", "parameters:\n  x: 3\n", "error"),
      ("parameter without type", "s.yaml", "parameters:\n  x: {low: 0, high: 1}\n", "error"),
      ("unknown type", "s.yaml", "parameters:\n  x: {type: flaot, low: 0, high: 1}\n", "error"),
      ("type is a list", "s.yaml", "parameters:\n  x: {type: [float], low: 0, high: 1}\n",
       "error"),
      ("unknown parameter key", "s.yaml",
       "parameters:\n  x: {type: float, low: 0, high: 1, lgo: true}\n", "error"),
      ("block with unknown key", "s.yaml",
       "parameters:\n  b:\n    parameters: {x: {type: bool}}\n    whenn: 'x'\n", "error"),
      ("blocks nested 40 deep", "s.yaml", _blocks(40), "error"),
      ("blocks nested 10 deep", "s.yaml", _blocks(10), "accept"),
      ("list nested 100k deep (JSON)", "s.json",
       '{"parameters": {"x": {"type": "categorical", "choices": ' + "[" * 100_000 +
       "]" * 100_000 + "}}}", "error"),
      ("mapping nested 100k deep", "s.yaml", "parameters: " + "{a: " * 100_000 + "1" +
       "}" * 100_000 + "\n", "error"),
      ("list nested 70 deep", "s.yaml",
       "parameters:\n  x: {type: categorical, choices: " + "[" * 70 + "1" + "]" * 70 + "}\n",
       "error"),
      ("alias bomb (billion laughs)", "s.yaml", "parameters:\n  l0: &l0 [a, b, c]\n" + laughs,
       "error"),
      ("one alias", "s.yaml", "parameters:\n  x: &p {type: bool}\n  y: *p\n", "error"),
      ("merge key", "s.yaml", "base: &b {type: bool}\nparameters:\n  x: {<<: *b}\n", "error"),
      ("python object tag", "s.yaml",
       "parameters:\n  x: {type: float, low: !!python/object/apply:os.system [echo], high: 1}\n",
       "error"),
      ("unknown tag", "s.yaml", "parameters:\n  x: {type: float, low: !mine 0, high: 1}\n",
       "error"),
      ("binary value", "s.yaml", "parameters:\n  x: {type: float, low: !!binary AAAA, high: 1}\n",
       "error"),
      ("timestamp value", "s.yaml", "parameters:\n  x: {type: float, low: 2001-12-14, high: 1}\n",
       "error"),
      # --- encodings and bytes
      ("UTF-8 byte-order mark", "s.yaml", codecs.BOM_UTF8 + OK.encode(), "accept"),
      ("UTF-16 LE with BOM", "s.yaml", codecs.BOM_UTF16_LE + OK.encode("utf-16-le"), "error"),
      ("UTF-16 BE with BOM", "s.yaml", codecs.BOM_UTF16_BE + OK.encode("utf-16-be"), "error"),
      ("UTF-32 with BOM", "s.yaml", codecs.BOM_UTF32_LE + OK.encode("utf-32-le"), "error"),
      ("UTF-16 without BOM", "s.yaml", OK.encode("utf-16-le"), "error"),
      ("Latin-1 byte", "s.yaml", OK.encode() + "  caf\xe9: {type: bool}\n".encode("latin-1"),
       "error"),
      ("NUL byte", "s.yaml", OK.encode() + b"  y: {type: bool}\x00\n", "error"),
      ("bell control character", "s.yaml", OK + "  y: {type: bool, description: 'a\x07'}\n",
       "error"),
      ("random binary", "s.yaml", bytes(range(256)) * 8, "error"),
      ("CRLF line ends", "s.yaml", OK.replace("\n", "\r\n"), "accept"),
      ("CR line ends", "s.yaml", OK.replace("\n", "\r"), "accept"),
      ("file over 8 MiB", "s.yaml", OK + "#" * (9 << 20) + "\n", "error"),
      ("10,000-digit integer", "s.yaml",
       "parameters:\n  x: {type: int, low: 0, high: " + "9" * 10_000 + "}\n", "error"),
      # --- numbers and bounds
      ("low above high", "s.yaml", "parameters:\n  x: {type: float, low: 1, high: 0}\n", "error"),
      ("low equals high", "s.yaml", "parameters:\n  x: {type: float, low: 1, high: 1}\n",
       "error"),
      ("low is text", "s.yaml", "parameters:\n  x: {type: float, low: abc, high: 1}\n", "error"),
      ("low is a bool", "s.yaml", "parameters:\n  x: {type: float, low: true, high: 1}\n",
       "error"),
      ("low is null", "s.yaml", "parameters:\n  x: {type: float, low: null, high: 1}\n",
       "error"),
      ("low is NaN", "s.yaml", "parameters:\n  x: {type: float, low: .nan, high: 1}\n", "error"),
      ("high is infinite", "s.yaml", "parameters:\n  x: {type: float, low: 0, high: .inf}\n",
       "error"),
      ("bounds +-1e308", "s.yaml", "parameters:\n  x: {type: float, low: -1e308, high: 1e308}\n",
       "error"),
      ("range width overflows float32", "s.yaml",
       "parameters:\n  x: {type: float, low: -3e38, high: 3e38}\n", "error"),
      ("widest float32 range", "s.yaml",
       "parameters:\n  x: {type: float, low: -1e38, high: 1e38}\n", "accept"),
      ("log with low 0", "s.yaml", "parameters:\n  x: {type: float, low: 0, high: 1, log: true}\n",
       "error"),
      ("log with low 1e-300", "s.yaml",
       "parameters:\n  x: {type: float, low: 1e-300, high: 1, log: true}\n", "error"),
      ("bounds equal in float32", "s.yaml",
       "parameters:\n  x: {type: float, low: 1.0, high: 1.00000000001}\n", "error"),
      ("int bound beyond 2**53", "s.yaml",
       "parameters:\n  x: {type: int, low: 0, high: 100000000000000000000}\n", "error"),
      ("int bound 1.5", "s.yaml", "parameters:\n  x: {type: int, low: 1.5, high: 3}\n", "error"),
      ("log is text", "s.yaml", "parameters:\n  x: {type: float, low: 1, high: 2, log: 'yes'}\n",
       "error"),
      ("default outside the range", "s.yaml",
       "parameters:\n  x: {type: float, low: 0, high: 1, default: 2}\n", "error"),
      ("default is text", "s.yaml",
       "parameters:\n  x: {type: float, low: 0, high: 1, default: high}\n", "error"),
      # --- choices
      ("empty choices", "s.yaml", "parameters:\n  c: {type: categorical, choices: []}\n", "error"),
      ("duplicate choices", "s.yaml", "parameters:\n  c: {type: categorical, choices: [a, a]}\n",
       "error"),
      ("null choice", "s.yaml", "parameters:\n  c: {type: categorical, choices: [a, null]}\n",
       "error"),
      ("mapping choice", "s.yaml", "parameters:\n  c: {type: categorical, choices: [a, {b: 1}]}\n",
       "error"),
      ("weights count", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], weights: [1]}\n", "error"),
      ("zero weight", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], weights: [0, 1]}\n", "error"),
      ("negative weight", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], weights: [-1, 2]}\n", "error"),
      ("tiny weight", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], weights: [1e-30, 1]}\n", "error"),
      ("huge weights", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], weights: [1e308, 1e308]}\n",
       "accept"),
      ("20,000 choices", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [" + ", ".join(map(str, range(20_000))) +
       "]}\n", "error"),
      ("default not a choice", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], default: z}\n", "error"),
      ("bool default is text", "s.yaml", "parameters:\n  b: {type: bool, default: 'yes'}\n",
       "error"),
      ("ordinal without values", "s.yaml", "parameters:\n  o: {type: ordinal, values: []}\n",
       "error"),
      ("choices equal in float32", "s.yaml",
       "parameters:\n  o: {type: ordinal, values: [1.0, 1.000000000001]}\n", "error"),
      ("choice beyond float32", "s.yaml", "parameters:\n  o: {type: ordinal, values: [1, 1e39]}\n",
       "error"),
      # --- names
      ("name with spaces", "s.yaml", "parameters:\n  my param: {type: bool}\n", "accept"),
      ("unicode names", "s.yaml",
       "parameters:\n  λ_rate: {type: float, low: 0, high: 1}\n  学习率: {type: bool}\n",
       "accept"),
      ("name with a newline", "s.yaml", 'parameters:\n  "a\\nb": {type: bool}\n', "error"),
      ("empty name", "s.yaml", 'parameters:\n  "": {type: bool}\n', "error"),
      ("1000-character name", "s.yaml", "parameters:\n  " + "n" * 1000 + ": {type: bool}\n",
       "error"),
      ("name with quotes and backticks", "s.yaml", "parameters:\n  \"a`b'c\": {type: bool}\n",
       "accept"),
      ("keyword as a name", "s.yaml",
       "parameters:\n  and: {type: float, low: 0, high: 1}\nconstraints: ['`and` < 0.9']\n",
       "accept"),
      ("numeric name", "s.yaml", "parameters:\n  123: {type: bool}\n", "accept"),
      ("duplicate name through a block", "s.yaml",
       "parameters:\n  a.b: {type: bool}\n  a:\n    parameters:\n      b: {type: bool}\n", "error"),
      ("duplicate key", "s.yaml", "parameters:\n  x: {type: bool}\n  x: {type: bool}\n", "error"),
      # --- conditions
      ("condition is a number", "s.yaml",
       "parameters:\n  x: {type: bool}\n  y: {type: bool, when: 1}\n", "error"),
      ("empty condition", "s.yaml", "parameters:\n  x: {type: bool}\n  y: {type: bool, when: ''}\n",
       "error"),
      ("condition syntax error", "s.yaml",
       "parameters:\n  x: {type: bool}\n  y: {type: bool, when: 'x =='}\n", "error"),
      ("condition on unknown parameter", "s.yaml",
       "parameters:\n  x: {type: bool}\n  y: {type: bool, when: 'z'}\n", "error"),
      ("condition on itself", "s.yaml", "parameters:\n  y: {type: bool, when: 'y'}\n", "error"),
      ("cycle of conditions", "s.yaml",
       "parameters:\n  a: {type: bool, when: 'b'}\n  b: {type: bool, when: 'a'}\n", "error"),
      ("impossible condition", "s.yaml",
       OK + "  y: {type: bool, when: 'x > 2'}\n", "error"),
      ("condition on a missing choice", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a]}\n"
       "  y: {type: bool, when: \"c == 'z'\"}\n",
       "error"),
      ("chain of 500 conditions", "s.yaml", _chain(500), "accept"),
      # --- constraints and expressions
      ("constraint syntax error", "s.yaml", _constraint("x * * 2 < 1"), "error"),
      ("unknown function", "s.yaml", _constraint("eval('1') < 2"), "error"),
      ("python injection", "s.yaml", _constraint("__import__('os').system('true') == 0"),
       "error"),
      ("attribute access", "s.yaml", _constraint("x.__class__ < 1"), "error"),
      ("string compared with number", "s.yaml", _constraint("x < 'a'"), "error"),
      ("150 nested parentheses", "s.yaml", _constraint("(" * 150 + "x" + ")" * 150 + " < 2"),
       "error"),
      ("100k-term sum", "s.yaml", _constraint(" + ".join(["x"] * 100_000) + " >= 0"), "error"),
      ("101-term sum", "s.yaml", _constraint(" + ".join(["x"] * 101) + " >= 0"), "error"),
      ("3000 unary minus signs", "s.yaml", _constraint("-" * 3000 + "x < 2"), "error"),
      ("1000 nots", "s.yaml", _constraint("not " * 1000 + "x < 2"), "error"),
      ("power tower", "s.yaml", _constraint("**".join(["x"] * 1000) + " < 2"), "error"),
      ("chained comparison", "s.yaml", _constraint("0 < x < 1"), "error"),
      ("literal 1e999", "s.yaml", _constraint("x < 1e999"), "accept"),
      ("division by zero", "s.yaml", _constraint("x / 0 < 1"), "error"),
      ("log of a negative", "s.yaml", _constraint("log(x - 2) < 1"), "error"),
      ("constraint is a mapping", "s.yaml", OK + "constraints:\n  - {a: 1}\n", "error"),
      ("unsatisfiable constraint", "s.yaml", _constraint("x > 2"), "error"),
      ("forbidden clause always true", "s.yaml", OK + "forbidden: ['x <= 1']\n", "error"),
      ("contradictory constraints", "s.yaml",
       OK + "constraints: ['x > 0.6']\nforbidden: ['x > 0.5']\n", "error"),
      ("feasible only at the corner", "s.yaml",
       OK + "  y: {type: float, low: 0, high: 1}\nconstraints: ['x > 0.99999', 'y > 0.99999']\n",
       "accept"),
      ("default breaks a constraint", "s.yaml",
       "parameters:\n  x: {type: float, low: 0, high: 1, default: 0.9}\nconstraints: ['x < 0.5']\n",
       "error"),
      ("default is forbidden", "s.yaml",
       "parameters:\n  c: {type: categorical, choices: [a, b], default: a}\n"
       "forbidden: [\"c == 'a'\"]\n",
       "error"),
      ("200 constraints", "s.yaml", OK + "constraints:\n" + "".join(
          f"  - 'x < {2 + i}'\n" for i in range(200)), "accept"),
      ("1001 constraints", "s.yaml", OK + "constraints:\n" + "".join(
          f"  - 'x < {2 + i}'\n" for i in range(1001)), "error"),
      # --- sizes
      ("2,000 parameters", "s.yaml", _flat(2000), "accept"),
      ("10,001 parameters", "s.yaml", _flat(10_001), "error"),
      ("one-line JSON of 500 parameters", "s.json",
       json.dumps({"parameters": {f"p{i}": _FLOAT for i in range(500)}}), "accept"),
      # --- metatune JSON
      ("metatune JSON", "s.json", json.dumps({"name": "j", "parameters": {"x": _FLOAT}}), "accept"),
      ("JSON with a trailing comma", "s.json", '{"parameters": {"x": {"type": "bool"},}}',
       "either"),
      ("JSON with a comment", "s.json", '{"parameters": // no\n {"x": {"type": "bool"}}}', "error"),
      ("JSON NaN literal", "s.json",
       '{"parameters": {"x": {"type": "float", "low": NaN, "high": 1}}}', "error"),
      ("JSON duplicate keys", "s.json",
       '{"parameters": {"x": {"type": "bool"}, "x": {"type": "bool"}}}', "error"),
      # --- ConfigSpace JSON
      ("ConfigSpace: valid", "cs.json", _cs([_X, _C], [{"child": "x", "parent": "c",
                                                         "type": "EQ", "value": "a"}]), "accept"),
      ("ConfigSpace: entries 1, 'x', null", "cs.json", _cs([1, "x", None]), "error"),
      ("ConfigSpace: no name", "cs.json", _cs([{"type": "uniform_float"}]), "error"),
      ("ConfigSpace: name is a mapping", "cs.json", _cs([{**_X, "name": {"a": 1}}]), "error"),
      ("ConfigSpace: unknown type", "cs.json", _cs([{**_X, "type": "weird"}]), "error"),
      ("ConfigSpace: lower is text", "cs.json", _cs([{**_X, "lower": "a"}]), "error"),
      ("ConfigSpace: int lower 1.5", "cs.json", _cs([{**_X, "type": "uniform_int",
                                                      "lower": 1.5}]), "error"),
      ("ConfigSpace: upper 1e39", "cs.json", _cs([{**_X, "upper": 1e39}]), "error"),
      ("ConfigSpace: log is text", "cs.json", _cs([{**_X, "log": "yes"}]), "error"),
      ("ConfigSpace: choices is text", "cs.json", _cs([{**_C, "choices": "ab"}]), "error"),
      ("ConfigSpace: weights mismatch", "cs.json", _cs([{**_C, "weights": [1]}]), "error"),
      ("ConfigSpace: empty sequence", "cs.json", _cs([{"name": "o", "type": "ordinal",
                                                       "sequence": []}]), "error"),
      ("ConfigSpace: constant is a list", "cs.json", _cs([{"name": "k", "type": "constant",
                                                           "value": [1]}]), "error"),
      ("ConfigSpace: hyperparameters null", "cs.json", _cs(None), "error"),
      ("ConfigSpace: hyperparameters empty", "cs.json", _cs([]), "error"),
      ("ConfigSpace: duplicate names", "cs.json", _cs([_X, _X]), "error"),
      ("ConfigSpace: conditions is text", "cs.json", _cs([_X], "abc"), "error"),
      ("ConfigSpace: condition is a number", "cs.json", _cs([_X], [5]), "error"),
      ("ConfigSpace: condition without child", "cs.json",
       _cs([_X, _C], [{"parent": "c", "type": "EQ", "value": "a"}]), "error"),
      ("ConfigSpace: condition on unknown child", "cs.json",
       _cs([_X, _C], [{"child": "y", "parent": "c", "type": "EQ", "value": "a"}]), "error"),
      ("ConfigSpace: condition on unknown parent", "cs.json",
       _cs([_X, _C], [{"child": "x", "parent": "q", "type": "EQ", "value": "a"}]), "error"),
      ("ConfigSpace: unknown condition type", "cs.json",
       _cs([_X, _C], [{"child": "x", "parent": "c", "type": "XOR", "value": "a"}]), "error"),
      ("ConfigSpace: AND without a list", "cs.json",
       _cs([_X, _C], [{"child": "x", "type": "AND", "conditions": 4}]), "error"),
      ("ConfigSpace: condition value is a mapping", "cs.json",
       _cs([_X, _C], [{"child": "x", "parent": "c", "type": "EQ", "value": {"a": 1}}]), "error"),
      ("ConfigSpace: IN with no values", "cs.json",
       _cs([_X, _C], [{"child": "x", "parent": "c", "type": "IN", "values": []}]), "error"),
      ("ConfigSpace: LT on a categorical", "cs.json",
       _cs([_X, _C], [{"child": "x", "parent": "c", "type": "LT", "value": "a"}]), "error"),
      ("ConfigSpace: cycle", "cs.json",
       _cs([_X, {**_X, "name": "y"}], [{"child": "x", "parent": "y", "type": "GT", "value": 0.5},
                                       {"child": "y", "parent": "x", "type": "GT",
                                        "value": 0.5}]), "error"),
      ("ConfigSpace: 1000 conditions on one child", "cs.json",
       _cs([_X, _C], [{"child": "x", "parent": "c", "type": "EQ", "value": "a"}] * 1000),
       "accept"),
      ("ConfigSpace: forbiddens is a mapping", "cs.json", _cs([_X], forbiddens={"a": 1}), "error"),
      ("ConfigSpace: unknown forbidden type", "cs.json", _cs([_X], forbiddens=[{"type": "NAND"}]),
       "error"),
      ("ConfigSpace: forbidden on unknown name", "cs.json",
       _cs([_X], forbiddens=[{"type": "EQUALS", "name": "q", "value": 1}]), "error"),
      ("ConfigSpace: unknown relation", "cs.json",
       _cs([_X, {**_X, "name": "y"}], forbiddens=[{"type": "RELATION", "left": "x",
                                                   "right": "y", "lambda": "XX"}]), "error"),
      ("ConfigSpace: default is forbidden", "cs.json",
       _cs([{**_C, "default": "a"}], forbiddens=[{"type": "EQUALS", "name": "c", "value": "a"}]),
       "error"),
  ]
  return t


def space_probes(folder: Path) -> list[SpaceProbe]:
  """Writes the space files into ``folder`` and returns their probes."""
  probes = []
  for i, (name, fname, content, expect) in enumerate(_space_texts()):
    sub = folder / f"space{i:03d}"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / fname
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    probes.append(SpaceProbe(name, path, expect))
  good = folder / "space_ok" / "s.yaml"
  good.parent.mkdir(parents=True, exist_ok=True)
  good.write_text(OK)
  out_dir = folder / "space_ok" / "a folder"
  out_dir.mkdir()
  probes += [
      SpaceProbe("space file is a folder", folder / "space_ok", "error"),
      SpaceProbe("space file is missing", folder / "space_ok" / "missing.yaml", "error"),
      SpaceProbe("sample --out names a folder", good, "accept",
                 cli=["space", "sample", str(good), "--num", "3", "--out", str(out_dir)],
                 cli_place="--out", cli_expect="error"),
      SpaceProbe("sample --out in a missing folder", good, "accept",
                 cli=["space", "sample", str(good), "--num", "3", "--out",
                      str(folder / "nope" / "c.jsonl")], cli_place="--out", cli_expect="error"),
      SpaceProbe("sample --num 10**9", good, "accept",
                 cli=["space", "sample", str(good), "--num", str(10**9), "--out", "-"],
                 cli_place="--num", cli_expect="error"),
      SpaceProbe("sample --num -5", good, "accept",
                 cli=["space", "sample", str(good), "--num", "-5", "--out", "-"],
                 cli_place="--num", cli_expect="error"),
      SpaceProbe("sample 25,000 to a file", good, "accept",
                 cli=["space", "sample", str(good), "--num", "25000", "--out",
                      str(folder / "space_ok" / "c.jsonl")]),
  ]
  return probes


OBJECTIVES = '''
import ctypes, math, os, signal, subprocess, sys, time
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

def ok_float(trial): return 0.5
def ok_int(trial): return 3
def ok_numpy(trial): return np.float32(0.25)
def ok_dict(trial): return {"objective": 1.0, "note": 2.0}
def ok_huge_value(trial): return 1e308
def ok_negative_zero(trial): return -0.0
def raises(trial): raise ValueError("boom")
def keyboard_interrupt(trial): raise KeyboardInterrupt
def system_exit_3(trial): raise SystemExit(3)
def sys_exit_0(trial): sys.exit(0)
class Weird(BaseException): pass
def base_exception(trial): raise Weird("not an Exception")
def recursion(trial): return recursion(trial)
def returns_none(trial): return None
def returns_text(trial): return "0.5"
def returns_true(trial): return True
def returns_list(trial): return [0.5]
def returns_bytes(trial): return b"0.5"
def returns_complex(trial): return complex(1, 2)
def returns_nan(trial): return math.nan
def returns_inf(trial): return math.inf
def returns_minus_inf(trial): return -math.inf
def returns_wrong_dict(trial): return {"loss": 1.0}
def returns_huge_dict(trial):
  return {"objective": 1.0, **{f"k{i}": float(i) for i in range(100000)}}
def returns_huge_list(trial): return list(range(1000000))
def returns_generator(trial): return (i for i in range(3))
class BadFloat:
  def __float__(self): raise RuntimeError("no float")
def returns_bad_float(trial): return BadFloat()
def returns_array(trial): return np.array([0.1, 0.2])
def sleeps(trial): time.sleep(600); return 0.5
def spins(trial):
  while True: pass
def prints_a_lot(trial):
  line = "x" * 1023 + "\\n"
  for _ in range(50 * 1024): sys.stdout.write(line)
  return 0.5
def exits_hard(trial): os._exit(1)
def segfaults(trial): ctypes.string_at(0)
def kills_itself(trial): os.kill(os.getpid(), signal.SIGKILL)
def _note_child(pid, fn):
  with open(os.path.join(HERE, fn + ".pid"), "w") as f: f.write(str(pid))
def spawns_child(trial):
  p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
  _note_child(p.pid, "spawns_child")
  return 0.5
def forks_child(trial):
  pid = os.fork()
  if pid == 0:
    time.sleep(300); os._exit(0)
  _note_child(pid, "forks_child")
  return 0.5
def takes_no_argument(): return 0.5
def eats_memory(trial):
  blocks = [bytearray(256 << 20) for _ in range(64)]
  return float(len(blocks))
def reports_nan(trial):
  trial.report(1, math.nan)
  return 0.5
def closes_stdout(trial):
  os.close(1); os.close(2)
  return 0.5
'''


def objective_probes(folder: Path) -> list[ObjectiveProbe]:
  """Writes ``objectives.py`` and a small space into ``folder``; returns the probes."""
  (folder / "objectives.py").write_text(OBJECTIVES)
  (folder / "syntax_error.py").write_text("def objective(trial):\n  return (\n")
  (folder / "space.yaml").write_text(OK)
  accept = ["ok_float", "ok_int", "ok_numpy", "ok_dict", "ok_huge_value", "ok_negative_zero",
            "prints_a_lot", "closes_stdout"]
  error = ["raises", "keyboard_interrupt", "system_exit_3", "sys_exit_0", "base_exception",
           "recursion", "returns_none", "returns_text", "returns_true", "returns_list",
           "returns_bytes", "returns_complex", "returns_nan", "returns_inf", "returns_minus_inf",
           "returns_wrong_dict", "returns_huge_list", "returns_generator", "returns_bad_float",
           "returns_array", "exits_hard", "segfaults", "kills_itself", "takes_no_argument",
           "eats_memory", "reports_nan", "no_such_function"]
  probes = [ObjectiveProbe(f"objective {fn}", fn, "accept") for fn in accept]
  probes += [ObjectiveProbe(f"objective {fn}", fn, "error") for fn in error]
  probes += [
      ObjectiveProbe("objective returns_huge_dict", "returns_huge_dict", "either"),
      ObjectiveProbe("objective sleeps past the timeout", "sleeps", "error", trial_timeout=3.0),
      ObjectiveProbe("objective spins past the timeout", "spins", "error", trial_timeout=3.0),
      ObjectiveProbe("objective spawns a child", "spawns_child", "accept", check_child=True),
      ObjectiveProbe("objective forks a child", "forks_child", "accept", check_child=True),
      ObjectiveProbe("objective file with a syntax error", "syntax_error.py:objective", "error"),
  ]
  return probes


def surviving_child(folder: Path, fn: str) -> int | None:
  """The pid an objective noted for its child, if that process is still alive (then killed)."""
  note = folder / f"{fn}.pid"
  if not note.exists():
    return None
  pid = int(note.read_text())
  try:
    os.kill(pid, 0)
  except OSError:
    return None
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      if f.read().split(")")[-1].split()[0] == "Z":
        return None  # a zombie has ended; only its exit status is left
  except OSError:
    pass
  os.kill(pid, 9)
  return pid
