"""One smoke/contract test over every registered family: sample, evaluate under jit and vmap,
shapes, and the failure flag on a deliberately diverging configuration."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import sample
from metatune.tasks import REASON_CODE, check_metrics, registry
from metatune.tuners import Points


def synthetic_case(tmp_path, data_dir):
  del tmp_path, data_dir
  from metatune.tasks import synthetic
  family = synthetic.make_family({"num_tasks": 6, "fail_param": "lr"})

  def diverging(space, points):
    i = space.index["lr"]
    return Points(points.values.at[:, i].set(0.999), points.active)

  return family, diverging


def table_case(tmp_path, data_dir):
  del data_dir
  from metatune.space import io
  from metatune.tasks import table
  space = io.loads("parameters: {a: {type: float, low: 0, high: 1}, "
                   "b: {type: categorical, choices: [x, y]}}")
  u, act = sample(jax.random.key(0), space, 12)
  rows = [{"task": f"t{i % 2}", **c, "loss": float(i) if i != 3 else None}
          for i, c in enumerate(space.decode_batch(u, act))]
  (tmp_path / "t.json").write_text(json.dumps(rows))
  (tmp_path / "s.json").write_text(io.dumps(space))
  family = table.make_family({"table": str(tmp_path / "t.json"), "space": str(tmp_path / "s.json"),
                              "objective": "loss"})

  def diverging(space, points):
    del space
    return Points(jnp.broadcast_to(u[3], points.values.shape),
                  jnp.broadcast_to(act[3], points.active.shape))  # the row with no result

  return family, diverging


def yahpo_case(tmp_path, data_dir):
  del tmp_path
  from metatune.tasks import yahpo
  family = yahpo.make_family({"scenario": "rbv2_rpart"}, data_dir)

  def diverging(space, points):  # a NaN input: every row fails
    return Points(points.values.at[:, space.index["cp"]].set(jnp.nan), points.active)

  return family, diverging


def training_case(tmp_path, data_dir):
  del data_dir
  from metatune.tasks.training import family as training
  family = training.make_family({"datasets": ["iris"], "models": ["mlp"], "epochs": 2,
                                 "steps_per_epoch": 2, "cache_dir": str(tmp_path / "cache")})

  def diverging(space, points):  # a NaN learning rate: every row diverges
    return Points(points.values.at[:, space.index["lr"]].set(jnp.nan), points.active)

  return family, diverging


def surrogate_case(tmp_path, data_dir):
  """Episodes of an (untrained, tiny) surrogate saved with its contexts, from a folder."""
  del data_dir
  from metatune.space import io, sampling
  from metatune.surrogate import (SurrogateConfig, env, init_surrogate, make_table,
                                  save_surrogate)
  space = io.loads("parameters: {a: {type: float, low: 0, high: 1}, "
                   "b: {type: categorical, choices: [x, y]}}")
  config = SurrogateConfig(num_features=sampling.feature_size(space),
                           borders=tuple(np.linspace(-3, 3, 9)), width=8, depth=1, num_heads=2,
                           num_registers=1, max_context=8)
  u, act = sample(jax.random.key(0), space, 2 * 8)
  table = make_table(u.reshape(2, 8, -1), act.reshape(2, 8, -1),
                     np.asarray(u).sum(-1).reshape(2, 8), np.zeros((2, 8), bool), ["s0", "s1"])
  save_surrogate(tmp_path / "surrogate", init_surrogate(jax.random.key(1), space, config), table)
  family = env.make_family({"surrogate": str(tmp_path / "surrogate"), "num_context": 8,
                            "num_tasks": 3})

  def diverging(space, points):  # a NaN input: the surrogate's value is NaN, every row fails
    return Points(points.values.at[:, space.index["a"]].set(jnp.nan), points.active)

  return family, diverging


CASES = {"synthetic": synthetic_case, "table": table_case, "yahpo": yahpo_case,
         "training": training_case, "surrogate": surrogate_case}
NEEDS_DATA = {"yahpo"}


def test_every_registered_family_has_a_contract_case():
  assert set(CASES) == set(registry.FAMILIES)


# The training and surrogate cases (real training; a surrogate trained first) take minutes;
# their families' jit/vmap/no-retrace contracts run by default in test_training.py and
# tests/surrogate/test_env.py.
HEAVY = {"training", "surrogate"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in sorted(CASES)])
def test_family_contract(name, tmp_path, request):
  data_dir = request.getfixturevalue("data_dir") if name in NEEDS_DATA else None
  family, diverging = CASES[name](tmp_path, data_dir)
  space = family.space
  splits = family.splits()
  ids = family.task_ids()
  assert ids and len(set(ids)) == len(ids)
  assert set(splits) <= {"meta_train", "meta_valid", "heldout_dataset", "heldout_model"}
  task = family.task(ids[0])
  if name == "table":
    task = family.task("t1")
  values, active = sample(jax.random.key(1), space, 8)
  points = Points(values, active)
  metrics = jax.jit(task.evaluate)(jax.random.key(2), points)
  curve_len = len(family.fidelity.values) if family.fidelity else None
  check_metrics(metrics, 8, curve_len)
  # vmap over several batches (e.g. seeds x batches) gives the same as separate calls.
  stacked = Points(jnp.stack([values, values[::-1]]), jnp.stack([active, active[::-1]]))
  both = jax.jit(jax.vmap(task.evaluate, in_axes=(None, 0)))(jax.random.key(2), stacked)
  np.testing.assert_allclose(np.asarray(both.objective[0]), np.asarray(metrics.objective),
                             rtol=1e-5, equal_nan=True)
  bad = diverging(space, points)
  m = jax.jit(task.evaluate)(jax.random.key(3), bad)
  assert bool(m.failed.all())
  assert bool((m.reason > 0).all()) and int(m.reason.max()) < len(REASON_CODE)
