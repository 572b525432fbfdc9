"""No-model tuners: random search, scrambled Halton quasi-random search, and grid search."""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, SpaceError
from metatune.space import reference
from metatune.space import sampling
from metatune.tuners.base import History, Points, Tuner, history_init, pool_draw, tell_history
from metatune.tuners.gp import gp_bo
from metatune.tuners.portfolio import portfolio_tuner


@flax.struct.dataclass
class RandomState:
  history: History


def random_search(space: Space, batch_size: int = 1, history_size: int = 256) -> Tuner:
  """Uniform random search over the feasible region (conditions and constraints respected)."""

  def init(key):
    del key
    return RandomState(history_init(space, history_size))

  def ask(key, state):
    values, active = sampling.sample(key, space, batch_size)
    return Points(values, active), state

  def ask_pool(key, state, pool, available):
    del pool
    return pool_draw(key, available, batch_size), state

  return Tuner(init, ask, tell_history, space, batch_size, "random", ask_pool=ask_pool)


# ------------------------------------------------------------------ Halton
def _primes(n: int) -> list[int]:
  out, k = [], 2
  while len(out) < n:
    if all(k % p for p in out if p * p <= k):
      out.append(k)
    k += 1
  return out


def shared_dimensions(space: Space, num_draws: int = 4096) -> np.ndarray:
  """Assigns quasi-random dimensions so that parameters never active together share one.

  Sibling branches (``sgd.momentum`` vs ``adam.b1``) then reuse a dimension, which
  lowers the effective dimension and keeps each branch's points well spread.

  Returns:
    i32[D]: the quasi-random dimension of each parameter.
  """
  with sampling._eager():
    _, act = sampling._raw_jit(space, jax.random.key(7), num_draws)
  act = np.asarray(act)
  co = (act.T.astype(np.int64) @ act.astype(np.int64)) > 0
  dims: list[list[int]] = []
  out = np.zeros(space.num_params, np.int32)
  for i in range(space.num_params):
    for d, members in enumerate(dims):
      if not any(co[i, j] for j in members):
        members.append(i)
        out[i] = d
        break
    else:
      dims.append([i])
      out[i] = len(dims) - 1
  return out


@flax.struct.dataclass
class QuasiState:
  history: History
  index: jax.Array  # i32[]: next sequence index
  perms: jax.Array  # i32[Q, pmax]: digit permutation per quasi-random dimension


def halton(index: jax.Array, bases: np.ndarray, perms: jax.Array) -> jax.Array:
  """Scrambled Halton points (random digit permutations).

  Args:
    index: i32[N] sequence indices.
    bases: int[Q] a prime per dimension.
    perms: i32[Q, pmax] a permutation of ``range(base)`` per dimension (padded).

  Returns:
    f32[N, Q] points in [0, 1).
  """
  bases_f = jnp.asarray(bases, jnp.float32)
  n = jnp.broadcast_to(index[:, None].astype(jnp.uint32), index.shape + bases.shape)
  b = jnp.asarray(bases, jnp.uint32)
  out = jnp.zeros(n.shape, jnp.float32)
  scale = 1.0 / bases_f
  num_digits = int(math.ceil(32 / math.log2(int(bases.min())))) if bases.size else 0
  cols = jnp.arange(bases.shape[0])
  for _ in range(num_digits):
    digit = (n % b).astype(jnp.int32)
    out = out + perms[cols, digit] * scale
    n = n // b
    scale = scale / bases_f
  return jnp.clip(out, 0.0, 1.0 - 1e-7)


def quasi_random(space: Space, batch_size: int = 1, history_size: int = 256) -> Tuner:
  """Scrambled Halton search, conditional-aware (exclusive branches share dimensions).

  Points that break a constraint are skipped (the sequence moves on); if a batch
  cannot be filled from ``oversample * batch_size`` candidates, the rest is random.
  """
  dims = shared_dimensions(space)
  num_q = int(dims.max()) + 1
  bases = np.asarray(_primes(num_q), np.int64)
  pmax = int(bases.max())
  rate = sampling.feasibility(space)[0] if space.constraints else 1.0
  oversample = 1 if rate >= 1.0 else int(min(32, math.ceil(1.5 / rate) + 1))
  num_cand = batch_size * oversample

  def init(key):
    keys = jax.random.split(key, num_q)
    ranks = jax.vmap(lambda k: jax.random.uniform(k, (pmax,)))(keys)
    ranks = jnp.where(jnp.arange(pmax) < bases[:, None], ranks, 2.0)  # padding last
    perms = jnp.argsort(ranks, axis=-1).astype(jnp.float32)
    return QuasiState(history_init(space, history_size), jnp.zeros((), jnp.int32), perms)

  def ask(key, state):
    idx = state.index + jnp.arange(num_cand, dtype=jnp.int32)
    q = halton(idx, bases, state.perms)
    u = q[:, dims]
    act = space.activity(u)
    u = space.canonical(u, act)
    if oversample == 1:
      return Points(u, act), state.replace(index=state.index + batch_size)
    ok = space.feasible(u, act)
    order = jnp.argsort(~ok, stable=True)[:batch_size]
    got = ok[order]
    # Consumed up to the last feasible point taken (or everything when short).
    consumed = jnp.where(jnp.all(got), order[-1] + 1, num_cand)
    fill_u, fill_a = sampling.sample(key, space, batch_size)
    values = jnp.where(got[:, None], u[order], fill_u)
    active = jnp.where(got[:, None], act[order], fill_a)
    return Points(values, active), state.replace(index=state.index + consumed)

  return Tuner(init, ask, tell_history, space, batch_size, "quasi_random")


