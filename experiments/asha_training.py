"""Early stopping on real training: ASHA over a metatune tuner's proposals vs the full budget.

On tasks of the real training family (scikit-learn datasets, epochs as the
fidelity), for each seed a metatune tuner proposes a sequence of
configurations of the training space. Two ways of spending epochs on that same
sequence are compared:

(a) full budget: the first ``num_full`` proposals, each trained for every epoch;
    the result is the best final validation objective among them.
(b) early stopping: the proposals in the same order, each started on a free
    worker and stopped by a pruner (`metatune.study.pruners.ASHA`, rungs 1, 3,
    9 of 27 epochs with eta 3; also `SuccessiveHalving`); the result at any point
    is the best final validation objective among trials that ran all epochs.

Regret is a result minus the best final validation objective of every
configuration trained for that task (all seeds), normalized by the task's
median-minus-best. For (b) the table gives the regret after spending 40% of
(a)'s epochs, and the epochs (b) needed to match (a)'s regret, as a fraction
of (a)'s.

All proposals of a task are trained for every epoch in one vmapped call, and
the pruners' decisions are replayed on the learning curves, counting only the
epochs each trial would have run. A trial's schedule is set for the full
budget (the run a study starts and may stop early), so its curve at epoch e is
what e epochs of that run give; for constant learning rates, which do not
depend on the budget, the script checks this against separate e-epoch runs.

Usage:
  python experiments/asha_training.py            # 3 tasks x 3 seeds, 64 proposals each
  python experiments/asha_training.py --quick    # smoke run: 1 task, 2 seeds, 9 epochs

Writes ``paper/tables/asha_training.md`` (or ``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.study.pruners import ASHA, SuccessiveHalving
from metatune.tasks.training import TrainingConfig, TrainingFamily
from metatune.tasks.training import train as train_lib
from metatune.tuners.search import TUNERS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "asha_training.md"
COMMAND = "python experiments/asha_training.py"
# name -> pruner for (epochs, eta). "ASHA" is the acceptance reading (first rung at 1 epoch);
# the first-rung-3 variant (Ray Tune's grace period) is shown beside it, not used for the verdict.
PRUNERS = {
    "ASHA": lambda epochs, eta: ASHA(1, epochs, eta),
    "SuccessiveHalving": lambda epochs, eta: SuccessiveHalving(1, epochs, eta),
    "ASHA, first rung 3": lambda epochs, eta: ASHA(3, epochs, eta),
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What one run of the experiment does.

  Attributes:
    tasks: training-family task ids (``dataset/model``).
    epochs: the full budget (27 gives rungs 1, 3, 9 with eta 3).
    eta: the pruners' reduction factor.
    num_full: proposals trained with the full budget in (a).
    pool: proposals per seed available to (b) (all trained, for the replay).
    seeds: tuner seeds.
    tuner: a ``metatune.tuners.TUNERS`` name whose proposals do not depend on
      results (random, quasi_random, grid), so they can be trained up front.
    workers: parallel workers in the replay.
    budget_fraction: the share of (a)'s epochs at which (b)'s regret is read.
  """
  tasks: tuple[str, ...] = ("digits/mlp", "diabetes/mlp", "breast_cancer/mlp")
  epochs: int = 27
  eta: int = 3
  num_full: int = 16
  pool: int = 64
  seeds: tuple[int, ...] = (0, 1, 2)
  tuner: str = "quasi_random"
  workers: int = 1
  budget_fraction: float = 0.4


FULL = Settings()
QUICK = Settings(tasks=("wine/mlp",), epochs=9, num_full=4, pool=12, seeds=(0, 1))


# ------------------------------------------------------------------ training
def propose(space, tuner_name: str, seed: int, num: int) -> tuple[np.ndarray, np.ndarray]:
  """The first ``num`` proposals of the tuner seeded with ``seed``: ``f32[num, D], bool[num, D]``.

  The tuners allowed here propose without seeing results, so one ask gives the sequence.
  """
  tuner = TUNERS[tuner_name](space, batch_size=num)
  init_key, ask_key = jax.random.split(jax.random.key(seed))
  points, _ = tuner.ask(ask_key, tuner.init(init_key))
  return np.asarray(points.values), np.asarray(points.active)


def training_keys(train_seed: int, seeds: Sequence[int], pool: int) -> jax.Array:
  """One training key per proposal: ``split(fold_in(key(train_seed), seed), pool)`` per seed.

  A seed's keys do not depend on which other seeds run, so a run with more
  seeds trains the first seeds' proposals exactly as a run with fewer.
  """
  base = jax.random.key(train_seed)
  return jnp.concatenate([jax.random.split(jax.random.fold_in(base, s), pool) for s in seeds])


