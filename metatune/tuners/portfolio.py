"""A greedy portfolio: configurations that were good across past tasks, tried in order.

The zero-shot transfer baseline (Wistuba et al., 2015; Feurer et al., 2018):
from a matrix of objectives of shared candidate configurations on training
tasks, pick greedily the configuration that most lowers the mean over tasks of
the best normalized regret so far. No learning, no model: on a new task the
portfolio proposes its configurations in order, then hands over to random
search. A portfolio is a JSON file (`save_portfolio`) a study can use:
``--tuner portfolio --tuner-option path=portfolio.json``.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, SpaceError, sampling
from metatune.tuners.base import History, Points, Tuner, history_init, tell_history

FORMAT = "metatune-portfolio/1"


def normalized_regret(objective: np.ndarray) -> np.ndarray:
  """f64[T, N] in [0, 1]: ``(y - best) / (median - best)`` per task, failures 1, capped at 1.

  ``objective f[T, N]`` is minimized, NaN where failed. The median counts
  failures as the task's worst value (as the evaluation's normalization does).
  """
  y = np.asarray(objective, np.float64)
  ok = np.isfinite(y)
  best = np.where(ok, y, np.inf).min(axis=1, keepdims=True)
  worst = np.where(ok, y, -np.inf).max(axis=1, keepdims=True)
  median = np.median(np.where(ok, y, worst), axis=1, keepdims=True)
  scale = np.maximum(median - best, 1e-12)
  r = np.where(ok, (y - best) / scale, 1.0)
  return np.clip(np.nan_to_num(r, nan=1.0), 0.0, 1.0)


def greedy_order(regret: np.ndarray, size: int) -> tuple[list[int], list[float]]:
  """Greedy portfolio over ``regret f[T, N]``: indices and the mean best regret after each pick.

  Each step adds the candidate that minimizes ``mean_t min_{chosen} regret[t, .]``
  (ties: the lower index).
  """
  regret = np.asarray(regret, np.float64)
  num_tasks, num = regret.shape
  size = min(int(size), num)
  current = np.ones(num_tasks)
  chosen, curve = [], []
  available = np.ones(num, bool)
  for _ in range(size):
    score = np.minimum(current[:, None], regret).mean(axis=0)
    score = np.where(available, score, np.inf)
    j = int(np.argmin(score))
    chosen.append(j)
    curve.append(float(score[j]))
    available[j] = False
    current = np.minimum(current, regret[:, j])
  return chosen, curve


def build_portfolio(space: Space, values: np.ndarray, active: np.ndarray,
                    objective: np.ndarray, size: int, tasks: Sequence[str],
                    source: dict[str, Any] | None = None) -> dict[str, Any]:
  """A portfolio document from candidates evaluated on training tasks.

  Args:
    space: the candidates' space.
    values, active: f32[N, D], bool[N, D] the candidates.
    objective: f[T, N] each training task's (minimized) objective of each
      candidate, NaN where it failed.
    size: the number of configurations to keep.
    tasks: the training tasks' ids (provenance).
    source: where the evaluations came from (provenance).

  Returns:
    The document `save_portfolio` writes.
  """
  values, active = np.asarray(values, np.float32), np.asarray(active, bool)
  objective = np.asarray(objective, np.float64)
  if objective.shape != (len(tasks), values.shape[0]):
    raise ValueError(f"objective has shape {objective.shape}, expected ({len(tasks)}, "
                     f"{values.shape[0]}) (tasks x candidates)")
  if size < 1:
    raise ValueError(f"size must be positive, got {size}")
  order, curve = greedy_order(normalized_regret(objective), size)
  return {
      "format": FORMAT, "space": space.name, "space_signature": space.signature,
      "size": len(order), "training_tasks": list(tasks), "num_candidates": int(values.shape[0]),
      "mean_best_regret": curve,
      "configs": space.decode_batch(values[order], active[order]),
      "values": values[order].tolist(), "active": active[order].tolist(),
      "source": source or {}, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
  }


def save_portfolio(path: str | os.PathLike, doc: dict[str, Any]) -> None:
  """Writes a portfolio document (JSON, through a rename)."""
  path = os.fspath(path)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
  os.replace(tmp, path)


def load_portfolio(path: str | os.PathLike, space: Space) -> tuple[np.ndarray, np.ndarray, dict]:
  """Reads a portfolio for ``space``: ``(values f32[K, D], active bool[K, D], document)``.

  The stored encodings are used when the portfolio was built on the same space
  (same signature); otherwise each stored configuration is encoded in ``space``
  and must be valid there.

  Raises:
    SpaceError: naming the file: not a portfolio, or a configuration invalid in ``space``.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
  except OSError as e:
    raise SpaceError(f"cannot read the portfolio: {e.strerror}", path) from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SpaceError(f"not a portfolio file (not JSON: {e})", path) from None
  if not isinstance(doc, dict) or doc.get("format") != FORMAT:
    raise SpaceError(f"not a portfolio file (expected format {FORMAT!r})", path)
  if doc.get("space_signature") == space.signature:
    values = np.asarray(doc["values"], np.float32).reshape(-1, space.num_params)
    active = np.asarray(doc["active"], bool).reshape(-1, space.num_params)
    return values, active, doc
  us, acts = [], []
  for i, cfg in enumerate(doc.get("configs", [])):
    try:
      u, a = space.encode(cfg, f"{path}: configs[{i}]")
    except SpaceError as e:
      raise SpaceError(f"the portfolio was built on space {doc.get('space')!r} "
                       f"({doc.get('space_signature')}), not {space.name!r} "
                       f"({space.signature}), and its configuration {i} is not valid here: "
                       f"{e.problem}", path) from None
    us.append(u)
    acts.append(a)
  if not us:
    raise SpaceError("the portfolio holds no configurations", path)
  return np.stack(us), np.stack(acts), doc


@flax.struct.dataclass
class PortfolioState:
  history: History
  index: jax.Array  # i32[]: the next portfolio entry


def portfolio_tuner(space: Space, batch_size: int = 1, path: str | None = None,
                    values: np.ndarray | None = None, active: np.ndarray | None = None,
                    history_size: int = 256, name: str = "portfolio") -> Tuner:
  """Proposes the portfolio's configurations in order, then uniformly at random.

  Args:
    space: the space.
    batch_size: proposals per ask.
    path: a portfolio file (`save_portfolio`); or give ``values``/``active``.
    values, active: f32[K, D], bool[K, D] the configurations, in order.
    history_size: capacity of the history buffer.
    name: label for reports.

  Raises:
    ValueError: neither a path nor configurations given.
    SpaceError: a bad portfolio file.
  """
  if path is not None:
    values, active, _ = load_portfolio(path, space)
  if values is None or active is None:
    raise ValueError("the portfolio tuner needs path=PORTFOLIO.json (written by 'metatune "
                     "portfolio build') or values and active")
  values = jnp.asarray(values, jnp.float32)
  active = jnp.asarray(active, bool)
  size = values.shape[0]

  def init(key):
    del key
    return PortfolioState(history_init(space, history_size), jnp.zeros((), jnp.int32))

  def ask(key, state):
    pos = state.index + jnp.arange(batch_size)
    take = jnp.minimum(pos, size - 1)
    fill_u, fill_a = sampling.sample(key, space, batch_size)
    inside = (pos < size)[:, None]
    return (Points(jnp.where(inside, values[take], fill_u), jnp.where(inside, active[take], fill_a)),
            state.replace(index=state.index + batch_size))

  return Tuner(init, ask, tell_history, space, batch_size, name)
