"""Statistics of normalized regret over tasks x seeds: bootstrap CIs, ranks, paired differences.

Regrets come as ``f[num_tasks, num_seeds, num_trials]`` per tuner, with the
same tasks, seeds and run keys for every tuner (paired). Confidence intervals
are percentile intervals of a two-stage bootstrap: tasks are resampled, then
seeds within each drawn task, so that seeds of one task are not counted as
independent evidence.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.special import gammaln


def bootstrap_ci(x: np.ndarray, num: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
  """Mean and two-stage bootstrap CI of ``x f[T, S]`` (or of each column of ``x f[T, S, K]``).

  Returns:
    ``(mean, low, high)``, arrays of shape ``[K]`` for a 3-d input.
  """
  x = np.asarray(x, np.float64)
  squeeze = x.ndim == 2
  if squeeze:
    x = x[..., None]
  t, s = x.shape[:2]
  rng = np.random.default_rng(seed)
  tasks = rng.integers(0, t, (num, t))
  seeds = rng.integers(0, s, (num, t, s))
  chunk = max(1, 4_000_000 // max(1, t * s * x.shape[2]))  # bounded memory
  means = np.concatenate([x[tasks[i:i + chunk, :, None], seeds[i:i + chunk]].mean(axis=(1, 2))
                          for i in range(0, num, chunk)])  # [num, K]
  alpha = (1.0 - level) / 2.0
  mean = x.mean(axis=(0, 1))
  lo, hi = np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)
  if squeeze:
    return float(mean[0]), float(lo[0]), float(hi[0])
  return mean, lo, hi


def paired_difference(a: np.ndarray, b: np.ndarray, **kwargs) -> tuple[float, float, float]:
  """Mean and bootstrap CI of ``a - b`` (``f[T, S]`` each, same tasks and seeds)."""
  return bootstrap_ci(np.asarray(a, np.float64) - np.asarray(b, np.float64), **kwargs)


def verdict(low: float, high: float) -> str:
  """``better`` (CI below 0), ``worse`` (above 0) or ``tie`` (it holds 0), for a difference a - b."""
  if high < 0:
    return "better"
  if low > 0:
    return "worse"
  return "tie"


def mean_ranks(regrets: dict[str, np.ndarray], trial: int) -> dict[str, float]:
  """Mean rank (1 = best, ties share) of each tuner at ``trial`` over tasks x seeds."""
  names = list(regrets)
  stack = np.stack([np.asarray(regrets[n])[:, :, trial - 1] for n in names])  # [M, T, S]
  flat = stack.reshape(len(names), -1)
  ranks = np.zeros_like(flat)
  for j in range(flat.shape[1]):
    col = flat[:, j]
    order = np.argsort(col, kind="stable")
    r = np.empty(len(col))
    r[order] = np.arange(1, len(col) + 1)
    for v in np.unique(col):  # ties share the mean of their ranks
      same = col == v
      r[same] = r[same].mean()
    ranks[:, j] = r
  return {n: float(ranks[i].mean()) for i, n in enumerate(names)}


def trials_to_reach(curve: np.ndarray, target: float) -> int | None:
  """The first trial (1-based) at which a mean regret curve is at or below ``target``, or None."""
  hit = np.flatnonzero(np.asarray(curve) <= target + 1e-12)
  return int(hit[0]) + 1 if hit.size else None


def worse_rate(transfer: np.ndarray, baseline: np.ndarray, trial: int,
               tolerance: float = 0.0) -> float:
  """Share of runs (task, seed) where ``transfer``'s regret at ``trial`` exceeds ``baseline``'s
  by more than ``tolerance``."""
  a = np.asarray(transfer)[:, :, trial - 1]
  b = np.asarray(baseline)[:, :, trial - 1]
  return float(np.mean(a > b + tolerance + 1e-12))


def seed_spread(regret: np.ndarray, trial: int) -> tuple[float, float]:
  """``(mean over tasks of the sd over seeds, sd over tasks of the seed mean)`` at ``trial``."""
  r = np.asarray(regret)[:, :, trial - 1]
  within = float(np.mean(r.std(axis=1, ddof=1))) if r.shape[1] > 1 else 0.0
  between = float(r.mean(axis=1).std(ddof=1)) if r.shape[0] > 1 else 0.0
  return within, between


def expected_random_best(values: np.ndarray, num_trials: int) -> np.ndarray:
  """Exact expected best of ``n = 1..num_trials`` uniform draws without replacement.

  Args:
    values: f[N] the pool's values (minimized; failures given as the worst value).
    num_trials: the largest n (at most N).

  Returns:
    f64[num_trials]: ``E[min of n draws]``, from the order statistics: with the
    values sorted, ``P(min rank >= k) = C(N - k + 1, n) / C(N, n)``.
  """
  v = np.sort(np.asarray(values, np.float64))
  n_pool = v.shape[0]
  if num_trials > n_pool:
    raise ValueError(f"{num_trials} trials exceed the pool of {n_pool} records")
  k = np.arange(1, n_pool + 1)
  out = np.empty(num_trials)
  for n in range(1, num_trials + 1):
    # log C(N - k + 1, n) - log C(N, n), zero probability where N - k + 1 < n.
    m = n_pool - k + 1
    ok = m >= n
    log_p = np.full(n_pool, -np.inf)
    log_p[ok] = (gammaln(m[ok] + 1) - gammaln(n + 1) - gammaln(m[ok] - n + 1)
                 - (gammaln(n_pool + 1) - gammaln(n + 1) - gammaln(n_pool - n + 1)))
    surv = np.exp(log_p)                       # P(min rank >= k)
    pmf = surv - np.append(surv[1:], 0.0)      # P(min rank == k)
    out[n - 1] = float(np.sum(pmf * v))
  return out


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
  """``0.123 [0.100, 0.150]``."""
  if not math.isfinite(mean):
    return "-"
  return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def checkpoints_within(checkpoints: Sequence[int], budget: int) -> list[int]:
  return [c for c in checkpoints if c <= budget]
