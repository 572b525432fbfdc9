"""What a prior knows about its training tasks besides the policy: a design, its profile, a portfolio.

The design is a space-filling set of configurations evaluated on every training
task; the *profile* is each design configuration's mean normalized regret over
those tasks (0: the best of its task, 1: its median or worse), and the
portfolio is the greedy order of design configurations that were good across
them (`metatune.tuners.portfolio`). The hybrid prior (`metatune.meta.hybrid`)
starts from the portfolio and uses the profile as a prior mean, smoothed over
the space. Stored in the prior folder as ``transfer.npz``.

The design also says which parameters matter: `kernel_locs` fits GP-BO's kernel to the
profile, and its lengthscales can centre the new study's lengthscale prior (the hybrid's
``kernel_locs``), in the spirit of pre-trained GP priors (HyperBO, Wang et al., 2024).

On another space that shares most of its parameters with the training space (an
architecture with a few parameters of its own, say), `project` carries the design
over: shared parameters keep their values, the new ones take their defaults, and
the profile and portfolio follow the configurations that survive the target's
conditions and constraints.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.meta import compat
from metatune.space import Space, SpaceError, sampling
from metatune.tuners.base import Points
from metatune.tuners.gp_model import (GPPrior, feature_layout, fit, fit_tasks, sq_distance,
                                      standardize)
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
    regrets: f32[T, N] the normalized regret on each training task (None in folders written
      before it was stored): `kernel_locs` fits one kernel to all of them.
  """
  values: jax.Array
  active: jax.Array
  profile: jax.Array
  portfolio: jax.Array
  spread: jax.Array
  regrets: jax.Array | None = None


def from_objectives(values: np.ndarray, active: np.ndarray, objective: np.ndarray,
                    portfolio_size: int = 100) -> TransferData:
  """From a design and its objectives ``f[T, N]`` on the training tasks (NaN: failed)."""
  regret = normalized_regret(objective)
  order, _ = greedy_order(regret, portfolio_size)
  return TransferData(np.asarray(values, np.float32), np.asarray(active, bool),
                      regret.mean(0).astype(np.float32), np.asarray(order, np.int32),
                      regret.std(0).astype(np.float32), np.asarray(regret, np.float32))


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
  arrays = {k: np.asarray(getattr(data, k)) for k in _FIELDS}
  if data.regrets is not None:
    arrays["regrets"] = np.asarray(data.regrets, np.float32)
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


_FIELDS = ("values", "active", "profile", "portfolio", "spread")


def read(folder: str | os.PathLike) -> TransferData | None:
  """The transfer data of a prior folder as stored (in its training space), or None."""
  path = pathlib.Path(folder) / FILE
  if not path.is_file():
    return None
  with np.load(path) as d:
    return TransferData(*(d[k] for k in _FIELDS), d["regrets"] if "regrets" in d else None)


def load(folder: str | os.PathLike, space: Space) -> TransferData | None:
  """The transfer data of a prior folder for ``space``, or None (absent, or another space)."""
  data = read(folder)
  if data is None or data.values.shape[1] != space.num_params:
    return None
  return data


def shared_parameters(description: Mapping[str, Any], space: Space) -> list[str]:
  """Names of ``space`` that the described training space has with the same kind (what
  `metatune.meta.compat.compare_spaces` neither calls unseen nor of another kind): the
  parameters `project` carries over."""
  report = compat.compare_spaces({compat.DESCRIPTION: description}, space)
  differ = set(report.unseen) | {name for name, _, _ in report.kinds}
  return [name for name in space.names if name not in differ]


def _source_space(description: Mapping[str, Any]) -> Space:
  """The training space's parameters without conditions or constraints: enough to decode."""
  from metatune.space import model  # pylint: disable=import-outside-toplevel
  params = []
  for p in description["params"]:
    kind, name = p["kind"], p["name"]
    if kind == "float":
      params.append(model.Float(name, p["low"], p["high"], log=p["log"]))
    elif kind == "int":
      params.append(model.Int(name, int(p["low"]), int(p["high"]), log=p["log"]))
    elif kind == "bool":
      params.append(model.Bool(name))
    elif kind == "ordinal":
      params.append(model.Ordinal(name, p["choices"]))
    else:
      params.append(model.Categorical(name, p["choices"]))
  return Space(params, name="training space")


