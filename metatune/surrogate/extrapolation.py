"""Held-out scores of learning-curve extrapolation: the surrogate vs the last value and a curve fit.

For each held-out task and each of ``num_reps`` random orders of its
configurations, the first ``k`` configurations show their full curves and
every later configuration is a query: given those ``k`` curves plus its own
first ``e`` steps, predict its final value. Three predictors:

- ``meta``: the fidelity-aware surrogate (`predictive.predict_curve`), one
  context per query (the ``k`` curves and the query's ``e`` points); its 90%
  interval is its 5% and 95% quantiles.
- ``last``: the last observed value (step ``e``).
- ``fit``: least squares of ``y = a + b / sqrt(t)`` on the ``e`` observed
  points (``t`` the fidelity fraction), evaluated at ``t = 1``; with one point,
  the last value.

The baselines' 90% intervals add the 5% and 95% quantiles of the same
method's errors (final minus prediction) on the ``k`` context curves, which
are fully observed, so every method uses the same information. Scores per
task, averaged over repetitions (failed queries left out): Spearman rank
correlation of predicted and observed final values, mean absolute error in
the task's standardized units (over the sd of its final values) and coverage
of the 90% interval; then mean and standard error over tasks.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.surrogate.data import TaskTable
from metatune.surrogate.evaluate import draw_rows, mean_se, spearman_coverage
from metatune.surrogate.predictive import Surrogate, predict_curve
from metatune.tuners.base import Points

METHODS = ("meta", "last", "fit")
LABELS = {"meta": "surrogate", "last": "last value", "fit": "curve fit"}


def _gather(table: TaskTable, rows: np.ndarray):
  t = np.arange(table.num_tasks)[:, None, None]
  g = lambda a: np.asarray(a)[t, rows]
  return g(table.values), g(table.active), g(table.curve), g(table.failed)


def surrogate_finals(surrogate: Surrogate, table: TaskTable, rows: np.ndarray, k: int, e: int
                     ) -> dict[str, np.ndarray]:
  """The surrogate's final-value predictions of the queries, ``f64[T, R, N - k]`` each.

  Returns:
    ``mean``, ``lo``, ``hi`` (5% and 95% quantiles), in the task's units.
  """
  u, a, c, f = _gather(table, rows)
  fid = jnp.asarray(table.fidelity)
  steps = fid.shape[0]

  def one(u, a, c, f, loc, scale):
    ctx_x = Points(jnp.repeat(u[:k], steps, 0), jnp.repeat(a[:k], steps, 0))
    ctx_f, ctx_y, ctx_fail = jnp.tile(fid, k), c[:k].reshape(-1), jnp.repeat(f[:k], steps)

    def query(uq, aq, cq, fq):
      own = Points(jnp.repeat(uq[None], e, 0), jnp.repeat(aq[None], e, 0))
      cat = lambda x, y: jnp.concatenate([x, y])
      out = predict_curve(
          surrogate, Points(cat(ctx_x.values, own.values), cat(ctx_x.active, own.active)),
          cat(ctx_f, fid[:e]), cat(ctx_y, cq[:e]), cat(ctx_fail, jnp.repeat(fq, e)),
          Points(uq[None], aq[None]), jnp.ones(1), levels=(0.05, 0.95), prior_loc=loc,
          prior_scale=scale)
      return out.mean[0, 0], out.quantiles[0, 0, 0], out.quantiles[0, 0, 1]

    return jax.vmap(query)(u[k:], a[k:], c[k:], f[k:])

  fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))))
  mean, lo, hi = fn(u, a, c, f, jnp.asarray(table.loc), jnp.asarray(table.scale))
  return {"mean": np.asarray(mean, np.float64), "lo": np.asarray(lo, np.float64),
          "hi": np.asarray(hi, np.float64)}


def fit_final(curve: np.ndarray, fidelity: np.ndarray, e: int) -> np.ndarray:
  """``f64[...]``: the final value of ``y = a + b / sqrt(t)`` fitted on the first ``e`` points.

  Args:
    curve: f[..., F] curves (only the first ``e`` points are read).
    fidelity: f[F] their fidelity fractions.
    e: observed points; with 1, the last value.

  Example:
    >>> t = np.array([0.25, 0.5, 1.0])
    >>> round(float(fit_final(2 + 3 / np.sqrt(t), t, 2)), 6)
    5.0
  """
  y = np.asarray(curve, np.float64)[..., :e]
  if e == 1:
    return y[..., 0]
  x = 1.0 / np.sqrt(np.asarray(fidelity, np.float64)[:e])
  xc = x - x.mean()
  b = np.sum((y - y.mean(-1, keepdims=True)) * xc, -1) / np.sum(xc ** 2)
  return y.mean(-1) + b * (1.0 - x.mean())


def baseline_finals(method: str, table: TaskTable, rows: np.ndarray, k: int, e: int
                    ) -> dict[str, np.ndarray]:
  """``last`` or ``fit`` predictions of the queries (same outputs as `surrogate_finals`).

  The interval adds the 5% and 95% quantiles of the method's errors on the
  finished context curves (none finished: a zero-width interval).
  """
  _, _, c, f = _gather(table, rows)
  fid = np.asarray(table.fidelity)
  predict = (lambda y: y[..., e - 1]) if method == "last" else (lambda y: fit_final(y, fid, e))
  pred = predict(c)
  err = np.where(f[..., :k], np.nan, c[..., :k, -1] - pred[..., :k])
  with np.errstate(all="ignore"):
    lo_err = np.nan_to_num(np.nanquantile(err, 0.05, axis=-1))
    hi_err = np.nan_to_num(np.nanquantile(err, 0.95, axis=-1))
  mean = pred[..., k:]
  return {"mean": mean, "lo": mean + lo_err[..., None], "hi": mean + hi_err[..., None]}


def scores(pred: dict[str, np.ndarray], table: TaskTable, rows: np.ndarray, k: int
           ) -> dict[str, np.ndarray]:
  """Per-task scores ``f64[T]`` (averaged over repetitions): spearman, mae, coverage."""
  _, _, c, f = _gather(table, rows)
  obs, ok = c[..., k:, -1].astype(np.float64), ~f[..., k:]
  rho, cov = spearman_coverage(obs, ok, pred)
  err = np.abs(pred["mean"] - obs) / np.asarray(table.scale, np.float64)[:, None, None]
  mae = np.sum(np.where(ok, err, 0.0), -1) / np.maximum(ok.sum(-1), 1)
  return {"spearman": rho.mean(1), "mae": mae.mean(1), "coverage": cov.mean(1)}


def evaluate_extrapolation(key: jax.Array, surrogate: Surrogate, table: TaskTable, k: int = 10,
                           es: Sequence[int] = (1, 2, 3), num_reps: int = 4
                           ) -> dict[str, Any]:
  """Scores the surrogate and the two baselines for each number ``e`` of observed steps.

  Args:
    key: PRNG key (the orders of configurations).
    surrogate: a fidelity-aware surrogate.
    table: held-out tasks with curves.
    k: configurations whose full curves form the context.
    es: observed steps of each query's own curve (0 scores the surrogate alone).
    num_reps: random orders per task.

  Returns:
    ``{"k", "es", "num_queries", "num_reps", "tasks", (method, e): scores}``.

  Raises:
    ValueError: a table without curves, a surrogate without fidelity, or an
      ``e`` outside ``0..F - 1``.

  Example:
    >>> res = evaluate_extrapolation(jax.random.key(0), surrogate, held)  # doctest: +SKIP
    >>> print(table_markdown(res))                                        # doctest: +SKIP
  """
  if not table.has_curves:
    raise ValueError("the held-out tasks hold no learning curves")
  if not surrogate.config.fidelity:
    raise ValueError("the surrogate was trained without fidelities (config.fidelity is False)")
  steps = table.curve.shape[-1]
  es = sorted(set(int(e) for e in es))
  if es[0] < 0 or es[-1] >= steps:
    raise ValueError(f"observed steps e must be in 0..{steps - 1}, got {es}")
  if table.num_configs < k + 2:
    raise ValueError(f"k = {k} needs at least {k + 2} configurations per task")
  rows = draw_rows(key, table, num_reps)
  out: dict[str, Any] = {"k": k, "es": es, "num_queries": table.num_configs - k,
                         "num_reps": num_reps, "tasks": list(table.task_ids)}
  for e in es:
    out[("meta", e)] = scores(surrogate_finals(surrogate, table, rows, k, e), table, rows, k)
    if e >= 1:
      for method in ("last", "fit"):
        out[(method, e)] = scores(baseline_finals(method, table, rows, k, e), table, rows, k)
  return out


def table_markdown(result: dict[str, Any]) -> str:
  """One row per (e, method): mean ± standard error over tasks of each score."""
  lines = ["| e | method | Spearman | MAE (task sd) | 90% coverage |",
           "|---:|---|---:|---:|---:|"]
  fmt = lambda x, d: "{:.{d}f} ± {:.{d}f}".format(*mean_se(x), d=d)
  for e in result["es"]:
    for method in METHODS:
      s = result.get((method, e))
      if s is not None:
        lines.append(f"| {e} | {LABELS[method]} | {fmt(s['spearman'], 3)} | {fmt(s['mae'], 3)} "
                     f"| {fmt(s['coverage'], 2)} |")
  return "\n".join(lines)