def train_all(setup: train_lib.TrainSetup, data, values: np.ndarray, active: np.ndarray,
              keys: jax.Array) -> dict[str, np.ndarray]:
  """Trains every configuration for ``setup.num_epochs`` epochs in one jitted vmap.

  Configuration ``i`` is trained with ``keys[i]``, so a later call can retrain
  any subset with the same keys.
  """
  batched = jax.jit(jax.vmap(train_lib.make_train(setup), in_axes=(0, 0, 0, None)))
  m = jax.device_get(batched(keys, jnp.asarray(values), jnp.asarray(active), data))
  return {"curve": np.asarray(m.curve, np.float64), "failed": np.asarray(m.failed),
          "objective": np.asarray(m.objective, np.float64),
          "test": np.asarray(m.test_objective, np.float64)}


def prefix_check(setup: train_lib.TrainSetup, data, values: np.ndarray, active: np.ndarray,
                 keys: jax.Array, curves: np.ndarray, epochs: int, limit: int = 8
                 ) -> tuple[int, float]:
  """Retrains constant-schedule configurations for ``epochs`` epochs; compares with the curves.

  Returns:
    ``(count, max |objective(epochs) - curve[epochs - 1]|)`` over the configurations checked.
  """
  configs = setup.space.decode_batch(values, active)
  constant = np.array([i for i, c in enumerate(configs) if c["schedule"] == "constant"][:limit],
                      np.int64)
  if constant.size == 0:
    return 0, math.nan
  keys = keys[jnp.asarray(constant)]
  short = dataclasses.replace(setup, num_epochs=epochs)
  batched = jax.jit(jax.vmap(train_lib.make_train(short), in_axes=(0, 0, 0, None)))
  m = jax.device_get(batched(keys, jnp.asarray(values[constant]), jnp.asarray(active[constant]),
                             data))
  diff = np.abs(np.asarray(m.objective, np.float64) - curves[constant, epochs - 1])
  return int(constant.size), float(diff.max())


# -------------------------------------------------------------------- replay
@dataclasses.dataclass
class Replay:
  """What a pruner would have done on a sequence of learning curves.

  Attributes:
    epochs: i[K] cumulative epochs after each epoch run (1, 2, ..., K).
    best: f[K] the best final objective among trials that ran every epoch (inf before one).
    reached: i[N] epochs each proposal ran (0 if never started).
    incumbent: i[K] the proposal whose final objective is ``best`` (-1 before one; the
      first to reach it on ties).
  """
  epochs: np.ndarray
  best: np.ndarray
  reached: np.ndarray
  incumbent: np.ndarray

  def best_at(self, budget: float) -> float:
    """The incumbent after at most ``budget`` epochs."""
    k = int(np.searchsorted(self.epochs, budget, side="right"))
    return float(self.best[k - 1]) if k > 0 else math.inf

  def incumbent_at(self, budget: float) -> int:
    """The incumbent's proposal index after at most ``budget`` epochs (-1 if none yet)."""
    k = int(np.searchsorted(self.epochs, budget, side="right"))
    return int(self.incumbent[k - 1]) if k > 0 else -1

  def epochs_to(self, target: float) -> float | None:
    """Epochs spent when the incumbent first reaches ``target`` (None if never)."""
    hit = np.flatnonzero(self.best <= target + 1e-12)
    return float(self.epochs[hit[0]]) if hit.size else None


def replay(pruner, curves: np.ndarray, failed: np.ndarray, workers: int = 1) -> Replay:
  """Runs the proposals in order on ``workers`` workers, one epoch per time unit.

  At each time unit every busy worker runs one epoch of its trial (workers in
  order), reports the curve's value, and asks the pruner; a free worker starts
  the next proposal. A trial that runs every epoch is completed; its final
  value counts for the incumbent unless the configuration failed.

  Args:
    pruner: has ``should_prune(trial_number, step, reports)``.
    curves: f[N, E] validation objective after each epoch.
    failed: bool[N] configurations whose training diverged (never the incumbent).
    workers: parallel workers.

  Returns:
    The `Replay`.
  """
  n, num_epochs = curves.shape
  reports: dict[int, dict[float, float]] = {}
  running: list[int | None] = [None] * workers
  reached = np.zeros(n, np.int64)
  next_trial, best, incumbent = 0, math.inf, -1
  epochs, bests, incumbents = [], [], []
  while True:
    for w in range(workers):
      if running[w] is None and next_trial < n:
        running[w] = next_trial
        reports[next_trial] = {}
        next_trial += 1
    if all(r is None for r in running):
      break
    for w in range(workers):
      i = running[w]
      if i is None:
        continue
      step = int(reached[i]) + 1
      reached[i] = step
      value = float(curves[i, step - 1])
      reports[i][float(step)] = value
      if step == num_epochs:
        if not failed[i] and value < best:
          best, incumbent = value, i
        running[w] = None
      elif pruner.should_prune(i, float(step), reports):
        running[w] = None
      epochs.append(len(epochs) + 1)
      bests.append(best)
      incumbents.append(incumbent)
  return Replay(np.asarray(epochs, np.int64), np.asarray(bests), reached,
                np.asarray(incumbents, np.int64))


