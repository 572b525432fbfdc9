"""GP-BO: the tuner contract, the GP and EI against float64 references, learning."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import test_contract as contract
from metatune.space import io, sampling
from metatune.tasks import SyntheticFamily, default_space
from metatune.tuners import Evaluation, Points, random_search, run_tuning
from metatune.tuners import gp, gp_model
from metatune.tuners.gp import gp_bo

# Fewer candidates and fit steps than the defaults: the contract is about shapes,
# keys and validity, and these keep the runs short (compilation dominates anyway).
CONTRACT_SETTINGS = {"num_candidates": 256, "fit_steps": 50}
# Once gp_bo is in the registry, test_contract.py runs these itself.
IN_REGISTRY = "gp_bo" in contract.TUNERS


@pytest.fixture(scope="module", autouse=True)
def single_threaded_blas():
  """OpenBLAS threads even tiny triangular solves; on a busy 2-core machine that is ~30x slower."""
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:
    yield
    return
  jnp.linalg.cholesky(jnp.eye(2)).block_until_ready()  # loads OpenBLAS so the limit reaches it
  with threadpool_limits(1, user_api="blas"):
    yield


@pytest.fixture(scope="module")
def space():
  return io.loads(contract.CONTRACT_SPACE, "contract.yaml")


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(contract.TUNERS, "gp_bo", functools.partial(gp_bo, **CONTRACT_SETTINGS))


@pytest.mark.skipif(IN_REGISTRY, reason="gp_bo is registered: test_contract.py covers it")
@pytest.mark.parametrize("test", [
    contract.test_valid_proposals_under_jit_and_scan,
    contract.test_failed_evaluations_never_become_incumbent,
    contract.test_state_shapes_stable_and_no_retrace,
    contract.test_same_key_same_result_and_vmap,
    contract.test_history_is_a_ring_buffer_that_keeps_the_best,
], ids=lambda f: f.__name__.removeprefix("test_"))
def test_contract(test, space, registered):
  test("gp_bo", space)


# ------------------------------------------------------------ GP correctness
def _reference_posterior(x, y, xs, lengthscale, signal, noise, mean):
  """Matérn-5/2 GP posterior and log marginal likelihood in float64 numpy."""
  x, y, xs = (np.asarray(v, np.float64) for v in (x, y, xs))

  def kern(a, b):
    r = np.sqrt(np.sum(((a[:, None] - b[None]) / lengthscale) ** 2, -1))
    return signal * (1 + math.sqrt(5) * r + 5 / 3 * r ** 2) * np.exp(-math.sqrt(5) * r)

  k = kern(x, x) + (noise + gp._JITTER * signal) * np.eye(len(x))
  ks = kern(xs, x)
  resid = y - mean
  alpha = np.linalg.solve(k, resid)
  mu = mean + ks @ alpha
  var = signal - np.einsum("ij,ji->i", ks, np.linalg.solve(k, ks.T))
  lml = -0.5 * resid @ alpha - 0.5 * np.linalg.slogdet(k)[1] - 0.5 * len(x) * math.log(2 * math.pi)
  return mu, var, lml


def _params(num_features, lengthscale, signal=1.0, noise=1e-6, mean=0.0):
  return gp.GPParams(jnp.full((num_features,), math.log(lengthscale), jnp.float32),
                     jnp.asarray(math.log(signal), jnp.float32),
                     jnp.asarray(math.log(noise), jnp.float32), jnp.asarray(mean, jnp.float32))


def _toy_data(n=12, f=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, f)).astype(np.float32)
  y = (np.sin(6 * x[:, 0]) + 0.5 * x[:, 1]).astype(np.float32)
  return x, y


def test_posterior_and_likelihood_match_numpy_reference():
  x, y = _toy_data()
  xs = np.random.default_rng(1).uniform(size=(20, 3)).astype(np.float32)
  params = _params(3, 0.4, signal=1.5, noise=1e-2, mean=0.2)
  mask = jnp.ones(len(x), bool)
  mu, var = jax.jit(lambda: gp.predict(gp.posterior(params, x, y, mask), xs))()
  lml = jax.jit(gp.log_marginal_likelihood)(params, x, y, mask)
  ref_mu, ref_var, ref_lml = _reference_posterior(x, y, xs, 0.4, 1.5, 1e-2, 0.2)
  np.testing.assert_allclose(mu, ref_mu, atol=1e-4)
  np.testing.assert_allclose(var, ref_var, atol=1e-4)
  assert float(lml) == pytest.approx(ref_lml, abs=1e-3)


def test_posterior_interpolates_noise_free_points_and_is_uncertain_away():
  x, y = _toy_data(n=10)
  params = _params(3, 0.5, noise=1e-6)
  far = np.full((1, 3), 5.0, np.float32)  # 10 lengthscales from every point
  mid = x[:2].mean(0, keepdims=True)
  post_fn = lambda xs: gp.predict(gp.posterior(params, x, y, jnp.ones(len(x), bool)), xs)
  (mu, var), (_, var_far), (_, var_mid) = jax.jit(lambda: [post_fn(v) for v in (x, far, mid)])()
  np.testing.assert_allclose(mu, y, atol=1e-2)
  assert np.all(np.asarray(var) < 1e-3)
  assert float(var_far[0]) > 0.99
  assert float(var_mid[0]) > 10 * float(np.max(var))


def test_masked_slots_change_nothing():
  x, y = _toy_data()
  xs = np.random.default_rng(1).uniform(size=(5, 3)).astype(np.float32)
  params = _params(3, 0.4, noise=1e-3)
  garbage_x = np.random.default_rng(2).uniform(size=(6, 3)).astype(np.float32)
  xp = np.concatenate([x[:4], garbage_x, x[4:]])
  yp = np.concatenate([y[:4], np.full(6, 1e6, np.float32), y[4:]])
  mp = np.concatenate([np.ones(4, bool), np.zeros(6, bool), np.ones(len(x) - 4, bool)])
  ones = np.ones(len(x), bool)

  @jax.jit
  def both():
    return [(gp.predict(gp.posterior(params, a, b, m), xs), gp.log_marginal_likelihood(
        params, a, b, m)) for a, b, m in ((x, y, ones), (xp, yp, mp))]

  ((mu, var), lml), ((mu_p, var_p), lml_p) = both()
  np.testing.assert_allclose(mu_p, mu, atol=1e-5)
  np.testing.assert_allclose(var_p, var, atol=1e-5)
  assert float(lml_p) == pytest.approx(float(lml), abs=1e-3)


def test_standardize_ignores_masked_entries():
  y = jnp.asarray([1.0, 3.0, jnp.inf, 100.0, 5.0])
  mask = jnp.asarray([True, True, False, False, True])
  z = gp.standardize(y, mask)
  np.testing.assert_allclose(z, [-1.0, 0.0, 0.0, 0.0, 1.0], atol=1e-6)
  assert float(gp.standardize(jnp.ones(3), jnp.ones(3, bool)).max()) == 0.0  # constant: sd 1


def test_fit_improves_likelihood_and_finds_the_relevant_dimension():
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(30, 3)).astype(np.float32)
  mask = jnp.ones(30, bool)
  y = gp.standardize(jnp.asarray(np.sin(6 * x[:, 0])), mask)
  prior = gp.GPPrior(3)
  start = prior.init()
  fit = jax.jit(lambda p: gp.fit(p, x, y, mask, prior, 150))
  fitted, lml = fit(start)
  assert float(lml) > float(gp.log_marginal_likelihood(start, x, y, mask)) + 5.0
  ls = np.exp(np.asarray(fitted.log_lengthscale))
  assert ls[0] < 0.5 * min(ls[1], ls[2])
  # Warm start, as between tells: fitting on from the last fit keeps improving.
  _, lml2 = fit(fitted)
  assert float(lml2) > float(lml) - 0.5


@pytest.mark.parametrize("case", ["empty", "one", "duplicates"])
def test_fit_and_posterior_stay_finite_on_degenerate_data(case):
  x = np.zeros((8, 2), np.float32)
  y = jnp.zeros(8)
  mask = {"empty": np.zeros(8, bool), "one": np.arange(8) < 1, "duplicates": np.ones(8, bool)}[case]
  prior = gp.GPPrior(2)

  @jax.jit
  def fit_predict():
    params, lml = gp.fit(prior.init(), x, y, mask, prior, 30)
    return params, lml, gp.predict(gp.posterior(params, x, y, mask), jnp.ones((3, 2)))

  params, lml, (mu, var) = fit_predict()
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params)) and np.isfinite(lml)
  assert np.all(np.isfinite(mu)) and np.all(np.asarray(var) > 0)


# ------------------------------------------------------- expected improvement
def _reference_log_ei(mean, std, best):
  z = (best - mean) / std
  out = np.empty_like(z)
  hi = z > -5  # direct formula: no cancellation in float64 there
  out[hi] = np.log(scipy.special.ndtr(z[hi]) * z[hi] + np.exp(-z[hi] ** 2 / 2) /
                   math.sqrt(2 * math.pi))
  zl = z[~hi]  # h(z) = phi(z) (1 - |z| sqrt(pi/2) erfcx(|z| / sqrt 2))
  out[~hi] = (-zl ** 2 / 2 - 0.5 * math.log(2 * math.pi) +
              np.log1p(-(-zl) * math.sqrt(math.pi / 2) * scipy.special.erfcx(-zl / math.sqrt(2))))
  return out + np.log(std)


def test_log_ei_matches_float64_reference_deep_in_the_tail():
  z = np.concatenate([np.linspace(-40, 6, 461), [-9.99, -10.0, -10.01, -1.0, -0.999]])
  std = np.full_like(z, 0.7)
  mean = -z * std  # best = 0
  log_ei = jax.jit(gp.log_expected_improvement)
  got = np.asarray(log_ei(jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32), 0.0))
  np.testing.assert_allclose(got, _reference_log_ei(mean, std, 0.0), rtol=2e-4, atol=2e-4)
  far = np.asarray(log_ei(jnp.asarray([1e2, 1e3, 1e4]), jnp.ones(3), 0.0))
  assert np.all(np.isfinite(far)) and np.all(np.diff(far) < 0)


def test_ei_is_zero_far_above_the_incumbent_and_positive_near_a_better_region():
  x = np.asarray([[0.0], [0.15], [0.5], [0.7], [0.9], [1.0]], np.float32)
  mask = jnp.ones(len(x), bool)

  @jax.jit
  def ei_at(xs):
    y = gp.standardize(jnp.asarray((x[:, 0] - 0.3) ** 2), mask)
    mu, var = gp.predict(gp.posterior(_params(1, 0.3, noise=1e-6), x, y, mask), xs)
    return gp.expected_improvement(mu, jnp.sqrt(var), jnp.min(y))

  ei = np.asarray(ei_at(jnp.asarray([[1.0], [0.3]])))
  assert ei[0] < 1e-6  # the worst observed point, noise-free
  assert ei[1] > 1e-3 and ei[1] > 1e4 * ei[0]


# ---------------------------------------------------------------- the tuner
def test_batch_proposals_are_distinct(space):
  tuner = gp_bo(space, batch_size=4, num_candidates=256, fit_steps=50)
  fn = contract.objective_with_failures(space, fail_every=1000)
  _, trace = jax.jit(lambda k: run_tuning(k, tuner, fn, 4))(jax.random.key(3))
  values, active = trace.points.values[2:], trace.points.active[2:]  # past the 8 initial points
  contract.assert_valid(space, values, active)
  for feats in np.asarray(sampling.featurize(space, values, active)):
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    assert np.min(dist[np.triu_indices(4, 1)]) > 1e-3


def test_half_rank_warp_keeps_the_good_half_and_tames_a_diverged_value():
  """The good half (at or below the median) is kept; above it values go by rank, so a loss of
  1e13 no longer squeezes the others together once standardized; the map is monotone, and a new
  value is ranked against the history as the history's own values are."""
  y = jnp.asarray([0.50, 0.52, 0.49, 1e13, 0.70, 0.55, 3.0, -7.0])
  mask = jnp.asarray([True] * 7 + [False])
  w, q = gp.half_rank_warp(y, mask, jnp.asarray([0.51, 1e14, 3.0]))
  w, q = np.asarray(w), np.asarray(q)
  np.testing.assert_allclose(w[[0, 1, 2, 5]], [0.50, 0.52, 0.49, 0.55], rtol=1e-6)  # <= median
  assert w[7] == 0.0                                                            # masked out
  order = np.argsort(np.asarray(y)[:7])
  assert np.all(np.diff(w[:7][order]) > 0)                                      # monotone
  assert w[3] < 0.55 + 3 * 0.05                                 # the diverged loss: a few spreads
  assert q[0] == pytest.approx(0.51) and q[1] > w[3] and q[2] <= q[1]
  plain = np.asarray(gp.standardize(y, mask))[:7]
  warped = np.asarray(gp.standardize(jnp.asarray(w), mask))[:7]
  assert np.ptp(plain[[0, 1, 2, 4, 5, 6]]) < 0.01 < 1.0 < np.ptp(warped[[0, 1, 2, 4, 5, 6]])
  with pytest.raises(ValueError, match="output_warp must be true or false"):
    gp_bo(io.loads(contract.CONTRACT_SPACE), output_warp="yes")


