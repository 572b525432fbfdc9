"""Meta-training throughput: environment steps per second of whole PPO iterations, and compile time.

One iteration = ``num_envs`` studies of ``num_trials`` trials (policy forward
with masking, sampling, the task's evaluation) plus the PPO update (re-scoring
every study by teacher forcing, backward pass, Adam), all inside one `jit`.
Environment steps per second = ``num_envs * num_trials`` / seconds per
iteration, timed after the first (compiling) call, median of ``rounds``
iterations. The rollout alone (proposals per second, no update) is timed in
the same run for comparison. Runs unchanged on a GPU.

Usage:
  python experiments/bench_meta_train.py            # envs 64 and 256
  python experiments/bench_meta_train.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

from metatune.meta.ppo import MetaTrainConfig, MetaTrainer
from metatune.networks import policy as pol
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "meta_train_speed.md"
COMMAND = "python experiments/bench_meta_train.py"


def machine() -> list[str]:
  dev = jax.devices()[0]
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return [f"platform: {platform.platform()}", f"python: {platform.python_version()}",
          f"cpu count: {os.cpu_count()} (1-minute load average at the end: {load:.1f})",
          f"jax: {jax.__version__}", f"jax device: {dev} ({dev.device_kind})"]


# Settings that change the work per env step, measured beside the default with --variants:
# where an iteration's time goes (not proposals for the defaults: those are training choices).
VARIANTS = {
    "update_epochs=1": {"update_epochs": 1},
    "num_minibatches=1": {"num_minibatches": 1},
    "policy hidden=16": {"policy": pol.PolicyConfig(hidden=16)},
}


def measure(family, num_envs: int, rounds: int, num_trials: int = 20, **overrides) -> dict:
  config = MetaTrainConfig(num_envs=num_envs, num_trials=num_trials, num_updates=100,
                           **overrides)
  trainer = MetaTrainer(family, config)
  state = trainer.init()
  t = time.perf_counter()
  state, m = trainer.step(state)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  roll = jax.jit(trainer.rollout)
  t = time.perf_counter()
  jax.block_until_ready(roll(state.params, jax.random.key(1)))
  roll_compile = time.perf_counter() - t
  it_times, roll_times = [], []
  for r in range(rounds):  # interleaved: iteration, rollout, iteration, ...
    t = time.perf_counter()
    state, m = trainer.step(state)
    jax.block_until_ready(m)
    it_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    jax.block_until_ready(roll(state.params, jax.random.key(100 + r)))
    roll_times.append(time.perf_counter() - t)
  steps = num_envs * num_trials
  it_s, roll_s = statistics.median(it_times), statistics.median(roll_times)
  return {"num_envs": num_envs, "steps": steps, "compile_s": compile_s,
          "rollout_compile_s": roll_compile, "iteration_s": it_s, "rollout_s": roll_s,
          "steps_per_s": steps / it_s, "proposals_per_s": steps / roll_s}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="one small setting (smoke test)")
  ap.add_argument("--out", default=str(DEFAULT_OUT), help="markdown table to write")
  ap.add_argument("--envs", type=int, nargs="+", default=None,
                  help="studies per iteration, one row each (default 64 256)")
  ap.add_argument("--rounds", type=int, default=None, help="timed iterations per row")
  ap.add_argument("--variants", action="store_true",
                  help="also time settings that change the work per step, beside the default, "
                  "at the last --envs value")
  args = ap.parse_args(argv)
  envs, rounds = ((16,), 2) if args.quick else ((64, 256), 5)
  envs, rounds = tuple(args.envs or envs), args.rounds or rounds
  family = SyntheticFamily(default_space(), SyntheticConfig(seed=0, fail_param="lr"))
  rows = [measure(family, n, rounds) for n in envs]
  target = 5e6 if jax.devices()[0].platform == "gpu" else 5e4
  lines = [
      "# Meta-training throughput (PPO, structured policy, synthetic default family)", "",
      f"Produced by `{' '.join([COMMAND, *(sys.argv[1:] if argv is None else argv)])}` on "
      f"{datetime.date.today().isoformat()}.", "",
      "Environment steps per second of whole iterations (rollout with masking and sampling, "
      "task evaluation, PPO update: 2 epochs x 4 minibatches, re-scoring by teacher forcing), "
      f"median of {rounds} iterations after the compiling one; 20 trials per study, default "
      "policy (hidden 32), space `synthetic_mlp` (14 parameters, 2 constraints, 1 forbidden).", "",
      "| studies per iteration | env steps / iteration | iteration s | env steps/s | "
      "rollout-only proposals/s | update share | compile s (iteration) | target |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    share = 1 - r["rollout_s"] / r["iteration_s"]
    lines.append(f"| {r['num_envs']} | {r['steps']:,} | {r['iteration_s']:.3f} | "
                 f"{r['steps_per_s']:,.0f} | {r['proposals_per_s']:,.0f} | {share:.0%} | "
                 f"{r['compile_s']:.1f} | {target:,.0f} ({r['steps_per_s'] / target:.2f}x) |")
  if args.variants:
    n = envs[-1]
    base = rows[-1]
    lines += ["", f"Where the time goes ({n} studies; each setting measured in this run, after "
              f"the rows above; the default's row is the one above):", "",
              "| setting | iteration s | env steps/s | vs default | compile s |",
              "|---|---:|---:|---:|---:|",
              f"| default | {base['iteration_s']:.3f} | {base['steps_per_s']:,.0f} | 1.00x | "
              f"{base['compile_s']:.1f} |"]
    for name, overrides in VARIANTS.items():
      r = measure(family, n, rounds, **overrides)
      lines.append(f"| {name} | {r['iteration_s']:.3f} | {r['steps_per_s']:,.0f} | "
                   f"{r['steps_per_s'] / base['steps_per_s']:.2f}x | {r['compile_s']:.1f} |")
  lines += ["", "Machine:", ""] + [f"- {m}" for m in machine()]
  text = "\n".join(lines) + "\n"
  print(text)
  if not args.quick or args.out != str(DEFAULT_OUT):
    Path(args.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
