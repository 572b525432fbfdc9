"""Throughput of metatune's jitted `sample` against Optuna's RandomSampler on one space.

Both samplers draw from the same conditional, constrained neural-network tuning
space (20 parameters, 2 constraints, 1 forbidden clause): the same conditions,
the same log scales, uniform categorical and ordinal choices, and constraints
handled by rejection (metatune resamples inside a ``lax.while_loop``; for
Optuna a violating trial is told as FAIL and a new one is asked). Only valid
configurations are counted.

The measurements are interleaved (metatune rounds alternate with Optuna rounds)
so that noise on a shared machine hits both, and every result is checked
against ``Space.validate``.

Usage:
  python experiments/bench_space_sampling.py            # full run
  python experiments/bench_space_sampling.py --quick    # smoke test, < 60 s
  python experiments/bench_space_sampling.py --out /tmp/table.md

Writes a markdown table to ``paper/tables/space_sampling.md`` (or ``--out``)
and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, SpaceError, io, sample

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "space_sampling.md"
COMMAND = "python experiments/bench_space_sampling.py"

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
MAX_LAYERS = 4
MAX_ACTIVATIONS = 262144  # batch_size * width.l1



# ---------------------------------------------------------------- the space
def build_space() -> Space:
  """The benchmark space, ``configs/spaces/nn_tuning.yaml`` (mirrored by `suggest_config`)."""
  return io.load(REPO_ROOT / "configs" / "spaces" / "nn_tuning.yaml")


def suggest_config(trial) -> dict[str, Any]:
  """The same space, define-by-run for Optuna: conditions are if-branches.

  Args:
    trial: an ``optuna.trial.Trial``.

  Returns:
    The configuration of the active parameters (what ``Space.validate`` takes).
  """
  cfg: dict[str, Any] = {}

  def put(name, value):
    cfg[name] = value
    return value

  opt = put("optimizer", trial.suggest_categorical("optimizer", OPTIMIZERS))
  put("lr", trial.suggest_float("lr", 1e-5, 1.0, log=True))
  if opt == "sgd":
    momentum = put("sgd.momentum", trial.suggest_float("sgd.momentum", 0.0, 0.99))
    if momentum > 0.5:
      put("sgd.nesterov", trial.suggest_categorical("sgd.nesterov", (False, True)))
  if opt in ("adam", "adamw"):
    put("adam.b1", trial.suggest_float("adam.b1", 0.8, 0.999))
    put("adam.b2", trial.suggest_float("adam.b2", 0.9, 0.9999))
    put("adam.eps", trial.suggest_float("adam.eps", 1e-10, 1e-6, log=True))
  if opt == "adamw":
    put("adamw.weight_decay", trial.suggest_float("adamw.weight_decay", 1e-6, 0.1, log=True))
  if opt == "rmsprop":
    put("rmsprop.decay", trial.suggest_float("rmsprop.decay", 0.8, 0.999))
  schedule = put("schedule", trial.suggest_categorical("schedule", SCHEDULES))
  if schedule != "constant":
    put("schedule.warmup", trial.suggest_int("schedule.warmup", 0, 2000))
  if schedule == "exponential":
    put("schedule.decay_rate", trial.suggest_float("schedule.decay_rate", 0.5, 0.999))
  num_layers = put("num_layers", trial.suggest_int("num_layers", 1, MAX_LAYERS))
  for k in range(1, MAX_LAYERS + 1):
    if num_layers >= k:
      put(f"width.l{k}", trial.suggest_int(f"width.l{k}", 16, 1024, log=True))
  put("activation", trial.suggest_categorical("activation", ACTIVATIONS))
  put("dropout", trial.suggest_float("dropout", 0.0, 0.5))
  put("batch_size", trial.suggest_categorical("batch_size", BATCH_SIZES))
  return cfg


def feasible_py(cfg: dict[str, Any]) -> bool:
  """The space's constraints and forbidden clause, hand-written as an Optuna user would."""
  if cfg["batch_size"] * cfg["width.l1"] > MAX_ACTIVATIONS:
    return False
  if "width.l2" in cfg and cfg["width.l2"] > cfg["width.l1"]:
    return False
  if cfg["optimizer"] == "sgd" and cfg["lr"] > 0.3:
    return False
  return True