def project(data: TransferData, description: Mapping[str, Any], space: Space,
            min_shared: float = 0.5) -> TransferData | None:
  """The transfer data of another space carried into ``space``, or None if too little is shared.

  Each design configuration is decoded in the training space (``description``: the card's
  `metatune.meta.compat.describe_space`), and its values of the shared parameters
  (`shared_parameters`) fill a configuration of ``space`` whose other parameters take their
  defaults (`Space.fill`). Configurations that break a constraint of ``space`` are dropped;
  configurations that become equal are merged (profile and spread averaged, the portfolio
  keeps the first). The profile stays what it measured: the training tasks' regret of the
  original configuration, now read at its projection.

  Args:
    data: the prior's transfer data, in the training space.
    description: the training space, as the card describes it.
    space: the target space.
    min_shared: the least fraction of ``space``'s parameters that must be shared; below it
      the projected design would be mostly defaults, and None is returned.
  """
  shared = shared_parameters(description, space)
  if not shared or len(shared) < min_shared * space.num_params:
    return None
  src = _source_space(description)
  values = np.asarray(data.values, np.float32)
  if values.shape[1] != src.num_params:
    raise ValueError(f"the transfer data has {values.shape[1]} parameters, the card's training "
                     f"space {src.num_params}")
  configs = src.decode_batch(values, np.asarray(data.active, bool))
  keep: dict[tuple, int] = {}
  rows, groups = [], []
  index_of = np.full(len(configs), -1, np.int64)
  for i, cfg in enumerate(configs):
    target = space.fill({k: cfg[k] for k in shared if k in cfg})
    try:
      u, a = space.encode(target)
    except SpaceError:
      continue  # breaks a constraint of the target space
    key = (u.tobytes(), a.tobytes())
    if key not in keep:
      keep[key] = len(rows)
      rows.append((u, a))
      groups.append([])
    index_of[i] = keep[key]
    groups[keep[key]].append(i)
  if not rows:
    return None
  profile = np.asarray(data.profile, np.float32)
  spread = np.asarray(data.spread, np.float32)
  regrets = None if data.regrets is None else np.asarray(data.regrets, np.float32)
  port, seen = [], set()
  for j in np.asarray(data.portfolio).tolist():
    k = int(index_of[j])
    if k >= 0 and k not in seen:
      seen.add(k)
      port.append(k)
  if not port:
    return None
  return TransferData(np.stack([u for u, _ in rows]), np.stack([a for _, a in rows]),
                      np.asarray([profile[g].mean() for g in groups], np.float32),
                      np.asarray(port, np.int32),
                      np.asarray([spread[g].mean() for g in groups], np.float32),
                      None if regrets is None else np.stack(
                          [regrets[:, g].mean(1) for g in groups], 1).astype(np.float32))


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


# The log-normal scale of a transferred lengthscale prior: a factor of e either way for one sd,
# against sqrt(3) for GP-BO's own. Fixed before any validation run, not tuned.
KERNEL_SCALE = 1.0


KERNEL_FITS = ("profile", "tasks")
TASK_FIT_POINTS = 128


def kernel_locs(space: Space, data: TransferData, steps: int = 200,
                source: str = "profile") -> tuple[float, ...]:
  """Log-lengthscales, one per feature of ``space``, of GP-BO's kernel fitted to the design.

  GP-BO's GP (`metatune.tuners.gp_model.GPPrior.for_space`) is fitted by MAP over the design
  (``data`` in ``space``: the prior's own, or `project`'s). A parameter that the design leaves
  constant (a new one, at its default) gives its features no evidence, and they keep GP-BO's
  prior location.

  Args:
    source: ``"profile"``: to the standardized profile (the mean regret over the training
      tasks); ``"tasks"``: to every training task's standardized regret at once, one kernel
      maximizing the sum of the tasks' log marginal likelihoods, as HyperBO pre-trains its
      GP (Wang et al., 2024), on ``TASK_FIT_POINTS`` design points (the first ones: a
      quasi-random design is space-filling from its start). Averaging over tasks blurs what
      moves each task's optimum (a learning rate whose best value differs from task to task
      looks flat in the mean); each task keeps it. Needs ``data.regrets``.

  Raises:
    ValueError: an unknown ``source``, or ``"tasks"`` without per-task regrets.
  """
  if source not in KERNEL_FITS:
    raise ValueError(f"the kernel fit must be one of {KERNEL_FITS}, got {source!r}")
  prior = GPPrior.for_space(space)
  x = sampling.featurize(space, jnp.asarray(data.values), jnp.asarray(data.active))
  if source == "profile":
    mask = jnp.ones(x.shape[0], bool)
    y = standardize(jnp.asarray(data.profile, jnp.float32), mask)
    params, _ = jax.jit(lambda x, y: fit(prior.init(), x, y, mask, prior, steps))(x, y)
    return tuple(float(v) for v in np.asarray(params.log_lengthscale))
  if data.regrets is None:
    raise ValueError("a kernel fitted to the training tasks needs their regrets, which this "
                     f"prior's {FILE} does not hold (written before they were stored; "
                     "meta-train again, or fit to the profile)")
  x = x[:TASK_FIT_POINTS]
  mask = jnp.ones(x.shape[0], bool)
  ys = jax.vmap(lambda r: standardize(r, mask))(
      jnp.asarray(data.regrets, jnp.float32)[:, :TASK_FIT_POINTS])
  params, _ = jax.jit(lambda x, ys: fit_tasks(prior.init(), x, ys, mask, prior, steps))(x, ys)
  return tuple(float(v) for v in np.asarray(params.log_lengthscale))