def test_output_warp_changes_gp_bo_only_when_asked(space):
  """Default GP-BO is the tables' GP-BO; with output_warp its proposals follow the warped
  objectives (a study whose one diverged value would flatten the rest)."""
  def objective(k, p):
    del k
    return Evaluation.of(jnp.where(p.values[:, 1] > 0.7, 1e13, (p.values[:, 5] - 0.3) ** 2))

  def run(tuner):
    return jax.jit(lambda key: run_tuning(key, tuner, objective, 9))(jax.random.key(3))[1]

  settings = {"num_candidates": 128, "fit_steps": 20}
  plain = run(gp_bo(space, **settings))
  again = run(gp_bo(space, output_warp=False, **settings))
  warped = run(gp_bo(space, output_warp=True, **settings))
  np.testing.assert_array_equal(plain.points.values, again.points.values)
  np.testing.assert_array_equal(plain.points.values[:5], warped.points.values[:5])  # random
  assert np.any(plain.points.values[:5, 0, 1] > 0.7)          # the design met a diverged value
  assert not np.array_equal(plain.points.values[5:], warped.points.values[5:])


def test_only_failures_still_gives_valid_proposals(space):
  tuner = gp_bo(space, batch_size=2, num_candidates=128, fit_steps=20)

  def run(key):
    return run_tuning(key, tuner, lambda k, p: Evaluation.of(jnp.full((2,), jnp.nan)), 5)

  state, trace = jax.jit(run)(jax.random.key(4))
  contract.assert_valid(space, trace.points.values, trace.points.active)
  assert not np.isfinite(float(state.history.best_objective))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))


