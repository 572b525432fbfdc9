"""Study overhead per trial: metatune's Study vs Optuna, both on SQLite, same objective.

Both sides run the same trivial objective (a sum of squares over the same number
of float parameters) in the driver process, so what is timed is the study's own
work per trial: ask (the sampler), storing the new trial, storing the result,
telling the sampler. The sampler class of work is the same: metatune's
``random`` tuner against Optuna's ``RandomSampler``; metatune's default
``quasi_random`` tuner and metatune with ``synchronous=FULL`` (Optuna's SQLite
default durability) are extra rows. Runs alternate in chunks (metatune, then
Optuna, and so on) so machine load hits both alike; each side continues its own
study, so the stored history grows the same way.

Overhead per trial is (chunk wall time - objective time) / chunk size. The first
chunk of each side includes start-up (metatune: jit compilation of the tuner;
Optuna: schema creation) and is reported apart; the steady figure is the median
over the other chunks.

Usage:
  python experiments/bench_storage.py                 # 1000 trials per side, chunks of 100
  python experiments/bench_storage.py --quick         # 100 trials, chunks of 25

Writes ``paper/tables/storage.md`` (or ``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "storage.md"
COMMAND = "python experiments/bench_storage.py"


def space_doc(num_params: int) -> str:
  lines = ["name: bench", "parameters:"]
  lines += [f"  x{i}: {{type: float, low: -1.0, high: 1.0}}" for i in range(num_params)]
  return "\n".join(lines) + "\n"


def values_objective(values: Sequence[float]) -> float:
  return float(sum(v * v for v in values))


def process_objective(trial) -> float:
  """The objective for the process executor (module level, so a worker can load it)."""
  return values_objective([v for _, v in sorted(trial.config.items(), key=lambda kv:
                                                  int(kv[0][1:]))])


class MetatuneSide:
  """A metatune study continued chunk by chunk (inline: the objective runs in this thread)."""

  def __init__(self, folder: str, num_params: int, tuner: str, synchronous: str, seed: int,
               executor: str = "inline"):
    from metatune.space import io  # pylint: disable=import-outside-toplevel
    from metatune.study import Study  # pylint: disable=import-outside-toplevel
    self.names = [f"x{i}" for i in range(num_params)]
    space = io.loads(space_doc(num_params), "bench.yaml")
    self.path = os.path.join(folder, f"metatune-{tuner}-{synchronous}-{executor}.db")
    self.executor = executor
    self.study = Study.create(space, self.path, "bench", tuner=tuner, seed=seed,
                              synchronous=synchronous)
    self.total = 0

  def objective(self, trial) -> float:
    c = trial.config
    return values_objective([c[n] for n in self.names])

  def run(self, num: int):
    self.total += num
    if self.executor == "inline":
      self.study.optimize(self.objective, num_trials=self.total, executor="inline",
                          progress=False)
    else:
      self.study.optimize(process_objective, num_trials=self.total, executor=self.executor,
                          num_workers=1, progress=False)

  def check(self) -> int:
    n = self.study.counts()["complete"]
    self.study.close()
    return n


class OptunaSide:
  """An Optuna study on ``sqlite:///`` (RDBStorage), RandomSampler, continued chunk by chunk."""

  def __init__(self, folder: str, num_params: int, seed: int):
    import optuna  # pylint: disable=import-outside-toplevel
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    self.optuna = optuna
    self.names = [f"x{i}" for i in range(num_params)]
    self.path = os.path.join(folder, "optuna.db")
    self.study = optuna.create_study(storage=f"sqlite:///{self.path}", study_name="bench",
                                     sampler=optuna.samplers.RandomSampler(seed=seed))

  def objective(self, trial) -> float:
    return values_objective([trial.suggest_float(n, -1.0, 1.0) for n in self.names])

  def run(self, num: int):
    self.study.optimize(self.objective, n_trials=num)

  def check(self) -> int:
    return len(self.study.get_trials(deepcopy=False))


def objective_seconds(num_params: int, repeats: int = 2000) -> float:
  """Seconds per call of the bare objective arithmetic (subtracted from both sides)."""
  vals = [0.5] * num_params
  t0 = time.perf_counter()
  for _ in range(repeats):
    values_objective(vals)
  return (time.perf_counter() - t0) / repeats


