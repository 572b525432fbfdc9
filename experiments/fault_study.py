"""Fault test: a study killed by SIGKILL at random points, then resumed, loses and repeats nothing.

The study runs as a subprocess (``python -m metatune.study.cli tune ... --verbose``),
which prints one line per trial *after* the trial is committed. At random points
(after a random number of newly committed trials, plus a random delay) the whole
process group is killed with SIGKILL, and the same command is run again to resume.
At the end the stored study is checked against what the runs printed:

- every trial any run printed as committed is stored, finished, with the same value
  (none lost), and no trial number was printed twice (none committed twice);
- the study holds exactly ``--trials`` finished trials;
- every trial that was running at a kill is marked stale and its configuration was
  asked again exactly once; no configuration finished twice;
- no worker process outlived a killed driver;
- replaying the stored history through the tuner reproduces every stored proposal.

Usage:
  python experiments/fault_study.py                         # 200 trials, 4 workers, 3 kills
  python experiments/fault_study.py --trials 20 --kills 1 --out /tmp/fault.md

Writes ``paper/tables/fault.md`` (or ``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "fault.md"
COMMAND = "python experiments/fault_study.py"

SPACE = """
name: fault
parameters:
  x: {type: float, low: -5.0, high: 5.0}
  y: {type: float, low: 1e-3, high: 10.0, log: true}
  opt: {type: categorical, choices: [a, b, c]}
  opt.b:
    when: "opt == 'b'"
    parameters:
      depth: {type: int, low: 1, high: 8}
"""


def objective(trial) -> float:
  """A cheap objective with a short sleep; logs each evaluation to $FAULT_LOG when it finishes."""
  c = trial.config
  time.sleep(0.02 + (trial.seed % 100) / 1000.0)
  value = (c["x"] - 1.0) ** 2 + abs(c["y"] - 2.0) + (0.1 * c["opt.b.depth"] if c["opt"] == "b"
                                                     else 0.0)
  path = os.environ.get("FAULT_LOG")
  if path:
    with open(path, "a", encoding="utf-8") as f:
      f.write(f"{trial.number}\n")
  return value


def _orphans(tag: str) -> int:
  """Processes still alive whose environment carries this experiment's tag."""
  count = 0
  needle = f"FAULT_RUN={tag}".encode()
  for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        env = f.read().split(b"\0")
      with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
      continue
    if needle in env and state not in ("Z", "X"):
      count += 1
  return count


