"""Malformed spaces and configurations fail with a `SpaceError` that says where and what.

Every test checks the error type *and* that the message names the parameter
(or constraint) at fault and says what is wrong, so an unclear message fails.
"""

from __future__ import annotations

import jax
import pytest

from metatune.space import (Bool, Categorical, Float, Int, Ordinal, Space, SpaceError,
                            feasibility, sample)


def _raises(fn, *phrases: str) -> SpaceError:
  """Runs ``fn``, expecting a SpaceError whose message contains every phrase."""
  with pytest.raises(SpaceError) as info:
    fn()
  msg = str(info.value)
  for phrase in phrases:
    assert phrase in msg, f"{phrase!r} missing from the message:\n{msg}"
  return info.value


def _optimizer_space() -> Space:
  return Space([
      Categorical("optimizer", ["sgd", "adam"]),
      Float("momentum", 0.0, 0.99, when="optimizer == 'sgd'"),
      Int("layers", 1, 4),
      Float("lr", 1e-4, 1.0, log=True),
  ], constraints=["lr * layers <= 2"])


# ----------------------------------------------------------- parameter settings
@pytest.mark.parametrize("make, name, phrase", [
    (lambda: Float("lr", 1.0, 1.0), "'lr'", "low (1.0) must be less than high (1.0)"),
    (lambda: Float("lr", 0.5, 0.1), "'lr'", "low (0.5) must be less than high (0.1)"),
    (lambda: Int("layers", 5, 2), "'layers'", "low (5) must be less than high (2)"),
], ids=["float-equal", "float-reversed", "int-reversed"])
def test_low_not_below_high(make, name, phrase):
  _raises(lambda: Space([make()]), name, phrase)


@pytest.mark.parametrize("make, name, low", [
    (lambda: Float("lr", 0.0, 1.0, log=True), "'lr'", "low=0.0"),
    (lambda: Float("lr", -1.0, 1.0, log=True), "'lr'", "low=-1.0"),
    (lambda: Int("units", 0, 512, log=True), "'units'", "low=0"),
], ids=["float-zero", "float-negative", "int-zero"])
def test_log_scale_needs_positive_low(make, name, low):
  _raises(lambda: Space([make()]), name, "log-scaled parameter needs low > 0", low)


@pytest.mark.parametrize("make, name", [
    (lambda: Categorical("optimizer", []), "'optimizer'"),
    (lambda: Ordinal("width", []), "'width'"),
], ids=["categorical", "ordinal"])
def test_empty_choices(make, name):
  _raises(lambda: Space([make()]), name, "choices must not be empty")


def test_duplicate_choice():
  _raises(lambda: Space([Categorical("optimizer", ["sgd", "adam", "sgd"])]), "'optimizer'",
          "choice 'sgd' appears twice")


def test_duplicate_names():
  _raises(lambda: Space([Float("lr", 1e-4, 1.0), Int("layers", 1, 4), Int("lr", 1, 3)]),
          "duplicate parameter name 'lr'")


def test_empty_space():
  _raises(lambda: Space([]), "at least one parameter")


# -------------------------------------------------------------------- conditions
def test_condition_on_unknown_parameter_suggests_a_close_name():
  err = _raises(
      lambda: Space([Categorical("optimizer", ["sgd", "adam"]),
                     Float("momentum", 0.0, 0.99, when="optimzer == 'sgd'")]),
      "unknown parameter 'optimzer'", "did you mean 'optimizer'?", "parameter 'momentum'",
      "condition")
  assert "optimzer == 'sgd'\n    ^" in str(err)


def test_condition_on_unknown_parameter_without_a_close_name():
  err = _raises(
      lambda: Space([Categorical("optimizer", ["sgd", "adam"]),
                     Float("momentum", 0.0, 0.99, when="schedule == 'cosine'")]),
      "unknown parameter 'schedule'", "parameter 'momentum'")
  assert "did you mean" not in str(err)


def test_condition_with_an_impossible_choice():
  err = _raises(
      lambda: Space([Categorical("opt", ["sgd", "adam"]),
                     Float("momentum", 0.0, 0.99, when="opt == 'sgdd'")]),
      "'sgdd' is not a possible value of 'opt'", "['sgd', 'adam']", "parameter 'momentum'")
  assert "at column 8" in str(err) and "opt == 'sgdd'\n           ^" in str(err)


def test_condition_with_an_impossible_choice_in_a_list():
  _raises(
      lambda: Space([Categorical("opt", ["sgd", "adam"]),
                     Float("momentum", 0.0, 0.99, when="opt in ['sgd', 'nesterov']")]),
      "'nesterov' is not a possible value of 'opt'", "parameter 'momentum'")


@pytest.mark.parametrize("when", ["n >= 10", "n > 4", "n < 1", "10 <= n", "n == 2.5"])
def test_condition_with_an_impossible_bound(when):
  _raises(lambda: Space([Int("n", 1, 4), Float("x", 0.0, 1.0, when=when)]),
          "no value of 'n' in [1, 4] satisfies this comparison", "parameter 'x'", when)


