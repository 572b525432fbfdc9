"""User beliefs over a space: preferred and avoided regions, per parameter (πBO-style).

A space file may carry a ``beliefs`` section beside ``parameters``; it does not change the
space (nor its signature), only how a tuner that reads it weighs candidates::

    beliefs:
      lr: {prefer: [1.0e-4, 1.0e-2]}        # a numeric range, in the parameter's own units
      optimizer: {prefer: [adam, adamw]}    # choices
      dropout: {avoid: [0.6, 0.9]}          # a region known to diverge
      strength: 10                          # optional: how strongly, see below

`log_density` scores configurations: ``0`` where every active parameter meets its belief, and
``log(EPSILON)`` for each one that does not (a preferred region missed, an avoided one hit). The
hybrid prior adds ``strength / (1 + n) * log_density`` to its acquisition after ``n``
observations (as πBO multiplies the acquisition by ``density ** (strength / n)``), so a belief
steers the first trials and fades as trials accumulate. `evidence` checks the beliefs against
the study itself (are the study's best configurations the ones that meet them?); the hybrid
prior weighs each belief by ``Phi(evidence + confidence)``, so beliefs the study contradicts
stop steering early.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import model, yamlio
from metatune.space.errors import SpaceError
from metatune.space.space import Space

EPSILON = 0.1          # the density outside a preferred region (inside an avoided one)
DEFAULT_STRENGTH = 10.0
KEYS = ("prefer", "avoid")


@dataclasses.dataclass(frozen=True, eq=False)
class Beliefs:
  """Beliefs as arrays over a space's parameters (unit coordinates for numbers).

  Attributes:
    num_pref: f32[D, 2] preferred interval (unit); rows of parameters without one are [-inf, inf].
    num_avoid: f32[D, 2] avoided interval (unit); [inf, -inf] (empty) when none.
    choice_ok: bool[D, C] choices that meet the belief (all True when there is none).
    strength: the πBO exponent's numerator.
    names: the parameters that carry a belief (for reports).
  """
  num_pref: np.ndarray
  num_avoid: np.ndarray
  choice_ok: np.ndarray
  strength: float
  names: tuple[str, ...]


def none(space: Space) -> Beliefs:
  """No beliefs (`log_density` is 0 everywhere)."""
  d, c = space.num_params, max(space.max_choices, 1)
  pref = np.tile(np.array([-np.inf, np.inf], np.float32), (d, 1))
  avoid = np.tile(np.array([np.inf, -np.inf], np.float32), (d, 1))
  return Beliefs(pref, avoid, np.ones((d, c), bool), DEFAULT_STRENGTH, ())


def _unit(space: Space, i: int, v: float) -> float:
  p = space.params[i]
  lo, hi = space.t_low[i], space.t_high[i]
  t = math.log(v) if p.log else (v + 0.5 if p.kind == "int" else v)
  return (t - lo) / (hi - lo)


def parse(node: yamlio.Node, space: Space) -> Beliefs:
  """Reads a ``beliefs`` node against ``space``.

  Raises:
    SpaceError: naming the file and line: an unknown parameter or key, a range that is not two
      values in the parameter's bounds (low first), a choice the parameter does not have, a
      strength that is not a positive number.
  """
  if node.kind != "mapping":
    raise node.error("beliefs must be a mapping of parameter names to {prefer: ..., avoid: ...}")
  out = none(space)
  pref, avoid, ok = out.num_pref.copy(), out.num_avoid.copy(), out.choice_ok.copy()
  strength, names = DEFAULT_STRENGTH, []
  for name, child in node.items():
    if name == "strength":
      strength = child.scalar()
      if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength <= 0:
        raise child.error(f"beliefs.strength must be a positive number, got {strength!r}")
      continue
    if name not in space.index:
      raise child.error(f"beliefs: no parameter {name!r} in the space"
                        f"{model.did_you_mean(name, space.names)}")
    if child.kind != "mapping":
      raise child.error(f"beliefs.{name} must be a mapping with 'prefer' and/or 'avoid'")
    i, p = space.index[name], space.params[space.index[name]]
    for key, value in child.items():
      if key not in KEYS:
        raise value.error(f"unknown key {key!r} in beliefs.{name}{model.did_you_mean(key, KEYS)};"
                          f" allowed: {', '.join(KEYS)}")
      if value.kind != "list" or not value.list():
        raise value.error(f"beliefs.{name}.{key} must be a non-empty list")
      items = [v.scalar() for v in value.list()]
      if p.kind in ("float", "int"):
        if len(items) != 2:
          raise value.error(f"beliefs.{name}.{key} must be [low, high], got {items!r}")
        for v in items:
          try:
            space.check_value(p, v)
          except SpaceError as e:
            raise value.error(f"beliefs.{name}.{key}: {e.problem}") from None
        if items[0] > items[1]:
          raise value.error(f"beliefs.{name}.{key}: low {items[0]!r} is above high {items[1]!r}")
        interval = [_unit(space, i, float(v)) for v in items]
        if p.kind == "int":   # the whole cells of the end values
          interval = [_unit(space, i, float(items[0]) - 0.5 * (not p.log)),
                      _unit(space, i, float(items[1]) + 0.5 * (not p.log))]
        (pref if key == "prefer" else avoid)[i] = interval
      else:
        idx = []
        for v in items:
          j = model.choice_index(p, v)
          if j is None:
            raise value.error(f"beliefs.{name}.{key}: {v!r} is not one of {list(p.choices)!r}")
          idx.append(j)
        mask = np.zeros(ok.shape[1], bool)
        mask[idx] = True
        ok[i, :p.num_choices] &= mask[:p.num_choices] if key == "prefer" else ~mask[:p.num_choices]
    names.append(name)
  return Beliefs(pref, avoid, ok, float(strength), tuple(names))


def load(path: str | os.PathLike, space: Space) -> Beliefs:
  """The ``beliefs`` section of a space file (`none` when it has none)."""
  path = os.fspath(path)
  root = yamlio.load(yamlio.read_text(path, "space file"), path)
  fields = dict(root.items()) if root.kind == "mapping" else {}
  return parse(fields["beliefs"], space) if "beliefs" in fields else none(space)


def missed(beliefs: Beliefs, space: Space, u: jax.Array, a: jax.Array) -> jax.Array:
  """bool[N, D]: the active parameters that miss their belief (a preferred region missed, an
  avoided one hit); False where a parameter has no belief."""
  numeric = jnp.asarray([p.kind in ("float", "int") for p in space.params])
  pref, avoid = jnp.asarray(beliefs.num_pref), jnp.asarray(beliefs.num_avoid)
  miss_pref = (u < pref[:, 0]) | (u > pref[:, 1])
  hit_avoid = (u >= avoid[:, 0]) & (u <= avoid[:, 1])
  idx = jnp.clip(space.choice_index(u), 0, beliefs.choice_ok.shape[1] - 1)
  ok = jnp.take_along_axis(jnp.asarray(beliefs.choice_ok)[None].repeat(u.shape[0], 0),
                           idx[..., None], axis=-1)[..., 0]
  return jnp.where(numeric, miss_pref | hit_avoid, ~ok) & a


def log_density(beliefs: Beliefs, space: Space, u: jax.Array, a: jax.Array,
                weights: jax.Array | None = None) -> jax.Array:
  """f32[N]: ``log(EPSILON)`` times the number of active parameters that miss their belief
  (each counted with its weight, f32[D], when ``weights`` is given)."""
  miss = missed(beliefs, space, u, a).astype(jnp.float32)
  if weights is not None:
    miss = miss * weights
  return jnp.sum(miss, axis=-1) * math.log(EPSILON)


def _midranks(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Ranks among the masked entries, ties sharing their mean rank (0 outside the mask)."""
  pair = mask[:, None] & mask[None, :]
  less = jnp.sum(pair & (x[None, :] < x[:, None]), axis=1)
  tied = jnp.sum(pair & (x[None, :] == x[:, None]), axis=1)
  return jnp.where(mask, less + 0.5 * (tied - 1), 0.0)


