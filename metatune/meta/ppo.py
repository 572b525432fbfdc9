"""PPO meta-training of the structured policy, purejaxrl style: one iteration is one `jit`.

An iteration samples ``num_envs`` tasks of a family (the meta-training split),
runs one study of ``num_trials`` trials on each (a `lax.scan` over trials,
`vmap` over studies), then runs ``update_epochs`` passes of clipped-PPO over
minibatches of studies (a `lax.scan` over minibatches). The recurrent policy
is re-scored by teacher forcing the stored studies (backpropagation through
the whole study). Rewards are computed on the task's noise-free objective,
normalized per task by its optimum and median (`task_reference`).

Environments are any family with ``space``, ``task_params(index)``,
``task_indices(split)``, ``clean(task, points)`` and
``evaluate(key, task, points) -> Evaluation`` (the synthetic family, the
surrogate family).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metatune.networks import policy as pol
from metatune.networks.tokens import SpaceInfo, space_info
from metatune.tasks.reference import task_reference
from metatune.tuners.base import Points

REWARDS = ("improvement", "log_regret", "regret")
SCALARIZATIONS = ("weighted_sum", "chebyshev")


def scalarize(regret: jax.Array, secondary: jax.Array, weight: float, kind: str) -> jax.Array:
  """Combines the normalized regret and a secondary objective in [0, 1] (both minimized).

  ``weighted_sum``: ``(1 - w) * regret + w * secondary``; ``chebyshev``:
  ``max((1 - w) * regret, w * secondary)`` (reaches non-convex parts of the front).
  """
  if kind == "weighted_sum":
    return (1 - weight) * regret + weight * secondary
  if kind == "chebyshev":
    return jnp.maximum((1 - weight) * regret, weight * secondary)
  raise ValueError(f"scalarization {kind!r} is not one of {', '.join(SCALARIZATIONS)}")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """Static settings of meta-training (all of them come from the YAML config).

  Attributes:
    num_envs: studies per iteration (each on a task drawn from the training split).
    num_trials: trials per study (the budget the policy is trained for).
    num_updates: iterations.
    update_epochs, num_minibatches: PPO passes and minibatches (over studies) per iteration.
    lr: Adam learning rate (linearly annealed to ``lr_end``).
    gamma, gae_lambda, clip_eps, vf_coef, max_grad_norm: PPO settings.
    ent_start, ent_end: entropy bonus per parameter, annealed linearly over the iterations.
    reward: ``regret`` (minus the best-so-far normalized regret each trial; the default,
      chosen on meta-validation tasks: ``configs/experiments/ablations/ablation_meta_train.yaml``,
      where it and ``log_regret`` beat ``improvement`` at every checkpoint), ``improvement``
      (decrease of the best-so-far normalized regret, capped at 1; the default until then, and
      the setting the paper's priors were trained with, pinned in their family configs) or
      ``log_regret`` (decrease of its log, floor 1e-3).
    cost_weight: subtracts ``cost_weight * cost`` per trial (cost-aware tuning; the task's
      cost is 1 per evaluation on synthetic tasks).
    secondary_weight, scalarization: multi-objective tuning: rewards follow the best
      ``scalarize(regret, secondary)`` of the family's second objective
      (``family.secondary(task, points)`` in [0, 1], e.g. model size), weighted sum or
      Chebyshev; 0 for the primary objective only.
    dead_end_penalty: subtracted when the head met an unsatisfiable constraint.
    horizon_start: budget curriculum: the first iterations count only this many trials
      (growing linearly to ``num_trials`` over the first half); None for no curriculum.
    reference_samples, reference_refine: how each task's optimum and median are estimated.
    seed: seed of the policy's initialization and of the iterations.
    policy: the network's settings.
  """
  num_envs: int = 64
  num_trials: int = 20
  num_updates: int = 200
  update_epochs: int = 2
  num_minibatches: int = 4
  lr: float = 3e-3
  lr_end: float = 3e-4
  gamma: float = 1.0
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5
  ent_start: float = 0.01
  ent_end: float = 0.001
  reward: str = "regret"
  cost_weight: float = 0.0
  secondary_weight: float = 0.0
  scalarization: str = "weighted_sum"
  dead_end_penalty: float = 0.1
  horizon_start: int | None = None
  reference_samples: int = 4096
  reference_refine: int = 20
  seed: int = 0
  policy: pol.PolicyConfig = pol.PolicyConfig()

  def __post_init__(self):
    if self.reward not in REWARDS:
      raise ValueError(f"reward {self.reward!r} is not one of {', '.join(REWARDS)}")
    if self.scalarization not in SCALARIZATIONS:
      raise ValueError(f"scalarization {self.scalarization!r} is not one of "
                       f"{', '.join(SCALARIZATIONS)}")
    if not 0.0 <= self.secondary_weight <= 1.0:
      raise ValueError(f"secondary_weight must lie in [0, 1], got {self.secondary_weight}")
    if self.num_envs % self.num_minibatches:
      raise ValueError(f"num_envs ({self.num_envs}) must be a multiple of num_minibatches "
                       f"({self.num_minibatches})")
    for name in ("num_envs", "num_trials", "num_updates", "update_epochs", "num_minibatches"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@flax.struct.dataclass
class TrainState:
  """Everything meta-training carries between iterations (a checkpoint is exactly this)."""
  params: Any
  opt_state: Any
  key: jax.Array
  update: jax.Array


@flax.struct.dataclass
class Transition:
  action: pol.Action
  log_prob: jax.Array
  value: jax.Array
  reward: jax.Array
  objective: jax.Array
  failed: jax.Array
  regret: jax.Array
  weight: jax.Array


def new_policy(config: MetaTrainConfig):
  """``(graphdef, params)`` of a freshly initialized policy."""
  return nnx.split(pol.Policy(config.policy, rngs=nnx.Rngs(config.seed)))


def _schedule(config: MetaTrainConfig, update, start, end):
  frac = update / max(config.num_updates - 1, 1)
  return start + (end - start) * frac


_TRAINERS: dict = {}


class MetaTrainer:
  """Builds the jitted pieces of meta-training for a family and a config.

  Example:
    >>> trainer = MetaTrainer(family, MetaTrainConfig(num_updates=10))  # doctest: +SKIP
    >>> state = trainer.init()
    >>> state, metrics = trainer.step(state)
  """

  def __init__(self, family, config: MetaTrainConfig, split: str = "meta_train"):
    self.family = family
    self.config = config
    self.info: SpaceInfo = space_info(family.space)
    if config.secondary_weight > 0 and not hasattr(family, "secondary"):
      raise ValueError(f"secondary_weight > 0 needs a second objective, and the family "
                       f"{getattr(family, 'name', '?')!r} has no secondary(task, points)")
    self.indices = np.asarray(family.task_indices(split), np.int32)
    if self.indices.size == 0:
      raise ValueError(f"the family {getattr(family, 'name', '?')!r} has no tasks in split "
                       f"{split!r}")
    self.graphdef, params = new_policy(config)
    steps = config.num_updates * config.update_epochs * config.num_minibatches
    self.tx = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adam(optax.linear_schedule(config.lr, config.lr_end, steps)))
    self._params0 = params
    devices = jax.local_devices()
    self.mesh = None
    if len(devices) > 1 and config.num_envs % len(devices) == 0:
      self.mesh = Mesh(np.asarray(devices), ("envs",))
    # Each training task's optimum and median, once (they normalize the rewards).
    ref_keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1), len(self.indices))
    ref = jax.jit(jax.vmap(lambda k, i: task_reference(
        k, family, family.task_params(i), config.reference_samples, config.reference_refine)))
    opt, median, _ = ref(ref_keys, jnp.asarray(self.indices))
    self.opt, self.scale = opt, jnp.maximum(median - opt, 1e-12)
    self.step = jax.jit(self._step)

  @classmethod
  def cached(cls, family, config: MetaTrainConfig, split: str = "meta_train") -> "MetaTrainer":
    """A trainer shared by calls with the same family object and settings (compiles once)."""
    key = (id(family), config, split)
    hit = _TRAINERS.get(key)
    if hit is None or hit.family is not family:
      if len(_TRAINERS) >= 8:
        _TRAINERS.clear()
      hit = _TRAINERS[key] = cls(family, config, split)
    return hit

  def init(self) -> TrainState:
    key = jax.random.key(self.config.seed)
    return TrainState(self._params0, self.tx.init(self._params0), key,
                      jnp.zeros((), jnp.int32))

  # ------------------------------------------------------------------ rollout
  def _episode(self, params, key, horizon):
    cfg, info, fam = self.config, self.info, self.family
    policy = nnx.merge(self.graphdef, params)
    pick_key, loop_key = jax.random.split(key)
    pick = jax.random.randint(pick_key, (), 0, self.indices.size)
    task = fam.task_params(jnp.asarray(self.indices)[pick])
    opt, scale = self.opt[pick], self.scale[pick]
    budget = float(cfg.num_trials)

    def step(carry, t):
      state, best, prev, key = carry  # best clean objective; best scalarized regret
      key, act_key, eval_key = jax.random.split(key, 3)
      action, log_prob, _ = pol.autoregress(policy, info, state, act_key)
      value = policy.critic(state, budget)
      pts = Points(action.values[None], action.active[None])
      ev = fam.evaluate(eval_key, task, pts)
      clean = fam.clean(task, pts)[0]
      clean = jnp.where(jnp.isfinite(clean), clean, jnp.inf)
      best = jnp.minimum(best, clean)
      regret = jnp.clip((best - opt) / scale, 0.0, 1.0)   # what reports show
      trial_regret = jnp.clip((clean - opt) / scale, 0.0, 1.0)
      if cfg.secondary_weight > 0:
        trial_regret = scalarize(trial_regret, fam.secondary(task, pts)[0],
                                 cfg.secondary_weight, cfg.scalarization)
      scal = jnp.minimum(prev, trial_regret)   # equals `regret` without a secondary objective
      if cfg.reward == "improvement":
        reward = prev - scal
      elif cfg.reward == "log_regret":
        reward = jnp.log(jnp.maximum(prev, 1e-3)) - jnp.log(jnp.maximum(scal, 1e-3))
      else:
        reward = -scal
      reward = reward - cfg.cost_weight - cfg.dead_end_penalty * action.dead_end
      weight = (t < horizon).astype(jnp.float32)
      state = pol.observe(policy, info, state, action.values, action.active, ev.objective[0],
                          ev.failed[0], budget)
      return (state, best, scal, key), Transition(
          action, log_prob, value, reward * weight, ev.objective[0], ev.failed[0], regret,
          weight)

    init = (pol.init_state(cfg.policy, info), jnp.full((), jnp.inf), jnp.ones(()), loop_key)
    _, traj = jax.lax.scan(step, init, jnp.arange(cfg.num_trials))
    return traj

  def rollout(self, params, key, horizon=None):
    """Runs ``num_envs`` studies; returns `Transition` arrays ``[num_envs, num_trials]``.

    With several local devices the studies are sharded over them (the policy is
    replicated); ``num_envs`` must then be a multiple of the device count.
    """
    horizon = self.config.num_trials if horizon is None else horizon
    keys = jax.random.split(key, self.config.num_envs)
    if self.mesh is not None:
      keys = jax.lax.with_sharding_constraint(keys, NamedSharding(self.mesh, PartitionSpec("envs")))
    return jax.vmap(self._episode, in_axes=(None, 0, None))(params, keys, horizon)

  # ------------------------------------------------------------------- update
  def _rescore(self, params, traj: Transition):
    """Teacher-forces one stored study: log-probs, entropies and values ``[T]``.

    Only the history encoder runs as a scan over trials; the stored proposals
    are then scored all at once (`policy.score`, parallel over trials and
    parameters).
    """
    cfg, info = self.config, self.info
    policy = nnx.merge(self.graphdef, params)
    budget = float(cfg.num_trials)

    def step(state, tr: Transition):
      value = policy.critic(state, budget)
      after = pol.observe(policy, info, state, tr.action.values, tr.action.active,
                          tr.objective, tr.failed, budget)
      return after, (state, value)

    _, (states, value) = jax.lax.scan(step, pol.init_state(cfg.policy, info), traj)
    log_prob, ent = jax.vmap(lambda st, a: pol.score(policy, info, st, a))(states, traj.action)
    return log_prob, ent, value

  def _gae(self, traj: Transition):
    cfg = self.config

    def back(carry, x):
      gae, next_value = carry
      reward, value, weight = x
      delta = reward + cfg.gamma * next_value - value
      gae = delta + cfg.gamma * cfg.gae_lambda * gae
      gae = gae * weight
      return (gae, value * weight), gae

    def one(tr):
      _, adv = jax.lax.scan(back, (0.0, 0.0), (tr.reward, tr.value, tr.weight), reverse=True)
      return adv, adv + tr.value

    return jax.vmap(one)(traj)

  def _loss(self, params, traj, adv, targets, ent_coef):
    cfg = self.config
    log_prob, ent, value = jax.vmap(self._rescore, in_axes=(None, 0))(params, traj)
    w = traj.weight
    n = jnp.maximum(w.sum(), 1.0)
    ratio = jnp.exp(log_prob - traj.log_prob)
    norm_adv = (adv - (adv * w).sum() / n) / (jnp.sqrt((((adv - (adv * w).sum() / n) ** 2) * w
                                                        ).sum() / n) + 1e-8)
    pg = -jnp.minimum(ratio * norm_adv,
                      jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * norm_adv)
    pg_loss = (pg * w).sum() / n
    v_loss = 0.5 * (((value - targets) ** 2) * w).sum() / n
    entropy = (ent * w).sum() / n / self.info.space.num_params
    total = pg_loss + cfg.vf_coef * v_loss - ent_coef * entropy
    approx_kl = (((ratio - 1) - jnp.log(ratio)) * w).sum() / n
    return total, {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy,
                   "approx_kl": approx_kl}

  def _step(self, state: TrainState):
    cfg = self.config
    key, roll_key, perm_key = jax.random.split(state.key, 3)
    horizon = cfg.num_trials
    if cfg.horizon_start is not None:
      frac = jnp.minimum(state.update / max(cfg.num_updates // 2, 1), 1.0)
      horizon = jnp.round(cfg.horizon_start + frac * (cfg.num_trials - cfg.horizon_start))
    traj = self.rollout(state.params, roll_key, horizon)
    adv, targets = self._gae(traj)
    ent_coef = _schedule(cfg, state.update, cfg.ent_start, cfg.ent_end)
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    mb = cfg.num_envs // cfg.num_minibatches

    def epoch(carry, ekey):
      params, opt_state = carry
      perm = jax.random.permutation(ekey, cfg.num_envs)
      batches = jax.tree.map(
          lambda x: x[perm].reshape((cfg.num_minibatches, mb) + x.shape[1:]),
          (traj, adv, targets))

      def minibatch(carry, batch):
        params, opt_state = carry
        tr, a, tg = batch
        (_, aux), grads = grad_fn(params, tr, a, tg, ent_coef)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), aux

      return jax.lax.scan(minibatch, (params, opt_state), batches)

    (params, opt_state), aux = jax.lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(perm_key, cfg.update_epochs))
    final = traj.regret[:, -1]
    metrics = {k: v.mean() for k, v in aux.items()}
    metrics.update(
        episode_return=traj.reward.sum(-1).mean(), final_regret=final.mean(),
        regret_at_half=traj.regret[:, cfg.num_trials // 2 - 1].mean(),
        dead_end_rate=traj.action.dead_end.mean(),
        failed_rate=traj.failed.mean(), ent_coef=ent_coef)
    return TrainState(params, opt_state, key, state.update + 1), metrics