# -------------------------------------------------------------------- grid
def _axis(p, resolution: int) -> list:
  if p.kind in ("categorical", "bool", "ordinal"):
    return list(p.choices)
  if p.kind == "int":
    n = p.high - p.low + 1
    if n <= resolution:
      return list(range(p.low, p.high + 1))
    if p.log:
      pts = np.exp(np.linspace(math.log(p.low), math.log(p.high), resolution))
    else:
      pts = np.linspace(p.low, p.high, resolution)
    return sorted({int(round(x)) for x in pts})
  if p.log:
    pts = np.exp(np.linspace(math.log(p.low), math.log(p.high), resolution))
  else:
    pts = np.linspace(p.low, p.high, resolution)
  return [float(x) for x in np.clip(pts, p.low, p.high)]  # exp(log(low)) may round below low


@functools.lru_cache(maxsize=32)
def grid_points(space: Space, resolution: int = 5, max_points: int = 100_000
                ) -> tuple[np.ndarray, np.ndarray]:
  """All feasible grid configurations, expanding a parameter only where it is active.

  Returns:
    ``(values f32[G, D], active bool[G, D])``.

  Raises:
    SpaceError: when the grid has more than ``max_points`` points.
  """
  partial: list[tuple[dict, dict]] = [({}, {})]  # (config, comparable values)
  for p, cond in zip(space.params, space.conditions):
    axis = _axis(p, resolution)
    nxt = []
    for cfg, comp in partial:
      if cond is not None and not reference.evaluate(cond, reference.lookup_from(comp), False):
        nxt.append((cfg, comp))
        continue
      for v in axis:
        nxt.append(({**cfg, p.name: v}, {**comp, p.name: space._comparable_py(p, v)}))
    if len(nxt) > max_points:
      raise SpaceError(f"the grid has more than {max_points} points (at parameter {p.name!r}); "
                       "lower the resolution or use random or quasi-random search",
                       space.source)
    partial = nxt
  us, acts = [], []
  for cfg, _ in partial:
    try:
      u, a = space.encode(cfg)
    except SpaceError:  # violates a constraint
      continue
    us.append(u)
    acts.append(a)
  if not us:
    raise SpaceError("no grid point satisfies the constraints; raise the resolution",
                     space.source)
  return np.stack(us), np.stack(acts)


@flax.struct.dataclass
class GridState:
  history: History
  index: jax.Array  # i32[]
  order: jax.Array  # i32[G]: a random order of the grid points


def grid_search(space: Space, batch_size: int = 1, history_size: int = 256,
                resolution: int = 5, max_points: int = 100_000) -> Tuner:
  """Grid search over small spaces, in a random order; random search once the grid is used up."""
  gu, ga = grid_points(space, resolution, max_points)
  num = gu.shape[0]

  def init(key):
    return GridState(history_init(space, history_size), jnp.zeros((), jnp.int32),
                     jax.random.permutation(key, num).astype(jnp.int32))

  def ask(key, state):
    pos = state.index + jnp.arange(batch_size)
    take = state.order[jnp.minimum(pos, num - 1)]
    fill_u, fill_a = sampling.sample(key, space, batch_size)
    inside = (pos < num)[:, None]
    values = jnp.where(inside, jnp.asarray(gu)[take], fill_u)
    active = jnp.where(inside, jnp.asarray(ga)[take], fill_a)
    return Points(values, active), state.replace(index=state.index + batch_size)

  return Tuner(init, ask, tell_history, space, batch_size, "grid")


TUNERS = {
    "random": random_search,
    "quasi_random": quasi_random,
    "grid": grid_search,
    "gp_bo": gp_bo,
    "portfolio": portfolio_tuner,
}