TOP = 0.25             # `evidence`: the share of the study that counts as its best configurations


def _top_odds_z(miss: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
  """z-score of the log odds ratio that a configuration meeting the belief (``~miss``) is
  among the ``TOP`` best of ``mask`` (0 with fewer than 4 entries or nobody on one side)."""
  n = jnp.sum(mask)
  k = jnp.maximum(jnp.round(TOP * n), 1.0)
  top = mask & (_midranks(y, mask) < k - 0.25)       # a tie across the boundary: by mean rank
  meet = mask & ~miss
  out = mask & miss
  a, b = jnp.sum(meet & top), jnp.sum(meet & ~top)
  c, d = jnp.sum(out & top), jnp.sum(out & ~top)
  a, b, c, d = (x.astype(jnp.float32) + 0.5 for x in (a, b, c, d))
  z = jnp.log(a * d / (b * c)) / jnp.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
  return jnp.where((n >= 4) & jnp.any(meet) & jnp.any(out), z, 0.0)


def evidence(beliefs: Beliefs, space: Space, u: jax.Array, a: jax.Array, objective: jax.Array,
             failed: jax.Array, counted: jax.Array) -> jax.Array:
  """f32[D]: what a study says of each parameter's belief, as a z-score (positive: it holds).

  A belief claims that the best configurations meet it. Its check is the log odds ratio that
  a configuration meeting it is among the study's best ``TOP`` share (minimized objective; a
  failed trial is never among them, so avoiding a diverging region earns credit), over the
  ``counted`` observations where the parameter is active, divided by its standard error (0.5
  added to each cell). It is 0 with fewer than 4 such observations or when every one of them
  meets the belief, or none does (a parameter without a belief): no evidence either way.

  Args:
    u, a: f32[N, D], bool[N, D] the observed configurations.
    objective: f32[N] their objectives (anything where ``failed``).
    failed: bool[N] failed trials; counted: bool[N] the observations to use.
  """
  miss = missed(beliefs, space, u, a)
  y = jnp.where(failed | ~jnp.isfinite(objective), jnp.inf, objective)  # failures tie, worst
  return jax.vmap(lambda m, act: _top_odds_z(m, y, counted & act), in_axes=(1, 1))(miss, a)
