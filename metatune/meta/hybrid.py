"""The prior as a hybrid proposer: a learned initial design, screened candidates, a guard.

A study bootstrapped by a prior runs in three regimes, all one `Tuner`:

1. **Initial design**: the first ``num_initial`` trials are the prior's portfolio
   (design configurations that were good across its training tasks), in order.
2. **Screened candidates**: then every proposal is the best of a candidate set
   (random configurations, the portfolio's unused entries, the policy's samples
   and local moves around the best) under log expected improvement of a model
   conditioned on the study so far. Two GPs share one kernel fit: *scratch*, with
   a constant mean (GP-BO), and *prior*, whose mean is the prior's profile (mean
   normalized regret over its training tasks, smoothed over the space) scaled by
   a slope fitted to the study and shrunk toward 1. It keeps improving past any
   horizon: nothing in it is tied to the budget the policy was trained for.
3. **Negative-transfer guard** (`metatune.meta.guard`): before each observation is added,
   both models predict it; the cumulative log predictive densities give the posterior weight
   of the prior's model (equal odds at the start), and the acquisition uses the
   mixture. A prior that predicts the new task worse than a model fit from
   scratch loses its weight, and proposals become GP-BO's. ``guard=False``
   trusts the prior (weight 1, slope 1): the ablation.
4. **Rescue**: a prior rejected early has placed the initial design where it
   believed the good region was, so the study's incumbent and the model's data sit
   there. When the weight falls below ``rescue_below`` before ``rescue_until``
   proposals, the next ``num_rescue`` proposals are uniform random (GP-BO's own
   initial design; ``rescue_design="spread"``: the variance design, away from the
   prior's trials), and from then on, while the weight stays below it, the
   portfolio's and the policy's candidates are replaced by random ones in the
   screening. A weight that drifts low late in a study (the scratch model has
   caught up with the prior's) changes nothing. ``tell`` reports the rescue's
   trials with the reason "rescue design".
5. **User beliefs** (optional, πBO-style): the screening's acquisition adds the beliefs' log
   density, faded as ``strength / (1 + n)`` and, per parameter, weighted by the study's
   evidence for that belief (`metatune.space.beliefs.evidence`); every third screened proposal
   ignores them, so that a belief the design and the screening agree with still meets
   configurations that miss it.

The state records the guard's weight, and ``tell`` returns it with the reason (and, with
beliefs, their mean weight).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from metatune.meta import guard as guard_lib
from metatune.meta import origin
from metatune.meta.transfer import KERNEL_SCALE, TransferData, smoothed_profile
from metatune.networks import policy as pol
from metatune.networks.tokens import space_info
from metatune.space import Space, sampling
from metatune.space import beliefs as bl
from metatune.tuners.base import (History, Points, Tuner, history_add, history_init,
                                  nearest_available, same_config)
from metatune.tuners.gp import (log_expected_improvement, maximize, pool_variance_picks,
                                variance_picks)
from metatune.tuners.gp_model import (GPParams, GPPrior, fit, half_rank_warp, standardize)

RESCUE_DESIGNS = ("random", "spread")
REASONS = ("initial design", "prior predicts better", "scratch model predicts better",
           "guard off: prior trusted", "no transfer data: scratch model", "rescue design")


@flax.struct.dataclass
class HybridState:
  """Attributes:
    history: the study (the last ``history_size`` observations).
    params: the shared kernel's hyperparameters; fitted: there has been a fit.
    policy: the policy's recurrent state (a dummy when the prior has no policy).
    log_prior, log_scratch: cumulative log predictive densities of the two models.
    weight: the guard's weight of the prior's model.
    used: bool[K] portfolio entries already proposed.
    asked: i32[] proposals made (parallel asks before any tell take successive entries).
    rescued: i32[] rescue proposals made (see the module docstring).
    origins: the recent proposals and the regime of each (`metatune.meta.origin`): ``tell``
      reports a result's reason by what proposed it, whatever order results come in.
    belief_weight: f32[D] how much each parameter's belief still counts, from the study's
      evidence for it (1 without beliefs; see ``belief_confidence``).
  """
  history: History
  params: GPParams
  fitted: jax.Array
  policy: Any
  log_prior: jax.Array
  log_scratch: jax.Array
  weight: jax.Array
  used: jax.Array
  asked: jax.Array
  rescued: jax.Array
  belief_weight: jax.Array
  origins: origin.Origins


def hybrid_tuner(space: Space, transfer: TransferData | None = None, policy=None,
                 budget: int = 100, batch_size: int = 1, history_size: int | None = None,
                 num_initial: int = 5, num_candidates: int = 512, num_policy: int = 32,
                 guard: bool = True, shrinkage: float = 5.0, fit_steps: int = 100,
                 refit_steps: int = 20, refit_every: int = 5, dense_refits: int = 100,
                 full_refit_every: int = 25,
                 policy_horizon: int | None = None, num_rescue: int = 10,
                 rescue_below: float = 0.01, rescue_until: int = 20,
                 beliefs: bl.Beliefs | None = None, belief_confidence: float | None = 0.0,
                 belief_free_every: int = 3, kernel_locs: tuple[float, ...] | None = None,
                 design: Points | None = None, output_warp: bool = False,
                 spread_design: bool = False, rescue_design: str = "random",
                 name: str = "prior") -> Tuner:
  """A prior's hybrid tuner (see the module docstring).

  Args:
    space: the space; the transfer data must be of this space (or None).
    transfer: the prior's design, profile and portfolio (`metatune.meta.transfer`).
    policy: ``(graphdef, params, config)`` of the meta-trained policy, or None.
    budget: trials in the study (sizes the history).
    batch_size: proposals per ask.
    history_size: observations the models see (default ``min(budget, 256)``).
    num_initial: trials taken from the portfolio before the models are used.
    num_candidates: random candidates per proposal.
    num_policy: policy samples per proposal.
    guard: weigh the prior's model by how well it predicts the study (False:
      always trust it).
    shrinkage: pseudo-observations pulling the fitted profile slope toward 1.
    fit_steps, refit_steps, refit_every, dense_refits: the kernel fit schedule
      (as in `metatune.tuners.gp_bo`).
    full_refit_every: once the history window is full (``history_size``
      observations), refit every this many trials: the window slides by one
      observation a trial, and the refits were most of a trial's cost at 1,000.
    policy_horizon: the budget the policy was trained for (a feature of its
      state; default ``budget``).
    num_rescue: uniform random proposals once the guard's weight falls below
      ``rescue_below`` early (0: none).
    rescue_below: the weight under which the prior counts as rejected: the rescue
      design runs and the screening drops the portfolio's and policy's candidates.
    rescue_until: a rescue starts only before this many proposals.
      (num_rescue, rescue_below and rescue_until were chosen on meta-validation
      tasks: `configs/experiments/validation/`, results in
      `paper/evaluate/rescue_*`.)
    beliefs: the user's beliefs (`metatune.space.beliefs`): the screening adds
      ``strength / (1 + n) * log_density`` to its acquisition after ``n`` observations, so
      they steer the first model-based trials and fade (πBO). None: no beliefs.
    belief_confidence: the beliefs' head start against the study's evidence: the term above
      counts each parameter's miss with weight ``Phi(evidence + belief_confidence)``,
      ``evidence`` being that belief's z-score on the study (`metatune.space.beliefs.evidence`:
      are the study's best configurations the ones that meet it?). A belief the study
      contradicts stops steering; a right one keeps its weight. ``tell`` reports the mean
      weight over the parameters with a belief (``belief_weight``). None: no check (πBO's
      fade only, the ablation).
    belief_free_every: with the check on, every this many screened proposals ignores the
      beliefs (0: none), so that a belief the prior's design and the screening agree with
      still meets configurations that miss it: without them there is no evidence either way.
      (belief_confidence and belief_free_every were chosen on meta-validation tasks:
      `configs/experiments/validation/beliefs_check.yaml`.)
    kernel_locs: per feature of ``space``, the log-lengthscales that centre the kernel's
      lengthscale prior (with scale `metatune.meta.transfer.KERNEL_SCALE`) and start its
      first fit: a kernel transferred from the training tasks
      (`metatune.meta.transfer.kernel_locs`). None: GP-BO's prior.
    design: configurations that lead the initial design when there is no transfer data
      (the first entries of a prior's portfolio carried into this space: the prior tuner's
      ``carry_design``); the rest of the initial design is random, and nothing else of the
      prior (profile, portfolio candidates, guard) comes with them. Ignored with ``transfer``,
      whose whole portfolio leads.
    output_warp: both models (and the guard) see the objectives after
      `metatune.tuners.gp_model.half_rank_warp`, as ``gp_bo(output_warp=True)``.
    spread_design: the initial design's entries after its leading ones (the portfolio or
      ``design``) are not uniform random but a greedy integrated-variance design
      (`metatune.tuners.gp.variance_picks`) among ``num_candidates`` random
      configurations (on a pool, up to as many available records), under the kernel at its
      prior centre: with ``kernel_locs`` it spreads them along the parameters the training
      tasks found relevant.
    rescue_design: ``"random"`` (default): the rescue's proposals are uniform random, GP-BO's
      own design; ``"spread"``: each is the variance design's pick (as ``spread_design``)
      given the study so far, the rejected prior's trials included, so it fills the space
      away from them.
    name: label for reports.
  """
  for key, value in (("output_warp", output_warp), ("spread_design", spread_design)):
    if not isinstance(value, bool):
      raise ValueError(f"{key} must be true or false, got {value!r}")
  if rescue_design not in RESCUE_DESIGNS:
    raise ValueError(f"rescue_design must be one of {RESCUE_DESIGNS}, got {rescue_design!r}")
  horizon = float(policy_horizon or budget)
  history_size = history_size or min(budget, 256)
  if kernel_locs is None:
    prior = GPPrior.for_space(space)
  else:
    if len(kernel_locs) != sampling.feature_size(space):
      raise ValueError(f"kernel_locs has {len(kernel_locs)} entries; the space "
                       f"{space.name!r} has {sampling.feature_size(space)} features")
    prior = GPPrior.for_space(space, lengthscale_locs=tuple(float(v) for v in kernel_locs),
                              lengthscale_scale=KERNEL_SCALE)
  cap, layout = history_size, prior.layout
  has_transfer = transfer is not None
  if has_transfer:
    port = jnp.asarray(transfer.portfolio, jnp.int32)
    port_values = jnp.asarray(transfer.values)[port]
    port_active = jnp.asarray(transfer.active)[port]
    prof = jnp.asarray(transfer.profile)
    prof_mu, prof_sd = jnp.mean(prof), jnp.maximum(jnp.std(prof), 1e-6)
  else:
    port_values = jnp.zeros((1, space.num_params), jnp.float32)
    port_active = jnp.zeros((1, space.num_params), bool)
  num_port = port_values.shape[0] if has_transfer else 0
  # The configurations that lead the initial design: the portfolio, or a carried-over design.
  lead_values, lead_active, num_lead = port_values, port_active, num_port
  if design is not None and not has_transfer:
    lead_values = jnp.asarray(design.values, jnp.float32)
    lead_active = jnp.asarray(design.active, bool)
    if lead_values.ndim != 2 or lead_values.shape[1] != space.num_params or (
        lead_active.shape != lead_values.shape):
      raise ValueError(f"design must be [N, {space.num_params}] values and active flags of "
                       f"the space {space.name!r}, got {lead_values.shape} and "
                       f"{lead_active.shape}")
    num_lead = lead_values.shape[0]
  info = space_info(space) if policy is not None else None
  if policy is not None:
    graphdef, pparams, pconfig = policy

  def profile_z(u, a):
    """The standardized prior profile at configurations (0 without transfer data)."""
    if not has_transfer:
      return jnp.zeros(u.shape[:1], jnp.float32)
    return (smoothed_profile(space, transfer, Points(u, a)) - prof_mu) / prof_sd

  def init(key):
    del key
    ps = pol.init_state(pconfig, info) if policy is not None else jnp.zeros(())
    z = jnp.zeros((), jnp.float32)
    return HybridState(history_init(space, cap), prior.init(), jnp.zeros((), bool), ps, z, z,
                       jnp.asarray(1.0 if not guard else 0.5),
                       jnp.zeros((max(num_port, 1),), bool), jnp.zeros((), jnp.int32),
                       jnp.zeros((), jnp.int32), belief_weight(None),
                       origin.init(space.num_params))

  def objectives(history, mask):
    if not output_warp:
      return history.objective
    return half_rank_warp(history.objective, mask)[0]

  def data(history):
    x = sampling.featurize(space, history.values, history.active)
    mask = history.valid & ~history.failed
    y = standardize(objectives(history, mask), mask)
    z = profile_z(history.values, history.active)
    return x, y, mask, z

  def slope(y, z, mask):
    if not has_transfer:
      return jnp.zeros(())
    return guard_lib.slope(y, z, mask, shrinkage) if guard else jnp.ones((), jnp.float32)

  def models(state, history, xq, zq):
    """Both models' predictions at queries (`metatune.meta.guard.models`), the history's
    standardized objectives and mask."""
    x, y, mask, z = data(history)
    prior_pred, scratch_pred, _ = guard_lib.models(state.params, layout, x, y, mask, z, xq, zq,
                                                   slope)
    return prior_pred, scratch_pred, y, mask

  def mixture(state, history, xq, zq):
    prior_pred, scratch_pred, y, mask = models(state, history, xq, zq)
    w = state.weight if has_transfer else jnp.zeros(())
    mean, sd = guard_lib.mixture(prior_pred, scratch_pred, w)
    best = jnp.min(jnp.where(mask, y, jnp.inf))
    best = jnp.where(jnp.isfinite(best), best, 0.0)
    return mean, sd, best

  def score_fn(state, pos):
    def score(u, a):
      xq = sampling.featurize(space, u, a)
      mean, sd, best = mixture(state, state.history, xq, profile_z(u, a))
      log_ei = log_expected_improvement(mean, sd, best) + belief_term(state, u, a, pos)
      return jnp.where(jnp.isnan(log_ei), -jnp.inf, log_ei)
    return score

  def belief_term(state, u, a, pos):
    """The beliefs' log density, weighted and faded; 0 on a belief-free proposal ``pos``."""
    if beliefs is None:
      return jnp.zeros(u.shape[:1], jnp.float32)
    n = state.history.count.astype(jnp.float32)
    term = beliefs.strength / (1.0 + n) * bl.log_density(beliefs, space, u, a,
                                                         state.belief_weight)
    if belief_confidence is None or not belief_free_every:
      return term
    free = (pos - num_initial) % belief_free_every == belief_free_every - 1
    return jnp.where(free, 0.0, term)

  def belief_weight(history):
    """f32[D]: ``Phi(evidence + belief_confidence)`` per parameter on the study (1 without
    beliefs or check)."""
    if beliefs is None or belief_confidence is None:
      return jnp.ones((space.num_params,), jnp.float32)
    z = jnp.zeros((space.num_params,), jnp.float32) if history is None else bl.evidence(
        beliefs, space, history.values, history.active, history.objective, history.failed,
        history.valid)
    return jax.scipy.stats.norm.cdf(z + belief_confidence)

  def policy_samples(key, state, num):
    policy_mod = nnx.merge(graphdef, pparams)
    keys = jax.random.split(key, num)
    action = jax.vmap(lambda k: pol.autoregress(policy_mod, info, state.policy, k)[0])(keys)
    return action.values, action.active

  def initial(key, state, spread_fill=True):
    pos = state.asked + jnp.arange(batch_size)
    take = jnp.minimum(pos, max(num_lead, 1) - 1)
    if spread_design and spread_fill:
      fill = spread(jax.random.fold_in(key, 2), state)
      fill_u, fill_a = fill.values, fill.active
    else:
      fill_u, fill_a = sampling.sample(key, space, batch_size)
    inside = (pos < num_lead)[:, None]
    return Points(jnp.where(inside, lead_values[take], fill_u),
                  jnp.where(inside, lead_active[take], fill_a))

  def screened(key, state):
    rand_key, fill_key, pol_key, search_key = jax.random.split(key, 4)
    u, a = sampling.sample(rand_key, space, num_candidates)
    parts_u, parts_a = [u], [a]
    rejected = rejected_now(state)
    if has_transfer:
      keep = ~state.used[:num_port] & ~rejected
      # Used entries are replaced by random ones (same shape every step).
      fill_u, fill_a = sampling.sample(fill_key, space, num_port)
      parts_u.append(jnp.where(keep[:, None], port_values, fill_u))
      parts_a.append(jnp.where(keep[:, None], port_active, fill_a))
    if policy is not None:
      pu, pa = policy_samples(pol_key, state, num_policy)
      # fold_in, not split: a prior that is never rejected draws exactly as before the rescue.
      fu, fa = sampling.sample(jax.random.fold_in(pol_key, 1), space, num_policy)
      parts_u.append(jnp.where(rejected, fu, pu))
      parts_a.append(jnp.where(rejected, fa, pa))
    cu, ca = jnp.concatenate(parts_u), jnp.concatenate(parts_a)
    h = state.history
    has_best = jnp.isfinite(h.best_objective)[None]
    keys = jax.random.split(search_key, batch_size)

    def one(k, pos):  # batches: independent searches (no fantasies); candidates differ per key
      uu, aa, _ = maximize(k, space, score_fn(state, pos), cu, ca, h.best_values[None],
                           h.best_active[None], has_best)
      return uu, aa
    pos = state.asked + jnp.arange(batch_size)
    uu, aa = jax.vmap(one)(keys, pos) if batch_size > 1 else jax.tree.map(
        lambda x: x[None], one(keys[0], pos[0]))
    return Points(uu, aa)

  def rejected_now(state):
    """The guard rejected the prior early and still does (only with transfer data, guard on)."""
    if not (has_transfer and guard) or num_rescue <= 0:
      return jnp.zeros((), bool)
    return (state.weight < rescue_below) & (state.rescued > 0)

  def spread(key, state):
    """The variance design's next ``batch_size`` picks among random candidates."""
    u, a = sampling.sample(key, space, num_candidates)
    pick = variance_picks(space, prior, state.history, u, a, batch_size)
    return Points(u[pick], a[pick])

  def rescue(key, state):
    if rescue_design == "spread":
      return spread(key, state)
    return Points(*sampling.sample(key, space, batch_size))

  def mark_used(state, points):
    if not has_transfer:
      return state.used
    return state.used | jnp.any(same_config(points.values, points.active, port_values,
                                            port_active), axis=0)

  def advanced(state, r, points):
    """The state after an ask in regime ``r`` (see ``regime``) that proposed ``points``."""
    return state.replace(used=mark_used(state, points), asked=state.asked + batch_size,
                         rescued=state.rescued + jnp.where(r == 1, batch_size, 0),
                         origins=origin.record(state.origins, state.asked, points, r))

  def regime(state):
    """0: initial design, 1: rescue design, 2: screened candidates."""
    if not (has_transfer and guard) or num_rescue <= 0:
      return jnp.where(state.asked < num_initial, 0, 2)
    low = state.weight < rescue_below
    rescuing = low & (state.rescued < num_rescue) & ((state.rescued > 0) |
                                                      (state.asked < rescue_until))
    return jnp.where(state.asked < num_initial, 0, jnp.where(rescuing, 1, 2))

  def ask(key, state):
    init_key, screen_key = jax.random.split(key)
    rescue_key = jax.random.fold_in(init_key, 1)
    r = regime(state)
    points = jax.lax.switch(r, [lambda: initial(init_key, state),
                                lambda: rescue(rescue_key, state),
                                lambda: screened(screen_key, state)])
    return points, advanced(state, r, points)

  def tell(key, state, points, evaluation):
    del key
    before = state.history.count
    # The guard: both models predict the new observations before they are added.
    if has_transfer and guard:
      xq = sampling.featurize(space, points.values, points.active)
      zq = profile_z(points.values, points.active)
      prior_pred, scratch_pred, _, mask = models(state, state.history, xq, zq)
      lp, ls = guard_lib.log_scores(prior_pred, scratch_pred, state.history.objective, mask,
                                    evaluation.objective, evaluation.failed, state.fitted,
                                    output_warp)
      state = state.replace(log_prior=state.log_prior + lp, log_scratch=state.log_scratch + ls)
      state = state.replace(weight=jax.nn.sigmoid(state.log_prior - state.log_scratch))
    history, metrics = history_add(state.history, points, evaluation)
    x, y, mask, _ = data(history)
    every = jnp.where(before >= cap, full_refit_every, refit_every)
    due = (history.count >= num_initial) & (
        (history.count <= dense_refits) | (history.count // every != before // every))
    branch = jnp.where(due, jnp.where(state.fitted, 2, 1), 0)
    params, _ = jax.lax.switch(branch, [
        lambda: (state.params, jnp.zeros(())),
        lambda: fit(prior.init(), x, y, mask, prior, fit_steps),
        lambda: fit(state.params, x, y, mask, prior, refit_steps)])
    ps = state.policy
    if policy is not None:
      policy_mod = nnx.merge(graphdef, pparams)

      def fold(s, item):
        return pol.observe(policy_mod, info, s, *item, horizon), None

      ps, _ = jax.lax.scan(fold, ps, (points.values, points.active, evaluation.objective,
                                      evaluation.failed))
    state = state.replace(history=history, params=params, fitted=state.fitted | due, policy=ps,
                          belief_weight=belief_weight(history))
    # By what proposed the result (a configuration it did not propose: by the study's stage).
    made_by = origin.lookup(state.origins, points.values[0], points.active[0])
    design = (made_by == 0) | ((made_by < 0) & (before < num_initial))
    reason = jnp.where(design, 0, jnp.where(made_by == 1, 5, jnp.where(
        not has_transfer, 4, jnp.where(not guard, 3, jnp.where(state.weight >= 0.5, 1, 2)))))
    metrics = {**metrics, "guard_weight": state.weight, "guard_reason": reason}
    if beliefs is not None:
      held = jnp.asarray([n in beliefs.names for n in space.names])
      metrics["belief_weight"] = (jnp.sum(jnp.where(held, state.belief_weight, 0.0))
                                  / len(beliefs.names) if beliefs.names else jnp.ones(()))
    return state, metrics

  def ask_pool(key, state, pool, available):
    """Pools: the portfolio's nearest records first, then the best available record."""
    draw_key, key = jax.random.split(key)

    def first():
      idx = nearest_available(space, pool, available, initial(draw_key, state, False))
      if not spread_design:
        return idx
      lead = state.asked + jnp.arange(batch_size) < num_lead
      avail = available & ~jnp.zeros_like(available).at[idx].max(lead)
      picks = pool_variance_picks(key, space, prior, state.history, pool, avail, batch_size,
                                  num_candidates)
      return jnp.where(lead, idx, picks)

    def model():
      xq = sampling.featurize(space, pool.values, pool.active)
      mean, sd, best = mixture(state, state.history, xq, profile_z(pool.values, pool.active))
      score = (log_expected_improvement(mean, sd, best)
               + belief_term(state, pool.values, pool.active, state.asked))
      score = jnp.where(available & ~jnp.isnan(score), score, -jnp.inf)
      score = jnp.where(available & jnp.all(score == -jnp.inf), 0.0, score)
      return jax.lax.top_k(score, batch_size)[1]

    def rescued():
      if rescue_design == "random":
        return nearest_available(space, pool, available, rescue(draw_key, state))
      return pool_variance_picks(key, space, prior, state.history, pool, available,
                                 batch_size, num_candidates)

    r = regime(state)
    idx = jax.lax.switch(r, [first, rescued, model])
    return idx, advanced(state, r, Points(pool.values[idx], pool.active[idx]))

  return Tuner(init, ask, tell, space, batch_size, name, sequential=True, ask_pool=ask_pool)
