"""Held-out evaluation of the meta-surrogate against an exact GP fitted on the same k observations.

For each held-out task and each of ``num_reps`` random orders of its
observations, the first ``k`` observations are the context (nested across
``k``) and the observations after the first ``max(ks)`` are the queries (the
same for every ``k``, so the comparison is paired). Scores per query set,
averaged over repetitions, then mean and standard error over tasks:

- Spearman rank correlation of predicted means with the observed objectives;
  a constant prediction (the GP prior at ``k = 0``) scores 0.
- NLL: negative log predictive density of the observed objectives in the
  task's standardized units (objective minus the task's mean over its
  observations, divided by their sd), so tasks of different scales average.
  With fewer than 2 context observations both models are given those units
  (the surrogate as ``prior_loc``/``prior_scale``; the GP prior is a unit
  Gaussian in them).
- Coverage of the central 90% predictive interval.

Failed queries are left out of every score.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from metatune.space import sampling
from metatune.surrogate.data import TaskTable
from metatune.surrogate.predictive import Surrogate, predict
from metatune.tuners import gp
from metatune.tuners.base import Points
from metatune.tuners.gp_model import masked_moments

_Z90 = 1.6448536269514722


def draw_rows(key: jax.Array, table: TaskTable, num_reps: int) -> np.ndarray:
  """i32[T, R, N]: a random order of each task's observations per repetition."""
  keys = jax.random.split(key, table.num_tasks * num_reps)
  perms = jax.vmap(lambda k: jax.random.permutation(k, table.num_configs))(keys)
  return np.asarray(perms).reshape(table.num_tasks, num_reps, table.num_configs)


def _gather(table: TaskTable, rows: np.ndarray):
  t = np.arange(table.num_tasks)[:, None, None]
  g = lambda a: np.asarray(a)[t, rows]
  return g(table.values), g(table.active), g(table.objective), g(table.failed)


def surrogate_predictions(surrogate: Surrogate, table: TaskTable, rows: np.ndarray, k: int,
                          max_k: int) -> dict[str, np.ndarray]:
  """The surrogate's predictions on the queries, each ``f64[T, R, Q]`` in task-standardized units.

  Returns:
    ``mean``, ``lo``, ``hi`` (the 5% and 95% quantiles) and ``logp`` (log
    density of the observed objectives).
  """
  u, a, y, f = _gather(table, rows)
  loc = np.asarray(table.loc)[:, None]
  scale = np.asarray(table.scale)[:, None]

  def one(u, a, y, f, loc, scale):
    ctx_mask = jnp.arange(max_k) < k
    pred = predict(surrogate, Points(u[:max_k], a[:max_k]), y[:max_k], f[:max_k],
                   Points(u[max_k:], a[max_k:]), ctx_mask, loc, scale)
    std = lambda v: (v - loc) / scale
    return {"mean": std(pred.mean()), "lo": std(pred.quantile(0.05)),
            "hi": std(pred.quantile(0.95)), "logp": pred.log_prob(y[max_k:]) + jnp.log(scale)}

  fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))))
  out = fn(u, a, y, f, loc[:, 0], scale[:, 0])
  return {name: np.asarray(v, np.float64) for name, v in out.items()}


def gp_predictions(table: TaskTable, space, rows: np.ndarray, k: int, max_k: int,
                   fit_steps: int = 200) -> dict[str, np.ndarray]:
  """GP-BO's GP (`tuners.gp_model`, `GPPrior.for_space`), fitted on the same k points.

  Same outputs as `surrogate_predictions`. The GP models the context
  standardized by its own mean and sd (as `gp_bo` does); at ``k = 0`` its
  prior is used in task-standardized units.
  """
  u, a, y, f = _gather(table, rows)
  loc = np.asarray(table.loc)
  scale = np.asarray(table.scale)
  prior = gp.GPPrior.for_space(space)  # GP-BO's model: activity-aware kernel, calibrated prior

  def one(u, a, y, f, loc, scale):
    x = sampling.featurize(space, u, a)
    yq = (y[max_k:] - loc) / scale
    if k == 0:
      p = prior.init()
      m = jnp.full(yq.shape, p.mean)
      sd = jnp.full(yq.shape, jnp.sqrt(jnp.exp(p.log_signal) + jnp.exp(p.log_noise)))
    else:
      mask = (jnp.arange(max_k) < k) & ~f[:max_k]
      yc = y[:max_k]
      mu, var = masked_moments(yc, mask)
      sd_c = jnp.where(var > 1e-12, jnp.sqrt(jnp.where(var > 1e-12, var, 1.0)), 1.0)
      ys = gp.standardize(yc, mask)
      params, _ = gp.fit(prior.init(), x[:max_k], ys, mask, prior, fit_steps)
      post = gp.posterior(params, x[:max_k], ys, mask, prior.layout)
      mean, sd_obs = gp.predict_observed(post, x[max_k:])
      # Back to the task's standardized units: y = mu + sd_c * (GP output).
      m = (mu + sd_c * mean - loc) / scale
      sd = sd_c * sd_obs / scale
    logp = jax.scipy.stats.norm.logpdf(yq, m, sd)
    return {"mean": m, "lo": m - _Z90 * sd, "hi": m + _Z90 * sd, "logp": logp}

  fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))))
  out = fn(u, a, y, f, loc, scale)
  return {name: np.asarray(v, np.float64) for name, v in out.items()}