def test_condition_on_a_float_outside_its_range():
  _raises(lambda: Space([Float("lr", 1e-4, 0.1, log=True),
                         Int("warmup", 0, 100, when="lr > 0.5")]),
          "no value of 'lr' in [0.0001, 0.1] satisfies this comparison", "parameter 'warmup'")


def test_ordered_comparison_on_a_categorical():
  _raises(lambda: Space([Categorical("opt", ["sgd", "adam"]),
                         Float("momentum", 0.0, 0.99, when="opt < 'sgd'")]),
          "'<' needs an ordered parameter", "'opt' is categorical", "parameter 'momentum'")


def test_condition_compares_a_number_with_a_string():
  _raises(lambda: Space([Int("n", 1, 4), Float("x", 0.0, 1.0, when="n == 'four'")]),
          "'n' is a number", "'four'", "parameter 'x'")


def test_two_parameter_cycle():
  _raises(lambda: Space([Float("a", 0.0, 1.0, when="b > 0.5"),
                         Float("b", 0.0, 1.0, when="a > 0.5")]),
          "conditions form a cycle", "a -> b -> a")


def test_three_parameter_cycle_shows_the_whole_loop():
  err = _raises(lambda: Space([Float("a", 0.0, 1.0, when="c > 0.5"),
                               Float("b", 0.0, 1.0, when="a > 0.5"),
                               Float("c", 0.0, 1.0, when="b > 0.5"),
                               Float("free", 0.0, 1.0)]),
                "conditions form a cycle")
  cycle = str(err).split("cycle: ")[1].split(" -> ")
  assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"], str(err)


def test_condition_on_itself():
  _raises(lambda: Space([Float("a", 0.0, 1.0, when="a > 0.5")]), "parameter 'a'",
          "refers to the parameter itself")


# -------------------------------------------------------------------- parse errors
def test_parse_error_in_a_condition_points_at_the_column():
  err = _raises(lambda: Space([Float("a", 0.0, 1.0), Float("b", 0.0, 1.0),
                               Float("c", 0.0, 1.0, when="a + * b > 1")]),
                "parameter 'c'", "unexpected '*'", "at column 5")
  assert str(err).endswith("\n    a + * b > 1\n        ^"), str(err)


def test_parse_error_in_a_constraint_points_at_the_column():
  err = _raises(lambda: Space([Float("a", 0.0, 1.0), Float("b", 0.0, 1.0)],
                              constraints=["a + * b"]),
                "unexpected '*'", "at column 5")
  assert str(err).endswith("\n    a + * b\n        ^"), str(err)


@pytest.mark.parametrize("text, phrase, column", [
    ("(a > 0.5", "expected ')' but found end of expression", 9),
    ("a $ 0.5", "unexpected character '$'", 3),
    ("a > ", "unexpected end of expression", 5),
    ("a > 0.1 > 0.2", "chained comparisons are not supported", 9),
    ("sqrt(a, a) > 0.5", "sqrt() takes 1 argument(s), got 2", 1),
], ids=["paren", "char", "end", "chained", "arity"])
def test_parse_errors_name_the_problem_and_column(text, phrase, column):
  err = _raises(lambda: Space([Float("a", 0.0, 1.0), Float("b", 0.0, 1.0, when=text)]),
                "parameter 'b'", phrase, f"at column {column}")
  caret = str(err).splitlines()[-1]
  assert caret == " " * (4 + column - 1) + "^", str(err)


# ------------------------------------------------------------------- constraints
def test_constraint_on_unknown_parameter():
  _raises(lambda: Space([Float("lr", 1e-4, 1.0, log=True), Int("layers", 1, 4)],
                        constraints=["lr * layer <= 2"]),
          "unknown parameter 'layer'", "did you mean 'layers'?")


def test_constraint_unsatisfiable_on_its_own():
  space = Space([Float("x", 0.0, 1.0), Int("n", 1, 4)], constraints=["x > 2"])
  _raises(lambda: feasibility(space), "unsatisfiable", "constraint 'x > 2'")
  _raises(lambda: sample(jax.random.key(0), space, 8), "unsatisfiable", "constraint 'x > 2'")


def test_constraint_unsatisfiable_arithmetic():
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0)], constraints=["x + y > 3"])
  _raises(lambda: sample(jax.random.key(0), space, 8), "unsatisfiable", "constraint 'x + y > 3'")


def test_forbidden_clause_that_always_holds():
  space = Space([Float("x", 0.0, 1.0)], forbidden=["x <= 1"])
  _raises(lambda: sample(jax.random.key(0), space, 8), "unsatisfiable",
          "forbidden clause 'x <= 1'")


def test_unsatisfiable_constraint_is_reported_under_jit():
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0)], constraints=["x * y > 2"])
  _raises(lambda: jax.jit(lambda k: sample(k, space, 8))(jax.random.key(0)), "unsatisfiable",
          "constraint 'x * y > 2'")


# ---------------------------------------------------------------- configurations
def test_active_parameter_missing():
  _raises(lambda: _optimizer_space().validate({"optimizer": "sgd", "layers": 2, "lr": 0.01}),
          "active parameter 'momentum' is missing", "optimizer == 'sgd'", "holds")