# ---------------------------------------------------------------- experiment
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)  # of the full budget's epochs, for the regret curve


def run(settings: Settings, cache_dir: str | None = None) -> dict[str, Any]:
  """Trains every task's proposals and replays the pruners; returns per-run records.

  Regrets are raw (the task's objective) and normalized by the task's scale:
  the median final validation objective of its configurations minus the best
  (0 is the best configuration trained, 1 a typical one).
  """
  family = TrainingFamily(TrainingConfig(
      datasets=tuple(sorted({t.split("/")[0] for t in settings.tasks})),
      models=tuple(sorted({t.split("/")[1] for t in settings.tasks})),
      epochs=settings.epochs, cache_dir=cache_dir))
  space = family.space
  records, tasks_info, check = [], {}, None
  start = time.perf_counter()
  full_epochs = settings.num_full * settings.epochs
  fractions = sorted(set(FRACTIONS) | {settings.budget_fraction})
  for t_index, task_id in enumerate(settings.tasks):
    setup, data = family.setup(task_id)
    per_seed = [propose(space, settings.tuner, s, settings.pool) for s in settings.seeds]
    values = np.concatenate([v for v, _ in per_seed])
    active = np.concatenate([a for _, a in per_seed])
    keys = training_keys(1000 + t_index, settings.seeds, settings.pool)
    t0 = time.perf_counter()
    out = train_all(setup, data, values, active, jax.random.clone(keys))  # reused below
    seconds = time.perf_counter() - t0
    final = np.where(out["failed"], np.inf, out["curve"][:, -1])
    reference = float(final.min())
    scale = float(np.median(final[np.isfinite(final)])) - reference
    scale = scale if scale > 0 else 1.0
    # What reports show: the test objective of the configuration validation selected.
    test = np.where(out["failed"], np.inf, out["test"])
    test_reference = float(test.min())
    test_scale = float(np.median(test[np.isfinite(test)])) - test_reference
    test_scale = test_scale if test_scale > 0 else 1.0
    tasks_info[task_id] = {"seconds": seconds, "reference": reference, "scale": scale,
                           "test_reference": test_reference, "test_scale": test_scale,
                           "num_failed": int(out["failed"].sum()), "num": values.shape[0],
                           "steps_per_epoch": setup.steps_per_epoch, "kind": setup.kind,
                           "num_valid": int(data.x_valid.shape[0])}
    if check is None:
      rungs = ASHA(1, settings.epochs, settings.eta).rungs
      e = int(rungs[1]) if len(rungs) > 1 else int(rungs[0])
      check = (task_id, e) + prefix_check(setup, data, values, active, keys,
                                          out["curve"], e)
    for s_index, seed in enumerate(settings.seeds):
      rows = slice(s_index * settings.pool, (s_index + 1) * settings.pool)
      curves, failed, seed_test = out["curve"][rows], out["failed"][rows], test[rows]
      full_final = np.where(failed, np.inf, curves[:, -1])[:settings.num_full]
      full_best = float(np.min(full_final))
      rec = {"task": task_id, "seed": seed, "full_epochs": full_epochs, "scale": scale,
             "full_regret": full_best - reference, "test_scale": test_scale,
             "full_test_regret": float(seed_test[int(np.argmin(full_final))]) - test_reference,
             "pruners": {}}
      for name, make in PRUNERS.items():
        rep = replay(make(settings.epochs, settings.eta), curves, failed, settings.workers)
        to = rep.epochs_to(full_best)
        budget = settings.budget_fraction * full_epochs
        inc = rep.incumbent_at(budget)
        rec["pruners"][name] = {
            "test_regret": (float(seed_test[inc]) - test_reference) if inc >= 0 else math.inf,
            "regret_at": {f: rep.best_at(f * full_epochs) - reference for f in fractions},
            "fraction_to_match": None if to is None else to / full_epochs,
            "pool_fraction": float(rep.epochs[-1]) / full_epochs,
            "started_by_budget": int(np.sum(_started_by(rep, budget))),
        }
      records.append(rec)
  return {"settings": settings, "records": records, "tasks": tasks_info, "check": check,
          "seconds": time.perf_counter() - start}


