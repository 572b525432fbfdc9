"""Malformed spaces and configurations fail with a `SpaceError` that says where and what.

Every test checks the error type *and* that the message names the parameter
(or constraint) at fault and says what is wrong, so an unclear message fails.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from metatune.space import (Bool, Categorical, Constraint, Float, Int, Ordinal, Space,
                            SpaceError, feasibility, sample)


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
  """The message once named neither the clauses nor the parameters in conflict.

  Nothing proves these two contradict (each holds somewhere), so the message says
  that a search found nothing, not that nothing exists (#15, item 3).
  """
  space = Space([Float("x", 0.0, 1.0), Int("n", 1, 4)], constraints=["x > 0.6"],
                forbidden=["x > 0.5"])
  err = _raises(lambda: feasibility(space), "found no valid configuration in", "tries",
                "may be unsatisfiable", "never all together", "constraint 'x > 0.6'",
                "forbidden clause 'x > 0.5'")
  assert "the constraints are unsatisfiable" not in str(err)


# ------------------------------------------------- float32 bounds (#15, item 2)
@pytest.mark.parametrize("make, phrase", [
    (lambda: Float("x", -1e308, 1e308), "low -1e+308 is beyond float32's range"),
    (lambda: Float("x", 0.0, 1e39), "high 1e+39 is beyond float32's range"),
    (lambda: Int("n", 0, 10**400), "high must be a finite number, got 1000000"),
    (lambda: Int("n", 0, 10**20), "beyond ±2**53"),
    (lambda: Float("x", 1e-300, 1.0, log=True), "closer to 0 than float32 resolves"),
    (lambda: Float("x", -3e38, 3e38), "width of the range"),
    (lambda: Float("x", 1.0, 1.0 + 1e-12), "same number on a scale in float32"),
    (lambda: Float("x", 1e6, 1e6 * (1 + 1e-12), log=True), "same number on a log scale"),
    (lambda: Ordinal("x", [1.0, 1.0 + 1e-12]), "the same number in float32"),
    (lambda: Categorical("x", [1e39, 2]), "choice 1e+39 is beyond float32's range"),
    (lambda: Categorical("x", ["a", "b"], weights=[1e-30, 1.0]),
     "weight of choice 'a' is too small"),
], ids=["huge-low", "huge-high", "int-beyond-float64", "int-beyond-2**53", "tiny-log-low",
        "width-overflow", "equal-in-float32", "equal-logs", "equal-choices", "huge-choice",
        "tiny-weight"])
def test_bounds_the_float32_encoding_cannot_represent_are_refused(make, phrase):
  """[-1e308, 1e308] once passed and `space sample` wrote {"x": NaN}."""
  err = _raises(lambda: Space([make()]), phrase)
  assert "parameter 'x'" in str(err) or "parameter 'n'" in str(err)


def test_widest_float32_range_samples_finite_json():
  import json  # pylint: disable=import-outside-toplevel
  space = Space([Float("x", -1e38, 1e38), Float("y", 1e-37, 3e38, log=True),
                 Int("n", -2**53, 2**53)])
  values, active = jax.jit(lambda k: sample(k, space, 64))(jax.random.key(0))
  for cfg in space.decode_batch(values, active):
    json.dumps(cfg, allow_nan=False)
    space.validate(cfg)


def test_huge_weights_keep_their_ratios():
  """Weights near float64's maximum overflowed their sum (every bin became empty)."""
  space = Space([Categorical("x", ["a", "b"], weights=[1e308, 1e308])])
  np.testing.assert_allclose(space.edges[0, :3], [0.0, 0.5, 1.0])


# ----------------------------------------- feasible spaces are found (item 3)
def test_feasible_corner_is_found_not_declared_impossible():
  """x = y = 1 satisfies both, but no random draw does: once 'unsatisfiable'."""
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0)],
                constraints=["x > 0.99999", "y > 0.99999"])
  rate, pool_values, pool_active = feasibility(space)
  assert rate < 1 / 32768 and len(pool_values) > 0
  for cfg in space.decode_batch(pool_values, pool_active):
    space.validate(cfg)
    assert cfg["x"] > 0.99999 and cfg["y"] > 0.99999


