"""Bayesian optimization with an exact Gaussian process: the no-transfer model-based baseline.

The model is `metatune.tuners.gp_model`: an exact GP over the space's
featurization with an activity-aware Matérn-5/2 ARD kernel (the branches of a
conditional space are compared by their own parameters), hyperparameter
priors and a noise floor, fitted by marginal likelihood. Refits are
warm-started from the last fit (a few steps), and past ``dense_refits``
observations happen every ``refit_every`` trials, so a long study does not pay
a full fit per trial; the history covers the whole budget by default.

Proposals maximize log expected improvement over the structured space with the
space's own sampler and local perturbations, so every proposal is valid by
construction; a batch is made diverse by kriging-believer fantasies.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp

from metatune.space import Space, sampling
from metatune.tuners.base import History, Points, Tuner, history_add, history_init, pool_draw
# The model's names stay importable from here (`gp.fit`, `gp.posterior`, ...).
from metatune.tuners.gp_model import (GPParams, GPPosterior, GPPrior,  # noqa: F401
                                      feature_layout, fit, half_rank_warp,
                                      log_marginal_likelihood, matern52,
                                      posterior, predict, predict_observed, scale_inflation,
                                      sq_distance, standardize, variance_design)
from metatune.tuners.gp_model import _JITTER  # noqa: F401  (tests compare against it)

# -------------------------------------------------------- the acquisition
def log_expected_improvement(mean: jax.Array, std: jax.Array, best: jax.Array) -> jax.Array:
  """log EI for minimization, accurate in float32 far into the tail (Ament et al., 2023).

  EI = std * h(z) with z = (best - mean) / std and h(z) = phi(z) + z Phi(z).
  """
  z = (best - mean) / std
  c1 = 0.5 * math.log(2.0 * math.pi)
  # Upper region: h(z) >= h(-1) ~ 0.08, no cancellation.
  zu = jnp.maximum(z, -1.0)
  upper = jnp.log(jnp.exp(-0.5 * zu * zu - c1) + zu * jax.scipy.special.ndtr(zu))
  # Middle: h(z) = phi(z) (1 - |z| Phi(z) / phi(z)), the ratio through erfcx.
  zm = jnp.clip(z, -10.0, -1.0)
  ratio = jnp.log(jax.scipy.special.erfcx(-zm / math.sqrt(2.0)) * -zm) + 0.5 * math.log(
      math.pi / 2.0)
  middle = -0.5 * zm * zm - c1 + jnp.log(-jnp.expm1(jnp.minimum(ratio, -1e-7)))
  # Far tail: the asymptotic series 1 - |z| R(|z|) = z^-2 (1 - 3 z^-2 + 15 z^-4 - ...).
  zt = jnp.minimum(z, -10.0)
  iz2 = 1.0 / (zt * zt)
  tail = -0.5 * zt * zt - c1 + jnp.log(iz2) + jnp.log1p(-3.0 * iz2 + 15.0 * iz2 * iz2)
  log_h = jnp.where(z > -1.0, upper, jnp.where(z > -10.0, middle, tail))
  return log_h + jnp.log(std)


def expected_improvement(mean: jax.Array, std: jax.Array, best: jax.Array) -> jax.Array:
  """EI for minimization (see `log_expected_improvement`)."""
  return jnp.exp(log_expected_improvement(mean, std, best))


def maximize(key: jax.Array, space: Space, score_fn, values: jax.Array, active: jax.Array,
             seed_values: jax.Array, seed_active: jax.Array, seed_ok: jax.Array,
             num_rounds: int = 3, num_parents: int = 16, scale: float = 0.1
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Maximizes ``score_fn(values, active) -> f32[N]`` over the space, valid by construction.

  The best of the given candidates, then ``num_rounds`` of local search: the
  best ``num_parents`` so far and the seeds are perturbed with `sampling.perturb`
  (the step halving each round) and the best are kept.

  Args:
    key: PRNG key.
    space: the space.
    score_fn: jittable score of a batch, higher is better.
    values, active: f32[N, D], bool[N, D] valid candidates (e.g. from
      `sampling.sample`); each round perturbs about ``N // 4`` configurations.
    seed_values, seed_active: f32[S, D], bool[S, D] configurations always
      perturbed (e.g. the incumbent).
    seed_ok: bool[S]: the seed is a valid configuration (else a candidate
      replaces it).

  Returns:
    ``(values f32[D], active bool[D], score f32[])`` of the best candidate.
  """
  num = values.shape[0]
  num_parents = min(num_parents, num)
  num_seeds = seed_values.shape[0]
  seed_values = jnp.where(seed_ok[:, None], seed_values, values[:num_seeds])
  seed_active = jnp.where(seed_ok[:, None], seed_active, active[:num_seeds])
  reps = max(1, (num // 4) // (num_parents + num_seeds))
  s, top = jax.lax.top_k(score_fn(values, active), num_parents)
  u, a = values[top], active[top]

  # One rolled loop over the rounds: every copy of `perturb` is costly to compile.
  def round_(carry, step_scale):
    u, a, s, key = carry
    key, step_key = jax.random.split(key)
    pu = jnp.repeat(jnp.concatenate([u, seed_values]), reps, axis=0)
    pa = jnp.repeat(jnp.concatenate([a, seed_active]), reps, axis=0)
    nu, na = sampling.perturb(step_key, space, pu, pa, scale=step_scale)
    u, a = jnp.concatenate([u, nu]), jnp.concatenate([a, na])
    s, top = jax.lax.top_k(jnp.concatenate([s, score_fn(nu, na)]), num_parents)
    return (u[top], a[top], s, key), None

  scales = scale * 0.5 ** jnp.arange(num_rounds, dtype=jnp.float32)
  (u, a, s, _), _ = jax.lax.scan(round_, (u, a, s, key), scales)
  return u[0], a[0], s[0]  # top_k is sorted


# --------------------------------------------------------------- the tuner
@flax.struct.dataclass
class GPState:
  """GP-BO state: the history, the last hyperparameter fit and whether there has been one."""
  history: History
  params: GPParams
  fitted: jax.Array  # bool[]


def _data(space: Space, history: History, output_warp: bool = False):
  x = sampling.featurize(space, history.values, history.active)
  mask = history.valid & ~history.failed
  y = half_rank_warp(history.objective, mask)[0] if output_warp else history.objective
  return x, standardize(y, mask), mask


def variance_picks(space: Space, prior: GPPrior, history: History, values: jax.Array,
                   active: jax.Array, num: int, ok: jax.Array | None = None) -> jax.Array:
  """i32[num]: `gp_model.variance_design` among candidate configurations (those ``ok``;
  None: every one), given the study so far, under the kernel at the prior's centre
  (``prior.init()``)."""
  x = sampling.featurize(space, history.values, history.active)
  if ok is None:
    ok = jnp.ones(values.shape[:1], bool)
  return variance_design(prior.init(), x, history.valid,
                         sampling.featurize(space, values, active), ok, num, prior.layout)


def pool_variance_picks(key: jax.Array, space: Space, prior: GPPrior, history: History,
                        pool: Points, available: jax.Array, num: int, max_candidates: int
                        ) -> jax.Array:
  """i32[num]: `variance_picks` among a pool's available records; a pool of more than
  ``max_candidates`` records offers that many available ones, drawn at random."""
  size = pool.values.shape[0]
  sel = jnp.arange(size) if size <= max_candidates else jax.lax.top_k(
      jnp.where(available, jax.random.uniform(key, (size,)), -1.0), max_candidates)[1]
  pick = variance_picks(space, prior, history, pool.values[sel], pool.active[sel], num,
                        available[sel])
  return sel[pick]


def gp_bo(space: Space, batch_size: int = 1, history_size: int | None = None,
          budget: int | None = None, num_initial: int | None = None,
          num_candidates: int = 1024, fit_steps: int = 100, refit_steps: int = 20,
          refit_every: int = 5, dense_refits: int = 100, learning_rate: float = 0.1,
          num_rounds: int = 3, fantasy: str = "believer", prior: GPPrior | None = None,
          kernel: str = "activity", lengthscale_median: float | str = 1.0,
          noise_floor: float = 1e-5, inflate: bool = True, output_warp: bool = False,
          spread_design: bool = False) -> Tuner:
  """GP Bayesian optimization (activity-aware Matérn-5/2 ARD, log-EI) over a structured space.

  Args:
    space: the space.
    batch_size: proposals per ask; a batch is made diverse by fantasizing each
      pending point before choosing the next.
    history_size: observations the GP sees (the last ``history_size``; the
      exact GP costs O(history_size^3) per ask and per fit step). Default: the
      ``budget`` when given, else 256.
    budget: the number of trials the study will run (sizes the history).
    num_initial: observations before the GP is used, proposed uniformly at
      random (default ``max(5, 2 * batch_size)``).
    num_candidates: random candidates per proposal, before local search.
    fit_steps: Adam steps of the first fit (from the prior's medians).
    refit_steps: Adam steps of each later fit, warm-started from the last one.
    refit_every, dense_refits: after ``dense_refits`` observations, refit only
      when the count crosses a multiple of ``refit_every`` (the posterior always
      uses every observation; only the hyperparameters wait).
    learning_rate: Adam's rate.
    num_rounds: rounds of local search after the random candidates.
    fantasy: value a pending point is assumed to take: ``"believer"`` the
      posterior mean (kriging believer), ``"liar"`` the incumbent (constant liar).
    prior: hyperparameter priors, bounds and kernel layout; when given, the four
      settings below are ignored.
    kernel: ``"activity"`` (the activity-aware kernel) or ``"plain"`` (Euclidean
      distance over the features, inactive values as 0).
    lengthscale_median: the lengthscale prior's median, or ``"dimension"`` for
      the dimension-scaled prior of Hvarfner et al. (2024).
    noise_floor: the smallest noise variance (standardized units).
    inflate: widen the predictive sd for the scale estimated from few points
      (`gp_model.scale_inflation`).
    output_warp: fit the GP to the objectives after `gp_model.half_rank_warp` (the bad half
      by rank, the good half as it is), so that one diverged training does not flatten the
      others; off by default (the tables of `paper/` ran without it).
    spread_design: the initial design is not uniform random but the kernel's greedy
      integrated-variance design (`variance_picks`) among the random candidates (on a pool,
      up to ``num_candidates`` available records); off by default (the tables of `paper/`
      ran without it).

  The defaults were chosen on meta-validation tasks (`experiments/gp_calibration.py`);
  ``kernel="plain", lengthscale_median="dimension", inflate=False,
  history_size=64, fit_steps=200, refit_steps=200`` and a large
  ``dense_refits`` give the GP-BO of metatune 0.1.0 before these changes.

  Returns:
    The `Tuner`, named ``"gp_bo"``; ``sequential`` (its ask and tell branch on
    the state, which ``vmap`` would turn into both branches).

  Example:
    >>> tuner = gp_bo(space, batch_size=4, budget=100)  # doctest: +SKIP
    >>> state, trace = jax.jit(lambda k: run_tuning(k, tuner, fn, 25))(key)  # doctest: +SKIP
  """
  for name, value in (("output_warp", output_warp), ("spread_design", spread_design)):
    if not isinstance(value, bool):
      raise ValueError(f"{name} must be true or false, got {value!r}")
  if fantasy not in ("believer", "liar"):
    raise ValueError(f"fantasy must be 'believer' or 'liar', got {fantasy!r}")
  for name, value in (("budget", budget), ("history_size", history_size)):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
      raise ValueError(f"{name} must be a positive whole number, got {value!r}")
  if history_size is None:
    history_size = budget if budget is not None else 256
  num_initial = max(5, 2 * batch_size) if num_initial is None else num_initial
  if kernel not in ("activity", "plain"):
    raise ValueError(f"kernel must be 'activity' or 'plain', got {kernel!r}")
  if prior is None:
    median = None if lengthscale_median == "dimension" else float(lengthscale_median)
    prior = GPPrior.for_space(space, lengthscale_median=median, noise_bounds=(noise_floor, 1.0))
    if kernel == "plain":
      prior = dataclasses.replace(prior, layout=None)
  scale = scale_inflation if inflate else (lambda n: jnp.ones((), jnp.float32))
  cap, feats, layout = history_size, prior.num_features, prior.layout

  def init(key):
    del key
    return GPState(history_init(space, history_size), prior.init(), jnp.zeros((), bool))

  def propose(key, state, values, active):
    """A batch by log-EI; ``values f32[B, N, D]``: each proposal's random candidates."""
    h = state.history
    x, y, mask = _data(space, h, output_warp)
    # Slots for the pending points of the batch, filled with fantasies as chosen.
    x = jnp.concatenate([x, jnp.zeros((batch_size, feats), jnp.float32)])
    y = jnp.concatenate([y, jnp.zeros((batch_size,), jnp.float32)])
    mask = jnp.concatenate([mask, jnp.zeros((batch_size,), bool)])
    has_best = jnp.isfinite(h.best_objective)[None]

    def choose(carry, cand):
      x, y, mask, j, key = carry
      key, search_key = jax.random.split(key)
      post = posterior(state.params, x, y, mask, layout)
      best = jnp.min(jnp.where(mask, y, jnp.inf))
      best = jnp.where(jnp.isfinite(best), best, 0.0)  # no data: the prior mean
      inflation = scale(jnp.sum(mask))

      def score(u, a):
        mean, var = predict(post, sampling.featurize(space, u, a))
        log_ei = log_expected_improvement(mean, inflation * jnp.sqrt(var), best)
        return jnp.where(jnp.isnan(log_ei), -jnp.inf, log_ei)  # a failed factorization

      # The incumbent seeds the local search once there is one.
      u, a, _ = maximize(search_key, space, score, cand[0], cand[1], h.best_values[None],
                         h.best_active[None], has_best, num_rounds)
      f = sampling.featurize(space, u, a)
      lie = predict(post, f[None])[0][0] if fantasy == "believer" else best
      slot = cap + j
      carry = (x.at[slot].set(f), y.at[slot].set(lie), mask.at[slot].set(True), j + 1, key)
      return carry, (u, a)

    carry = (x, y, mask, jnp.zeros((), jnp.int32), key)
    _, (u, a) = jax.lax.scan(choose, carry, (values, active))
    return Points(u, a)

  def ask(key, state):
    sample_key, search_key = jax.random.split(key)
    # One draw serves both branches: its first candidates are the initial design.
    values, active = sampling.sample(sample_key, space, batch_size * num_candidates)
    values = values.reshape(batch_size, num_candidates, -1)
    active = active.reshape(batch_size, num_candidates, -1)

    def design():
      if not spread_design:
        return Points(values[:, 0], active[:, 0])
      pick = variance_picks(space, prior, state.history, values[0], active[0], batch_size)
      return Points(values[0, pick], active[0, pick])

    points = jax.lax.cond(state.history.count < num_initial, design,
                          lambda: propose(search_key, state, values, active))
    return points, state

  def ask_pool(key, state, pool, available):
    """Log-EI over every available record of a pool (exact on tables of past evaluations)."""
    draw_key, key = jax.random.split(key)
    x_pool = sampling.featurize(space, pool.values, pool.active)

    def model():
      x, y, mask = _data(space, state.history, output_warp)
      x = jnp.concatenate([x, jnp.zeros((batch_size, feats), jnp.float32)])
      y = jnp.concatenate([y, jnp.zeros((batch_size,), jnp.float32)])
      mask = jnp.concatenate([mask, jnp.zeros((batch_size,), bool)])

      def choose(carry, j):
        x, y, mask, avail = carry
        post = posterior(state.params, x, y, mask, layout)
        best = jnp.min(jnp.where(mask, y, jnp.inf))
        best = jnp.where(jnp.isfinite(best), best, 0.0)
        mean, var = predict(post, x_pool)
        log_ei = log_expected_improvement(mean, scale(jnp.sum(mask)) * jnp.sqrt(var), best)
        score = jnp.where(avail & ~jnp.isnan(log_ei), log_ei, -jnp.inf)
        # Records with no score left (a failed factorization) still go in availability order.
        score = jnp.where(avail & jnp.all(score == -jnp.inf), 0.0, score)
        i = jnp.argmax(score)
        lie = mean[i] if fantasy == "believer" else best
        slot = cap + j
        return (x.at[slot].set(x_pool[i]), y.at[slot].set(lie), mask.at[slot].set(True),
                avail.at[i].set(False)), i

      _, idx = jax.lax.scan(choose, (x, y, mask, available), jnp.arange(batch_size))
      return idx

    def design():
      if not spread_design:
        return pool_draw(draw_key, available, batch_size)
      return pool_variance_picks(draw_key, space, prior, state.history, pool, available,
                                 batch_size, num_candidates)

    idx = jax.lax.cond(state.history.count < num_initial, design, model)
    return idx, state

  def tell(key, state, points, evaluation):
    del key  # the fit is deterministic
    before = state.history.count
    history, metrics = history_add(state.history, points, evaluation)
    x, y, mask = _data(space, history, output_warp)
    due = (history.count >= num_initial) & (
        (history.count <= dense_refits) | (history.count // refit_every != before // refit_every))
    branch = jnp.where(due, jnp.where(state.fitted, 2, 1), 0)
    params, lml = jax.lax.switch(branch, [
        lambda: (state.params, jnp.full((), jnp.nan, jnp.float32)),
        lambda: fit(prior.init(), x, y, mask, prior, fit_steps, learning_rate),
        lambda: fit(state.params, x, y, mask, prior, refit_steps, learning_rate)])
    new = state.replace(history=history, params=params, fitted=state.fitted | due)
    return new, {**metrics, "log_likelihood": lml, "refit": due}

  return Tuner(init, ask, tell, space, batch_size, "gp_bo", sequential=True, ask_pool=ask_pool)
