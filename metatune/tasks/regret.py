"""Normalized regret of tuners on jittable tasks, every task of a tuner in one `jit(vmap)`."""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.tuners import Points, Tuner, run_tuning

CHECKPOINTS = (10, 20, 25, 50, 100, 200)


def evaluate_tuners(family, indices: Sequence[int], tuners: Sequence[Tuner], num_trials: int,
                    seed: int = 0, reference_samples: int = 4096, reference_refine: int = 20
                    ) -> dict:
  """Runs each tuner on the tasks ``family.task_params(i)`` for ``i`` in ``indices``.

  Regret is the normalized regret of the best configuration evaluated so far,
  ``(f(best) - f*) / (median_random - f*)`` on the noise-free objective; before
  the first successful trial ``f(best)`` is the worst random value. ``f*`` is
  estimated by ``reference_samples`` random configurations refined by local
  search (`task_reference`). Every tuner gets the same run keys (a paired
  comparison).

  Args:
    family: a jittable family (``space``, ``task_params``, ``clean``, ``evaluate``, ``reference``).
    indices: task indices.
    tuners: the tuners to compare.
    num_trials: trials per task (rounds of each tuner's batch size).
    seed: seed of the reference estimates and of the runs.

  Returns:
    ``{"tuners": {name: {"regret": f32[num_tasks, num_trials], "failed": bool[...],
    "seconds": float}}, "num_tasks": ..., "num_trials": ..., "seed": ...}``.
  """
  space = family.space
  idx = jnp.asarray(np.asarray(indices, np.int32))
  tasks = jax.vmap(family.task_params)(idx)
  ref_key = jax.random.key(seed)
  opt, median, worst = jax.jit(jax.vmap(
      lambda k, t: family.reference(k, t, reference_samples, reference_refine)))(
          jax.random.split(ref_key, len(indices)), tasks)
  out: dict = {"space": space.name, "signature": space.signature, "num_tasks": len(indices),
               "num_trials": num_trials, "seed": seed, "tuners": {}}
  for tuner in tuners:
    t0 = time.perf_counter()
    steps = -(-num_trials // tuner.batch_size)

    def one(key, task, tuner=tuner, steps=steps):
      _, trace = run_tuning(key, tuner, lambda k, p: family.evaluate(k, task, p), steps)
      pts = Points(trace.points.values.reshape(-1, space.num_params)[:num_trials],
                   trace.points.active.reshape(-1, space.num_params)[:num_trials])
      clean = family.clean(task, pts)
      clean = jnp.where(jnp.isfinite(clean), clean, jnp.inf)
      return jax.lax.cummin(clean), trace.failed.reshape(-1)[:num_trials]

    keys = jax.random.split(jax.random.key(seed + 1_000_003), len(indices))
    best, failed = jax.jit(jax.vmap(one))(keys, tasks)
    best = jnp.minimum(best, worst[:, None])
    regret = (best - opt[:, None]) / (median - opt)[:, None]
    out["tuners"][tuner.name] = {"regret": np.asarray(regret), "failed": np.asarray(failed),
                                 "seconds": time.perf_counter() - t0}
  return out


def summary_rows(result: dict, checkpoints: Sequence[int] = CHECKPOINTS) -> list[dict]:
  """Per tuner: mean ± standard error over tasks of the regret at each checkpoint."""
  rows = []
  n = result["num_tasks"]
  for name, r in result["tuners"].items():
    row = {"tuner": name, "failed_trials": int(r["failed"].sum()), "seconds": r["seconds"]}
    for c in checkpoints:
      if c <= result["num_trials"]:
        vals = r["regret"][:, c - 1]
        row[f"regret@{c}"] = (float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(n))
                              if n > 1 else 0.0)
    rows.append(row)
  return rows
