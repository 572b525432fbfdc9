"""The structured policy: a recurrent history encoder and a masked autoregressive head.

State: the study so far, folded one trial at a time into a GRU state (each
trial a token: its configuration as the sum of parameter-embedding x
value-embedding over active parameters, plus its objective normalized within
the history, an improvement flag, a failure flag and the budget used), plus
the incumbent. Updating costs one GRU step per trial, never a re-read of the
history.

Action: one step per parameter in the space's dependency order. A parameter
that the values chosen so far make inactive is skipped. Numbers are chosen in
two stages (one of 16 coarse bins, then one of 16 fine bins in it: 256 levels
of the unit encoding, so log-scaled parameters are log-spaced); choices are
scored against their label embeddings. Besides fresh values, an *edit* option
keeps the incumbent's value. Every option that would break a constraint
decidable at that step is masked (see `tokens.candidate_mask`); a coarse bin
is allowed only when its representative fine level is, so the fine stage
always has an allowed level. A rare dead end (a constraint that the earlier
choices made impossible to satisfy) is replaced by a known-feasible
configuration, flagged so that training can penalize it: what the policy
emits is always valid.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metatune.networks.tokens import (CHOICE_DIM, DESC_DIM, NUM_COARSE, NUM_FINE,
                                      STRUCTURE_COLUMNS, SpaceInfo,
                                      candidate_mask)
from metatune.space import sampling

_REP = (NUM_FINE // 2 + 0.5) / NUM_FINE   # the fine level that represents a coarse bin
# 1 everywhere but the structure features of a descriptor (conditional, depth; see tokens._tokens).
_STRUCTURE_OFF = np.ones(DESC_DIM, np.float32)
_STRUCTURE_OFF[list(STRUCTURE_COLUMNS)] = 0.0


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Static settings of the policy network.

  Attributes:
    hidden: width of every layer and of the recurrent state.
    edit: offer "keep the incumbent's value" at every parameter (edit mode).
    structure: read each parameter's place in the space's structure (whether it is
      conditional, how deep it sits) from its token; False blanks those two features
      (the ablation: the policy then knows a parameter only by kind, scale and name).
      Masking of inactive parameters and constraints holds either way.
  """
  hidden: int = 32
  edit: bool = True
  structure: bool = True


@flax.struct.dataclass
class PolicyState:
  """What the policy carries through a study (one study; vmap for many).

  Attributes:
    h: f32[H] recurrent state.
    count, mean, m2: Welford statistics of the finite objectives seen.
    best: f32[] best finite objective (inf when none).
    inc_values, inc_active: f32[D], bool[D] the incumbent (zeros when none).
    has_inc: bool[].
    step: f32[] trials seen.
  """
  h: jax.Array
  count: jax.Array
  mean: jax.Array
  m2: jax.Array
  best: jax.Array
  inc_values: jax.Array
  inc_active: jax.Array
  has_inc: jax.Array
  step: jax.Array


@flax.struct.dataclass
class Action:
  """One proposal and what is needed to score it again.

  Attributes:
    values, active: f32[D], bool[D] the emitted (valid) configuration.
    first, second: i32[D] stage choices (option 0 is "keep"; then bins or choices).
    mask1: bool[D, A] allowed first-stage options; mask2: bool[D, NUM_FINE].
    stepped: bool[D] parameters active when the head reached them (those it chose).
    dead_end: bool[] the head met an unsatisfiable constraint (replaced by a feasible config).
  """
  values: jax.Array
  active: jax.Array
  first: jax.Array
  second: jax.Array
  mask1: jax.Array
  mask2: jax.Array
  stepped: jax.Array
  dead_end: jax.Array