@pytest.mark.slow
def test_sampler_on_a_space_feasible_only_at_a_corner():
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0)],
                constraints=["x > 0.99999", "y > 0.99999"])
  values, active = jax.jit(lambda k: sample(k, space, 16))(jax.random.key(0))
  for cfg in space.decode_batch(values, active):
    space.validate(cfg)


@pytest.mark.slow
def test_local_search_finds_a_narrow_interior_region():
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0), Int("n", 1, 8)],
                constraints=["abs(x - 0.3) < 1e-5", "abs(y - 0.7) < 1e-5"])
  values, active = jax.jit(lambda k: sample(k, space, 16))(jax.random.key(0))
  for cfg in space.decode_batch(values, active):
    space.validate(cfg)


# -------------------------------------------------- defaults (#15, item 4a)
def test_given_default_that_breaks_a_constraint_is_an_error():
  _raises(lambda: Space([Float("x", 0.0, 1.0, default=0.9, where="d.yaml:2")],
                        constraints=["x < 0.5"]),
          "d.yaml:2", "parameter 'x'", "default 0.9 of 'x' breaks constraint 'x < 0.5'")


def test_given_default_in_a_forbidden_combination_is_an_error():
  _raises(lambda: Space([Categorical("opt", ["sgd", "adam"], default="sgd"),
                         Float("lr", 1e-4, 1.0, log=True, default=0.5)],
                        forbidden=["opt == 'sgd' and lr > 0.3"]),
          "default 'sgd' of 'opt' breaks forbidden clause", "lr=0.5")


def test_default_breaking_a_constraint_with_an_implied_default_names_both():
  err = _raises(lambda: Space([Float("x", 0.0, 1.0, default=0.9), Float("y", 0.0, 1.0)],
                              constraints=["x + y < 1"]),
                "default 0.9 of 'x'", "y=0.5 (its implied default)")
  assert "x=0.9" in str(err)


def test_implied_defaults_may_break_a_constraint():
  """Midpoints and first choices are not the user's claim; the sampler finds valid points."""
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0)], constraints=["x + y < 0.5"])
  assert space.default_config() == {"x": 0.5, "y": 0.5}


def test_default_of_an_inactive_parameter_is_not_checked_against_constraints():
  """As in ConfigSpace: a conditional parameter's default is its value when active."""
  space = Space([Categorical("opt", ["sgd", "adam"], default="adam"),
                 Float("m", 0.0, 1.0, default=0.9, when="opt == 'sgd'")],
                constraints=["m < 0.95"])
  assert space.default_config() == {"opt": "adam"}


# ------------------------------------------------ expression limits (item 6)
@pytest.mark.parametrize("text, phrase", [
    ("(" * 150 + "x" + ")" * 150 + " > 0.5", "nested more than 50 levels deep"),
    ("-" * 3000 + "x > 0", "nested more than 50 levels deep"),
    ("not " * 1000 + "x > 0", "nested more than 50 levels deep"),
    ("**".join(["x"] * 1000) + " > 0", "nested more than 50 levels deep"),
    (" + ".join(["x"] * 101) + " > 0", "more than 100 levels deep"),
    (" + ".join(["x"] * 100_000) + " > 0", "characters long, more than the limit of 10000"),
], ids=["parens-150", "signs-3000", "not-1000", "power-1000", "sum-101", "sum-100k"])
def test_expressions_past_the_limits_are_located_errors(text, phrase):
  """Each once ended in a RecursionError traceback (in the parser or a later tree walk)."""
  _raises(lambda: Space([Float("x", 0.0, 1.0)],
                        constraints=[Constraint.require(text, "e.yaml:4")]), "e.yaml:4", phrase)


def test_expressions_at_the_limits_work():
  text = "(" * 40 + "x" + ")" * 40 + " + " + " + ".join(["x"] * 97) + " >= 0"
  space = Space([Float("x", 0.0, 1.0)], constraints=[text])
  values, active = jax.jit(lambda k: sample(k, space, 4))(jax.random.key(0))
  assert all(space.validate(c) for c in space.decode_batch(values, active))
