"""CurveStop: a surrogate's curve extrapolation stops hopeless trials, keeps promising ones."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

import objectives
from metatune.space import io, sampling
from metatune.study import Study
from metatune.study.pruners import CurveStop
from metatune.surrogate import (MetaSurrogate, Surrogate, SurrogateConfig, TrainConfig,
                                curve_batches, save_surrogate, synthetic_curve_table, train)

EPOCHS = 5  # curve length of the training tasks and of the hand-made study below
CONFIG = TrainConfig(num_steps=300, batch_tasks=16, max_context=6, num_queries=8, query_configs=4,
                     learning_rate=1e-2, warmup_steps=10, eval_every=300, num_valid_batches=2,
                     calibrate=False, width=32, depth=1, num_heads=2, num_bins=16)


@pytest.fixture(scope="module")
def space():
  return io.loads(objectives.TOY_SPACE, "toy.yaml")


@pytest.fixture(scope="module")
def tables(space):
  """64 training tasks and one held-out task of the synthetic curve prior (one compiled draw)."""
  both = synthetic_curve_table(jax.random.key(0), space, 65, 10, num_steps=EPOCHS)
  return both.select(both.task_ids[:64]), both.select(both.task_ids[64:])


@pytest.fixture(scope="module")
def folder(space, tables, tmp_path_factory):
  table = tables[0]
  fn = curve_batches(space, table, CONFIG.batch_tasks, CONFIG.max_context, CONFIG.num_queries,
                     query_configs=CONFIG.query_configs)
  surrogate, _ = train(jax.random.key(0), space, fn, CONFIG, info={"curve_steps": EPOCHS})
  return save_surrogate(tmp_path_factory.mktemp("curve_surrogate"), surrogate)


@pytest.fixture(scope="module")
def study_state(tables):
  """Five completed curves of a held-out task, a hopeless trial (5, 3 reports far above every
  curve) and a promising one (6, 2 reports below every final value)."""
  held = tables[1]
  u, a, c = (np.asarray(x[0]) for x in (held.values, held.active, held.curve))
  reports = {n: {float(s + 1): float(c[n, s]) for s in range(EPOCHS)} for n in range(5)}
  finals = c[:5, -1]
  spread = float(np.ptp(c[:5]))
  reports[5] = {float(s + 1): float(c[:5, s].max()) + 3 * spread for s in range(3)}
  reports[6] = {1.0: float(finals.min()) - 0.5 * spread, 2.0: float(finals.min()) - 0.6 * spread}
  points = {n: (u[n], a[n]) for n in range(7)}
  return reports, points


def test_stops_a_hopeless_trial_and_keeps_a_promising_one(folder, study_state):
  reports, points = study_state
  stop = CurveStop(folder, max_resource=EPOCHS)
  assert stop.max_points == EPOCHS and stop.max_context == CONFIG.max_context
  hopeless = stop.beat_probability(5, 3.0, reports, points)
  promising = stop.beat_probability(6, 2.0, reports, points)
  assert hopeless < 0.05 < promising, (hopeless, promising)
  assert stop.should_prune(5, 3.0, reports, points=points)
  assert not stop.should_prune(6, 2.0, reports, points=points)
  first = {**reports, 5: {1.0: reports[5][1.0]}}  # judged from the first report on
  assert stop.beat_probability(5, 1.0, first, points) > hopeless


def test_never_stops_before_enough_completed_trials_or_the_minimum_step(folder, study_state):
  reports, points = study_state
  assert not CurveStop(folder, EPOCHS, min_completed=6).should_prune(5, 3.0, reports, points)
  few = {n: r for n, r in reports.items() if n not in (0, 1, 2)}  # 2 completed
  assert CurveStop(folder, EPOCHS).beat_probability(5, 3.0, few, points) is None
  assert not CurveStop(folder, EPOCHS).should_prune(5, 3.0, few, points)
  assert not CurveStop(folder, EPOCHS, min_resource=4).should_prune(5, 3.0, reports, points)
  nan = {**reports, 6: {1.0: math.nan}}
  assert CurveStop(folder, EPOCHS).should_prune(6, 1.0, nan, points)  # a diverged report stops
  with pytest.raises(ValueError, match="needs the trials' configurations"):
    CurveStop(folder, EPOCHS).should_prune(5, 3.0, reports)


def test_a_missing_or_objective_only_checkpoint_is_named(tmp_path, space):
  with pytest.raises(ValueError, match=r"no surrogate checkpoint at .*nothing"):
    CurveStop(tmp_path / "nothing", EPOCHS)
  config = SurrogateConfig(num_features=sampling.feature_size(space),
                           borders=tuple(np.linspace(-3, 3, 9)), width=8, depth=1, num_heads=2)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: MetaSurrogate(config, rngs=nnx.Rngs(0))))
  params = jax.tree.map(lambda v: np.zeros(v.shape, v.dtype), state)  # no compiled init
  old = save_surrogate(tmp_path / "final_only", Surrogate(space, config, graphdef, params))
  with pytest.raises(ValueError, match=r"final_only has no fidelity support"):
    CurveStop(old, EPOCHS)
  with pytest.raises(ValueError, match="threshold must be <= 1"):
    CurveStop(old, EPOCHS, threshold=2.0)


class _Recording(CurveStop):
  """A CurveStop that records the configurations the study passes."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.seen = {}

  def should_prune(self, trial_number, step, reports, points=None):
    self.seen.update(points)
    return super().should_prune(trial_number, step, reports, points)


def test_a_study_passes_configurations_and_curve_stop_stops_trials(folder, tmp_path):
  stop = _Recording(folder, 9)  # objectives.curve reports 9 epochs
  with Study.create(objectives.toy_space_file(tmp_path), tmp_path / "s.db", "curve",
                    seed=2) as study:
    study.optimize(objectives.curve, num_trials=12, executor="inline", pruner=stop,
                   progress=False)
    states = [t.state for t in study.trials]
    assert states[:3] == ["complete"] * 3  # nothing stops before 3 completed curves
    assert "pruned" in states and study.best_trial.state == "complete"
    for t in study.trials:
      np.testing.assert_array_equal(stop.seen[t.number][0], t.values)
      np.testing.assert_array_equal(stop.seen[t.number][1], t.active)