def test_rejects_unknown_fantasy(space):
  with pytest.raises(ValueError, match="fantasy"):
    gp_bo(space, fantasy="optimist")


def normalized_regret(tuner, family, num_tasks, num_trials, seed):
  """f32[num_tasks]: normalized regret of the best clean value among the proposals."""
  task_key, ref_key, run_key = jax.random.split(jax.random.key(seed), 3)
  tasks = jax.vmap(family.sample)(jax.random.split(task_key, num_tasks))
  optimum, median, _ = jax.vmap(family.reference)(jax.random.split(ref_key, num_tasks), tasks)

  def run(key, task):
    _, trace = run_tuning(key, tuner, lambda k, p: family.evaluate(k, task, p), num_trials)
    clean = family.clean(task, trace.points)
    return jnp.min(jnp.where(jnp.isfinite(clean), clean, jnp.inf))

  best = jax.jit(jax.vmap(run))(jax.random.split(run_key, num_tasks), tasks)
  return np.asarray((best - optimum) / (median - optimum))


@pytest.mark.slow
def test_gp_bo_beats_random_search_on_synthetic_tasks():
  space = default_space()
  family = SyntheticFamily(space)
  gp_regret = normalized_regret(gp_bo(space), family, 6, 30, seed=21)
  random_regret = normalized_regret(random_search(space), family, 6, 30, seed=21)
  print(f"normalized regret after 30 trials: gp_bo {gp_regret.mean():.3f}, "
        f"random {random_regret.mean():.3f}")
  assert gp_regret.mean() < random_regret.mean()