def _started_by(rep: Replay, budget: float) -> np.ndarray:
  """Which proposals had started before ``budget`` epochs were spent (one worker: in order)."""
  spent = np.cumsum(rep.reached)
  return (spent - rep.reached) < budget


# -------------------------------------------------------------------- report
def mean_se(x: Sequence[float]) -> tuple[float, float]:
  x = np.asarray(x, np.float64)
  if x.size == 0 or not np.all(np.isfinite(x)):
    return math.nan, math.nan
  return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


def _ms(pair: tuple[float, float], digits: int = 3) -> str:
  return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def summary(records: list[dict], name: str, fraction: float) -> dict[str, Any]:
  """Normalized regrets over runs, runs no worse / matched, and the fraction of epochs to match."""
  full = [r["full_regret"] / r["scale"] for r in records]
  at = [r["pruners"][name]["regret_at"][fraction] / r["scale"] for r in records]
  fr = [r["pruners"][name]["fraction_to_match"] for r in records]
  matched = [f for f in fr if f is not None]
  lower = [f if f is not None else r["pruners"][name]["pool_fraction"]
           for f, r in zip(fr, records)]
  return {"full": mean_se(full), "at": mean_se(at), "num": len(records),
          "no_worse": sum(a <= f + 1e-12 for a, f in zip(at, full)),
          "matched": len(matched), "fraction": mean_se(matched),
          "median_fraction": float(np.median(matched)) if matched else math.nan,
          "fraction_lower": mean_se(lower),
          "ran_out": sum(r["pruners"][name]["pool_fraction"] < fraction for r in records)}


def summary_on_test(records: list[dict], name: str) -> dict[str, Any]:
  """Normalized test regrets of the incumbents (full budget; ``name`` at the budget fraction)."""
  full = [r["full_test_regret"] / r["test_scale"] for r in records]
  at = [r["pruners"][name]["test_regret"] / r["test_scale"] for r in records]
  return {"full": mean_se(full), "at": mean_se(at), "num": len(records),
          "no_worse": sum(a <= f + 1e-12 for a, f in zip(at, full)),
          "diff": mean_se([a - f for a, f in zip(at, full)])}


def machine() -> list[str]:
  dev = jax.devices()[0]
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
  return [f"platform: {platform.platform()}", f"python: {platform.python_version()}",
          f"cpu count: {os.cpu_count()} (1-minute load average at the end: {load:.1f})",
          f"jax: {jax.__version__}", f"jax device: {dev} ({dev.platform})"]