# ------------------------------------------------------------------- Optuna
def import_optuna():
  """Imports Optuna, or exits with how to install it."""
  try:
    import optuna  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit("this benchmark needs Optuna; install it with: "
                     "pip install -e '.[bench]'") from e
  return optuna


class OptunaSampler:
  """An Optuna study with RandomSampler, driven by ask/tell, yielding valid configs only."""

  def __init__(self, seed: int = 0):
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    self.optuna = optuna
    self.study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    self.configs: list[dict[str, Any]] = []
    self.valid_times: list[float] = []  # Optuna time spent when each valid config appeared
    self.elapsed = 0.0
    self.asked = 0

  def run(self, num_valid: int) -> None:
    """Draws ``num_valid`` more valid configurations, adding the time to ``elapsed``."""
    study, fail = self.study, self.optuna.trial.TrialState.FAIL
    configs, stamps = [], []
    asked = 0
    start = time.perf_counter()
    while len(configs) < num_valid:
      trial = study.ask()
      asked += 1
      cfg = suggest_config(trial)
      if feasible_py(cfg):
        study.tell(trial, 0.0)
        configs.append(cfg)
        stamps.append(time.perf_counter() - start)
      else:
        study.tell(trial, state=fail)
    spent = time.perf_counter() - start
    self.valid_times += [self.elapsed + s for s in stamps]
    self.elapsed += spent
    self.configs += configs
    self.asked += asked

  @property
  def rate(self) -> float:
    return len(self.configs) / self.elapsed

  def half_rates(self) -> tuple[float, float, int]:
    """Valid configs per second over the first and the last half of the study."""
    t = self.valid_times
    h = len(t) // 2
    return h / t[h - 1], h / (t[-1] - t[-h - 1]), h


# --------------------------------------------------------------- benchmark
@dataclasses.dataclass
class Settings:
  batches: tuple[int, ...] = (1_000, 100_000)
  rounds: int = 10
  reps: dict[int, int] = dataclasses.field(default_factory=lambda: {1_000: 20, 100_000: 3})
  optuna_valid: int = 2_000
  check: int = 10_000  # decoded and validated per metatune batch size


QUICK = Settings(rounds=3, reps={1_000: 5, 100_000: 1}, optuna_valid=300, check=2_000)


def _block(x):
  return jax.block_until_ready(x)


def validate_all(space: Space, configs: Sequence[dict[str, Any]]) -> tuple[int, str | None]:
  """Counts configurations that `Space.validate` rejects; returns the first message too."""
  bad, first = 0, None
  for cfg in configs:
    try:
      space.validate(cfg)
    except SpaceError as e:
      bad += 1
      first = first or str(e)
  return bad, first


def check_encoding(space: Space, u, a) -> int:
  """Rows whose constraints fail or whose mask disagrees with the conditions (JAX side).

  Jitted like `sample` itself: eager op-by-op evaluation rounds float32
  differently and can flip comparisons that sit exactly on a constraint boundary.
  """
  check = jax.jit(lambda u, a: space.feasible(u, a) & jnp.all(space.activity(u) == a, axis=-1))
  return int((~np.asarray(check(u, a))).sum())


def marginals(configs: Sequence[dict[str, Any]]) -> dict[str, float]:
  """A few statistics that tell whether two samplers draw the same distribution."""
  n = len(configs)
  frac = lambda pred: sum(1 for c in configs if pred(c)) / n
  return {
      "P(optimizer = sgd)": frac(lambda c: c["optimizer"] == "sgd"),
      "P(sgd.nesterov active)": frac(lambda c: "sgd.nesterov" in c),
      "P(num_layers = 4)": frac(lambda c: c["num_layers"] == 4),
      "P(batch_size = 1024)": frac(lambda c: c["batch_size"] == 1024),
      "mean log2(width.l1)": sum(math.log2(c["width.l1"]) for c in configs) / n,
      "mean log10(lr)": sum(math.log10(c["lr"]) for c in configs) / n,
  }


def machine_info(optuna_version: str) -> dict[str, str]:
  return {
      "platform": platform.platform(),
      "python": platform.python_version(),
      "cpu count": str(os.cpu_count()),
      "jax": jax.__version__,
      "optuna": optuna_version,
      "jax device": str(jax.devices()[0]) + f" ({jax.default_backend()})",
  }