def bench(num_trials: int, chunk: int, num_params: int, seed: int, folder: str
          ) -> dict[str, dict[str, Any]]:
  sides: dict[str, Callable[[], Any]] = {
      "metatune random (sync=normal)": lambda: MetatuneSide(folder, num_params, "random",
                                                            "normal", seed),
      "optuna RandomSampler": lambda: OptunaSide(folder, num_params, seed),
      "metatune random (sync=full)": lambda: MetatuneSide(folder, num_params, "random", "full",
                                                          seed),
      "metatune quasi_random (sync=normal)": lambda: MetatuneSide(folder, num_params,
                                                                  "quasi_random", "normal", seed),
      "metatune random, process executor, 1 worker": lambda: MetatuneSide(
          folder, num_params, "random", "normal", seed, executor="process"),
  }
  made = {}
  chunks: dict[str, list[float]] = {k: [] for k in sides}
  obj = objective_seconds(num_params)
  for _ in range(num_trials // chunk):
    for name, make in sides.items():
      t0 = time.perf_counter()
      if name not in made:
        made[name] = make()
      made[name].run(chunk)
      chunks[name].append((time.perf_counter() - t0) / chunk - obj)
  out = {}
  for name, side in made.items():
    times = chunks[name]
    stored = side.check()  # closes metatune's file (checkpointing its WAL)
    out[name] = {"first_ms": 1e3 * times[0], "steady_ms": 1e3 * statistics.median(times[1:]),
                 "total_s": sum(times) * chunk, "trials": stored,
                 "size_kb": sum(os.path.getsize(p) / 1024 for p in (side.path, side.path + "-wal")
                                if os.path.exists(p))}
  return out


def table(res: dict[str, dict[str, Any]], args, elapsed: float) -> str:
  ref = res["optuna RandomSampler"]["steady_ms"]
  import jax  # pylint: disable=import-outside-toplevel
  import optuna  # pylint: disable=import-outside-toplevel
  import sqlite3  # pylint: disable=import-outside-toplevel
  lines = [
      "# Study overhead per trial: metatune vs Optuna (SQLite storage)",
      "",
      f"Produced by `{COMMAND}{' --quick' if args.quick else ''}` on "
      f"{datetime.date.today().isoformat()} ({platform.machine()}, {os.cpu_count()} CPUs shared "
      f"with other jobs, Linux {platform.release()}, Python {platform.python_version()}, "
      f"SQLite {sqlite3.sqlite_version}, jax {jax.__version__}, optuna {optuna.__version__}); "
      f"{elapsed:.0f} s in all.",
      "",
      f"{args.trials} trials per row, {args.params} float parameters, objective = sum of "
      f"squares run in the driver (its own time subtracted); rows run interleaved in chunks "
      f"of {args.chunk}, each continuing its own study file.",
      "",
      "| study | trials stored | overhead per trial, steady (ms) | first chunk, incl. start-up "
      "(ms/trial) | total (s) | file (KiB) | Optuna / this (steady) |",
      "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for name, r in res.items():
    lines.append(f"| {name} | {r['trials']} | {r['steady_ms']:.2f} | {r['first_ms']:.1f} | "
                 f"{r['total_s']:.1f} | {r['size_kb']:.0f} | {ref / r['steady_ms']:.1f}x |")
  lines += [
      "",
      "Notes:",
      "",
      "- metatune: `Study.optimize(objective, executor='inline')`, SQLite in WAL mode, one "
      "commit when trials start and one per finished trial; the tuner's ask and tell are jitted "
      "JAX calls, and its state is kept exactly replayable. `sync=full` fsyncs every commit, "
      "as Optuna's SQLite default (rollback journal, synchronous=FULL) does.",
      "- Optuna: `optuna.create_study(storage='sqlite:///...', sampler=RandomSampler(seed))` and "
      "`study.optimize(objective, n_trials=chunk)`; `suggest_float` per parameter.",
      "- The process-executor row is metatune's default way to run trials (each in a worker "
      "process: JSON messages over a pipe each way); its first chunk includes starting the "
      "worker, and every chunk is a new `optimize` call, which starts a new worker.",
      "- File size: the database (plus its WAL file, if any) after the study is closed.",
  ]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--trials", type=int, default=1000)
  parser.add_argument("--chunk", type=int, default=100)
  parser.add_argument("--params", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="100 trials, chunks of 25")
  parser.add_argument("--out", default=str(DEFAULT_OUT))
  args = parser.parse_args(argv)
  if args.quick:
    args.trials, args.chunk = 100, 25
  if args.trials % args.chunk or args.trials < 2 * args.chunk:
    parser.error("--trials must be a multiple of --chunk, at least two chunks")
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="metatune-bench-storage-") as folder:
    res = bench(args.trials, args.chunk, args.params, args.seed, folder)
  text = table(res, args, time.perf_counter() - t0)
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(text)
  print(text)
  return res


if __name__ == "__main__":
  main()
  sys.exit(0)
