"""The hybrid prior: portfolio first, valid screened proposals, a guard that notices a bad source."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.meta import hybrid, transfer
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space
from metatune.tuners import run_tuning

BUDGET = 16


@pytest.fixture(scope="module")
def setup():
  space = default_space()
  source = SyntheticFamily(space, SyntheticConfig(seed=0, num_tasks=30))
  data = transfer.from_family(source, source.task_indices("meta_train"), num=96,
                              portfolio_size=20)
  mirrored = SyntheticFamily(space, SyntheticConfig(seed=0, num_tasks=30, mirror=True))
  return space, source, mirrored, data


_COMPILED = {}


def _run(tuner, family, index, key):
  """One study; compiled once per tuner and family (the task index is traced)."""
  fn = _COMPILED.get((id(tuner), id(family)))
  if fn is None:
    @jax.jit
    def fn(k, i):
      task = family.task_params(i)
      state, trace = run_tuning(k, tuner, lambda k2, p: family.evaluate(k2, task, p), BUDGET)
      return state, trace
    _COMPILED[(id(tuner), id(family))] = fn
  return fn(key, jnp.asarray(index, jnp.int32))


def test_transfer_data_is_a_greedy_portfolio_of_good_design_points(setup):
  _, source, _, data = setup
  assert data.values.shape == (96, default_space().num_params)
  assert data.portfolio.shape == (20,) and len(set(np.asarray(data.portfolio))) == 20
  # Each training task's regret is kept (what a kernel fitted to the tasks reads).
  regrets = np.asarray(data.regrets)
  assert regrets.shape == (len(source.task_indices("meta_train")), 96)
  np.testing.assert_allclose(regrets.mean(0), np.asarray(data.profile), rtol=1e-5, atol=1e-6)
  prof = np.asarray(data.profile)
  assert 0.0 <= prof.min() and prof.max() <= 1.0
  # The first pick is the design point with the best mean regret over the tasks.
  assert prof[int(data.portfolio[0])] == pytest.approx(prof.min())


def test_starts_with_the_portfolio_then_proposes_valid_configurations(setup):
  space, source, _, data = setup
  tuner = hybrid.hybrid_tuner(space, data, None, budget=BUDGET, num_initial=4,
                              num_candidates=64, fit_steps=20, refit_steps=5)
  state, trace = _run(tuner, source, int(source.task_indices("heldout_dataset")[0]),
                         jax.random.key(0))
  values = np.asarray(trace.points.values[:, 0])
  active = np.asarray(trace.points.active[:, 0])
  port = np.asarray(data.portfolio[:4])
  np.testing.assert_array_equal(values[:4], np.asarray(data.values)[port])
  for u, a in zip(values, active):
    space.validate(space.decode(u, a))
  assert bool(state.used[:4].all())


@pytest.mark.slow
def test_the_guard_weighs_a_misleading_prior_down(setup):
  space, source, mirrored, data = setup
  # The guard alone: the rescue design (random trials after a rejection) lets the fitted
  # profile slope turn negative on a mirrored task, after which the prior's model predicts well.
  tuner = hybrid.hybrid_tuner(space, data, None, budget=BUDGET, num_initial=4,
                              num_candidates=64, fit_steps=20, refit_steps=5, num_rescue=0)
  held = source.task_indices("heldout_dataset")[:2]
  aligned = [float(_run(tuner, source, int(i), jax.random.key(1))[0].weight) for i in held]
  misled = [float(_run(tuner, mirrored, int(i), jax.random.key(1))[0].weight) for i in held]
  assert np.mean(misled) < 0.5 < np.mean(aligned), (aligned, misled)
  # Without the guard the prior keeps full weight whatever the task says.
  trusting = hybrid.hybrid_tuner(space, data, None, budget=BUDGET, num_initial=4,
                                 num_candidates=64, fit_steps=20, refit_steps=5, guard=False)
  assert float(_run(trusting, mirrored, int(held[0]), jax.random.key(1))[0].weight) == 1.0


def _reasons(tuner, family, index, key):
  """One study as `run_tuning` runs it (the same keys); the final state and each tell's
  ``guard_reason``."""
  task = family.task_params(index)

  def step(carry, _):
    state, k = carry
    k, ask_key, eval_key, tell_key = jax.random.split(k, 4)
    points, state = tuner.ask(ask_key, state)
    ev = family.evaluate(eval_key, task, points)
    state, metrics = tuner.tell(tell_key, state, points, ev)
    return (state, k), metrics["guard_reason"]

  init_key, loop_key = jax.random.split(key)
  (state, _), reasons = jax.lax.scan(step, (tuner.init(init_key), loop_key), None,
                                     length=BUDGET)
  return state, reasons


@pytest.mark.slow
def test_a_rejected_prior_gets_a_random_rescue_design(setup):
  """The rescue runs once the guard rejects the prior early, and the rescue's trials say so."""
  space, source, mirrored, data = setup
  held = int(source.task_indices("heldout_dataset")[0])
  kw = dict(budget=BUDGET, num_initial=4, num_candidates=64, fit_steps=20, refit_steps=5)
  rescuing = hybrid.hybrid_tuner(space, data, None, num_rescue=3, **kw)
  state, reasons = jax.jit(lambda k: _reasons(rescuing, mirrored, held, k))(jax.random.key(1))
  reasons = np.asarray(reasons)
  assert int(state.rescued) == 3
  rescue = np.flatnonzero(reasons == hybrid.REASONS.index("rescue design"))
  assert list(reasons[:4]) == [hybrid.REASONS.index("initial design")] * 4
  assert len(rescue) == 3 and rescue[0] >= 4 and list(np.diff(rescue)) == [1, 1], reasons
  assert set(np.delete(reasons, rescue)[4:]) <= {1, 2}
  off = hybrid.hybrid_tuner(space, data, None, rescue_below=0.0, **kw)
  assert int(_run(off, mirrored, held, jax.random.key(1))[0].rescued) == 0


