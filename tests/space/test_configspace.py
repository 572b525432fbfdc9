"""ConfigSpace JSON import: every condition and forbidden kind, and the real YAHPO spaces."""

import json

import jax
import numpy as np
import pytest

from metatune.space import SpaceError, io, sample

ALL_KINDS = {
    "hyperparameters": [
        {"name": "algo", "type": "categorical", "choices": ["a", "b", "c"], "default": "a",
         "weights": [0.5, 0.3, 0.2]},
        {"name": "n", "type": "uniform_int", "lower": 1, "upper": 10, "log": False, "default": 5},
        {"name": "x", "type": "uniform_float", "lower": 0.001, "upper": 1.0, "log": True,
         "default": 0.1},
        {"name": "y", "type": "uniform_float", "lower": 0.0, "upper": 1.0, "default": 0.5},
        {"name": "size", "type": "ordinal", "sequence": ["s", "m", "l"], "default": "m"},
        {"name": "k", "type": "categorical", "choices": [1, 2, 3], "default": 1},
        {"name": "const", "type": "constant", "value": "fixed"},
        # Not 0.5: with y's default it would break the forbidden 'y == z' below, which
        # ConfigSpace itself refuses (ForbiddenValueError), and so does metatune.
        {"name": "z", "type": "normal_float", "mu": 0.5, "sigma": 0.1, "lower": 0.0,
         "upper": 1.0, "default": 0.4},
        {"name": "c_eq", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_neq", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_lt", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_gt", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_in", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_and", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_or", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
        {"name": "c_nested", "type": "uniform_float", "lower": 0, "upper": 1, "default": 0.5},
    ],
    "conditions": [
        {"child": "c_eq", "parent": "algo", "type": "EQ", "value": "a"},
        {"child": "c_neq", "parent": "algo", "type": "NEQ", "value": "a"},
        {"child": "c_lt", "parent": "n", "type": "LT", "value": 5},
        {"child": "c_gt", "parent": "size", "type": "GT", "value": "s"},
        {"child": "c_in", "parent": "k", "type": "IN", "values": [1, 3]},
        {"child": "c_and", "type": "AND", "conditions": [
            {"child": "c_and", "parent": "algo", "type": "IN", "values": ["a", "b"]},
            {"child": "c_and", "parent": "n", "type": "GT", "value": 2}]},
        {"child": "c_or", "type": "OR", "conditions": [
            {"child": "c_or", "parent": "algo", "type": "EQ", "value": "c"},
            {"child": "c_or", "parent": "x", "type": "LT", "value": 0.01}]},
        {"child": "c_nested", "parent": "c_eq", "type": "GT", "value": 0.5},
    ],
    "forbiddens": [
        {"name": "algo", "type": "EQUALS", "value": "c", "_": None},
        {"type": "AND", "clauses": [
            {"name": "k", "type": "IN", "values": [2]},
            {"name": "size", "type": "EQUALS", "value": "l"}]},
        {"left": "c_eq", "right": "y", "type": "RELATION_LT"},
        {"left": "n", "right": "k", "type": "RELATION_EQ"},
        {"left": "c_lt", "right": "y", "type": "RELATION_GT"},
        {"left": "y", "right": "z", "type": "RELATION", "lambda": "EQ"},
    ],
    "python_module_version": "1.2.0",
    "json_format_version": 0.4,
}
for f in ALL_KINDS["forbiddens"]:
  f.pop("_", None)


def test_every_condition_and_forbidden_kind_imports_and_samples_validly():
  s = io.loads(json.dumps(ALL_KINDS), "kinds.json")
  assert sum(c is not None for c in s.conditions) == 8
  assert len(s.constraints) == 6 and all(c.mode == "forbid" for c in s.constraints)
  values, active = jax.jit(lambda k: sample(k, s, 4000))(jax.random.key(0))
  configs = s.decode_batch(values, active)
  for c in configs:
    s.validate(c)
    assert c["algo"] != "c"
    assert not (c["k"] == 2 and c["size"] == "l")
    assert not ("c_eq" in c and c["c_eq"] < c["y"])
    assert c["n"] != c["k"]
    assert ("c_eq" in c) == (c["algo"] == "a")
    assert ("c_neq" in c) == (c["algo"] != "a")
    assert ("c_lt" in c) == (c["n"] < 5)
    assert ("c_gt" in c) == (c["size"] in ("m", "l"))
    assert ("c_in" in c) == (c["k"] in (1, 3))
    assert ("c_and" in c) == (c["algo"] in ("a", "b") and c["n"] > 2)
    assert ("c_or" in c) == (c["algo"] == "c" or c["x"] < 0.01)
    assert ("c_nested" in c) == ("c_eq" in c and c["c_eq"] > 0.5)
    assert type(c["k"]) is int and c["const"] == "fixed"


def test_categorical_weights_are_kept():
  doc = {"hyperparameters": [ALL_KINDS["hyperparameters"][0]]}
  s = io.loads(json.dumps(doc), "w.json")
  values, active = sample(jax.random.key(3), s, 20000)
  algos = [c["algo"] for c in s.decode_batch(values, active)]
  freq = [algos.count(a) / len(algos) for a in ("a", "b", "c")]
  np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)