class Policy(nnx.Module):
  """Weights shared by every parameter and every space (see the module docstring)."""

  def __init__(self, config: PolicyConfig, *, rngs: nnx.Rngs):
    h = config.hidden
    self.config = config
    self.param_in = nnx.Linear(DESC_DIM, h, rngs=rngs)
    self.choice_in = nnx.Linear(CHOICE_DIM, h, rngs=rngs)
    self.value_in = nnx.Linear(3, h, rngs=rngs)
    self.token_in = nnx.Linear(h + 4, h, rngs=rngs)
    self.gru = nnx.GRUCell(h, h, rngs=rngs)
    self.head1 = nnx.Linear(3 * h + 3, h, rngs=rngs)
    self.head2 = nnx.Linear(h, h, rngs=rngs)
    self.coarse = nnx.Linear(h, NUM_COARSE, rngs=rngs)
    self.fine = nnx.Linear(h + NUM_COARSE, NUM_FINE, rngs=rngs)
    self.query = nnx.Linear(h, h, rngs=rngs)
    self.keep = nnx.Linear(h, 1, rngs=rngs)
    self.critic1 = nnx.Linear(h + 2, h, rngs=rngs)
    self.critic2 = nnx.Linear(h, 1, rngs=rngs)

  def embed(self, info: SpaceInfo):
    t = info.tokens
    desc = t.desc if self.config.structure else t.desc * jnp.asarray(_STRUCTURE_OFF)
    return jnp.tanh(self.param_in(desc)), jnp.tanh(self.choice_in(t.choice))

  def value_embeddings(self, info: SpaceInfo, u, a, choice_emb):
    """f32[..., D, H]: the embedding of each parameter's value (zero when inactive)."""
    w = 2 * u - 1
    num = jnp.tanh(self.value_in(jnp.stack([u, w, w * w], axis=-1)))
    idx = info.space.choice_index(u)
    # A one-hot product, not a gather: its gradient is a product too (a scatter is slow on CPU).
    cat = jnp.einsum("...dc,dch->...dh", jax.nn.one_hot(idx, choice_emb.shape[-2]), choice_emb)
    v = jnp.where(jnp.asarray(info.numeric)[:, None], num, cat)
    return jnp.where(a[..., None], v, 0.0)

  def critic(self, state: PolicyState, budget: float):
    x = jnp.concatenate([state.h, jnp.stack([state.step / budget, state.has_inc * 1.0])])
    return self.critic2(jnp.tanh(self.critic1(x)))[0]


def init_state(config: PolicyConfig, info: SpaceInfo) -> PolicyState:
  d = info.space.num_params
  return PolicyState(
      h=jnp.zeros((config.hidden,), jnp.float32), count=jnp.zeros((), jnp.float32),
      mean=jnp.zeros((), jnp.float32), m2=jnp.zeros((), jnp.float32),
      best=jnp.full((), jnp.inf, jnp.float32), inc_values=jnp.zeros((d,), jnp.float32),
      inc_active=jnp.zeros((d,), bool), has_inc=jnp.zeros((), bool),
      step=jnp.zeros((), jnp.float32))


def num_first_options(info: SpaceInfo) -> int:
  return 1 + max(NUM_COARSE, int(info.tokens.mids.shape[1]))


def _masked_logp(logits, mask):
  logits = jnp.where(mask, logits, -1e9)
  return jax.nn.log_softmax(logits)


def _entropy(logp, mask):
  p = jnp.exp(logp)
  return -jnp.sum(jnp.where(mask, p * logp, 0.0))


def _step_branches(info: SpaceInfo):
  """Per-parameter functions, selected by ``lax.switch`` on the (unbatched) step index.

  ``activity[d](u)`` is parameter ``d``'s activity given the values so far;
  ``mask[d](u, cand)`` is `tokens.candidate_mask` specialized to step ``d``
  (only the constraints decidable there; all True where none is). Steps with
  nothing to decide share one trivial branch (`_switch_tables` indexes them),
  which keeps compile time down.
  """
  space = info.space

  def activity(d):
    return lambda u: space.activity_from(space.comparable(u), upto=d + 1)[d]

  def mask(d):
    return lambda u, cand: candidate_mask(info, d, u, cand)

  act_idx, mask_idx = _switch_tables(info)
  act_fns = [lambda u: jnp.ones((), bool)] + [
      activity(d) for d in range(space.num_params) if act_idx[d]]
  mask_fns = [lambda u, cand: jnp.ones(cand.shape, bool)] + [
      mask(d) for d in range(space.num_params) if mask_idx[d]]
  return act_fns, mask_fns