@pytest.mark.slow
def test_a_result_told_out_of_order_gets_the_reason_of_what_proposed_it(setup):
  """Parallel workers: three asks before any tell (two design trials, one screened), told in
  reverse order; each result's reason is its proposer's, not its place in the telling order.
  A configuration the tuner never proposed gets the study's stage (the design here)."""
  space, source, _, data = setup
  tuner = hybrid.hybrid_tuner(space, data, None, budget=BUDGET, num_initial=2,
                              num_candidates=64, fit_steps=20, refit_steps=5)
  ask, tell = jax.jit(tuner.ask), jax.jit(tuner.tell)
  task = source.task_params(int(source.task_indices("heldout_dataset")[0]))
  state = tuner.init(jax.random.key(0))
  asked = []
  for i in range(3):
    points, state = ask(jax.random.key(10 + i), state)
    asked.append(points)
  reasons = []
  stranger = hybrid.Points(*space_sample(jax.random.key(99), space))
  stranger = hybrid.Points(stranger.values[None], stranger.active[None])
  for i, points in enumerate([stranger] + asked[::-1]):
    ev = source.evaluate(jax.random.key(20 + i), task, points)
    state, metrics = tell(jax.random.key(30 + i), state, points, ev)
    reasons.append(hybrid.REASONS[int(metrics["guard_reason"])])
  design = "initial design"
  assert reasons[0] == design and reasons[2:] == [design, design], reasons
  assert reasons[1] in ("prior predicts better", "scratch model predicts better"), reasons


def test_output_warp_reaches_both_models_and_the_guard(setup):
  """With output_warp the guard still scores every observation after the design (its weight
  moves off equal odds and stays a probability) and the proposals differ from the unwarped
  hybrid's once the models are used; the design itself is the same."""
  space, source, _, data = setup
  kw = dict(budget=BUDGET, num_initial=4, num_candidates=64, fit_steps=20, refit_steps=5)
  held = int(source.task_indices("heldout_dataset")[0])
  plain_state, plain = _run(hybrid.hybrid_tuner(space, data, None, **kw), source, held,
                            jax.random.key(2))
  state, trace = _run(hybrid.hybrid_tuner(space, data, None, output_warp=True, **kw), source,
                      held, jax.random.key(2))
  np.testing.assert_array_equal(trace.points.values[:4], plain.points.values[:4])
  assert not np.array_equal(trace.points.values[4:], plain.points.values[4:])
  weight = float(state.weight)
  assert 0.0 <= weight <= 1.0 and weight != 0.5 and np.isfinite(float(state.log_prior))
  assert float(state.log_prior) != float(plain_state.log_prior)
  with pytest.raises(ValueError, match="output_warp must be true or false"):
    hybrid.hybrid_tuner(space, data, None, output_warp=1, **kw)


