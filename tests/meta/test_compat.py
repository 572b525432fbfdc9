"""What differs between a prior's training space and the space it is asked to tune."""

import warnings

import pytest

from metatune.meta import compat
from metatune.space import io
from metatune.tasks import default_space

USER_SPACE = """
name: mine
parameters:
  lr: {type: float, low: 1e-4, high: 0.1, log: true}
  optimizer: {type: categorical, choices: [sgd, adam, lion]}
  num_layers: {type: categorical, choices: [shallow, deep]}
  momentum: {type: float, low: 0.0, high: 0.99, when: "optimizer == 'sgd'"}
  dropout: {type: float, low: 0.0, high: 0.5, when: "lr > 0.01"}
constraints: ["lr * 10 <= 1"]
"""


def _card(space):
  return {"space": space.name, "space_signature": space.signature,
          compat.DESCRIPTION: compat.describe_space(space)}


def test_identical_spaces_say_nothing():
  space = default_space()
  report = compat.compare_spaces(_card(space), space)
  assert report.identical and report.differences() == []
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    compat.warn_if_different(_card(space), space)


def test_a_user_space_is_compared_parameter_by_parameter():
  report = compat.compare_spaces(_card(default_space()), io.loads(USER_SPACE))
  assert not report.identical and report.described
  assert report.unseen == ("momentum",)
  assert report.kinds == (("num_layers", "int", "categorical"),)
  ranges = dict((n, (a, b)) for n, a, b in report.ranges)
  assert ranges["lr"] == ("[1e-05, 1] log", "[0.0001, 0.1] log")
  assert ranges["optimizer"] == ("{sgd, adam, rmsprop}", "{sgd, adam, lion}")
  assert report.conditions == (("dropout", None, "lr > 0.01"),)
  added, removed = report.constraints
  assert added == ("require lr * 10 <= 1",) and len(removed) == 3
  assert "width.l1" in report.unused and "dropout" not in report.unused
  text = report.message("the prior p/")
  assert text.startswith("the prior p/ was meta-trained on space 'synthetic_mlp'")
  for phrase in ("1 parameter(s) it never saw: momentum", "kinds differ: num_layers (int on "
                 "the card, categorical here)", "conditions differ: dropout (always active on "
                 "the card, lr > 0.01 here)", "are not in this space"):
    assert phrase in text
  assert "\n" not in text


def test_a_card_without_a_description_says_it_cannot_tell():
  card = {"space": "old", "space_signature": "0123456789abcdef"}
  report = compat.compare_spaces(card, default_space())
  assert not report.identical and not report.described
  with pytest.warns(compat.SpaceMismatchWarning, match="does not list the parameters"):
    compat.warn_if_different(card, default_space())


def test_the_description_survives_json():
  import json  # pylint: disable=import-outside-toplevel
  space = io.loads(USER_SPACE)
  card = json.loads(json.dumps(_card(space)))
  assert compat.compare_spaces(dict(card, space_signature="x" * 16), space).differences() == [
      "the parameters, conditions and constraints agree; the signatures differ in what the "
      "card does not record (sampling weights)"]