def render(res: dict[str, Any], command: str) -> str:
  st: Settings = res["settings"]
  bf = st.budget_fraction
  pct = f"{bf:.0%}"
  rungs = ", ".join(f"{r:g}" for r in ASHA(1, st.epochs, st.eta).rungs)
  full_epochs = st.num_full * st.epochs
  lines = [
      "# Early stopping on real training: ASHA vs the full budget", "",
      f"Produced by `{command}` on {datetime.date.today().isoformat()} in "
      f"{res['seconds']:.0f} s.", "",
      f"Tasks {', '.join(f'`{t}`' for t in st.tasks)} of the training family, {st.epochs} "
      f"epochs. For each of {len(st.seeds)} seeds the `{st.tuner}` tuner proposes "
      f"{st.pool} configurations of `metatune/tasks/spaces/training.yaml`. **Full budget**: "
      f"the first {st.num_full} trained for all {st.epochs} epochs ({full_epochs} epochs). "
      f"**Early stopping**: the same proposals in the same order, stopped by the pruner "
      f"(rungs at {rungs} epochs, eta {st.eta}), {st.workers} worker"
      f"{'s' if st.workers > 1 else ''}. Normalized regret = (best final validation "
      f"objective found - best of all {len(st.seeds) * st.pool} configurations trained for "
      f"the task) / (their median - their best): 0 is the best configuration trained, 1 a "
      f"typical one. Mean ± standard error over runs (task x seed).", "",
      f"| task | pruner | runs | full-budget regret | regret at {pct} of the epochs | runs no "
      f"worse at {pct} | runs matching the full-budget regret | epochs to match (fraction of "
      f"full) | pool ran out before {pct} |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  groups = [(t, [r for r in res["records"] if r["task"] == t]) for t in st.tasks]
  groups.append(("all", res["records"]))
  for task, recs in groups:
    for name in PRUNERS:
      s = summary(recs, name, bf)
      frac = (f"{_ms(s['fraction'], 2)} (median {s['median_fraction']:.2f})"
              if s["matched"] else "n/a")
      label = f"**{task}**" if task == "all" else f"`{task}`"
      lines.append(f"| {label} | {name} | {s['num']} | {_ms(s['full'])} | {_ms(s['at'])} | "
                   f"{s['no_worse']} of {s['num']} | {s['matched']} of {s['num']} | {frac} | "
                   f"{s['ran_out']} |")
  allv = summary(res["records"], "ASHA", bf)
  verdict = "met" if allv["at"][0] <= allv["full"][0] else "missed"
  lines += [
      "", f"Acceptance (ASHA reaches the regret of the full budget with at most {pct} of its "
      f"epochs), read as: mean normalized regret of ASHA after {pct} of the epochs <= that of "
      f"the full budget, over all runs: **{verdict}** ({_ms(allv['at'])} vs "
      f"{_ms(allv['full'])}; {allv['no_worse']} of {allv['num']} runs no worse). Mean "
      f"fraction of epochs to match, counting an unmatched run at the epochs it spent before "
      f"its proposals ran out (a lower bound): {_ms(allv['fraction_lower'], 2)}.", "",
      f"ASHA's mean normalized regret (all runs) by the share of the full budget's epochs "
      f"spent; the full budget's is {_ms(allv['full'])}:", "",
      "| share of epochs | " + " | ".join(f"{f:.0%}" for f in sorted(
          res["records"][0]["pruners"]["ASHA"]["regret_at"])) + " |",
      "|---|" + "---:|" * len(res["records"][0]["pruners"]["ASHA"]["regret_at"])]
  row_regret, row_out = [], []
  for f in sorted(res["records"][0]["pruners"]["ASHA"]["regret_at"]):
    unfinished = sum(math.isinf(r["pruners"]["ASHA"]["regret_at"][f]) for r in res["records"])
    s = summary(res["records"], "ASHA", f) if not unfinished else None
    row_regret.append(_ms(s["at"]) if s else f"none finished yet in {unfinished} runs")
    row_out.append(str(summary(res["records"], "ASHA", f)["ran_out"]))
  lines += ["| ASHA regret | " + " | ".join(row_regret) + " |",
            "| runs whose proposals ran out before | " + " | ".join(row_out) + " |"]
  lines += [
      "", "What reports show: the **test** objective of the configuration each side selected "
      "(by validation, as above), normalized like the validation regret by the task's test "
      "objectives of all its configurations. A secondary reading, added after the "
      "validation verdict above was declared and measured; the verdict stays on that "
      "reading.", "",
      f"| pruner | runs | full-budget test regret | test regret at {pct} | runs no worse | "
      f"paired difference |", "|---|---:|---:|---:|---:|---:|"]
  for name in PRUNERS:
    t = summary_on_test(res["records"], name)
    lines.append(f"| {name} | {t['num']} | {_ms(t['full'])} | {_ms(t['at'])} | "
                 f"{t['no_worse']} of {t['num']} | {_ms(t['diff'])} |")
  lines += [
      "", "Per run (ASHA), raw regret in the task's objective (classification error as a "
      "fraction, or MSE of standardized targets):", "",
      f"| task | seed | full budget | ASHA at {pct} | fraction to match | proposals started by "
      f"{pct} | fraction the {st.pool} proposals last |",
      "|---|---:|---:|---:|---:|---:|---:|"]
  for r in res["records"]:
    a = r["pruners"]["ASHA"]
    frac = "not matched" if a["fraction_to_match"] is None else f"{a['fraction_to_match']:.2f}"
    lines.append(f"| `{r['task']}` | {r['seed']} | {r['full_regret']:.4f} | "
                 f"{a['regret_at'][bf]:.4f} | {frac} | {a['started_by_budget']} | "
                 f"{a['pool_fraction']:.2f} |")
  task_notes = "; ".join(
      f"`{t}`: {i['num']} configurations, {i['steps_per_epoch']} steps per epoch, "
      f"{i['num_valid']} validation examples, best final validation "
      f"{'error' if i['kind'] == 'classification' else 'MSE'} {i['reference']:.4f}, "
      f"normalizing scale {i['scale']:.4f} (test: best {i['test_reference']:.4f}, scale "
      f"{i['test_scale']:.4f}), {i['num_failed']} diverged, trained in "
      f"{i['seconds']:.0f} s" for t, i in res["tasks"].items())
  task_id, e, count, diff = res["check"]
  check = (f"checked on `{task_id}`: {count} constant-schedule configurations retrained for "
           f"{e} epochs match their {st.epochs}-epoch curves at epoch {e} to within "
           f"{diff:.2g}" if count else "no constant-schedule configuration to check")
  lines += [
      "", "Notes:", "",
      "- Replay on learning curves (standard for tabular benchmarks): all proposals of a task "
      "are trained for every epoch in one vmapped call, and each pruner's decisions are "
      "replayed on the curves, counting only the epochs a trial would have run before it was "
      "stopped. Full budget and early stopping see the same configurations, the same training "
      "keys and the same curves (a paired comparison).",
      "- Schedules: cosine (with its warmup) and exponential learning-rate schedules depend on "
      "the total number of steps. A trial is the run of the full budget, schedule included, "
      "that the pruner may stop; its curve at epoch e is exactly what e epochs of that run "
      "give (training is a sequential scan with per-step keys). For constant schedules, which "
      "do not depend on the budget, this is also what a separate e-epoch run gives: " + check +
      ".",
      "- Incumbent of early stopping: the best final validation objective among trials that "
      "ran all epochs; a stopped trial never counts, nor does a diverged one. Every trial "
      "reports after each epoch and is judged at the rungs only.",
      "- `ASHA`: a trial continues at a rung only if its value is among the best 1/eta of the "
      "values recorded at that rung so far (Li et al., 2020). `SuccessiveHalving`: the "
      "synchronous promotion quota (the whole cohort / eta^(k+1)) on the reports available. "
      "`ASHA, first rung 3`: ASHA with its first rung at 3 epochs (a grace period, as Ray "
      "Tune calls it), shown for the sensitivity to the first rung; the acceptance reading "
      "uses `ASHA` (first rung 1 epoch), as declared before this variant was run.",
      f"- Epochs to match: epochs early stopping had spent when its incumbent first reached "
      f"the full-budget regret of the same run, over the full budget's {full_epochs} epochs. "
      f"A run is unmatched when its {st.pool} proposals ran out first; where they ran out "
      f"before a share of the budget, the regret shown at that share is the regret when they "
      f"ran out (early stopping could have spent more on further proposals).",
      "- Ties: validation splits are small (below), so many configurations share the best "
      "error and a regret of exactly 0 is common on the classification tasks.",
      "- " + task_notes + ".",
      "", "Machine:", ""] + [f"- {x}" for x in machine()]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smoke run: 1 task, 2 seeds, 9 epochs")
  parser.add_argument("--tuner", default=None, choices=("random", "quasi_random"),
                      help="proposal tuner (default quasi_random)")
  parser.add_argument("--workers", type=int, default=None, help="replay workers (default 1)")
  parser.add_argument("--seeds", type=int, default=None,
                      help="tuner seeds 0..N-1 (default 3; 2 with --quick)")
  parser.add_argument("--cache-dir", default=None, help="prepared-dataset cache "
                      "(default $METATUNE_CACHE_DIR or ~/.cache/metatune/tfds)")
  parser.add_argument("--out", default=str(DEFAULT_OUT))
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  if args.tuner:
    settings = dataclasses.replace(settings, tuner=args.tuner)
  if args.workers is not None:
    if args.workers < 1:
      parser.error(f"--workers must be >= 1, got {args.workers}")
    settings = dataclasses.replace(settings, workers=args.workers)
  if args.seeds is not None:
    if args.seeds < 1:
      parser.error(f"--seeds must be >= 1, got {args.seeds}")
    settings = dataclasses.replace(settings, seeds=tuple(range(args.seeds)))
  res = run(settings, args.cache_dir)
  flags = [f for f, on in (("--quick", args.quick), (f"--tuner {args.tuner}", args.tuner),
                           (f"--workers {args.workers}", args.workers is not None),
                           (f"--seeds {args.seeds}", args.seeds is not None)) if on]
  text = render(res, " ".join([COMMAND] + flags))
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text, encoding="utf-8")
  print(text)
  return res


if __name__ == "__main__":
  main(sys.argv[1:])