def run_benchmark(s: Settings, log=print) -> dict[str, Any]:
  """Compiles, then interleaves metatune and Optuna rounds; returns all measurements."""
  space = build_space()
  log(f"{space}: {space.num_params} parameters: {', '.join(space.names)}")
  optuna_runner = OptunaSampler(seed=0)

  fns, compile_s = {}, {}
  for b in s.batches:
    fns[b] = jax.jit(lambda k, b=b: sample(k, space, b))
    t0 = time.perf_counter()
    _block(fns[b](jax.random.key(123)))
    compile_s[b] = time.perf_counter() - t0
    log(f"metatune batch {b:>7,}: compile + first call {compile_s[b]:.2f} s")

  key = jax.random.key(0)
  times: dict[int, list[float]] = {b: [] for b in s.batches}
  last: dict[int, Any] = {}
  per_round = [s.optuna_valid // s.rounds + (r < s.optuna_valid % s.rounds)
               for r in range(s.rounds)]
  for r in range(s.rounds):
    for b in s.batches:
      for _ in range(s.reps[b]):
        key, k = jax.random.split(key)
        _block(k)
        t0 = time.perf_counter()
        out = _block(fns[b](k))
        times[b].append(time.perf_counter() - t0)
        last[b] = out
    optuna_runner.run(per_round[r])
    log(f"round {r + 1}/{s.rounds}: " + ", ".join(
        f"metatune {b:,}: {b / statistics.median(times[b]):,.0f}/s" for b in s.batches) +
        f"; optuna: {len(optuna_runner.configs):,} valid, {optuna_runner.rate:,.0f}/s")

  # Sanity: decode metatune samples from the timed functions and validate them.
  invalid, first_error, decoded, encoding_bad = {}, {}, {}, {}
  for b in s.batches:
    us, acts = [], []
    n = 0
    while n < s.check:
      key, k = jax.random.split(key)
      u, a = fns[b](k)
      us.append(np.asarray(u)[:s.check - n])
      acts.append(np.asarray(a)[:s.check - n])
      n += us[-1].shape[0]
    configs = space.decode_batch(np.concatenate(us), np.concatenate(acts))
    invalid[b], first_error[b] = validate_all(space, configs)
    decoded[b] = configs
    encoding_bad[b] = check_encoding(space, *last[b])
    log(f"metatune batch {b:,}: {invalid[b]} of {len(configs):,} decoded samples invalid; "
        f"{encoding_bad[b]} of {b:,} rows of the last timed batch infeasible (JAX check)")
  opt_invalid, opt_first = validate_all(space, optuna_runner.configs)
  log(f"optuna: {opt_invalid} of {len(optuna_runner.configs):,} configs invalid")

  return {
      "space": space,
      "settings": s,
      "compile_s": compile_s,
      "times": times,
      "metatune_rate": {b: b / statistics.median(times[b]) for b in s.batches},
      "metatune_invalid": invalid,
      "metatune_first_error": first_error,
      "metatune_encoding_bad": encoding_bad,
      "metatune_configs": decoded,
      "optuna": optuna_runner,
      "optuna_rate": optuna_runner.rate,
      "optuna_half_rates": optuna_runner.half_rates(),
      "optuna_invalid": opt_invalid,
      "optuna_first_error": opt_first,
      "optuna_acceptance": len(optuna_runner.configs) / optuna_runner.asked,
      "machine": machine_info(optuna_runner.optuna.__version__),
  }


