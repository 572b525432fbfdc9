"""A space as tokens a policy can read: parameter and choice descriptors, and masking tables.

One policy acts on spaces of different shapes because it never sees a
parameter's position, only its description: kind, scale, whether it is
conditional, how deep it sits, how many choices it has, and hashed words of
its name (``optimizer.sgd.momentum`` -> ``optimizer``, ``sgd``, ``momentum``).
Choices are described by hashed words of their labels, so ``adam`` in one space
and ``adam`` in another share an embedding.

The masking tables say, for each step of the autoregressive head (one step per
parameter in dependency order), which constraints can be decided at that step:
a constraint counts at step ``d`` when every parameter it names that comes
later is already known to be inactive (its condition reads only parameters up
to ``d``). Candidates that break a counting constraint are masked out.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space
from metatune.space import expr as ex

NAME_DIM = 32
NUM_KINDS = 5
DESC_DIM = NUM_KINDS + 5 + NAME_DIM
CHOICE_DIM = NAME_DIM + 2
# The descriptor columns that say where a parameter sits in the structure: conditional, depth.
STRUCTURE_COLUMNS = (NUM_KINDS + 1, NUM_KINDS + 2)
NUM_COARSE = 16
NUM_FINE = 16


def _words(text: str) -> list[str]:
  return [w for w in re.split(r"[^a-z0-9]+", str(text).lower()) if w]


def hash_words(text: str, dim: int = NAME_DIM) -> np.ndarray:
  """A signed feature-hashing of the words of ``text`` (stable across runs), unit norm."""
  out = np.zeros(dim, np.float32)
  for w in _words(text):
    h = hashlib.blake2b(w.encode(), digest_size=8).digest()
    for j in range(2):
      out[h[2 * j] % dim] += 1.0 if h[2 * j + 1] & 1 else -1.0
  n = np.linalg.norm(out)
  return out / n if n > 0 else out


@flax.struct.dataclass
class SpaceTokens:
  """Numeric description of a space (arrays; the same policy reads any space's tokens).

  Attributes:
    desc: f32[D, DESC_DIM] parameter descriptors.
    choice: f32[D, C, CHOICE_DIM] choice descriptors (C = max choices, at least 1).
    choice_valid: bool[D, C].
    mids: f32[D, C] the unit value of each choice.
  """
  desc: jax.Array
  choice: jax.Array
  choice_valid: jax.Array
  mids: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class SpaceInfo:
  """Static tables of a space for the policy head.

  Attributes:
    space: the space.
    tokens: its descriptors.
    numeric: bool[D] float or int parameters (chosen in two stages).
    involve: bool[D, C] constraint ``c`` may be decided at step ``d``.
    later: bool[D, C, D] the parameters constraint ``c`` names after step ``d`` (each known
      at step ``d``; the constraint counts when all of them are inactive).
  """
  space: Space
  tokens: SpaceTokens
  numeric: np.ndarray
  involve: np.ndarray
  later: np.ndarray


def _tokens(space: Space) -> SpaceTokens:
  d = space.num_params
  cmax = max(space.max_choices, 1)
  depth = space.depth()
  desc = np.zeros((d, DESC_DIM), np.float32)
  choice = np.zeros((d, cmax, CHOICE_DIM), np.float32)
  valid = np.zeros((d, cmax), bool)
  for i, p in enumerate(space.params):
    desc[i, space.kind_code[i]] = 1.0
    desc[i, NUM_KINDS:NUM_KINDS + 5] = [
        float(p.log), float(space.conditions[i] is not None), depth[p.name] / 4.0,
        np.log1p(p.num_choices) / 3.0, 1.0]
    desc[i, NUM_KINDS + 5:] = hash_words(p.name)
    for j, c in enumerate(p.choices):
      choice[i, j, :NAME_DIM] = hash_words(str(c))
      choice[i, j, NAME_DIM] = j / max(p.num_choices - 1, 1)
      choice[i, j, NAME_DIM + 1] = 1.0
      valid[i, j] = True
  mids = np.zeros((d, cmax), np.float32)
  mids[:, :space.mids.shape[1]] = space.mids
  return SpaceTokens(jnp.asarray(desc), jnp.asarray(choice), jnp.asarray(valid),
                     jnp.asarray(mids))


def _ancestors(space: Space) -> list[set[int]]:
  anc: list[set[int]] = []
  for i, name in enumerate(space.names):
    s: set[int] = set()
    for parent in space.parents[name]:
      j = space.index[parent]
      s |= {j} | anc[j]
    anc.append(s)
  return anc


@functools.lru_cache(maxsize=64)
def space_info(space: Space) -> SpaceInfo:
  """The tokens and static masking tables of ``space`` (cached per space)."""
  anc = _ancestors(space)
  d_num, c_num = space.num_params, len(space.constraints)
  # A later parameter's activity is known at step d when its whole ancestry is at or before d.
  known_at = [max(a) if a else -1 for a in anc]
  names = [sorted(space.index[n] for n in ex.names(node))
           for node in space._constraint_nodes]  # pylint: disable=protected-access
  involve = np.zeros((d_num, c_num), bool)
  later = np.zeros((d_num, c_num, d_num), bool)
  for d in range(d_num):
    for c, refs in enumerate(names):
      rest = [r for r in refs if r > d]
      touched = d in refs or any(d in anc[r] for r in rest)
      # A later name that is always active (no ancestors) is never known inactive.
      if touched and all(known_at[r] <= d and anc[r] for r in rest):
        involve[d, c] = True
        later[d, c, rest] = True
  numeric = np.asarray(space.kind_code <= 1)
  return SpaceInfo(space, _tokens(space), numeric, involve, later)


def comparable_column(space: Space, d: jax.Array, cand: jax.Array) -> jax.Array:
  """f32[K]: ``space.comparable`` of column ``d`` (may be traced) at each unit value in ``cand``.

  The same float32 arithmetic as `Space.comparable`, for one column, so masks
  cost O(K) per step instead of O(K * D).
  """
  f32 = jnp.float32
  lo, hi = jnp.asarray(space.t_low, f32)[d], jnp.asarray(space.t_high, f32)[d]
  t = lo + cand * (hi - lo)
  is_log = jnp.asarray(space.is_log)[d]
  fl = jnp.clip(jnp.where(is_log, jnp.exp(t), t), jnp.asarray(space.float_low)[d],
                jnp.asarray(space.float_high)[d])
  ilo, ihi = jnp.asarray(space.int_low, f32)[d], jnp.asarray(space.int_high, f32)[d]
  iv = jnp.where(is_log, jnp.clip(jnp.round(jnp.exp(t)), ilo, ihi),
                 jnp.clip(jnp.floor(t), ilo, ihi))
  inner = jnp.asarray(space.edges[:, 1:-1], f32)[d]
  idx = jnp.sum(cand[:, None] >= inner, axis=-1)
  idx = jnp.minimum(idx, jnp.maximum(jnp.asarray(space.num_choices)[d] - 1, 0))
  choice = jnp.asarray(space.choice_table, f32)[d][idx]
  kind = jnp.asarray(space.kind_code)[d]
  return jnp.where(kind == 0, fl, jnp.where(kind == 1, iv, choice))


def candidate_mask(info: SpaceInfo, d: jax.Array, u: jax.Array, cand: jax.Array) -> jax.Array:
  """bool[K]: which candidate unit values for parameter ``d`` keep every decidable constraint.

  Args:
    info: the space's tables.
    d: the step (parameter index in dependency order): a Python int specializes the
      mask to the constraints decidable there; an i32[] (traced) evaluates them all.
    u: f32[D] values chosen so far (entries after ``d`` are ignored).
    cand: f32[K] candidate unit values for parameter ``d``.
  """
  space = info.space
  if not space.constraints:
    return jnp.ones(cand.shape, bool)
  static = isinstance(d, (int, np.integer))
  which = np.nonzero(info.involve[d])[0] if static else None
  if static and which.size == 0:
    return jnp.ones(cand.shape, bool)
  cols = jnp.arange(space.num_params)
  prefix = space.comparable(jnp.where(cols > d, 0.0, u))                       # [D]
  vals = jnp.where(cols == d, comparable_column(space, d, cand)[:, None], prefix)  # [K, D]
  if static:  # only the constraints decidable at d, and the activity they read
    nodes = [space._constraint_nodes[c] for c in which]  # pylint: disable=protected-access
    read = [space.index[n] for node in nodes for n in ex.names(node)]
    upto = max(read + list(np.nonzero(info.later[d][which].any(0))[0])) + 1
    act = space.activity_from(vals, upto=upto)
    act = jnp.concatenate([act, jnp.zeros(act.shape[:-1] + (space.num_params - upto,), bool)],
                          axis=-1)
    ok = space.constraint_ok_from(vals, act, which)                      # [K, C_d]
    decided = ~jnp.any(jnp.asarray(info.later[d][which])[None] & act[:, None, :], axis=-1)
    return jnp.all(ok | ~decided, axis=-1)
  act = space.activity_from(vals)
  ok = space.constraint_ok_from(vals, act)                               # [K, C]
  later = jnp.asarray(info.later)[d]                                     # [C, D]
  decided = ~jnp.any(later[None] & act[:, None, :], axis=-1)             # [K, C]
  counts = decided & jnp.asarray(info.involve)[d][None]
  return jnp.all(ok | ~counts, axis=-1)