# ------------------------------------------------- the activity-aware kernel
def test_activity_kernel_is_positive_definite_and_fair_to_branches(space):
  """Inactive sits at one distance from every active value; the kernel stays a kernel."""
  u, a = sampling.sample(jax.random.key(3), space, 300)
  x = sampling.featurize(space, u, a)
  layout = gp.feature_layout(space)
  assert any(c >= 0 for c in layout)
  ls = jnp.asarray(np.random.default_rng(0).uniform(0.1, 2.0, x.shape[1]), jnp.float32)
  k = np.asarray(gp.matern52(x, x, ls, jnp.float32(1.0), layout), np.float64)
  assert np.linalg.eigvalsh(k).min() > -1e-4
  # Two sgd configurations that differ only in momentum (0.02 and 0.45, nesterov inactive in
  # both) and an adam one, where momentum is inactive: equally far from both momenta.
  cfg = {"opt": "sgd", "lr": 0.01, "layers": 1, "w1": 16}
  encoded = [space.encode({**cfg, "opt.sgd.momentum": 0.02}),
             space.encode({**cfg, "opt.sgd.momentum": 0.45}), space.encode({**cfg, "opt": "adam"})]
  feats = sampling.featurize(space, np.stack([e[0] for e in encoded]),
                             np.stack([e[1] for e in encoded]))
  ones = jnp.ones(feats.shape[1], jnp.float32)
  d = np.asarray(gp.sq_distance(feats, feats, ones, layout))
  plain = np.asarray(gp.sq_distance(feats, feats, ones, None))
  assert d[0, 2] == pytest.approx(d[1, 2], abs=1e-5)
  assert d[0, 1] > 0.1                 # the two momenta still differ between themselves
  assert plain[0, 2] < plain[1, 2] - 0.1  # plain features: momentum 0.02 looks like "none"


