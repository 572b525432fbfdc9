"""Meta-training learns: after a short run the model ranks unseen tasks' configurations."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from metatune.surrogate import TrainConfig, family_batches, predict, table_batches, train
from metatune.surrogate.training import calibrate_temperature
from metatune.tuners.base import Points

from conftest import synthetic_table

CONFIG = TrainConfig(num_steps=150, batch_tasks=16, max_context=8, num_queries=16,
                     learning_rate=3e-3, warmup_steps=10, eval_every=75, num_valid_batches=4,
                     width=16, depth=1, num_heads=2, num_bins=16)


def _mean_spearman(surrogate, table, k=8):
  rhos = []
  for i in range(table.num_tasks):
    u, a, y = table.values[i], table.active[i], table.objective[i]
    pred = predict(surrogate, Points(u[:k], a[:k]), y[:k], jnp.zeros(k, bool),
                   Points(u[k:], a[k:]))
    rhos.append(scipy.stats.spearmanr(np.asarray(pred.mean()), np.asarray(y[k:])).statistic)
  return float(np.mean(rhos))


@pytest.mark.slow
def test_short_training_ranks_unseen_tasks(space, family):
  fn = family_batches(family, CONFIG.batch_tasks, CONFIG.max_context, CONFIG.num_queries)
  lines = []
  surrogate, record = train(jax.random.key(0), space, fn, CONFIG, valid_fn=fn, log=lines.append,
                            info={"family": "tiny"})
  assert [r["step"] for r in record] == [75, 150] and len(lines) == 3
  assert lines[-1].startswith("temperature")  # fitted on the validation batches
  assert all(np.isfinite(r["valid_nll"]) for r in record)
  assert surrogate.info["selected_step"] in (75, 150)
  assert len(surrogate.config.borders) == CONFIG.num_bins + 1
  # Tasks never seen in training (training draws fresh tasks every step).
  table = synthetic_table(space, family, 8, 24, seed=123)
  assert _mean_spearman(surrogate, table) > 0.5


def test_temperature_scaling_widens_an_overconfident_model(space, surrogate, table):
  # Sharpen the head tenfold: the predictive distributions become far too narrow.
  params = jax.tree.map(lambda x: x, surrogate.params)
  params["head"]["kernel"] = params["head"]["kernel"].replace(params["head"]["kernel"][...] * 10)
  params["head"]["bias"] = params["head"]["bias"].replace(params["head"]["bias"][...] * 10)
  sharp = dataclasses.replace(surrogate, params=params)
  fn = table_batches(space, table, batch_tasks=8, max_context=8, num_queries=16)
  batches = jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(0), 2))
  calibrated, scores = calibrate_temperature(sharp, batches, target_clip=30.0)
  assert calibrated.config.temperature > 1.5
  assert scores[calibrated.config.temperature] < scores[1.0]
  assert calibrated.params is sharp.params  # only the temperature changes
