"""Contract tests every registered tuner must pass, on a conditional, constrained space."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import io, sample
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space
from metatune.tuners import TUNERS, Evaluation, best_so_far, run_tuning

CONTRACT_SPACE = """
name: contract
parameters:
  opt: {type: categorical, choices: [sgd, adam]}
  lr: {type: float, low: 1e-4, high: 1.0, log: true}
  opt.sgd:
    when: "opt == 'sgd'"
    parameters:
      momentum: {type: float, low: 0.0, high: 0.99}
      nesterov: {type: bool, when: "opt.sgd.momentum > 0.5"}
  layers: {type: int, low: 1, high: 3}
  w1: {type: int, low: 8, high: 256, log: true}
  w2: {type: int, low: 8, high: 256, log: true, when: "layers >= 2"}
constraints:
  - "w1 * active_or(w2, 1) <= 4096"
forbidden:
  - "opt == 'sgd' and lr > 0.5"
"""


@pytest.fixture(scope="module")
def space():
  return io.loads(CONTRACT_SPACE, "contract.yaml")


# Cheaper settings where a tuner's defaults are slow to compile and run; same code paths.
CHEAP = {"grid": {"resolution": 3}, "gp_bo": {"num_candidates": 128, "fit_steps": 20}}


def make(name, space, batch_size=4, history_size=32):
  kwargs = dict(CHEAP.get(name, {}))
  if name == "portfolio":  # three known-good configurations (shorter than one batch of 4)
    values, active = sample(jax.random.key(123), space, 3)
    kwargs.update(values=values, active=active)
  return TUNERS[name](space, batch_size=batch_size, history_size=history_size, **kwargs)


def objective_with_failures(space, fail_every=5):
  family = SyntheticFamily(space, SyntheticConfig(seed=3))
  task = family.sample(jax.random.key(11))

  def fn(key, points):
    ev = family.evaluate(key, task, points)
    idx = jnp.arange(points.values.shape[0])
    nan = (jnp.sum(points.values, axis=-1) * 1000).astype(jnp.int32) % fail_every == 0
    obj = jnp.where(nan, jnp.nan, ev.objective)
    inf = idx == 1
    obj = jnp.where(inf & ~nan, jnp.inf, obj)
    flagged = idx == 2
    return Evaluation(obj, flagged)

  return fn


def assert_valid(space, values, active):
  values = np.asarray(values).reshape(-1, space.num_params)
  active = np.asarray(active).reshape(-1, space.num_params)
  for cfg in space.decode_batch(values, active):
    space.validate(cfg)  # raises on any invalid proposal
  assert np.all(values[~active] == 0.0)


@pytest.mark.parametrize("name", sorted(TUNERS))
def test_valid_proposals_under_jit_and_scan(name, space):
  tuner = make(name, space)
  fn = objective_with_failures(space)
  state, trace = jax.jit(lambda k: run_tuning(k, tuner, fn, 12))(jax.random.key(0))
  assert trace.points.values.shape == (12, 4, space.num_params)
  assert_valid(space, trace.points.values, trace.points.active)
  assert int(state.history.count) == 48


@pytest.mark.parametrize("name", sorted(TUNERS))
def test_failed_evaluations_never_become_incumbent(name, space):
  tuner = make(name, space)
  fn = objective_with_failures(space, fail_every=3)
  state, trace = jax.jit(lambda k: run_tuning(k, tuner, fn, 10))(jax.random.key(1))
  failed = np.asarray(trace.failed).ravel()
  obj = np.asarray(trace.objective).ravel()
  assert failed.any() and (~failed).any()
  assert np.all(failed[~np.isfinite(obj)])  # NaN and inf are failures even when not flagged
  assert failed[2::4].all()  # the flagged index
  best = float(state.history.best_objective)
  assert np.isfinite(best)
  assert best == pytest.approx(obj[~failed].min())
  assert int(state.history.num_failed) == failed.sum()
  # The incumbent is a configuration that was evaluated successfully.
  ok_vals = np.asarray(trace.points.values).reshape(-1, space.num_params)[~failed]
  assert np.any(np.all(ok_vals == np.asarray(state.history.best_values), axis=-1))
  curve = np.asarray(best_so_far(trace))
  assert np.all(np.diff(curve[np.isfinite(curve)]) <= 0)


@pytest.mark.parametrize("name", sorted(TUNERS))
def test_state_shapes_stable_and_no_retrace(name, space):
  tuner = make(name, space)
  traces = []

  def step(key, state):
    traces.append(1)
    ask_key, tell_key = jax.random.split(key)
    points, state = tuner.ask(ask_key, state)
    ev = Evaluation.of(jnp.sum(points.values, axis=-1))
    state, metrics = tuner.tell(tell_key, state, points, ev)
    return state, metrics

  step = jax.jit(step)
  state0 = tuner.init(jax.random.key(0))
  state1, _ = step(jax.random.key(1), state0)
  state2, _ = step(jax.random.key(2), state1)
  assert len(traces) == 1, "the second call retraced"
  shapes = lambda s: jax.tree.map(lambda x: (x.shape, x.dtype), s)
  assert shapes(state0) == shapes(state1) == shapes(state2)
  assert jax.tree.structure(state0) == jax.tree.structure(state2)


@pytest.mark.parametrize("name", sorted(TUNERS))
def test_same_key_same_result_and_vmap(name, space):
  tuner = make(name, space, batch_size=2)
  fn = objective_with_failures(space)
  run = jax.jit(lambda k: run_tuning(k, tuner, fn, 6)[1].best)
  a = run(jax.random.key(5))
  b = run(jax.random.key(5))
  np.testing.assert_array_equal(a, b)
  batched = jax.jit(jax.vmap(lambda k: run_tuning(k, tuner, fn, 6)[1].best))(
      jax.random.split(jax.random.key(6), 3))
  for i in range(3):  # the same keys again, made afresh (the checker tracks eager keys too)
    np.testing.assert_allclose(batched[i], run(jax.random.split(jax.random.key(6), 3)[i]),
                               rtol=1e-6)


@pytest.mark.parametrize("name", sorted(TUNERS))
def test_history_is_a_ring_buffer_that_keeps_the_best(name, space):
  tuner = make(name, space, batch_size=3, history_size=8)
  fn = objective_with_failures(space, fail_every=1000)
  state, trace = jax.jit(lambda k: run_tuning(k, tuner, fn, 10))(jax.random.key(2))
  assert int(state.history.count) == 30
  assert state.history.objective.shape == (8,)
  obj = np.asarray(trace.objective).ravel()
  failed = np.asarray(trace.failed).ravel()
  assert float(state.history.best_objective) == pytest.approx(obj[~failed].min())
  # The buffer holds the last 8 observations.
  last = np.where(failed[-8:], np.inf, obj[-8:])
  assert sorted(np.asarray(state.history.objective).tolist()) == pytest.approx(sorted(last))


def test_tuners_on_embedded_default_space():
  """Random and quasi-random search on the default (14 parameters, 3 constraints) space."""
  space = default_space()
  for name in ("random", "quasi_random"):
    tuner = TUNERS[name](space, batch_size=8)
    family = SyntheticFamily(space)
    task = family.sample(jax.random.key(0))
    _, trace = jax.jit(lambda k: run_tuning(k, tuner, lambda k2, p: family.evaluate(k2, task, p),
                                            8))(jax.random.key(1))
    assert_valid(space, trace.points.values, trace.points.active)


def test_quasi_random_spreads_points_better_than_random():
  """Halton points cover the unit cube more evenly: a lower max-gap on a 1-D marginal."""
  space = io.loads("parameters: {x: {type: float, low: 0, high: 1}, "
                   "y: {type: float, low: 0, high: 1}}")
  num = 64
  gaps = {}
  for name in ("random", "quasi_random"):
    tuner = TUNERS[name](space, batch_size=num)
    state = tuner.init(jax.random.key(0))
    points, _ = tuner.ask(jax.random.key(1), state)
    xs = np.sort(np.asarray(points.values[:, 0]))
    gaps[name] = np.max(np.diff(np.concatenate([[0.0], xs, [1.0]])))
  assert gaps["quasi_random"] < 0.5 * gaps["random"]


def test_quasi_random_shares_dimensions_of_exclusive_branches(space):
  from metatune.tuners import shared_dimensions
  dims = shared_dimensions(space)
  names = list(space.names)
  # opt.sgd.momentum is never active together with ... nothing exclusive here, so
  # use the default space where sgd and adam children are exclusive.
  default = default_space()
  ddims = shared_dimensions(default)
  dn = list(default.names)
  assert ddims[dn.index("optimizer.sgd.momentum")] == ddims[dn.index("optimizer.adam.b1")]
  assert len(set(dims.tolist())) <= len(names)


def test_grid_is_exhaustive_then_random(space):
  from metatune.tuners import grid_points
  gu, ga = grid_points(space, 3)
  configs = space.decode_batch(gu, ga)
  keys = {tuple(sorted(c.items())) for c in configs}
  assert len(keys) == len(configs)  # no duplicates
  assert all(space.validate(c) == c for c in configs)
  tuner = TUNERS["grid"](space, batch_size=len(configs), resolution=3)
  points, _ = tuner.ask(jax.random.key(0), tuner.init(jax.random.key(1)))
  asked = {tuple(sorted(c.items())) for c in space.decode_batch(points.values, points.active)}
  assert asked == keys


def test_grid_refuses_large_spaces():
  from metatune.space import SpaceError
  with pytest.raises(SpaceError, match="grid has more than"):
    TUNERS["grid"](default_space(), resolution=10, max_points=1000)
