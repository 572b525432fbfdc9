"""Where a meta-training iteration spends its time: a device trace of a few PPO iterations.

Runs `jax.profiler.trace` around ``--iterations`` iterations (after the
compiling one) and prints the device ops (GPU kernels, or XLA ops on the CPU)
that took the most time, summed, with their share of the traced device time.
Written for the GPU check (`experiments/gpu_checks.sh` runs it when asked); it
runs anywhere.

Usage:
  python experiments/profile_meta_train.py --envs 16384 --out /tmp/profile.md
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

import jax

from metatune.meta.ppo import MetaTrainConfig, MetaTrainer
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space


def device_ops(trace_dir: str) -> tuple[collections.Counter, collections.Counter, float, list]:
  """Summed duration (us) and count of each device op, the total, and the processes read."""
  files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  if not files:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
  doc = json.load(gzip.open(files[0]))
  events = doc["traceEvents"] if isinstance(doc, dict) else doc
  names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu = {pid for pid, n in names.items() if "GPU" in n or "gpu" in n}
  dur: collections.Counter = collections.Counter()
  count: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") != "X" or "dur" not in e:
      continue
    if gpu and e["pid"] not in gpu:
      continue
    args = e.get("args", {})
    key = args.get("hlo_op") or args.get("long_name") or e.get("name", "?")
    dur[key[:90]] += float(e["dur"])
    count[key[:90]] += 1
  kept = sorted(names[p] for p in (gpu or names))
  return dur, count, float(sum(dur.values())), kept


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--envs", type=int, default=256)
  ap.add_argument("--iterations", type=int, default=3)
  ap.add_argument("--top", type=int, default=25)
  ap.add_argument("--out", default=None, help="markdown file to write")
  args = ap.parse_args(argv)
  family = SyntheticFamily(default_space(), SyntheticConfig(seed=0, fail_param="lr"))
  trainer = MetaTrainer(family, MetaTrainConfig(num_envs=args.envs, num_trials=20,
                                                num_updates=100))
  state = trainer.init()
  state, m = trainer.step(state)
  jax.block_until_ready(m)
  trace_dir = tempfile.mkdtemp(prefix="mt-trace-")
  t = time.perf_counter()
  with jax.profiler.trace(trace_dir):
    for _ in range(args.iterations):
      state, m = trainer.step(state)
      jax.block_until_ready(m)
  wall = time.perf_counter() - t
  dur, count, total, kept = device_ops(trace_dir)
  dev = jax.devices()[0]
  lines = [f"# Meta-training iteration profile ({dev.device_kind}, {args.envs} studies)", "",
           f"`python experiments/profile_meta_train.py --envs {args.envs}`: {args.iterations} "
           f"iterations traced, {wall:.3f} s wall (with tracing), device ops {total / 1e6:.3f} s "
           f"summed over {sum(count.values()):,} op executions (trace processes read: "
           f"{', '.join(kept) or '?'}; on a CPU the host's Python frames count too).", "",
           "| op | executions | total ms | share |", "|---|---:|---:|---:|"]
  for name, d in dur.most_common(args.top):
    lines.append(f"| `{name}` | {count[name]:,} | {d / 1e3:.1f} | {d / max(total, 1):.1%} |")
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as fh:
      fh.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
