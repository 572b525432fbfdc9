"""Prior folders: every way a folder can be broken is one located `PriorError`, found early."""

import json
import shutil
import warnings

import pytest
from flax import nnx

from metatune.meta import compat
from metatune.meta import prior as prior_io
from metatune.meta.errors import PriorError
from metatune.networks import policy as pol
from metatune.tasks import default_space


@pytest.fixture(scope="module")
def good(tmp_path_factory):
  """A prior folder: a fresh policy (hidden 32) and a card for the default space."""
  folder = tmp_path_factory.mktemp("prior") / "good"
  config = pol.PolicyConfig()
  _, params = nnx.split(pol.Policy(config, rngs=nnx.Rngs(0)))
  space = default_space()
  prior_io.save_prior(folder, params, config, {
      "num_trials": 10, "space": space.name, "space_signature": space.signature,
      compat.DESCRIPTION: compat.describe_space(space)})
  return folder


def _broken(good, tmp_path, how):
  folder = tmp_path / how
  shutil.copytree(good, folder)
  card_path = folder / "card.json"
  card = json.loads(card_path.read_text())
  if how == "card_not_json":
    card_path.write_text('{"num_trials": 10,\n  "policy_hash": oops}\n')
  elif how == "card_not_object":
    card_path.write_text("[1, 2]\n")
  elif how == "shapes_differ":  # a valid setting that does not match the stored arrays
    card["policy_config"]["hidden"] = 16
  elif how == "hidden_too_wide":  # a crafted card: the width would be allocated before the hash
    card["policy_config"]["hidden"] = prior_io.MAX_HIDDEN + 1
  elif how == "hidden_not_int":
    card["policy_config"]["hidden"] = "32"
  elif how == "unknown_setting":
    card["policy_config"]["layers"] = 400
  elif how == "hash_malformed":
    card["policy_hash"] = None
  elif how == "hash_differs":
    card["policy_hash"] = "0" * 16
  elif how == "policy_deleted":
    shutil.rmtree(folder / "policy")
  elif how == "policy_bytes":
    data = max((p for p in (folder / "policy").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    data.write_bytes(bytes(raw))
  if how not in ("card_not_json", "card_not_object"):
    card_path.write_text(json.dumps(card))
  return folder


# The file each failure must name, and a phrase of its message.
CASES = {
    "card_not_json": ("card.json", "not valid JSON.*line 2"),
    "card_not_object": ("card.json", "expected a JSON object"),
    "shapes_differ": ("policy", "does not match the card's policy_config.*stored \\(32"),
    "hidden_too_wide": ("card.json", "hidden must be a whole number from 1 to 1024, got 1025"),
    "hidden_not_int": ("card.json", "hidden must be a whole number"),
    "unknown_setting": ("card.json", "unknown setting.*layers"),
    "hash_malformed": ("card.json", "policy_hash must be 16 hex digits"),
    "hash_differs": ("policy", "do not match the card's policy_hash"),
    "policy_deleted": ("policy", "no policy here"),
    "policy_bytes": ("policy", "(damaged or incomplete|do not match the card's policy_hash)"),
}


@pytest.mark.parametrize("how", sorted(CASES))
def test_a_broken_prior_is_one_located_error(good, tmp_path, how):
  folder = _broken(good, tmp_path, how)
  where, phrase = CASES[how]
  with pytest.raises(PriorError, match=phrase) as info:
    prior_io.load_prior(folder)
  assert info.value.where == str(folder / where)
  assert "\n" not in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize("how", ["card_not_json", "hidden_too_wide", "unknown_setting",
                                 "hash_malformed", "policy_deleted"])
def test_card_problems_are_found_before_orbax_or_a_network(good, tmp_path, monkeypatch, how):
  # "policy/ deleted" took 97 to 200 s to be reported; a crafted card chose the size of the
  # network built before the hash was checked. These need neither orbax nor a network.
  folder = _broken(good, tmp_path, how)

  def forbidden(*args, **kwargs):
    raise AssertionError("reached orbax or built a network")

  monkeypatch.setattr(prior_io, "_checkpointer", forbidden)
  monkeypatch.setattr(prior_io.pol, "Policy", forbidden)
  with pytest.raises(PriorError):
    prior_io.load_prior(folder)


def test_shapes_are_compared_before_any_array_is_read(good, tmp_path, monkeypatch):
  folder = _broken(good, tmp_path, "shapes_differ")
  monkeypatch.setattr(prior_io, "restore_tree", lambda *a: pytest.fail("read the arrays"))
  with pytest.raises(PriorError, match="stored \\(32"):
    prior_io.load_prior(folder)


def test_the_good_prior_loads_and_matches_its_hash(good):
  graphdef, params, config, card = prior_io.load_prior(good)
  assert config == pol.PolicyConfig() and prior_io.params_hash(params) == card["policy_hash"]
  assert nnx.merge(graphdef, params).config == config


def test_a_prior_on_another_space_warns_what_differs(good):
  # A default-space prior on a 4-parameter user space ran silently.
  from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
  from metatune.space import io  # pylint: disable=import-outside-toplevel
  user = io.loads("""
parameters:
  lr: {type: float, low: 1e-4, high: 0.1, log: true}
  optimizer: {type: categorical, choices: [sgd, adam]}
  width: {type: int, low: 8, high: 512, log: true}
  momentum: {type: float, low: 0.0, high: 0.99, when: "optimizer == 'sgd'"}
""")
  with pytest.warns(compat.SpaceMismatchWarning,
                    match=r"never saw: width, momentum.*ranges differ: lr") as record:
    prior_tuner(user, path=str(good))
  assert str(good) in str(record[0].message)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    prior_tuner(default_space(), path=str(good))  # its own space: silent
