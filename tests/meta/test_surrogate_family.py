"""`family: surrogate` configs: episodes of a trained surrogate folder, kept in the prior."""

import json

import jax
import numpy as np
import pytest

from metatune.meta.ppo import MetaTrainConfig
from metatune.meta.train import meta_train
from metatune.space import SpaceError, io, sampling
from metatune.surrogate import SurrogateConfig, init_surrogate, make_table, save_surrogate
from metatune.surrogate.env import SurrogateFamily
from metatune.tasks import registry

TINY_SPACE = """
name: tiny
parameters:
  opt: {type: categorical, choices: [a, b]}
  lr: {type: float, low: 1e-3, high: 1.0, log: true}
  mom: {type: float, low: 0.0, high: 0.9, when: "opt == 'a'"}
"""


@pytest.fixture(scope="module")
def surrogate_dir(tmp_path_factory):
  space = io.loads(TINY_SPACE, "tiny.yaml")
  config = SurrogateConfig(num_features=sampling.feature_size(space),
                           borders=tuple(np.linspace(-3, 3, 9)), width=16, depth=1, num_heads=2,
                           num_registers=1, max_context=16)
  surrogate = init_surrogate(jax.random.key(0), space, config, {"family": "tiny"})
  u, a = sampling.sample(jax.random.key(1), space, 3 * 12)
  y = np.asarray(u).sum(-1)
  table = make_table(u.reshape(3, 12, -1), a.reshape(3, 12, -1), y.reshape(3, 12),
                     np.zeros((3, 12), bool), ["t0", "t1", "t2"])
  folder = tmp_path_factory.mktemp("surrogate")
  save_surrogate(folder, surrogate, table)
  return folder


def _config(tmp_path, options: dict):
  path = tmp_path / "family.yaml"
  path.write_text(json.dumps({"family": "surrogate", "options": options}))
  return registry.load_family_config(path)


def test_surrogate_family_from_a_config(surrogate_dir, tmp_path):
  family = registry.make_family(_config(tmp_path, {"surrogate": str(surrogate_dir),
                                                    "num_context": 8, "num_tasks": 5}))
  assert isinstance(family, SurrogateFamily) and family.source_dir == surrogate_dir
  assert len(family.task_indices("meta_train")) == 5


@pytest.mark.parametrize("options, message", [
    ({}, "option 'surrogate' is required"),
    ({"surrogate": "nowhere"}, "option 'surrogate': .*nowhere"),
    ({"surrogate": "SURROGATE", "num_contxt": 8}, "unknown option.*'num_contxt'"),
])
def test_bad_surrogate_options_name_the_config(surrogate_dir, tmp_path, options, message):
  options = {k: (str(surrogate_dir) if v == "SURROGATE" else v) for k, v in options.items()}
  with pytest.raises(SpaceError, match=message) as err:
    registry.make_family(_config(tmp_path, options))
  assert "family.yaml" in str(err.value)


@pytest.mark.slow
def test_prior_holds_the_surrogate_it_was_trained_in(surrogate_dir, tmp_path):
  family = registry.make_family(_config(tmp_path, {"surrogate": str(surrogate_dir),
                                                    "num_context": 8, "num_tasks": 4}))
  config = MetaTrainConfig(num_envs=4, num_trials=3, num_updates=1, num_minibatches=2,
                           reference_samples=64, reference_refine=1)
  card = meta_train(family, config, tmp_path / "prior", progress=False, evaluate=False,
                    log=lambda _: None)
  copied = tmp_path / "prior" / "surrogate"
  assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in surrogate_dir.iterdir())
  assert card["surrogate"]["folder"] == "surrogate" and len(card["surrogate"]["sha256"]) == 16
  saved = json.loads((tmp_path / "prior" / "card.json").read_text())
  assert saved["surrogate"] == card["surrogate"]