def _switch_tables(info: SpaceInfo) -> tuple[np.ndarray, np.ndarray]:
  """i32[D] branch of each step in `_step_branches`' lists (0: the shared trivial branch)."""
  space = info.space
  conditioned = np.array([c is not None for c in space.conditions], bool)
  masked = info.involve.any(axis=1) if info.involve.size else np.zeros(space.num_params, bool)
  return (np.where(conditioned, np.cumsum(conditioned), 0).astype(np.int32),
          np.where(masked, np.cumsum(masked), 0).astype(np.int32))


def _head_inputs(policy: Policy, info: SpaceInfo, state: PolicyState):
  """What the head reads at every step, computed once per proposal.

  ``base[d]`` is the part of the head's first layer (on ``[h, emb_d, ar,
  inc_u_d, inc_a_d, step]``) that does not depend on the values chosen before
  step ``d``; ``w_ar`` multiplies ``ar``, the sum of those values' embeddings.
  """
  space = info.space
  d_num, hid = space.num_params, policy.config.hidden
  param_emb, choice_emb = policy.embed(info)
  w1, b1 = policy.head1.kernel[...], policy.head1.bias[...]
  extra = jnp.stack([state.inc_values, state.inc_active * 1.0,
                     jnp.broadcast_to(state.step / 100.0, (d_num,))], axis=-1)
  base = (state.h @ w1[:hid] + b1) + param_emb @ w1[hid:2 * hid] + extra @ w1[3 * hid:]
  pad = num_first_options(info) - 1
  cmax = int(info.tokens.mids.shape[1])
  numeric = jnp.asarray(info.numeric)
  coarse_values = (jnp.arange(NUM_COARSE) + _REP) / NUM_COARSE
  opt_values = jnp.where(numeric[:, None], jnp.pad(coarse_values, (0, pad - NUM_COARSE)),
                         jnp.pad(info.tokens.mids, ((0, 0), (0, pad - cmax))))
  xs = {
      "d": jnp.arange(d_num), "base": base, "emb": param_emb, "cemb": choice_emb,
      "numeric": numeric, "nchoice": jnp.asarray(space.num_choices),
      "values1": jnp.concatenate([state.inc_values[:, None], opt_values], axis=-1),
      "inc_a": state.inc_active, "inner": jnp.asarray(space.edges[:, 1:-1], jnp.float32),
  }
  return xs, w1[2 * hid:3 * hid]


def _first_stage(policy: Policy, x, pre):
  """One step's hidden query and first-stage logits (keep, then bins or choices)."""
  pad = x["values1"].shape[-1] - 1
  q = jnp.tanh(policy.head2(jnp.tanh(pre)))
  choice_logits = x["cemb"] @ policy.query(q) / np.sqrt(q.shape[-1])
  opt_logits = jnp.where(x["numeric"], jnp.pad(policy.coarse(q), (0, pad - NUM_COARSE)),
                         jnp.pad(choice_logits, (0, pad - choice_logits.shape[-1])))
  return q, jnp.concatenate([policy.keep(q), opt_logits])


def _second_stage(policy: Policy, q, first):
  """The fine stage's logits, given the first stage's choice (its coarse bin)."""
  coarse = jnp.maximum(first - 1, 0)
  return policy.fine(jnp.concatenate([q, jax.nn.one_hot(coarse, NUM_COARSE)]))


def _fine_values(first):
  """The unit value of each fine level of the chosen coarse bin."""
  coarse = jnp.maximum(first - 1, 0)
  return (coarse + (jnp.arange(NUM_FINE) + 0.5) / NUM_FINE) / NUM_COARSE


def _chosen(policy: Policy, x, first, second, fine_values, active_d):
  """The unit value a step chose, its embedding (one column of `Policy.value_embeddings`)."""
  two_stage = x["numeric"] & (first > 0)
  value = jnp.where(two_stage, fine_values[second], x["values1"][first])
  value = jnp.where(active_d, value, 0.0)
  w = 2 * value - 1
  num = jnp.tanh(policy.value_in(jnp.stack([value, w, w * w])))
  idx = jnp.minimum(jnp.sum(value >= x["inner"]), jnp.maximum(x["nchoice"] - 1, 0))
  cat = jax.nn.one_hot(idx, x["cemb"].shape[0]) @ x["cemb"]
  return value, two_stage, jnp.where(x["numeric"], num, cat)


