"""Strict metatune YAML/JSON: blocks, coercion of YAML 1.1 surprises, errors with file and line."""

import json

import pytest

from metatune.space import SpaceError, io
from metatune.tasks import default_space

GOOD = """
name: demo
parameters:
  optimizer: {type: categorical, choices: [sgd, adam, 'no']}
  lr: {type: float, low: 1e-5, high: 1.0, log: true}
  answer: {type: categorical, choices: [yes, no, on, off]}
  optimizer.sgd:
    when: "optimizer == 'sgd'"
    parameters:
      momentum: {type: float, low: 0.0, high: 0.99}
      nesterov: {type: bool, when: "optimizer.sgd.momentum > 0.5"}
  depth: {type: int, low: 1, high: 3}
  width:
    parameters:
      l1: {type: int, low: 8, high: 64}
      l2: {type: int, low: 8, high: 64, when: "depth >= 2"}
  size: {type: ordinal, values: [small, medium, large]}
constraints:
  - "width.l1 * active_or(width.l2, 1) <= 2048"
forbidden:
  - "optimizer == 'sgd' and lr < 1e-4"
"""


def test_blocks_prefix_names_and_join_conditions():
  s = io.loads(GOOD, "good.yaml")
  assert "optimizer.sgd.momentum" in s.names
  assert s.params[s.index["optimizer.sgd.nesterov"]].condition_text == (
      "(optimizer == 'sgd') and (optimizer.sgd.momentum > 0.5)")
  assert s.index["optimizer"] < s.index["optimizer.sgd.momentum"] < s.index[
      "optimizer.sgd.nesterov"]
  assert len(s.constraints) == 2


def test_yaml_1_1_surprises_are_coerced():
  s = io.loads(GOOD, "good.yaml")
  lr = s.params[s.index["lr"]]
  assert lr.low == 1e-5 and isinstance(lr.low, float)  # PyYAML alone reads '1e-5' as a string
  answer = s.params[s.index["answer"]]
  assert answer.choices == ("yes", "no", "on", "off")  # not True/False


def test_quoted_numbers_are_accepted():
  s = io.loads('parameters: {x: {type: float, low: "1e-3", high: "2"}}', "q.yaml")
  assert s.params[0].low == 1e-3


def test_round_trip_through_dict():
  s = io.loads(GOOD, "good.yaml")
  again = io.loads(io.dumps(s), "again.json")
  assert again.signature == s.signature
  assert again.names == s.names


def test_default_space_round_trip():
  s = default_space()
  assert io.loads(io.dumps(s)).signature == s.signature


@pytest.mark.parametrize("text, line, phrase", [
    ("parameters:\n  x: {type: float, low: 0, high: 1, lgo: true}\n", 2, "unknown key 'lgo'"),
    ("parameters:\n  x: {type: float, low: 1, high: 0}\n", 2, "low (1) must be less than high"),
    ("parameters:\n  x: {type: float, low: 0, high: 1, log: true}\n", 2, "log-scaled"),
    ("parameters:\n  x: {type: categorical, choices: []}\n", 2, "must not be empty"),
    ("parameters:\n  x: {type: flaot, low: 0, high: 1}\n", 2, "unknown type 'flaot'"),
    ("parameters:\n  x: {type: float, low: zero, high: 1}\n", 2, "low must be a number"),
    ("parameters:\n  x: {type: float, low: 0, high: 1}\n  x: {type: int, low: 0, high: 1}\n", 3,
     "duplicate key 'x'"),
    ("parameters:\n  x: {type: float, low: 0, high: 1}\nconstrains: []\n", 3,
     "did you mean 'constraints'"),
    ("parameters:\n  x: {type: float, low: 0, high: 1, when: 'y > 1'}\n", 2,
     "unknown parameter 'y'"),
    ("parameters:\n  x: {type: float, low: 0, high: 1}\n  b:\n    when: 'x > 2'\n"
     "    parameters:\n      y: {type: bool}\n", 6, "no value of 'x'"),
    ("parameters:\n  x: {type: float, low: 0, high: 1}\nconstraints:\n  - 'x * * 2 < 1'\n", 4,
     "column 5"),
    ("parameters:\n  x: {type: int, low: 0, high: 1\n", 3, "not valid YAML"),
])
def test_errors_name_file_line_and_problem(text, line, phrase):
  with pytest.raises(SpaceError) as info:
    io.loads(text, "bad.yaml")
  msg = str(info.value)
  assert f"bad.yaml:{line}" in msg, msg
  assert phrase in msg, msg


