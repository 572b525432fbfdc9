"""Surrogate environment throughput: evaluations per second at batch 4096, beside the real tasks.

Times, after compilation, the median of ``--repeats`` jitted calls of:

- `SurrogateFamily.clean` on one episode, 4096 configurations;
- `SurrogateFamily.evaluate` vmapped over 64 episodes x 64 configurations
  (how meta-training calls it);
- `surrogate.predict` with the context encoding included (32 observations);
- for comparison, the synthetic family and (with a data folder) the YAHPO
  rbv2_xgboost network on the same batch.

The surrogate is read from ``--surrogate DIR`` (a folder from ``metatune
surrogate train`` or ``experiments/surrogate_eval.py``); without one, an
untrained surrogate of the same architecture on the embedded default space
(speed does not depend on the weights). Runs unchanged on CPU or GPU; nothing
on this path imports TensorFlow or tensorflow-datasets.

Usage:
  python experiments/bench_surrogate.py [--surrogate DIR] [--data-dir DIR] [--out FILE]
  python experiments/bench_surrogate.py --quick   # smoke run: batch 256, 2 repeats
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
from typing import Callable, Sequence

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from metatune import surrogate as sg  # noqa: E402
from metatune.space import sampling  # noqa: E402
from metatune.tasks import SyntheticFamily, default_space  # noqa: E402
from metatune.tuners.base import Points  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python experiments/bench_surrogate.py"


def timed(fn: Callable, args: tuple, repeats: int) -> tuple[float, float]:
  """(compile + first call seconds, median seconds of ``repeats`` later calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def setup(args):
  """The surrogate, its contexts and a description."""
  if args.surrogate:
    surrogate = sg.load_surrogate(args.surrogate)
    try:
      contexts = sg.load_contexts(args.surrogate)
    except ValueError:
      contexts = None
    what = f"trained surrogate `{args.surrogate}` ({surrogate.info.get('family', '?')})"
  else:
    space = default_space()
    tc = sg.TrainConfig()
    borders = tuple(float(b) for b in jnp.linspace(-3, 3, tc.num_bins + 1))
    config = sg.SurrogateConfig(num_features=sampling.feature_size(space), borders=borders,
                                width=tc.width, depth=tc.depth, num_heads=tc.num_heads)
    surrogate = sg.init_surrogate(jax.random.key(0), space, config)
    contexts = None
    what = ("untrained surrogate of the default architecture on the embedded default space "
            "(speed does not depend on the weights)")
  space = surrogate.space
  if contexts is None:
    u, a = jax.jit(lambda k: sampling.sample(k, space, 4 * 64))(jax.random.key(1))
    y = jnp.sum(u, axis=-1)
    contexts = sg.make_table(u.reshape(4, 64, -1), a.reshape(4, 64, -1), y.reshape(4, 64),
                             jnp.zeros((4, 64), bool), [f"c{i}" for i in range(4)])
  return surrogate, contexts, what


def main(argv: Sequence[str] | None = None) -> dict:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--surrogate", default=None, help="a surrogate folder")
  parser.add_argument("--data-dir", default=os.environ.get("METATUNE_DATA_DIR"),
                      help="data folder for the YAHPO comparison (optional)")
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", type=Path, default=REPO / "paper" / "tables" /
                      "surrogate_speed.md")
  args = parser.parse_args(argv)
  if args.quick:
    args.batch, args.repeats = 256, 2
  surrogate, contexts, what = setup(args)
  space = surrogate.space
  b = args.batch
  env = sg.SurrogateFamily(space, surrogate, contexts, sg.EnvConfig(num_context=32))
  u, a = jax.jit(lambda k: sampling.sample(k, space, b))(jax.random.key(2))
  points = Points(u, a)
  task = jax.jit(env.sample)(jax.random.key(3))
  episodes = 64 if b % 64 == 0 else 1
  per = b // episodes
  tasks = jax.jit(jax.vmap(env.sample))(jax.random.split(jax.random.key(4), episodes))
  grouped = Points(u.reshape(episodes, per, -1), a.reshape(episodes, per, -1))
  # Timing repeats a call with the same key on purpose: pass raw key data, wrap inside.
  eval_keys = jax.random.key_data(jax.random.split(jax.random.key(5), episodes))
  wrap = jax.random.wrap_key_data
  ctx_u, ctx_a = contexts.values[0, :32], contexts.active[0, :32]
  ctx_y, ctx_f = contexts.objective[0, :32], contexts.failed[0, :32]

  rows = []

  def add(name, fn, fn_args, note=""):
    first, median = timed(jax.jit(fn), fn_args, args.repeats)
    rows.append((name, first, median, b / median, note))
    print(f"{name}: {b / median:,.0f} evaluations/s (first call {first:.2f} s)", flush=True)

  add("surrogate env: `clean`, 1 episode", env.clean, (task, points))
  add(f"surrogate env: `evaluate`, vmap over {episodes} episodes x {per}",
      lambda k, t, p: jax.vmap(env.evaluate)(wrap(k), t, p), (eval_keys, tasks, grouped))
  add("`predict` with context encoding (32 observations)",
      lambda cu, ca, cy, cf, p: sg.predict(surrogate, Points(cu, ca), cy, cf, p).mean(),
      (ctx_u, ctx_a, ctx_y, ctx_f, points))
  if space.signature == default_space().signature:
    syn = SyntheticFamily(space)
    syn_task = syn.sample(jax.random.key(6))
    add("synthetic family `evaluate` (analytic)",
        lambda k, t, p: syn.evaluate(wrap(k), t, p),
        (jax.random.key_data(jax.random.key(7)), syn_task, points))
  yahpo_note = "no data folder"
  if args.data_dir:
    try:
      from metatune.tasks import yahpo  # pylint: disable=import-outside-toplevel
      fam = yahpo.YahpoFamily(yahpo.YahpoConfig("rbv2_xgboost"), args.data_dir)
      if fam.space.signature == space.signature:
        code = jnp.asarray(fam.instance_code(fam.splits()["heldout_dataset"][0]), jnp.int32)
        add("YAHPO rbv2_xgboost network (the real task)",
            lambda k, p, c: fam.metrics(wrap(k), p, c).objective,
            (jax.random.key_data(jax.random.key(8)), points, code))
        yahpo_note = ""
      else:
        yahpo_note = "the surrogate's space is not rbv2_xgboost's"
    except (OSError, ValueError) as e:
      yahpo_note = f"YAHPO not available: {e}"

  device = jax.devices()[0]
  base = rows[0][3]
  lines = [
      "# Surrogate environment throughput",
      "",
      f"Produced by `{' '.join([COMMAND, *argv])}` on {datetime.date.today().isoformat()}.",
      "",
      f"Device: {device.platform} ({device.device_kind}); {platform.machine()}, "
      f"{os.cpu_count()} CPU cores (shared with other jobs; 1-minute load average at the "
      f"end {os.getloadavg()[0]:.1f}); jax {jax.__version__}. Batch {b} configurations "
      f"of `{space.name}` ({space.num_params} parameters, {sampling.feature_size(space)} "
      f"features); median of {args.repeats} calls after the first (compile) call.",
      "",
      f"Surrogate: {what}; width {surrogate.config.width}, depth {surrogate.config.depth}, "
      f"{surrogate.config.num_bins} bins; episodes condition on 32 observations.",
      "",
      "| what | first call (s) | median call (s) | evaluations/s | ratio vs env `clean` |",
      "|---|---:|---:|---:|---:|",
  ]
  for name, first, median, rate, _ in rows:
    lines.append(f"| {name} | {first:.2f} | {median:.4f} | {rate:,.0f} | {rate / base:.2f}x |")
  lines += ["", "Notes:", "",
            "- `clean` and `evaluate` reuse each episode's context encoding (computed once in "
            "`sample`); `predict` encodes the context in every call."]
  if yahpo_note:
    lines.append(f"- YAHPO comparison skipped: {yahpo_note}.")
  text = "\n".join(lines) + "\n"
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(text)
  print(text)
  return {"rows": rows, "text": text}


if __name__ == "__main__":
  main()