def _pick(logp, index):
  """``logp[index]`` as a masked sum (its gradient needs no scatter)."""
  return jnp.sum(jnp.where(jnp.arange(logp.shape[-1]) == index, logp, 0.0))


def _step_scores(lp1, lp2, mask1, mask2, first, second, two_stage):
  step_lp = _pick(lp1, first) + jnp.where(two_stage, _pick(lp2, second), 0.0)
  step_ent = _entropy(lp1, mask1) + jnp.where(two_stage, _entropy(lp2, mask2), 0.0)
  return step_lp, step_ent


def autoregress(policy: Policy, info: SpaceInfo, state: PolicyState, key: jax.Array | None,
                given: Action | None = None):
  """Emits (``key``) or re-scores (``given``, see `score`) one configuration.

  Emitting is a `lax.scan` over parameters. The scan's step index is the same
  for every study of a batch, so the per-parameter pieces (activity, constraint
  masks) are a ``lax.switch`` that runs one branch, specialized to that
  parameter; the parts of the head's first layer that do not change along the
  scan are computed once before it; the sampling noise (Gumbel) is drawn once.

  Args:
    policy: the merged policy module.
    info: the space's tables.
    state: the study state the proposal is conditioned on.
    key: PRNG key when sampling; None when re-scoring ``given``.
    given: a stored `Action` to score.

  Returns:
    ``(action, log_prob, entropy)``.
  """
  if given is not None:
    return (given,) + score(policy, info, state, given)
  space = info.space
  d_num = space.num_params
  a_opts = num_first_options(info)
  edit_ok = jnp.asarray(policy.config.edit) & state.has_inc
  xs, w_ar = _head_inputs(policy, info, state)
  noise_key, pool_key = jax.random.split(key)
  xs["noise"] = jax.random.gumbel(noise_key, (d_num, a_opts + NUM_FINE))
  act_fns, mask_fns = _step_branches(info)
  act_idx, mask_idx = (jnp.asarray(t) for t in _switch_tables(info))

  def body(carry, x):
    u, ar, logp, ent, dead = carry
    d = x["d"]
    q, logits1 = _first_stage(policy, x, x["base"] + ar @ w_ar)
    n_opts = jnp.where(x["numeric"], NUM_COARSE, x["nchoice"])
    active_d = jax.lax.switch(act_idx[d], act_fns, u)
    base1 = jnp.concatenate([(edit_ok & x["inc_a"])[None], jnp.arange(a_opts - 1) < n_opts])
    mask1 = base1 & jax.lax.switch(mask_idx[d], mask_fns, u, x["values1"])
    stuck = ~jnp.any(mask1) & active_d
    mask1 = jnp.where(stuck, base1, mask1)
    first = jnp.argmax(jnp.where(mask1, logits1, -1e9) + x["noise"][:a_opts])
    logits2, fine_values = _second_stage(policy, q, first), _fine_values(first)
    two_stage = x["numeric"] & (first > 0)
    mask2 = jax.lax.switch(mask_idx[d], mask_fns, u, fine_values)
    stuck2 = ~jnp.any(mask2) & active_d & two_stage
    mask2 = jnp.where(stuck2 | ~two_stage, True, mask2)
    second = jnp.argmax(jnp.where(mask2, logits2, -1e9) + x["noise"][a_opts:])
    value, two_stage, v_emb = _chosen(policy, x, first, second, fine_values, active_d)
    step_lp, step_ent = _step_scores(_masked_logp(logits1, mask1), _masked_logp(logits2, mask2),
                                     mask1, mask2, first, second, two_stage)
    carry = (u.at[d].set(value), ar + x["emb"] * v_emb * active_d,
             logp + jnp.where(active_d, step_lp, 0.0), ent + jnp.where(active_d, step_ent, 0.0),
             dead | ((stuck | stuck2) & active_d))
    return carry, (first.astype(jnp.int32), second.astype(jnp.int32), mask1, mask2, active_d)

  zero = jnp.zeros((), jnp.float32)
  init = (jnp.zeros((d_num,), jnp.float32), jnp.zeros_like(state.h), zero, zero,
          jnp.zeros((), bool))
  (u, _, logp, ent, dead), (firsts, seconds, masks1, masks2, stepped) = jax.lax.scan(
      body, init, xs)
  act = space.activity(u)
  u = space.canonical(u, act)
  if space.constraints:
    feasible = space.feasible(u, act)
    _, pool_u, pool_a = sampling.feasibility(space)
    pick = jax.random.randint(pool_key, (), 0, pool_u.shape[0])
    dead = dead | ~feasible
    u = jnp.where(feasible, u, jnp.asarray(pool_u)[pick])
    act = jnp.where(feasible, act, jnp.asarray(pool_a)[pick])
  return Action(u, act, firsts, seconds, masks1, masks2, stepped, dead), logp, ent