def test_refits_are_warm_started_and_thinned_past_dense_refits(space):
  tuner = gp_bo(space, budget=12, num_initial=3, fit_steps=5, refit_steps=2, refit_every=4,
                dense_refits=6, num_candidates=32)
  u, a = sampling.sample(jax.random.key(0), space, 12)
  tell = jax.jit(tuner.tell)
  state = tuner.init(jax.random.key(1))
  refits = []
  for i in range(12):
    state, m = tell(jax.random.key(2), state, Points(u[i:i + 1], a[i:i + 1]),
                    Evaluation.of(jnp.asarray([float(i % 5)])))
    refits.append(bool(m["refit"]))
  # Counts 1-2: before num_initial; 3-6: every trial; then only when crossing a multiple of 4.
  assert refits == [False, False, True, True, True, True, False, True, False, False, False, True]
  assert state.history.capacity == 12  # the history covers the budget


def test_variance_design_spreads_along_short_lengthscales_and_avoids_the_study():
  """A 2-feature grid, feature 0 relevant (lengthscale 0.2), feature 1 not (100): the picks
  cover feature 0 (interior first, then apart), ignore feature 1, never repeat, and move away
  from a point the study already has."""
  g = np.linspace(0.0, 1.0, 21, dtype=np.float32)
  cand = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
  params = gp_model.GPParams(jnp.log(jnp.asarray([0.2, 100.0])), jnp.zeros(()),
                             jnp.asarray(-4.0), jnp.zeros(()))
  empty_x, empty_mask = jnp.zeros((4, 2)), jnp.zeros((4,), bool)
  ok = jnp.ones((cand.shape[0],), bool)
  idx = np.asarray(gp_model.variance_design(params, empty_x, empty_mask, cand, ok, 4))
  assert len(set(idx.tolist())) == 4
  first = np.asarray(cand)[idx, 0]
  assert 0.2 < first[0] < 0.8, first        # integrated variance: the interior, not a corner
  assert np.min(np.diff(np.sort(first))) > 0.1, first   # apart along the relevant feature
  # A study point at the first pick's feature-0 value pushes the next pick away from it.
  seen_x = empty_x.at[0].set(cand[idx[0]])
  seen_mask = empty_mask.at[0].set(True)
  nxt = np.asarray(gp_model.variance_design(params, seen_x, seen_mask, cand, ok, 1))
  assert abs(float(cand[nxt[0], 0]) - first[0]) > 0.1
  # Unavailable candidates are never picked.
  blocked = ok.at[idx[0]].set(False)
  again = np.asarray(gp_model.variance_design(params, empty_x, empty_mask, cand, blocked, 4))
  assert idx[0] not in again.tolist()


def test_spread_design_gives_gp_bo_a_distinct_valid_design_on_studies_and_pools(space):
  """With spread_design the first num_initial proposals (a batch of 2) are the variance
  design's: valid, distinct, not the random ones; on a pool, available records only."""
  def objective(k, p):
    del k
    return Evaluation.of(jnp.sum((p.values - 0.3) ** 2, -1))

  settings = {"num_candidates": 128, "fit_steps": 20, "batch_size": 2}
  run = lambda tuner: jax.jit(lambda key: run_tuning(key, tuner, objective, 4))(
      jax.random.key(3))[1]
  plain = run(gp_bo(space, **settings))
  spread = run(gp_bo(space, spread_design=True, **settings))
  values = np.asarray(spread.points.values).reshape(8, -1)
  contract.assert_valid(space, spread.points.values, spread.points.active)
  assert len({tuple(v) for v in values[:6]}) == 6
  assert not np.array_equal(values[:6], np.asarray(plain.points.values).reshape(8, -1)[:6])
  tuner = gp_bo(space, spread_design=True, **settings)
  u, a = sampling.sample(jax.random.key(4), space, 40)
  available = jnp.ones((40,), bool).at[:30].set(False)
  idx, _ = jax.jit(tuner.ask_pool)(jax.random.key(5), tuner.init(jax.random.key(0)),
                                   Points(u, a), available)
  assert all(int(i) >= 30 for i in idx) and int(idx[0]) != int(idx[1])
  with pytest.raises(ValueError, match="spread_design must be true or false"):
    gp_bo(space, spread_design=1)
