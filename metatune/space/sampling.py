"""Jittable sampling, local perturbation and featurization on a `Space`'s encoding.

Every function here returns only valid configurations: conditions are applied
by construction (children are drawn independently and masked by their
parents), constraints by resampling inside a `lax.while_loop`, with a pool of
known-feasible configurations as the last resort so that the output is valid
even when the loop's cap is reached.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import bounds
from metatune.space.errors import SpaceError
from metatune.space.space import Space

try:  # Public ensure_compile_time_eval does not cover nested jit calls.
  from jax._src.core import eval_context as _eager
except ImportError:  # pragma: no cover
  _eager = jax.ensure_compile_time_eval

_POOL_DRAWS = 1 << 15
_CORNER_DRAWS = 1 << 12
_SEARCH_STARTS = 256
_SEARCH_ROUNDS = 300
_FAIL_PROB = 1e-9


@functools.lru_cache(maxsize=256)
def feasibility(space: Space) -> tuple[float, np.ndarray, np.ndarray]:
  """Estimates the feasible fraction of the space and keeps a pool of feasible points.

  The pool comes from random draws; when none of them is feasible, from the
  default configuration, draws at the bounds (each parameter at its low end,
  its high end or random) and a local search that descends
  `Space.violation` from the closest draws.

  Returns:
    ``(rate, pool_values f32[P, D], pool_active bool[P, D])``; the rate is
    below ``1 / 32768`` when no random draw was feasible.

  Raises:
    SpaceError: when a constraint provably never holds ("unsatisfiable"), or
      when no configuration was found ("found no valid configuration in N
      tries"); the message names the constraints that never held.
  """
  # Runs eagerly even when first reached while tracing a caller's jit.
  with _eager():
    if not space.constraints:
      u, act = _raw_jit(space, jax.random.key(0), 1)
      return 1.0, np.asarray(u), np.asarray(act)
    u, act = _raw_jit(space, jax.random.key(20240917), _POOL_DRAWS)
    ok_each = np.asarray(_constraint_ok_jit(space, u, act))
  ok = ok_each.all(axis=-1)
  pool_u = np.asarray(u)[ok][:1024]
  pool_a = np.asarray(act)[ok][:1024]
  default = _default_point(space)
  if default is not None:
    pool_u = np.concatenate([pool_u, default[0]])
    pool_a = np.concatenate([pool_a, default[1]])
  if ok.any():
    return float(ok.mean()), pool_u.astype(np.float32), pool_a
  _raise_if_provably_unsatisfiable(space)
  with _eager():
    found_u, found_a, seen = _search(space, u, act)
  pool_u, pool_a = np.concatenate([pool_u, found_u]), np.concatenate([pool_a, found_a])
  ok_each = ok_each | seen
  if not len(pool_u):
    tries = _POOL_DRAWS + _CORNER_DRAWS + 1 + _SEARCH_STARTS * _SEARCH_ROUNDS
    alone = [c.label() for c, col in zip(space.constraints, ok_each.T) if not col.any()]
    every = "; ".join(c.label() for c in space.constraints)
    detail = ("; never satisfied, even on its own: " + "; ".join(alone)) if alone else (
        f"; each holds somewhere on its own, but never all together: {every}")
    raise SpaceError(f"found no valid configuration in {tries} tries ({_POOL_DRAWS} random, "
                     f"{_CORNER_DRAWS} at the bounds, the defaults, and a local search of "
                     f"{_SEARCH_STARTS} x {_SEARCH_ROUNDS} steps): the constraints may be "
                     f"unsatisfiable, or hold only in a region too small to find{detail}",
                     space.source)
  # Random draws (almost) never land in the feasible region: the sampler's
  # redraws are futile there and it relies on this pool.
  return 0.5 / _POOL_DRAWS, pool_u.astype(np.float32), pool_a


def _default_point(space: Space):
  """The default configuration as ``(f32[1, D], bool[1, D])`` when it is feasible, else None."""
  try:
    du, da = space.encode(space.default_config())
  except SpaceError:
    return None
  with _eager():
    # Joins the pool only when the jitted check agrees that it is feasible.
    if bool(np.asarray(_constraint_ok_jit(space, du[None], da[None])).all()):
      return du[None], da[None]
  return None


def _raise_if_provably_unsatisfiable(space: Space):
  never = [c for c, node in zip(space.constraints, space._constraint_nodes)
           if bounds.never_satisfied(space, c, node)]
  if never:
    what = "; ".join(f"{c.label()} {'can never hold' if c.mode == 'require' else 'always holds'}"
                     for c in never)
    raise SpaceError(f"the constraints are unsatisfiable: {what} within the parameters' "
                     f"bounds", space.source)


def _search(space: Space, u: jax.Array, act: jax.Array):
  """Looks for feasible configurations at the bounds and by local search from the closest draws.

  Returns:
    ``(values f32[P, D], active bool[P, D], ok_each bool[C])``: the feasible
    points found (P may be 0) and which constraints held at least once.
  """
  found_u, found_a, ok, seen = _search_jit(space, jax.random.key(7), u, act)
  ok = np.asarray(ok)
  return np.asarray(found_u)[ok][:1024], np.asarray(found_a)[ok][:1024], np.asarray(seen)


@functools.partial(jax.jit, static_argnums=0)
def _search_jit(space: Space, key: jax.Array, u: jax.Array, act: jax.Array):
  """Draws at the bounds, then a (1+1) local search on `Space.violation` from the closest draws.

  A draw at the bounds puts each coordinate at its low end, its high end or a
  random value (a third each). The search's uniform steps shrink from 0.3 to 1e-6.

  Returns:
    ``(values f32[P, D], active bool[P, D], ok bool[P], ok_each bool[C])``:
    the candidates (the draws, those at the bounds and where the search ended),
    whether each is feasible, and which constraints held for at least one.
  """
  # Few random draws: each one is a sizeable piece of compiled code (0.6 s on 2 cores).
  corner_key, search_key = jax.random.split(key)
  r, value = jax.random.uniform(corner_key, (2, _CORNER_DRAWS, space.num_params))
  cu = jnp.where(r < 1 / 3, 0.0, jnp.where(r < 2 / 3, 1.0, value))
  ca = space.activity(cu)
  cu = space.canonical(cu, ca)
  all_u, all_a = jnp.concatenate([u, cu]), jnp.concatenate([act, ca])
  _, starts = jax.lax.top_k(-space.violation(all_u, all_a), _SEARCH_STARTS)
  su, sa = all_u[starts], all_a[starts]
  dims = u.shape[1]

  def body(i, carry):
    u, act, viol = carry
    pick, snap, side, move = jax.random.uniform(jax.random.fold_in(search_key, i),
                                                (4,) + u.shape)
    scale = 0.3 * (1e-6 / 0.3) ** (i / (_SEARCH_ROUNDS - 1))
    change = pick < max(1.0 / dims, 0.2)
    step = u + scale * (2.0 * move - 1.0)
    step = 1.0 - jnp.abs(1.0 - jnp.mod(jnp.abs(step), 2.0))  # reflected into [0, 1]
    snap = snap < 0.05
    side = (side < 0.5).astype(jnp.float32)
    cand = jnp.where(change, jnp.where(snap, side, step), u)
    cand_act = space.activity(cand)
    cand = space.canonical(cand, cand_act)
    cand_viol = space.violation(cand, cand_act)
    better = cand_viol <= viol
    return (jnp.where(better[:, None], cand, u), jnp.where(better[:, None], cand_act, act),
            jnp.where(better, cand_viol, viol))

  su, sa, _ = jax.lax.fori_loop(0, _SEARCH_ROUNDS, body, (su, sa, space.violation(su, sa)))
  found_u, found_a = jnp.concatenate([all_u, su]), jnp.concatenate([all_a, sa])
  ok_each = space.constraint_ok(found_u, found_a)
  return found_u, found_a, jnp.all(ok_each, axis=-1), jnp.any(ok_each, axis=0)


def _max_rounds(rate: float) -> int:
  if rate >= 1.0:
    return 0
  if rate < 1.0 / _POOL_DRAWS:
    return 64  # redraws almost never succeed; the pool of feasible points serves
  return int(min(10_000, math.ceil(math.log(_FAIL_PROB) / math.log1p(-min(rate, 0.999999)))))


def _raw(space: Space, key: jax.Array, num: int):
  u = jax.random.uniform(key, (num, space.num_params), jnp.float32)
  act = space.activity(u)
  return space.canonical(u, act), act


@functools.partial(jax.jit, static_argnums=(0, 2))
def _raw_jit(space, key, num):
  return _raw(space, key, num)


@functools.partial(jax.jit, static_argnums=0)
def _constraint_ok_jit(space, u, act):
  return space.constraint_ok(u, act)


def repair(space: Space, key: jax.Array, values: jax.Array, active: jax.Array, propose_fn):
  """Replaces infeasible rows by fresh proposals until all are feasible.

  Args:
    space: the space.
    key: PRNG key.
    values, active: f32[N, D], bool[N, D], conditions already applied.
    propose_fn: ``(key, num) -> (values, active)`` drawing replacement candidates.

  Returns:
    Feasible ``(values, active)``; rows still infeasible after the cap come
    from the pool of known-feasible configurations.
  """
  if not space.constraints:
    return values, active
  rate, pool_u, pool_a = feasibility(space)
  loop_key, pool_key = jax.random.split(key)
  u, a, ok = _redraw(space, loop_key, values, active, propose_fn, _max_rounds(rate))
  pick = jax.random.randint(pool_key, (values.shape[0],), 0, pool_u.shape[0])
  u = jnp.where(ok[:, None], u, jnp.asarray(pool_u)[pick])
  a = jnp.where(ok[:, None], a, jnp.asarray(pool_a)[pick])
  return u, a


def _redraw(space: Space, key: jax.Array, values, active, propose_fn, rounds: int):
  """Redraws infeasible rows from ``propose_fn`` for at most ``rounds`` rounds; returns ok too."""
  num = values.shape[0]
  ok = space.feasible(values, active)

  def cond(carry):
    i, _, _, ok, _ = carry
    return (i < rounds) & ~jnp.all(ok)

  def body(carry):
    i, u, a, ok, key = carry
    key, draw_key = jax.random.split(key)
    nu, na = propose_fn(draw_key, num)
    nok = space.feasible(nu, na)
    take = ~ok & nok
    u = jnp.where(take[:, None], nu, u)
    a = jnp.where(take[:, None], na, a)
    return i + 1, u, a, ok | nok, key

  _, u, a, ok, _ = jax.lax.while_loop(cond, body, (0, values, active, ok, key))
  return u, a, ok


def sample(key: jax.Array, space: Space, num: int) -> tuple[jax.Array, jax.Array]:
  """Draws ``num`` valid configurations, uniform over the feasible region of the unit cube.

  Jittable and vmappable (``space`` and ``num`` are static).

  Args:
    key: PRNG key.
    space: the space.
    num: number of configurations.

  Returns:
    ``(values f32[num, D], active bool[num, D])``.

  Example:
    >>> u, a = sample(jax.random.key(0), space, 8)  # doctest: +SKIP
  """
  first_key, repair_key = jax.random.split(key)
  if not space.constraints:
    return _raw(space, first_key, num)
  # Draw enough candidates at once that nearly always ``num`` of them are
  # feasible; `repair` only redraws the rare shortfall.
  rate = feasibility(space)[0]
  extra = num / rate - num
  num_cand = int(min(num + math.ceil(extra + 4 * math.sqrt(extra + 1) + 4), 64 * num))
  u, a = _raw(space, first_key, num_cand)
  if num_cand > num:
    ok = space.feasible(u, a)
    order = jnp.argsort(~ok, stable=True)[:num]
    u, a = u[order], a[order]
  return repair(space, repair_key, u, a, lambda k, n: _raw(space, k, n))


def perturb(key: jax.Array, space: Space, values: jax.Array, active: jax.Array,
            scale: float = 0.1, rate: float | None = None) -> tuple[jax.Array, jax.Array]:
  """A structure-respecting local edit of each configuration (a neighbour).

  Each active parameter changes with probability ``rate`` (default ``1/#active``;
  at least one always changes): numbers take a Gaussian step of ``scale`` in
  the unit space (reflected into [0, 1]), choices move to another choice.
  Parameters that become active get fresh random values; those that become
  inactive are dropped. An edit that breaks a constraint is redrawn; as a last
  resort the configuration is kept unchanged, which is feasible.

  Args:
    key: PRNG key.
    space: the space.
    values, active: f32[N, D], bool[N, D] valid configurations.
    scale: step size for numeric parameters in unit space.
    rate: per-parameter change probability.

  Returns:
    ``(values, active)`` of the same shapes.
  """
  values = jnp.asarray(values, jnp.float32)
  active = jnp.asarray(active, bool)
  num = values.shape[0]
  discrete = jnp.asarray(space.kind_code >= 2)
  nchoice = jnp.asarray(np.maximum(space.num_choices, 1))

  def propose(k, n):
    del n
    pick_key, step_key, cat_key, fresh_key, one_key = jax.random.split(k, 5)
    n_act = jnp.maximum(active.sum(-1, keepdims=True), 1)
    p = (1.0 / n_act) if rate is None else rate
    change = (jax.random.uniform(pick_key, values.shape) < p) & active
    forced = jax.random.categorical(one_key, jnp.where(active, 0.0, -jnp.inf))
    change = change | (jax.nn.one_hot(forced, space.num_params, dtype=bool) & active)
    step = values + scale * jax.random.normal(step_key, values.shape)
    step = jnp.abs(step)
    step = 1.0 - jnp.abs(1.0 - jnp.mod(step, 2.0))
    # A different choice, uniformly among the others.
    idx = space.choice_index(values)
    shift = jax.random.randint(cat_key, values.shape, 1, jnp.maximum(nchoice, 2))
    new_idx = jnp.mod(idx + shift, nchoice)
    mids = jnp.take_along_axis(jnp.broadcast_to(jnp.asarray(space.mids, jnp.float32),
                                                values.shape + (space.max_choices,)),
                               new_idx[..., None], axis=-1)[..., 0]
    moved = jnp.where(discrete, mids, step)
    fresh = jax.random.uniform(fresh_key, values.shape)
    cand = jnp.where(change, moved, jnp.where(active, values, fresh))
    act = space.activity(cand)
    return space.canonical(cand, act), act

  first_key, repair_key = jax.random.split(key)
  u, a = propose(first_key, num)
  if not space.constraints:
    return u, a
  rounds = min(_max_rounds(feasibility(space)[0]), 64)
  u, a, ok = _redraw(space, repair_key, u, a, propose, rounds)
  # As a last resort the configuration stays as it was, which is feasible.
  return jnp.where(ok[:, None], u, space.canonical(values, active)), jnp.where(
      ok[:, None], a, active)


def neighbours(key: jax.Array, space: Space, values: jax.Array, active: jax.Array, num: int,
               scale: float = 0.1) -> tuple[jax.Array, jax.Array]:
  """``num`` perturbations of one configuration (f32[D], bool[D]) -> f32[num, D], bool[num, D]."""
  vs = jnp.broadcast_to(values, (num,) + values.shape)
  acts = jnp.broadcast_to(active, (num,) + active.shape)
  return perturb(key, space, vs, acts, scale)


# ------------------------------------------------------------- featurization
def feature_size(space: Space) -> int:
  return int(sum(p.num_choices if p.kind == "categorical" else 1 for p in space.params) +
             space.num_params)


def featurize(space: Space, values: jax.Array, active: jax.Array) -> jax.Array:
  """Model features: numbers and ordinals as their unit position, categoricals one-hot, then the mask.

  Args:
    space: the space.
    values, active: f32[..., D], bool[..., D].

  Returns:
    f32[..., feature_size(space)], zero for inactive parameters.
  """
  values = jnp.asarray(values, jnp.float32)
  act = jnp.asarray(active, jnp.float32)
  idx = space.choice_index(values)
  parts = []
  for i, p in enumerate(space.params):
    if p.kind == "categorical":
      parts.append(jax.nn.one_hot(idx[..., i], p.num_choices) * act[..., i:i + 1])
    elif p.kind in ("ordinal", "bool"):
      pos = idx[..., i] / max(p.num_choices - 1, 1)
      parts.append((pos * act[..., i])[..., None])
    else:
      parts.append((values[..., i] * act[..., i])[..., None])
  parts.append(act)
  return jnp.concatenate(parts, axis=-1)