def score(policy: Policy, info: SpaceInfo, state: PolicyState, given: Action):
  """``(log_prob, entropy)`` of a stored proposal under the policy (teacher forcing).

  The stored choices fix every step's value, so the sum of the earlier
  values' embeddings that each step reads is a cumulative sum: all steps are
  scored at once (no scan), with the same per-step functions as `autoregress`.
  """
  xs, w_ar = _head_inputs(policy, info, state)
  each = lambda fn, *args: jax.vmap(functools.partial(fn, policy))(*args)  # noqa: E731
  _, two_stage, v_emb = jax.vmap(
      lambda x, f, s, a: _chosen(policy, x, f, s, _fine_values(f), a))(
          xs, given.first, given.second, given.stepped)
  contrib = xs["emb"] * v_emb * given.stepped[:, None]
  ar = jnp.concatenate([jnp.zeros_like(contrib[:1]), jnp.cumsum(contrib, axis=0)[:-1]])
  q, logits1 = each(_first_stage, xs, xs["base"] + ar @ w_ar)
  logits2 = each(_second_stage, q, given.first)
  step_lp, step_ent = jax.vmap(_step_scores)(
      jax.vmap(_masked_logp)(logits1, given.mask1), jax.vmap(_masked_logp)(logits2, given.mask2),
      given.mask1, given.mask2, given.first, given.second, two_stage)
  return (jnp.sum(jnp.where(given.stepped, step_lp, 0.0)),
          jnp.sum(jnp.where(given.stepped, step_ent, 0.0)))


def observe(policy: Policy, info: SpaceInfo, state: PolicyState, values, active, objective,
            failed, budget: float) -> PolicyState:
  """Folds one evaluated trial into the state (one GRU step)."""
  param_emb, choice_emb = policy.embed(info)
  v_emb = policy.value_embeddings(info, values, active, choice_emb)
  tok = jnp.sum(param_emb * v_emb, axis=0) / np.sqrt(info.space.num_params)
  ok = ~failed & jnp.isfinite(objective)
  y = jnp.where(ok, objective, 0.0)
  count = state.count + ok
  delta = y - state.mean
  mean = jnp.where(ok, state.mean + delta / jnp.maximum(count, 1.0), state.mean)
  m2 = jnp.where(ok, state.m2 + delta * (y - mean), state.m2)
  std = jnp.sqrt(m2 / jnp.maximum(count, 1.0))
  z = jnp.where(ok & (count > 1), jnp.clip((y - mean) / (std + 1e-8), -5.0, 5.0), 0.0)
  improved = ok & (y < state.best)
  feats = jnp.stack([z, improved * 1.0, (~ok) * 1.0, state.step / budget])
  h, _ = policy.gru(state.h, jnp.tanh(policy.token_in(jnp.concatenate([tok, feats]))))
  return state.replace(
      h=h, count=count, mean=mean, m2=m2, best=jnp.where(improved, y, state.best),
      inc_values=jnp.where(improved, values, state.inc_values),
      inc_active=jnp.where(improved, active, state.inc_active),
      has_inc=state.has_inc | improved, step=state.step + 1.0)