# ------------------------------------------------------------------ report
def render(res: dict[str, Any], command: str) -> str:
  s: Settings = res["settings"]
  space: Space = res["space"]
  opt_rate = res["optuna_rate"]
  runner: OptunaSampler = res["optuna"]
  first, second, half = res["optuna_half_rates"]
  n_opt = len(runner.configs)
  lines = [
      "# Sampling throughput: metatune `sample` vs Optuna `RandomSampler`",
      "",
      f"Produced by `{command}` on {datetime.date.today().isoformat()}.",
      "",
      f"Space `configs/spaces/nn_tuning.yaml`: {space.num_params} parameters "
      f"({', '.join(f'`{n}`' for n in space.names)}); constraints "
      f"{', '.join(f'`{c.text}`' for c in space.constraints if c.mode == 'require')}; "
      f"forbidden {', '.join(f'`{c.text}`' for c in space.constraints if c.mode == 'forbid')}."
      " Only valid configurations are counted.",
      "",
      "| method | batch | configs/s | ratio vs Optuna | invalid |",
      "|---|---:|---:|---:|---:|",
  ]
  for b in s.batches:
    rate = res["metatune_rate"][b]
    n_check = len(res["metatune_configs"][b])
    lines.append(f"| metatune `jit(sample)` | {b:,} | {rate:,.0f} | {rate / opt_rate:,.0f}x | "
                 f"{res['metatune_invalid'][b]} / {n_check:,} |")
  lines += [
      f"| Optuna RandomSampler (ask/tell) | 1 | {opt_rate:,.0f} | 1x | "
      f"{res['optuna_invalid']} / {n_opt:,} |",
      f"| Optuna, first {half:,} valid | 1 | {first:,.0f} | {first / opt_rate:.2f}x | |",
      f"| Optuna, last {half:,} valid | 1 | {second:,.0f} | {second / opt_rate:.2f}x | |",
      "",
      "Notes:",
      "",
      "- metatune: `jax.jit(lambda k: sample(k, space, batch))`, median of "
      + ", ".join(f"{len(res['times'][b])} calls at batch {b:,}" for b in s.batches)
      + ", each timed with `block_until_ready`, after a warm-up call. Compile + first call: "
      + ", ".join(f"{res['compile_s'][b]:.2f} s (batch {b:,})" for b in s.batches)
      + "; the first also estimates the feasible fraction and pool (cached per space).",
      f"- Optuna: `create_study(sampler=RandomSampler(seed=0))`, in-memory storage, "
      f"`ask()` + define-by-run suggestions + `tell()`; a trial that violates a constraint is "
      f"told `FAIL` and another is asked. {n_opt:,} valid configs from {runner.asked:,} trials "
      f"(acceptance {res['optuna_acceptance']:.1%}) in {runner.elapsed:.2f} s of Optuna time. "
      f"Rate over the last {half:,} / first {half:,}: {second / first:.2f}.",
      f"- Interleaved in one run: {s.rounds} rounds, each timing metatune at every batch size "
      f"and then drawing about {s.optuna_valid // s.rounds:,} Optuna configs.",
      "- invalid: decoded metatune samples (from the timed functions) rejected by "
      "`space.validate`; for Optuna, its valid configs (dicts of the active parameters) "
      "rejected by `space.validate`. JAX-side check of the last timed batch (constraints and "
      "activity mask): "
      + ", ".join(f"{res['metatune_encoding_bad'][b]} of {b:,} bad" for b in s.batches) + ".",
      "",
      "Same distribution? (metatune: decoded samples at batch "
      f"{s.batches[-1]:,}; Optuna: its valid configs)",
      "",
      "| statistic | metatune | Optuna |",
      "|---|---:|---:|",
  ]
  mm = marginals(res["metatune_configs"][s.batches[-1]])
  om = marginals(runner.configs)
  lines += [f"| {k} | {mm[k]:.3f} | {om[k]:.3f} |" for k in mm]
  lines += ["", "Machine:", ""]
  lines += [f"- {k}: {v}" for k, v in res["machine"].items()]
  errors = [(f"metatune batch {b:,}", res["metatune_first_error"][b]) for b in s.batches]
  errors.append(("Optuna", res["optuna_first_error"]))
  errors = [(w, e) for w, e in errors if e]
  if errors:
    lines += ["", "First validation errors:", ""]
    lines += [f"- {w}: {e}" for w, e in errors]
  return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true",
                  help="smaller counts, for a smoke test (under a minute)")
  ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                  help=f"markdown file to write (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
  return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark, prints the table and writes it to ``--out``.

  Args:
    argv: command-line arguments (default: ``sys.argv[1:]``).

  Returns:
    The measurements, with ``out`` (the file written) and ``markdown`` added.
  """
  args = parse_args(argv)
  import_optuna()  # fail early, before compiling anything
  settings = QUICK if args.quick else Settings()
  argv_list = list(sys.argv[1:] if argv is None else argv)
  command = " ".join([COMMAND] + argv_list)
  res = run_benchmark(settings, log=lambda m: print(m, flush=True))
  md = render(res, command)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(md)
  print()
  print(md, end="")
  print(f"\nwritten to {args.out}")
  res["out"], res["markdown"] = args.out, md
  return res


if __name__ == "__main__":
  main()