def test_cycle_is_reported_with_its_path():
  text = ("parameters:\n  a: {type: int, low: 0, high: 3, when: 'b > 1'}\n"
          "  b: {type: int, low: 0, high: 3, when: 'a > 1'}\n")
  with pytest.raises(SpaceError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
    io.loads(text, "cyc.yaml")


def test_impossible_choice_in_condition_is_reported():
  text = ("parameters:\n  opt: {type: categorical, choices: [sgd, adam]}\n"
          "  m: {type: float, low: 0, high: 1, when: \"opt == 'sgdd'\"}\n")
  with pytest.raises(SpaceError, match=r"'sgdd' is not a possible value of 'opt'.*sgd"):
    io.loads(text, "imp.yaml")


def test_unsatisfiable_constraints_are_reported():
  from metatune.space import sample
  import jax
  s = io.loads("parameters:\n  x: {type: float, low: 0, high: 1}\n"
               "constraints: ['x > 2']\n", "unsat.yaml")
  with pytest.raises(SpaceError, match=r"unsat.yaml.*unsatisfiable.*'x > 2'"):
    sample(jax.random.key(0), s, 4)


def test_missing_file_is_a_clear_error(tmp_path):
  with pytest.raises(SpaceError, match="cannot read the space file"):
    io.load(tmp_path / "nope.yaml")


def test_metatune_json_is_read_with_line_numbers(tmp_path):
  doc = {"parameters": {"x": {"type": "float", "low": 2, "high": 1}}}
  path = tmp_path / "s.json"
  path.write_text(json.dumps(doc, indent=1))
  with pytest.raises(SpaceError, match=r"s.json:\d+.*low \(2\) must be less than high"):
    io.load(path)


# ---------------------------------------------------------- hostile files (#15)
def _load_error(tmp_path, data: bytes, name: str = "h.yaml") -> str:
  path = tmp_path / name
  path.write_bytes(data)
  with pytest.raises(SpaceError) as info:
    io.load(path)
  return str(info.value)


GOOD_BYTES = b"parameters:\n  x: {type: float, low: 0, high: 1}\n"


def test_bytes_that_are_not_utf8_name_file_offset_and_line(tmp_path):
  """Once a raw UnicodeDecodeError traceback with no file or line."""
  msg = _load_error(tmp_path, GOOD_BYTES + b"  y: {type: categorical, choices: [caf\xe9]}\n")
  assert f"{tmp_path / 'h.yaml'}:3" in msg and "byte 0xe9 at byte offset" in msg, msg
  assert "not UTF-8" in msg and "save the space file as UTF-8" in msg, msg


@pytest.mark.parametrize("bom, name", [(b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
                                       (b"\xff\xfe\x00\x00", "UTF-32")])
def test_utf16_and_utf32_files_are_refused_by_name(tmp_path, bom, name):
  text = GOOD_BYTES.decode()
  codec = {"UTF-16": "utf-16-le" if bom[0] == 0xFF else "utf-16-be", "UTF-32": "utf-32-le"}[name]
  msg = _load_error(tmp_path, bom + text.encode(codec))
  assert str(tmp_path / "h.yaml") in msg and f"{name} text" in msg and "as UTF-8" in msg, msg


def test_nul_byte_names_its_offset_and_line(tmp_path):
  """Once a raw ReaderError traceback: PyYAML checks characters outside our try."""
  msg = _load_error(tmp_path, GOOD_BYTES + b"  y: {type: bool}\x00\n")
  assert f"{tmp_path / 'h.yaml'}:3" in msg and "NUL byte at byte offset 65" in msg, msg


def test_control_character_in_text_is_located():
  with pytest.raises(SpaceError, match=r"c.yaml:2: .*U\+0007.*line 2"):
    io.loads("parameters:\n  x: {type: bool, description: 'a\x07'}\n", "c.yaml")


def test_utf8_byte_order_mark_is_accepted(tmp_path):
  path = tmp_path / "bom.yaml"
  path.write_bytes(b"\xef\xbb\xbf" + GOOD_BYTES)
  assert io.load(path).names == ("x",)


@pytest.mark.parametrize("text, phrase", [
    ("parameters:\n  x: {type: float, low: !!python/object:os.system 0, high: 1}\n",
     "cannot read the value"),
    ("parameters:\n  x: {type: float, low: !mine 0, high: 1}\n", "cannot read the value"),
    ("parameters:\n  x: {type: int, low: 0, high: " + "9" * 5000 + "}\n",
     "cannot read the value"),
])
def test_values_yaml_cannot_construct_are_located(text, phrase):
  """Unknown tags and over-long integers once escaped as ConstructorError/ValueError."""
  with pytest.raises(SpaceError, match=rf"t.yaml:2: {phrase}"):
    io.loads(text, "t.yaml")


def test_deeply_nested_json_is_refused_with_its_line():
  """A 100k-deep list once ended in a RecursionError inside PyYAML's composer."""
  text = '{"parameters": {"x": {"type": "categorical", "choices":\n' + "[" * 100_000 + "]" * 100_000
  with pytest.raises(SpaceError, match=r"deep.json:2: .*(nested deeper than 64|nesting depth)"):
    io.loads(text + "}}}", "deep.json")


def test_yaml_aliases_are_refused():
  """An alias bomb (each level doubling the last) would expand exponentially."""
  levels = "".join(f"  l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 30))
  text = "parameters:\n  l0: &l0 [a]\n" + levels
  with pytest.raises(SpaceError, match=r"bomb.yaml:3: .*aliases"):
    io.loads(text, "bomb.yaml")


def test_oversized_file_is_refused(tmp_path):
  path = tmp_path / "big.yaml"
  path.write_bytes(GOOD_BYTES + b"#" * (8 << 20))
  with pytest.raises(SpaceError, match=r"big.yaml: the space file is larger than 8 MiB"):
    io.load(path)


def test_a_folder_is_not_a_space_file(tmp_path):
  with pytest.raises(SpaceError, match="cannot read the space file"):
    io.load(tmp_path)


def test_nesting_past_the_limit_is_refused_where_it_starts():
  text = "parameters:\n  x: {type: categorical, choices:\n    " + "[" * 70 + "1" + "]" * 70 + "}\n"
  with pytest.raises(SpaceError, match=r"n.yaml:3: .*nested deeper than 64 levels"):
    io.loads(text, "n.yaml")