def test_unknown_kinds_are_clear_errors():
  bad = {"hyperparameters": [{"name": "x", "type": "weird_float"}]}
  with pytest.raises(SpaceError, match=r"x\.json:\d+.*'x'.*unknown hyperparameter type"):
    io.loads(json.dumps(bad, indent=1), "x.json")
  bad = {"hyperparameters": [{"name": "x", "type": "uniform_float", "lower": 0, "upper": 1}],
         "conditions": [{"child": "x", "parent": "q", "type": "EQ", "value": 1}]}
  with pytest.raises(SpaceError, match="unknown hyperparameter 'q'"):
    io.loads(json.dumps(bad), "x.json")
  bad["conditions"] = [{"child": "x", "parent": "x", "type": "XOR", "value": 1}]
  with pytest.raises(SpaceError, match="unknown condition type 'XOR'"):
    io.loads(json.dumps(bad), "x.json")


def _yahpo_spaces(data_dir):
  paths = sorted((data_dir / "yahpo").glob("*/config_space.json"))
  assert paths, f"no config_space.json under {data_dir / 'yahpo'}"
  return paths


def test_every_yahpo_space_imports_with_conditions(data_dir):
  for path in _yahpo_spaces(data_dir):
    raw = json.loads(path.read_text())
    s = io.load(path)
    assert s.num_params == len(raw["hyperparameters"]), path
    assert sum(c is not None for c in s.conditions) == len(raw["conditions"]), path
    assert len(s.constraints) == len(raw.get("forbiddens") or []), path
    assert {p.name for p in s.params} == {h["name"] for h in raw["hyperparameters"]}


@pytest.mark.filterwarnings("ignore:The field 'default' should be:UserWarning")
def test_yahpo_samples_are_valid_for_configspace_itself(data_dir):
  """An independent check: ConfigSpace accepts every configuration metatune samples."""
  ConfigSpace = pytest.importorskip("ConfigSpace")
  for path in _yahpo_spaces(data_dir):
    cs = ConfigSpace.ConfigurationSpace.from_json(path)
    s = io.load(path)
    values, active = jax.jit(lambda k, s=s: sample(k, s, 100))(jax.random.key(1))
    for cfg in s.decode_batch(values, active):
      ConfigSpace.Configuration(cs, values=cfg).check_valid_configuration()


def test_rbv2_xgboost_booster_conditions(data_dir):
  s = io.load(data_dir / "yahpo" / "rbv2_xgboost" / "config_space.json")
  values, active = sample(jax.random.key(2), s, 2000)
  configs = s.decode_batch(values, active)
  for c in configs:
    assert ("eta" in c) == (c["booster"] in ("dart", "gbtree"))
    assert ("rate_drop" in c) == (c["booster"] == "dart")
  boosters = {c["booster"] for c in configs}
  assert boosters == {"gblinear", "gbtree", "dart"}
  np.testing.assert_array_equal(np.asarray(values)[~np.asarray(active)], 0.0)


_X = {"name": "x", "type": "uniform_float", "lower": 0, "upper": 1}
_C = {"name": "c", "type": "categorical", "choices": ["a", "b"]}
_H, _H1 = ("hyperparameters", 0), ("hyperparameters", 1)
_COND, _FORB = ("conditions", 0), ("forbiddens", 0)


def _cond(**c):
  return {"hyperparameters": [_X, _C], "conditions": [{"child": "x", **c}]}