def test_unconditional_parameter_missing():
  _raises(lambda: _optimizer_space().validate({"optimizer": "adam", "layers": 2}),
          "active parameter 'lr' is missing")


def test_inactive_parameter_set():
  _raises(lambda: _optimizer_space().validate(
      {"optimizer": "adam", "momentum": 0.9, "layers": 2, "lr": 0.01}),
          "parameter 'momentum' is set but inactive", "optimizer == 'sgd'", "does not hold")


def test_unknown_key_in_a_configuration():
  _raises(lambda: _optimizer_space().validate(
      {"optimizer": "sgd", "momentun": 0.9, "layers": 2, "lr": 0.01}),
          "unknown parameter 'momentun'", "did you mean 'momentum'?")


@pytest.mark.parametrize("key, value, phrase", [
    ("layers", 7, "value 7 is outside [1, 4]"),
    ("layers", 0, "value 0 is outside [1, 4]"),
    ("lr", 2.0, "value 2.0 is outside [0.0001, 1.0]"),
    ("momentum", -0.1, "value -0.1 is outside [0.0, 0.99]"),
    ("optimizer", "adamw", "value 'adamw' is not one of ['sgd', 'adam']"),
    ("layers", 2.5, "expected a whole number, got 2.5"),
    ("lr", "fast", "expected a number, got 'fast'"),
    ("lr", float("nan"), "expected a finite number, got nan"),
    ("layers", True, "expected a finite number, got True"),
])
def test_value_out_of_range_or_of_the_wrong_type(key, value, phrase):
  cfg = {"optimizer": "sgd", "momentum": 0.9, "layers": 2, "lr": 0.01, key: value}
  _raises(lambda: _optimizer_space().validate(cfg, where="runs.jsonl:3"), f"parameter '{key}'",
          phrase, "runs.jsonl:3")


def test_bool_value_must_be_a_bool():
  space = Space([Bool("bias"), Ordinal("width", [16, 32, 64])])
  _raises(lambda: space.validate({"bias": "yes", "width": 32}), "parameter 'bias'",
          "value 'yes' is not one of [False, True]")
  _raises(lambda: space.validate({"bias": True, "width": 48}), "parameter 'width'",
          "value 48 is not one of [16, 32, 64]")


def test_violated_constraint_names_it_and_the_values():
  _raises(lambda: _optimizer_space().validate({"optimizer": "adam", "layers": 4, "lr": 0.75}),
          "violates constraint 'lr * layers <= 2'", "lr=0.75", "layers=4")


def test_configuration_must_be_a_mapping():
  _raises(lambda: _optimizer_space().validate([("optimizer", "sgd")]), "must be a mapping",
          "list")


def test_encode_checks_the_configuration_too():
  _raises(lambda: _optimizer_space().encode({"optimizer": "sgd", "layers": 9, "lr": 0.01,
                                             "momentum": 0.5}),
          "parameter 'layers'", "value 9 is outside [1, 4]")


def test_decode_checks_shapes():
  space = _optimizer_space()
  _raises(lambda: space.decode([0.5, 0.5], [True, True]), "expected values and active of shape",
          f"({space.num_params},)")


# ---------------- regressions: bugs found while writing these tests, now fixed
def test_condition_with_an_impossible_negative_bound():
  """'n <= -1' was accepted (a negative literal skipped the check) while 'n < 1' was not."""
  _raises(lambda: Space([Int("n", 1, 4), Float("x", 0.0, 1.0, when="n <= -1")]),
          "no value of 'n' in [1, 4] satisfies this comparison", "parameter 'x'")


def test_condition_with_an_impossible_ordinal_value():
  """'width == 20' with width in [16, 32, 64] was accepted, leaving the child never active."""
  _raises(lambda: Space([Ordinal("width", [16, 32, 64]),
                         Float("x", 0.0, 1.0, when="width == 20")]),
          "no value of 'width' in [16, 32, 64] satisfies this comparison", "parameter 'x'")
  _raises(lambda: Space([Ordinal("width", [16, 32, 64]),
                         Float("x", 0.0, 1.0, when="width > 64")]),
          "no value of 'width' in [16, 32, 64] satisfies this comparison", "parameter 'x'")


def test_negative_choice_of_a_categorical_is_a_literal():
  """'c == -3' was rejected as 'can only be compared with a literal value'."""
  space = Space([Categorical("c", [-3, 1]), Float("x", 0.0, 1.0, when="c == -3")])
  assert space.validate({"c": -3, "x": 0.5}) == {"c": -3, "x": 0.5}
  _raises(lambda: space.validate({"c": 1, "x": 0.5}), "parameter 'x' is set but inactive")


def test_constraints_unsatisfiable_together_names_them():
  """The message once named neither the clauses nor the parameters in conflict."""
  space = Space([Float("x", 0.0, 1.0), Int("n", 1, 4)], constraints=["x > 0.6"],
                forbidden=["x > 0.5"])
  _raises(lambda: sample(jax.random.key(0), space, 8), "unsatisfiable", "never all together",
          "constraint 'x > 0.6'", "forbidden clause 'x > 0.5'")
