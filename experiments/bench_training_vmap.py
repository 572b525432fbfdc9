"""Training a batch of configurations: one vmapped call vs a loop of single jitted trainings.

Both sides run the same pure function, ``train.make_train(setup)`` of the
``digits/mlp`` task of the training family: the vmapped side is one
``jax.jit(jax.vmap(train))`` call on all configurations (what
``task.evaluate`` does), the loop side is ``jax.jit(train)`` compiled once and
called once per configuration from Python, with the same keys, so both compute
the same numbers (checked) with the same number of steps. Rounds are
interleaved (vmap, loop, loop, vmap, ...) so that noise from other work on the
machine hits both sides.

Besides the default family (the padded network is as large as the space's
largest: 4 layers of 128 units, batches of 128), the same comparison runs on
copies of the space whose widths and batch sizes stop at 64 and at 32, to show
how the gain depends on the work per configuration.

Usage:
  python experiments/bench_training_vmap.py            # 256 configurations, 2 epochs
  python experiments/bench_training_vmap.py --quick    # smoke test
  python experiments/bench_training_vmap.py --out /tmp/table.md
  # MNIST-scale MLPs (the GPU check; needs the data folder):
  python experiments/bench_training_vmap.py --task mnist/mlp --data-dir ../shared/data \
      --sizes 128 --vmap-only 1024

Writes a markdown table to ``paper/tables/training_vmap.md`` (or ``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from metatune.space import Space, io, sample
from metatune.tasks.training import TrainingConfig, TrainingFamily, default_space, make_train

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "training_vmap.md"
COMMAND = "python experiments/bench_training_vmap.py"
TASK = "digits/mlp"


@dataclasses.dataclass(frozen=True)
class Settings:
  num_configs: int = 256
  epochs: int = 2
  rounds: int = 3
  sizes: tuple[int, ...] = (128, 64, 32)  # largest width and batch size of each space


FULL = Settings()
QUICK = Settings(num_configs=16, epochs=1, rounds=1, sizes=(32,))


def capped_space(space: Space, cap: int) -> Space:
  """A copy of the training space whose widths and batch sizes stop at ``cap``."""
  doc = io.to_dict(space)
  for name, p in doc["parameters"].items():
    if name.startswith("width."):
      p["high"] = min(p["high"], cap)
      p["low"] = min(p["low"], cap // 2)
      p["default"] = min(p["default"], p["high"])
    elif name == "batch_size":
      p["values"] = [v for v in p["values"] if v <= cap]
      p["default"] = min(p["default"], p["values"][-1])
  doc["name"] = f"{space.name}-cap{cap}"
  return io.loads(json.dumps(doc), f"{space.name} capped at {cap}")


def machine() -> list[str]:
  dev = jax.devices()[0]
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return [f"platform: {platform.platform()}", f"python: {platform.python_version()}",
          f"cpu count: {os.cpu_count()} (1-minute load average at the end: {load:.1f})",
          f"jax: {jax.__version__}", f"jax device: {dev} ({dev.platform})"]


def measure(cap: int, settings: Settings, cache_dir: str | None, seed: int = 0,
            task: str = TASK, data_dir: str | None = None, loop: bool = True) -> dict[str, Any]:
  """Times the vmapped call and (``loop``) the loop on one space, interleaved."""
  space = default_space()
  if cap < max(space.params[space.index["batch_size"]].choices):
    space = capped_space(space, cap)
  dataset, _, model = task.partition("/")
  family = TrainingFamily(TrainingConfig(datasets=(dataset,), models=(model,),
                                         epochs=settings.epochs, cache_dir=cache_dir),
                          data_dir=data_dir, space=space)
  setup, data = family.setup(task)
  sample_key, run_key = jax.random.split(jax.random.key(seed))
  values, active = jax.device_get(sample(sample_key, family.space, settings.num_configs))
  # Raw key data, wrapped inside each call: every round deliberately repeats the same keys.
  keys = jax.random.key_data(jax.random.split(run_key, settings.num_configs))
  train = make_train(setup)

  def train_raw(key_data, values, active, data):
    return train(jax.random.wrap_key_data(key_data), values, active, data)

  batched = jax.jit(jax.vmap(train_raw, in_axes=(0, 0, 0, None)))
  single = jax.jit(train_raw)

  def run_vmap():
    return jax.block_until_ready(batched(keys, values, active, data))

  def run_loop():
    out = [single(keys[i], values[i], active[i], data) for i in range(len(values))]
    return jax.block_until_ready(out)

  t = time.perf_counter()
  ref = run_vmap()
  compile_vmap = time.perf_counter() - t
  steps = setup.total_steps
  if not loop:
    times = []
    for _ in range(settings.rounds):
      t = time.perf_counter()
      run_vmap()
      times.append(time.perf_counter() - t)
    return {"cap": cap, "setup": setup, "num_configs": settings.num_configs, "steps": steps,
            "compile_vmap": compile_vmap, "vmap_s": statistics.median(times),
            "failed": int(np.sum(np.asarray(ref.failed)))}
  t = time.perf_counter()
  jax.block_until_ready(single(keys[0], values[0], active[0], data))
  compile_single = time.perf_counter() - t
  times: dict[str, list[float]] = {"vmap": [], "loop": []}
  loop_out = None
  for r in range(settings.rounds):
    order = ("vmap", "loop") if r % 2 == 0 else ("loop", "vmap")
    for side in order:
      t = time.perf_counter()
      out = run_vmap() if side == "vmap" else run_loop()
      times[side].append(time.perf_counter() - t)
      if side == "loop":
        loop_out = out
  loop_obj = np.array([float(m.objective) for m in loop_out])
  diff = np.abs(np.asarray(ref.objective) - loop_obj)
  return {
      "cap": cap, "setup": setup, "num_configs": settings.num_configs, "times": times,
      "compile_vmap": compile_vmap,
      "compile_single": compile_single, "steps": steps,
      "vmap_s": statistics.median(times["vmap"]), "loop_s": statistics.median(times["loop"]),
      "max_diff": float(diff.max()), "num_differ": int(np.sum(diff > 1e-6)),
      "failed": int(np.sum(np.asarray(ref.failed))),
  }


def render(results: list[dict[str, Any]], settings: Settings, command: str,
           task: str = TASK) -> str:
  dataset = task.partition("/")[0]
  where = "scikit-learn digits" if dataset == "digits" else f"`{dataset}` from the data folder"
  lines = [
      "# Training a batch of configurations: one vmapped call vs a loop of jitted trainings", "",
      f"Produced by `{command}` on {datetime.date.today().isoformat()}.", "",
      f"Task `{task}` of the training family ({where}), configurations sampled from the "
      f"space, {settings.epochs} epochs of {results[0]['setup'].steps_per_epoch} steps each "
      f"(the same steps on both sides), median of {settings.rounds} interleaved rounds. "
      "Model-steps = configurations x optimizer steps.", "",
      "| padded network (max width, max batch) | configurations | method | seconds | "
      "model-steps/s | ratio vs loop |", "|---|---:|---|---:|---:|---:|"]
  for res in results:
    n = res["num_configs"]
    label = f"{res['cap']} units x 4 layers, batch {res['cap']}" + (
        " (default family)" if res["cap"] == 128 and dataset == "digits" else "")
    model_steps = n * res["steps"]
    if "loop_s" not in res:
      lines.append(f"| {label} | {n} | one `jit(vmap(train))` call (no loop run) | "
                   f"{res['vmap_s']:.3f} | {model_steps / res['vmap_s']:,.0f} | |")
      continue
    lines.append(f"| {label} | {n} | one `jit(vmap(train))` call | {res['vmap_s']:.3f} | "
                 f"{model_steps / res['vmap_s']:,.0f} | {res['loop_s'] / res['vmap_s']:.2f}x |")
    lines.append(f"| | {n} | loop of `jit(train)` | {res['loop_s']:.3f} | "
                 f"{model_steps / res['loop_s']:,.0f} | 1x |")
  lines += ["", "Notes:", ""]
  for res in results:
    if "loop_s" not in res:
      lines.append(f"- {res['num_configs']} configurations, vmapped only: compile + first call "
                   f"{res['compile_vmap']:.1f} s; {res['failed']} diverged.")
      continue
    rounds = ", ".join(f"{v:.2f}/{l:.2f}" for v, l in zip(res["times"]["vmap"],
                                                            res["times"]["loop"]))
    lines.append(f"- max {res['cap']}: compile + first call {res['compile_vmap']:.1f} s "
                 f"(vmapped), {res['compile_single']:.1f} s (single); per round vmap/loop "
                 f"seconds: {rounds}; objectives of the two sides differ by at most "
                 f"{res['max_diff']:.2g} ({res['num_differ']} of {res['num_configs']} differ by more "
                 "than 1e-6); "
                 f"{res['failed']} diverged.")
  lines += [
      "- Both sides run the padded network: every configuration costs as much as the largest "
      "one (the price of compiling once for all architectures). Without padding, a loop "
      "would retrace and recompile for every new architecture, at about the single-call "
      "compile time above per configuration.",
      "- Where the two sides differ, the cause is float reassociation: the batched backward "
      "matmuls sum in another order (on the 2-core CPU, gradients agreed to about 3e-7 "
      "relative and forward passes were bitwise equal), which unstable configurations (learning rates of 0.1 to 1) "
      "amplify over the steps into different accuracies.",
  ]
  if jax.devices()[0].platform == "cpu":
    lines += [
      "- On this CPU a single configuration's padded step (up to 4 matmuls of 128 x 128 on a "
      "batch of 128, and elementwise passes over its parameters) already keeps the cores "
      "busy inside XLA's compiled loop, so batching configurations removes little overhead; "
      "the gain grows as the work per configuration shrinks (the capped rows)."]
  lines += [
      "- The spaces capped at 64 and 32 are copies of `metatune/tasks/spaces/training.yaml` "
      "with widths and batch sizes cut at the cap (its memory constraint then never binds).",
      "", "Machine:", ""] + [f"- {x}" for x in machine()]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smoke test (16 configurations)")
  parser.add_argument("--cache-dir", default=None, help="prepared-dataset cache "
                      "(default $METATUNE_CACHE_DIR or ~/.cache/metatune/tfds)")
  parser.add_argument("--task", default=TASK, help="a training-family task, DATASET/MODEL")
  parser.add_argument("--data-dir", default=os.environ.get("METATUNE_DATA_DIR"),
                      help="data folder, for folder datasets such as mnist")
  parser.add_argument("--num-configs", type=int, default=None)
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--sizes", type=int, nargs="+", default=None,
                      help="padded widths and batch sizes (128 = the space's own)")
  parser.add_argument("--vmap-only", type=int, nargs="*", default=(),
                      help="more configuration counts, timed vmapped only (throughput)")
  parser.add_argument("--out", default=str(DEFAULT_OUT))
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  settings = dataclasses.replace(
      settings, num_configs=args.num_configs or settings.num_configs,
      epochs=args.epochs or settings.epochs, sizes=tuple(args.sizes or settings.sizes))
  results = []
  for cap in settings.sizes:
    results.append(measure(cap, settings, args.cache_dir, task=args.task, data_dir=args.data_dir))
    print(f"max {cap}: vmap {results[-1]['vmap_s']:.2f}s, loop {results[-1]['loop_s']:.2f}s",
          flush=True)
  for n in args.vmap_only:
    results.append(measure(settings.sizes[0], dataclasses.replace(settings, num_configs=n),
                           args.cache_dir, task=args.task, data_dir=args.data_dir, loop=False))
    print(f"{n} configurations: vmap {results[-1]['vmap_s']:.3f}s", flush=True)
  text = render(results, settings, " ".join([COMMAND, *(argv if argv is not None
                                                         else sys.argv[1:])]), args.task)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text, encoding="utf-8")
  print(text)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
