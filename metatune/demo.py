"""The main job on the embedded default: meta-train a policy, then compare it on held-out tasks.

Meta-trains the structured policy with PPO on the meta-training split of the
synthetic conditional family over the embedded default space (no data
folder), then runs it, random search, quasi-random search and a coarse grid
on the held-out tasks and prints their normalized regret.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from metatune.tasks.regret import evaluate_tuners, summary_rows
from metatune.meta.config import meta_config
from metatune.meta.train import meta_train
from metatune.meta.tuner import policy_tuner
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space
from metatune.tuners import grid_search, quasi_random, random_search

DEFAULT_UPDATES = 100
DEFAULT_TRIALS = 20


def _say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def _announced(tuners: Sequence, num_tasks: int, num_trials: int, start: float,
               say: Callable[[str], None]) -> Iterator:
  """The tuners, one by one, with a line on stderr as each held-out run starts and ends.

  `evaluate_tuners` estimates every task's optimum, then runs the tuners in order, each in
  one compiled call, and takes them from this iterator as it goes; so the line before a
  tuner also closes the optimum estimate, and the line after it is said when the evaluation
  asks for the next one. (It reports nothing itself, and a jitted run cannot.)
  """
  say(f"  task optima estimated ({time.perf_counter() - start:.0f}s)")
  for i, tuner in enumerate(tuners, 1):
    say(f"  [{i}/{len(tuners)}] {tuner.name}: {num_tasks} tasks x {num_trials} trials "
        "(compiling, then one run)...")
    t = time.perf_counter()
    yield tuner
    now = time.perf_counter()
    say(f"  [{i}/{len(tuners)}] {tuner.name}: done in {now - t:.0f}s "
        f"(evaluation {now - start:.0f}s so far)")


def run(num_updates: int = DEFAULT_UPDATES, num_trials: int = DEFAULT_TRIALS, seed: int = 0,
        out: str | None = None, progress: bool = True) -> dict:
  """Meta-trains on the embedded default and evaluates on its held-out tasks.

  With ``progress``, says on stderr what it is doing: a bar for meta-training (the first
  iteration compiles, about a minute on 2 cores), then a line per step of the evaluation.
  """
  say = _say if progress else (lambda text: None)
  space = default_space()
  family = SyntheticFamily(space, SyntheticConfig(seed=seed, fail_param="lr", fail_above=0.95))
  config = meta_config(None, num_updates=num_updates, num_trials=num_trials, seed=seed)
  say(f"metatune demo: meta-training a policy with PPO on "
      f"{len(family.task_indices('meta_train'))} synthetic tasks ({num_updates} iterations of "
      f"{config.num_envs} studies x {num_trials} trials)")
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    folder = out or tmp
    meta_train(family, config, folder, progress=progress, evaluate=False,
               log=lambda s: None)
    from metatune.meta.prior import load_prior  # pylint: disable=import-outside-toplevel
    graphdef, params, pconfig, card = load_prior(folder)
  train_s = time.perf_counter() - t0
  tuners = [policy_tuner(space, graphdef, params, pconfig, num_trials, name="metatune prior"),
            random_search(space), quasi_random(space), grid_search(space, resolution=2)]
  indices = family.task_indices("heldout_dataset")
  say(f"meta-trained in {train_s:.0f}s; evaluating {len(tuners)} tuners on {len(indices)} "
      "held-out tasks: first each task's optimum (4096 random configurations refined by local "
      "search)...")
  t1 = time.perf_counter()
  result = evaluate_tuners(family, indices,
                           _announced(tuners, len(indices), num_trials, t1, say),
                           num_trials, seed=seed)
  say(f"evaluated in {time.perf_counter() - t1:.0f}s")
  result.update(train_seconds=train_s, policy_hash=card["policy_hash"], updates=num_updates,
                train_tasks=len(card["tasks_seen"]))
  return result


def main(num_updates: int = DEFAULT_UPDATES, num_trials: int = DEFAULT_TRIALS, seed: int = 0,
         out: str | None = None, as_json: bool = False) -> int:
  t0 = time.perf_counter()
  # Progress goes to stderr, so it is on with --json too: stdout keeps only the results.
  result = run(num_updates, num_trials, seed, out, progress=True)
  checkpoints = sorted({5, 10, num_trials})
  rows = summary_rows(result, checkpoints)
  if as_json:
    print(json.dumps({k: v for k, v in result.items() if k != "tuners"} | {"rows": rows},
                     indent=2, default=float))
    return 0
  cols = [k for k in rows[0] if k.startswith("regret@")]
  print(f"metatune demo: a policy meta-trained with PPO for {num_updates} iterations on "
        f"{result['train_tasks']} synthetic tasks of the embedded space '{result['space']}' "
        f"({result['signature']}) in {result['train_seconds']:.0f}s, then compared on "
        f"{result['num_tasks']} held-out tasks, {num_trials} trials each, seed {seed}")
  print("normalized regret of the best configuration so far (mean ± s.e. over held-out tasks; "
        "0 = task optimum, 1 = median random configuration)\n")
  header = f"| {'tuner':<15}| " + " | ".join(f"{c:<15}" for c in cols) + " | failed trials |"
  print(header)
  print("|" + "|".join("-" * (len(h)) for h in header.split("|")[1:-1]) + "|")
  for r in rows:
    cells = " | ".join(f"{r[c][0]:.3f} ± {r[c][1]:.3f}".ljust(15) for c in cols)
    print(f"| {r['tuner']:<15}| {cells} | {r['failed_trials']:>13} |")
  pol_r = result["tuners"]["metatune prior"]["regret"][:, -1]
  rnd_r = result["tuners"]["random"]["regret"][:, -1]
  print(f"\nprior vs random at trial {num_trials}: {np.mean(pol_r):.3f} vs {np.mean(rnd_r):.3f} "
        f"(ratio {np.mean(pol_r) / np.mean(rnd_r):.2f}; prior better on "
        f"{int(np.sum(pol_r < rnd_r))} of {len(pol_r)} tasks). Failed trials diverged (lr in the "
        f"top 5% of its log range): recorded, never the incumbent. Total "
        f"{time.perf_counter() - t0:.0f}s.")
  return 0