def scores(pred: dict[str, np.ndarray], table: TaskTable, rows: np.ndarray, max_k: int
           ) -> dict[str, np.ndarray]:
  """Per-task scores ``f64[T]`` (averaged over repetitions): spearman, nll, coverage."""
  _, _, y, f = _gather(table, rows)
  yq = (y[..., max_k:] - np.asarray(table.loc)[:, None, None]) / np.asarray(table.scale)[
      :, None, None]
  ok = ~f[..., max_k:]
  rho, cov = spearman_coverage(yq, ok, pred)
  nll = np.array([[-np.mean(pred["logp"][i, j][ok[i, j]]) for j in range(ok.shape[1])]
                  for i in range(ok.shape[0])])
  return {"spearman": rho.mean(1), "nll": nll.mean(1), "coverage": cov.mean(1)}


def spearman_coverage(obs: np.ndarray, ok: np.ndarray, pred: dict[str, np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Spearman of ``pred["mean"]`` with ``obs`` and coverage of ``[lo, hi]``, each ``f64[T, R]``.

  Args:
    obs: f[T, R, Q] observed values; ``ok`` bool[T, R, Q] the ones scored.
    pred: ``mean``, ``lo``, ``hi``, each f[T, R, Q].

  A constant prediction (or fewer than 2 scored queries) has Spearman 0.
  """
  t, r = obs.shape[:2]
  rho, cov = np.zeros((t, r)), np.zeros((t, r))
  for i in range(t):
    for j in range(r):
      m = ok[i, j]
      y, mean = obs[i, j][m], pred["mean"][i, j][m]
      if m.sum() >= 2 and np.ptp(mean) > 0 and np.ptp(y) > 0:
        rho[i, j] = scipy.stats.spearmanr(mean, y).statistic
      cov[i, j] = np.mean((y >= pred["lo"][i, j][m]) & (y <= pred["hi"][i, j][m]))
  return rho, cov


def mean_se(x: np.ndarray) -> tuple[float, float]:
  """Mean and standard error (0 for a single value)."""
  x = np.asarray(x, np.float64)
  se = float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
  return float(np.mean(x)), se


def evaluate(key: jax.Array, surrogate: Surrogate, table: TaskTable,
             ks: Sequence[int] = (0, 5, 10, 20), num_reps: int = 8, fit_steps: int = 200,
             with_gp: bool = True) -> dict[str, Any]:
  """Scores the surrogate (and the GP) on held-out tasks for each context size.

  Args:
    key: PRNG key (the orders of observations).
    surrogate: the trained surrogate.
    table: held-out tasks.
    ks: context sizes.
    num_reps: random orders per task.
    fit_steps: Adam steps of each GP fit.
    with_gp: also score the GP.

  Returns:
    ``{"ks", "num_queries", "rows", "tasks", "meta": {k: scores}, "gp": {k: scores},
    "pred": {(model, k): predictions}}``.

  Raises:
    ValueError: when the tasks hold fewer than ``max(ks) + 2`` observations.

  Example:
    >>> res = evaluate(jax.random.key(0), surrogate, heldout)  # doctest: +SKIP
  """
  ks = sorted(set(int(k) for k in ks))
  max_k = max(ks)
  if table.num_configs < max_k + 2:
    raise ValueError(f"k = {max_k} needs tasks with at least {max_k + 2} observations; these "
                     f"hold {table.num_configs}")
  rows = draw_rows(key, table, num_reps)
  out: dict[str, Any] = {"ks": ks, "num_queries": table.num_configs - max_k, "rows": rows,
                         "tasks": list(table.task_ids), "num_reps": num_reps,
                         "meta": {}, "gp": {}, "pred": {}}
  for k in ks:
    pred = surrogate_predictions(surrogate, table, rows, k, max_k)
    out["meta"][k] = scores(pred, table, rows, max_k)
    out["pred"][("meta", k)] = pred
    if with_gp:
      gpp = gp_predictions(table, surrogate.space, rows, k, max_k, fit_steps)
      out["gp"][k] = scores(gpp, table, rows, max_k)
      out["pred"][("gp", k)] = gpp
  return out


def table_markdown(result: dict[str, Any]) -> str:
  """The evaluation table (mean ± standard error over tasks), as markdown."""
  has_gp = bool(result["gp"])
  head = ["k", "Spearman meta", "Spearman GP", "NLL meta", "NLL GP", "90% cov. meta",
          "90% cov. GP"] if has_gp else ["k", "Spearman meta", "NLL meta", "90% cov. meta"]
  lines = ["| " + " | ".join(head) + " |", "|---:|" + "---:|" * (len(head) - 1)]
  def fmt(x, d=3):
    m, se = mean_se(x)
    if max(abs(m), se) >= 1e4:  # exploding NLLs: keep the table readable
      return f"{m:.3g} ± {se:.3g}"
    return f"{m:.{d}f} ± {se:.{d}f}"

  for k in result["ks"]:
    m = result["meta"][k]
    if has_gp:
      g = result["gp"][k]
      cells = [fmt(m["spearman"]), fmt(g["spearman"]), fmt(m["nll"], 2), fmt(g["nll"], 2),
               fmt(m["coverage"], 2), fmt(g["coverage"], 2)]
    else:
      cells = [fmt(m["spearman"]), fmt(m["nll"], 2), fmt(m["coverage"], 2)]
    lines.append(f"| {k} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def wins(result: dict[str, Any], metric: str = "spearman") -> dict[int, tuple[int, int]]:
  """Per k: (tasks where the surrogate beats the GP on ``metric``, tasks)."""
  out = {}
  for k in result["ks"]:
    m, g = result["meta"][k][metric], result["gp"][k][metric]
    better = m > g if metric in ("spearman",) else m < g
    out[k] = (int(np.sum(better)), len(m))
  return out


def plot(result: dict[str, Any], table: TaskTable, path, title: str,
         ks: Sequence[int] | None = None):
  """Writes a PNG of predicted mean vs observed objective (task-standardized) on the queries.

  One panel per model and context size; the first repetition of every task.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  ks = [k for k in (ks or result["ks"]) if k in result["ks"]]
  models = ["meta", "gp"] if result["gp"] else ["meta"]
  fig, axes = plt.subplots(len(models), len(ks), figsize=(3.2 * len(ks), 3.2 * len(models)),
                           squeeze=False)
  x = observed(table, result["rows"], max(result["ks"])).ravel()
  lim = [float(np.nanpercentile(x, 0.5)), float(np.nanpercentile(x, 99.5))]
  for i, model in enumerate(models):
    for j, k in enumerate(ks):
      y = result["pred"][(model, k)]["mean"][:, :1].ravel()
      ax = axes[i, j]
      ax.scatter(x, y, s=3, alpha=0.4)
      ax.plot(lim, lim, "k--", lw=0.8)
      ax.set_xlim(lim)
      ax.set_ylim(lim[0] - 0.5, lim[1] + 0.5)
      rho = np.mean(result[model][k]["spearman"])
      ax.set_title(f"{'meta-surrogate' if model == 'meta' else 'GP'}, k={k} (rho={rho:.2f})",
                   fontsize=9)
      ax.set_xlabel("observed (task-standardized)", fontsize=8)
      if j == 0:
        ax.set_ylabel("predicted mean", fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def observed(table: TaskTable, rows: np.ndarray, max_k: int) -> np.ndarray:
  """f64[T, 1, Q]: the first repetition's observed queries, task-standardized (NaN if failed)."""
  _, _, y, f = _gather(table, rows[:, :1])
  yq = (y[..., max_k:] - np.asarray(table.loc)[:, None, None]) / np.asarray(table.scale)[
      :, None, None]
  return np.where(f[..., max_k:], np.nan, yq)