def test_spread_design_replaces_the_random_fill_of_the_initial_design(setup):
  """Without transfer data the initial design is random; with spread_design it is the
  kernel's variance design (valid, distinct, its first entry unchanged where a design leads),
  on live studies and on pools alike; the screening after it is untouched by the option."""
  space, source, _, _ = setup
  kw = dict(budget=BUDGET, num_initial=4, num_candidates=64, fit_steps=20, refit_steps=5)
  held = int(source.task_indices("heldout_dataset")[0])
  _, plain = _run(hybrid.hybrid_tuner(space, None, None, **kw), source, held, jax.random.key(3))
  _, spread = _run(hybrid.hybrid_tuner(space, None, None, spread_design=True, **kw), source,
                   held, jax.random.key(3))
  assert not np.array_equal(spread.points.values[:4], plain.points.values[:4])
  values = np.asarray(spread.points.values[:, 0])
  assert len({tuple(v) for v in values}) == BUDGET
  for u, a in zip(values, np.asarray(spread.points.active[:, 0])):
    space.validate(space.decode(u, a))
  # A carried design still leads it.
  lead = hybrid.Points(plain.points.values[:1, 0], plain.points.active[:1, 0])
  _, led = _run(hybrid.hybrid_tuner(space, None, None, design=lead, spread_design=True, **kw),
                source, held, jax.random.key(3))
  np.testing.assert_array_equal(led.points.values[0], plain.points.values[0])
  # On a pool the design picks distinct available records.
  tuner = hybrid.hybrid_tuner(space, None, None, spread_design=True, **kw)
  u, a = jax.vmap(lambda k: space_sample(k, space))(jax.random.split(jax.random.key(4), 40))
  pool = hybrid.Points(u, a)
  state = tuner.init(jax.random.key(0))
  available = jnp.ones((40,), bool).at[:10].set(False)
  idx, _ = jax.jit(tuner.ask_pool)(jax.random.key(5), state, pool, available)
  assert int(idx[0]) >= 10
  with pytest.raises(ValueError, match="spread_design must be true or false"):
    hybrid.hybrid_tuner(space, None, None, spread_design="yes", **kw)


def space_sample(key, space):
  from metatune.space import sampling  # pylint: disable=import-outside-toplevel
  u, a = sampling.sample(key, space, 1)
  return u[0], a[0]


@pytest.mark.slow
def test_rescue_design_spread_picks_by_variance_away_from_the_rejected_trials(setup):
  """A prior just rejected after its design: the spread rescue is the variance design's pick
  given those trials (valid, not one of them, not the random rescue's uniform draw), on live
  studies and on pools (an available record); an unknown design is a ValueError."""
  from metatune.space import sampling  # pylint: disable=import-outside-toplevel
  from metatune.tuners import gp  # pylint: disable=import-outside-toplevel
  space, source, mirrored, data = setup
  kw = dict(budget=BUDGET, num_initial=4, num_candidates=64, fit_steps=20, refit_steps=5)
  task = mirrored.task_params(int(source.task_indices("heldout_dataset")[0]))
  tuner = hybrid.hybrid_tuner(space, data, None, rescue_design="spread", **kw)
  ask, tell = jax.jit(tuner.ask), jax.jit(tuner.tell)
  state = tuner.init(jax.random.key(0))
  for i in range(4):   # the portfolio's design, told
    points, state = ask(jax.random.key(10 + i), state)
    evaluation = mirrored.evaluate(jax.random.key(20 + i), task, points)
    state, _ = tell(jax.random.key(30 + i), state, points, evaluation)
  rejected = state.replace(weight=jnp.zeros(()))
  points, after = ask(jax.random.key(7), rejected)
  assert int(after.rescued) == 1
  space.validate(space.decode(points.values[0], points.active[0]))
  spread = np.asarray(points.values[0])
  told = np.asarray(rejected.history.values[:4])
  assert np.abs(told - spread[None]).sum(-1).min() > 1e-3
  # The variance design's pick among the rescue's candidates, where the random rescue
  # (the default) takes the first uniform draw of the same key.
  rescue_key = jax.random.fold_in(jax.random.split(jax.random.key(7))[0], 1)
  u, a = sampling.sample(rescue_key, space, 64)
  pick = gp.variance_picks(space, gp.GPPrior.for_space(space), rejected.history, u, a, 1)
  np.testing.assert_array_equal(spread, np.asarray(u[pick[0]]))
  random_u, _ = sampling.sample(jax.random.fold_in(jax.random.split(jax.random.key(7))[0], 1),
                                space, 1)
  assert not np.array_equal(spread, np.asarray(random_u[0]))
  # On a pool: an available record.
  uu, aa = jax.vmap(lambda k: space_sample(k, space))(jax.random.split(jax.random.key(4), 40))
  available = jnp.ones((40,), bool).at[:20].set(False)
  idx, after = jax.jit(tuner.ask_pool)(jax.random.key(5), rejected, hybrid.Points(uu, aa),
                                       available)
  assert int(idx[0]) >= 20 and int(after.rescued) == 1


def test_an_unknown_rescue_design_is_an_error_naming_the_option(setup):
  space, _, _, data = setup
  with pytest.raises(ValueError, match="rescue_design must be one of .*'sobol'"):
    hybrid.hybrid_tuner(space, data, None, rescue_design="sobol")
