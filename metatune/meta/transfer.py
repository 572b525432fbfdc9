"""What a prior knows about its training tasks besides the policy: a design, its profile, a portfolio.

The design is a space-filling set of configurations evaluated on every training
task; the *profile* is each design configuration's mean normalized regret over
those tasks (0: the best of its task, 1: its median or worse), and the
portfolio is the greedy order of design configurations that were good across
them (`metatune.tuners.portfolio`). The hybrid prior (`metatune.meta.hybrid`)
starts from the portfolio and uses the profile as a prior mean, smoothed over
the space. Stored in the prior folder as ``transfer.npz``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, sampling
from metatune.tuners.base import Points
from metatune.tuners.gp_model import feature_layout, sq_distance
from metatune.tuners.portfolio import greedy_order, normalized_regret

FILE = "transfer.npz"


@flax.struct.dataclass
class TransferData:
  """A prior's knowledge of its training tasks (arrays; see the module docstring).

  Attributes:
    values, active: f32[N, D], bool[N, D] the design.
    profile: f32[N] mean normalized regret over the training tasks, in [0, 1].
    portfolio: i32[K] design indices in greedy order.
    spread: f32[N] standard deviation of the normalized regret over the tasks.
  """
  values: jax.Array
  active: jax.Array
  profile: jax.Array
  portfolio: jax.Array
  spread: jax.Array


def from_objectives(values: np.ndarray, active: np.ndarray, objective: np.ndarray,
                    portfolio_size: int = 100) -> TransferData:
  """From a design and its objectives ``f[T, N]`` on the training tasks (NaN: failed)."""
  regret = normalized_regret(objective)
  order, _ = greedy_order(regret, portfolio_size)
  return TransferData(np.asarray(values, np.float32), np.asarray(active, bool),
                      regret.mean(0).astype(np.float32), np.asarray(order, np.int32),
                      regret.std(0).astype(np.float32))


def from_family(family, task_indices: Sequence[int], num: int = 512, seed: int = 0,
                portfolio_size: int = 100) -> TransferData:
  """Evaluates a quasi-random design on a jittable family's tasks (``clean``, noise-free)."""
  from metatune.tuners import quasi_random  # pylint: disable=import-outside-toplevel
  space = family.space
  tuner = quasi_random(space, batch_size=num)
  init_key, ask_key = jax.random.split(jax.random.key(seed))
  design, _ = jax.jit(tuner.ask)(ask_key, jax.jit(tuner.init)(init_key))
  clean = jax.jit(jax.vmap(lambda i: family.clean(family.task_params(i), design)))
  objective = np.asarray(clean(jnp.asarray(np.asarray(task_indices), jnp.int32)), np.float64)
  return from_objectives(np.asarray(design.values), np.asarray(design.active), objective,
                         portfolio_size)


def save(folder: str | os.PathLike, data: TransferData) -> None:
  path = pathlib.Path(folder) / FILE
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **{k: np.asarray(getattr(data, k)) for k in
                   ("values", "active", "profile", "portfolio", "spread")})
  os.replace(tmp, path)


def load(folder: str | os.PathLike, space: Space) -> TransferData | None:
  """The transfer data of a prior folder for ``space``, or None (absent, or another space)."""
  path = pathlib.Path(folder) / FILE
  if not path.is_file():
    return None
  with np.load(path) as d:
    data = TransferData(*(d[k] for k in ("values", "active", "profile", "portfolio", "spread")))
  if data.values.shape[1] != space.num_params:
    return None
  return data


def smoothed_profile(space: Space, data: TransferData, points: Points,
                     temperature: float = 0.05) -> jax.Array:
  """f32[B]: the profile at any configurations, a softmax-weighted mean over nearby design points.

  Distances are the activity-aware ones of GP-BO's kernel (unit lengthscales), so a
  configuration of another branch is never close.
  """
  layout = feature_layout(space)
  f_design = sampling.featurize(space, data.values, data.active)
  f = sampling.featurize(space, points.values, points.active)
  d2 = sq_distance(f, f_design, jnp.ones(f.shape[-1], jnp.float32), layout)
  w = jax.nn.softmax(-d2 / temperature, axis=-1)
  return w @ jnp.asarray(data.profile)