@pytest.mark.parametrize("doc, line, phrase", [
    ({"hyperparameters": [1, "x", None]}, _H, "a hyperparameter must be a JSON object, got 1"),
    ({"hyperparameters": [{"type": "uniform_float"}]}, _H, "hyperparameter has no 'name'"),
    ({"hyperparameters": [{"name": 3, "type": "uniform_float"}]}, _H, "'name' must be a string"),
    ({"hyperparameters": [{"name": "x"}]}, _H, "'x': hyperparameter has no 'type'"),
    ({"hyperparameters": [{**_X, "lower": "a"}]}, _H, "'lower' must be a number, got 'a'"),
    ({"hyperparameters": [{**_X, "type": "uniform_int", "lower": 1.5}]}, _H, "whole number"),
    ({"hyperparameters": [{**_X, "log": "yes"}]}, _H, "'log' must be true or false"),
    ({"hyperparameters": [{**_C, "choices": "ab"}]}, _H, "'choices' must be a list"),
    ({"hyperparameters": [{**_C, "choices": [None, {}]}]}, _H, "choice None is not a string"),
    ({"hyperparameters": [{**_C, "weights": 3}]}, _H, "'weights' must be a list of numbers"),
    ({"hyperparameters": [{**_C, "weights": [1]}]}, _H, "1 weights for 2 choices"),
    ({"hyperparameters": [{"name": "o", "type": "ordinal", "sequence": []}]}, _H,
     "must not be empty"),
    ({"hyperparameters": [{"name": "k", "type": "constant", "value": [1]}]}, _H,
     "expected a string, number or bool, got [1]"),
    ({"hyperparameters": {"x": _X}}, ("hyperparameters", None), "'hyperparameters' must be a list"),
    ({"hyperparameters": [_X], "conditions": "abc"}, ("conditions", None),
     "'conditions' must be a list"),
    ({"hyperparameters": [_X], "conditions": [5]}, _COND, "a condition must be a JSON object"),
    ({"hyperparameters": [_X], "conditions": [{"type": "EQ", "parent": "x", "value": 1}]}, _COND,
     "condition has no 'child'"),
    ({"hyperparameters": [_X], "conditions": [{"child": ["x"], "type": "EQ"}]}, _COND,
     "'child' must be a parameter name"),
    (_cond(child="y", type="EQ", parent="c", value="a"), _COND,
     "condition on unknown hyperparameter 'y'"),
    (_cond(type="EQ", parent="cc", value="a"), _COND,
     "unknown hyperparameter 'cc' (did you mean 'c'?)"),
    (_cond(type="EQ", parent="c"), _COND, "has no 'value'"),
    (_cond(type="EQ", parent="c", value={"a": 1}), _COND, "expected a string, number or bool"),
    (_cond(type="IN", parent="c", values=[]), _COND, "'values' must not be empty"),
    (_cond(type="AND", conditions=4), _COND, "'conditions' must be a list"),
    (_cond(type="XOR", parent="c", value="a"), _COND, "unknown condition type 'XOR'"),
    (_cond(type=["EQ"], parent="c", value="a"), _COND, "'type' must be a string"),
    ({"hyperparameters": [_X], "forbiddens": {"a": 1}}, ("forbiddens", None),
     "'forbiddens' must be a list"),
    ({"hyperparameters": [_X], "forbiddens": [{"type": "EQUALS", "name": "y", "value": 1}]},
     _FORB, "EQUALS names unknown hyperparameter 'y'"),
    ({"hyperparameters": [_X], "forbiddens": [{"type": "RELATION", "left": "x", "right": "x",
                                               "lambda": None}]}, _FORB, "unknown relation None"),
    ({"hyperparameters": [_X], "forbiddens": [{"type": "NAND"}]}, _FORB,
     "unknown forbidden type 'NAND'"),
    ({"hyperparameters": [_X, _X]}, _H1, "duplicate parameter name 'x' (first defined at"),
    ({"hyperparameters": [{**_X, "default": 0.9}],
      "forbiddens": [{"type": "EQUALS", "name": "x", "value": 0.9}]}, _H,
     "default 0.9 of 'x' breaks"),
])
def test_malformed_configspace_entries_are_located_errors(doc, line, phrase):
  """Entries of the wrong shape once escaped as TypeError/KeyError/ValueError tracebacks."""
  text = json.dumps(doc, indent=1)
  with pytest.raises(SpaceError) as info:
    io.loads(text, "cs.json")
  msg = str(info.value)
  assert msg.startswith(f"cs.json:{_line_of(text, *line)}"), msg
  assert phrase in msg, msg


def _line_of(text: str, section: str, index: int | None) -> int:
  """The line of ``section`` (index None) or of its item ``index``, in indented JSON."""
  lines = text.splitlines()
  at = next(i for i, l in enumerate(lines) if l.startswith(f' "{section}": '))
  if index is None:
    return at + 1
  starts = [i for i, l in enumerate(lines) if i > at and l.startswith("  ") and
            not l.startswith("   ") and not l.lstrip().startswith(("}", "]"))]
  return starts[index] + 1