def _parse(lines: Sequence[str]) -> list[tuple[int, str, str]]:
  out = []
  for line in lines:
    parts = line.split()
    if len(parts) >= 3 and parts[0] == "trial" and parts[1].isdigit():
      out.append((int(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""))
  return out


def run(num_trials: int, num_workers: int, num_kills: int, seed: int,
        workdir: str | None = None) -> dict[str, Any]:
  """Runs the killed-and-resumed study and checks the stored result.

  Returns:
    Counts and checks (see the module docstring); ``ok`` is True when every check holds.
  """
  workdir = workdir or tempfile.mkdtemp(prefix="metatune-fault-")
  space, db, log = (os.path.join(workdir, n) for n in ("space.yaml", "fault.db", "evals.log"))
  Path(space).write_text(SPACE)
  for p in (db, db + "-wal", db + "-shm", log):
    if os.path.exists(p):
      os.unlink(p)
  tag = f"{os.getpid()}-{time.time_ns()}"
  cmd = [sys.executable, "-m", "metatune.study.cli", "tune", space, "--objective",
         f"{Path(__file__).resolve()}:objective", "--storage", db, "--study", "fault",
         "--trials", str(num_trials), "--workers", str(num_workers), "--seed", str(seed),
         "--verbose", "--no-progress"]
  env = {**os.environ, "FAULT_LOG": log, "FAULT_RUN": tag, "OPENBLAS_NUM_THREADS": "1",
         "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + sys.path)}
  rng = random.Random(seed)
  printed: list[tuple[int, str, str]] = []
  runs = []
  t_start = time.time()
  for k in range(num_kills + 1):
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, cwd=str(REPO_ROOT))
    lines: list[str] = []
    if k < num_kills:
      # Somewhere in this run's share of the trials left, early enough that trials are
      # still running when the kill lands.
      left = num_trials - len(printed)
      target = rng.randint(1, max(1, (left - 2 * num_workers) // (num_kills - k + 1)))
      while sum(1 for ln in lines if ln.startswith("trial ")) < target:
        line = proc.stdout.readline()
        if not line:
          break
        lines.append(line)
      time.sleep(rng.uniform(0.0, 0.3))
      os.killpg(proc.pid, signal.SIGKILL)
      rest, err = proc.communicate()
      lines += rest.splitlines()
      killed = True
    else:
      rest, err = proc.communicate()
      lines += rest.splitlines()
      killed = False
      if proc.returncode != 0:
        raise RuntimeError(f"the final run failed ({proc.returncode}):\n{err[-3000:]}")
    time.sleep(0.5)  # let the kernel deliver the workers' parent-death signal
    parsed = _parse(lines)
    printed += parsed
    runs.append({"killed": killed, "committed": len(parsed), "seconds": time.time() - t0,
                 "orphans": _orphans(tag), "returncode": proc.returncode})
  elapsed = time.time() - t_start
  return {**_check(db, printed, log, num_trials), "runs": runs, "elapsed": elapsed,
          "command": " ".join("python" if c == sys.executable else
                              c.replace(workdir, "$DIR").replace(str(REPO_ROOT) + "/", "")
                              for c in cmd)}


def _check(db: str, printed, log: str, num_trials: int) -> dict[str, Any]:
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  from metatune.study import Study  # pylint: disable=import-outside-toplevel
  from metatune.study import tuning  # pylint: disable=import-outside-toplevel
  from metatune.study.storage import TERMINAL  # pylint: disable=import-outside-toplevel
  with Study.load(db, "fault") as study:
    trials = study.trials
    spec = study.spec
    by_number = {t.number: t for t in trials}
    finished = [t for t in trials if t.state in TERMINAL]
    stale = [t for t in trials if t.state == "stale"]
    counts = collections.Counter(n for n, _, _ in printed)
    printed_twice = sorted(n for n, c in counts.items() if c > 1)
    lost, changed = [], []
    for n, state, value in printed:
      t = by_number.get(n)
      if t is None or t.state not in TERMINAL:
        lost.append(n)
      elif t.state != state or (value and f"{t.objectives[0]:.6g}" != value):
        changed.append(n)
    retries = collections.Counter(t.retry_of for t in trials if t.retry_of is not None)
    not_retried = [t.number for t in stale if retries[t.number] != 1]
    points = collections.Counter(t.values.tobytes() + t.active.tobytes() for t in finished)
    finished_twice = sum(c - 1 for c in points.values() if c > 1)
    with open(log, encoding="utf-8") as f:
      evaluated = collections.Counter(int(ln) for ln in f if ln.strip())
    driver = tuning.TunerDriver(study.space, spec.tuner, spec.tuner_options, spec.seed,
                                spec.liar)
    mismatched = tuning.replay(driver, trials, check=True)
  result = {
      "finished": len(finished), "complete": sum(t.state == "complete" for t in finished),
      "stale": len(stale), "retried": sum(retries.values()), "printed": len(printed),
      "printed_twice": printed_twice, "lost": sorted(set(lost)), "changed": sorted(changed),
      "stale_not_retried_once": not_retried, "configs_finished_twice": finished_twice,
      "evaluations": sum(evaluated.values()),
      "evaluated_not_stored": sum(1 for n in evaluated if by_number.get(n) is None or
                                  by_number[n].state not in TERMINAL),
      # Every evaluation belongs to a stored trial: finished, or stale (and asked again).
      "evaluated_unaccounted": sorted(n for n in evaluated if by_number.get(n) is None or
                                      by_number[n].state not in TERMINAL + ("stale",)),
      "replay_mismatches": mismatched, "tuner_trials": sum(t.source == "tuner" for t in trials),
  }
  result["ok"] = (result["finished"] == num_trials and not printed_twice and not lost and
                  not result["evaluated_unaccounted"] and
                  not changed and not not_retried and finished_twice == 0 and not mismatched)
  return result


def table(res: dict[str, Any], args) -> str:
  now = datetime.date.today().isoformat()
  orphans = sum(r["orphans"] for r in res["runs"])
  rows = [
      ("finished trials stored (target)", f"{res['finished']} ({args.trials})"),
      ("trials printed as committed by the runs (a line follows its commit)", res["printed"]),
      ("committed trials lost", len(res["lost"])),
      ("trial numbers committed twice", len(res["printed_twice"])),
      ("stored values that differ from the printed ones", len(res["changed"])),
      ("trials running at a kill (marked stale)", res["stale"]),
      ("stale trials asked again exactly once",
       f"{res['stale'] - len(res['stale_not_retried_once'])} / {res['stale']}"),
      ("configurations finished twice", res["configs_finished_twice"]),
      ("objective evaluations (incl. ones cut off by a kill)", res["evaluations"]),
      ("evaluations whose result was not stored (in flight at a kill; trial stale)",
       res["evaluated_not_stored"]),
      ("evaluations with no stored trial at all", len(res["evaluated_unaccounted"])),
      ("worker processes left alive after the kills", orphans),
      ("replayed proposals that differ from the stored ones",
       f"{len(res['replay_mismatches'])} / {res['tuner_trials']}"),
  ]
  runs = ", ".join(f"{'killed' if r['killed'] else 'final'} after {r['committed']} commits "
                   f"({r['seconds']:.1f}s)" for r in res["runs"])
  lines = [
      "# Fault test: SIGKILL and resume",
      "",
      f"Produced by `{COMMAND} --trials {args.trials} --workers {args.workers} --kills "
      f"{args.kills} --seed {args.seed}` on {now} ({platform.machine()}, "
      f"{os.cpu_count()} CPUs, Python {platform.python_version()}); "
      f"{res['elapsed']:.0f} s in all.",
      "",
      f"Each run is `{res['command']}` (`$DIR`: a fresh temporary folder) in its own "
      "process group, killed with SIGKILL at a "
      "random point (after a random number of newly committed trials plus up to 0.3 s), then "
      "run again to resume. A run prints a line per trial after the trial is committed.",
      "",
      f"Runs: {runs}.",
      "",
      "| check | count |",
      "|---|---:|",
  ] + [f"| {a} | {b} |" for a, b in rows] + [
      "",
      f"All checks hold: **{'yes' if res['ok'] else 'NO'}**.",
      "",
      "Notes:",
      "",
      "- Storage: SQLite in WAL mode, `synchronous=NORMAL`, one commit per finished trial "
      "(a commit is in the WAL file, owned by the kernel, when it returns, so killing every "
      "process loses nothing committed; only power loss could roll back the last commits).",
      "- A trial whose objective had finished but whose result was not yet committed at the "
      "kill is stale: it is stored as such, and its configuration runs again as a new trial.",
      "- Replay: the tuner state is rebuilt from the stored history (asks in trial order, "
      "results in the order told, keys from the study seed) and every tuner proposal is "
      "asked again and compared bit for bit with the stored one.",
  ]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--trials", type=int, default=200)
  parser.add_argument("--workers", type=int, default=4)
  parser.add_argument("--kills", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=str(DEFAULT_OUT))
  parser.add_argument("--workdir", default=None, help="keep the study file here")
  args = parser.parse_args(argv)
  res = run(args.trials, args.workers, args.kills, args.seed, args.workdir)
  text = table(res, args)
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(text)
  print(text)
  return res


if __name__ == "__main__":
  sys.exit(0 if main()["ok"] else 1)
