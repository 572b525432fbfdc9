"""Hostile-input probe (#15): bad space files and objectives through metatune's real entry points.

The corpus is generated in code into a temporary folder: space files (metatune
YAML and JSON, ConfigSpace JSON; malformed, huge, deep, badly encoded, with bad
expressions, contradictory constraints, bad defaults, odd names) and objectives
(raising, returning the wrong thing, sleeping past the timeout, printing a lot,
exiting, crashing the interpreter, spawning children). Each space file goes
through ``metatune.space.io.load`` (plus a jitted sample when it loads) and
through the command line (``metatune space check``, and ``space sample`` for
some) as a subprocess with a timeout; each objective through
``metatune.study.Study.optimize`` with the process executor.

Each outcome is one of:

- clear: a `SpaceError` (or, for a bad objective path, a `StudyError`) whose
  message names the file; on the command line exit code 2 and a one-line
  ``error: ...`` on stderr naming the file (or ``--out``); for an objective,
  the trial recorded as failed with a reason.
- accepted: valid input worked (sampled configurations validate and are JSON;
  the command exits 0; the trial completes).
- traceback: any other exception type, or a Python traceback on stderr.
- hang: no answer within the timeout.
- wrong: none of the above: an error that names no place, a valid input
  refused, an invalid one accepted (a trial that completes on a bad return),
  or a trial's child process that outlived it.

Usage:
  python experiments/probe_hostile.py                  # all probes, writes the table
  python experiments/probe_hostile.py --slice 12 --out /tmp/probe.md
  python experiments/probe_hostile.py --only space     # space files only
  python experiments/probe_hostile.py --pick "NUL byte" --pick "empty file"

Writes ``paper/tables/probe_hostile.md`` (or ``--out``) and prints it; exits 1
when a probe ends in a traceback or a hang.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_corpus  # pylint: disable=wrong-import-position

DEFAULT_OUT = REPO_ROOT / "paper" / "tables" / "probe_hostile.md"
COMMAND = "python experiments/probe_hostile.py"
OUTCOMES = ("clear", "accepted", "traceback", "hang", "wrong")
_RESULT = "PROBE-RESULT "


@dataclasses.dataclass
class Outcome:
  probe: str
  entry: str  # api, cli, study
  outcome: str
  detail: str = ""
  seconds: float = 0.0


# ------------------------------------------------------------ in-process runners
def _located(message: str, path: str) -> bool:
  return path in message or os.path.basename(path) in message


def run_api(task: dict[str, Any]) -> dict[str, Any]:
  """One space file through `io.load`, then a jitted sample that must validate and be JSON."""
  from metatune.space import io  # pylint: disable=import-outside-toplevel
  from metatune.space.errors import SpaceError  # pylint: disable=import-outside-toplevel
  path = task["path"]
  try:
    space = io.load(path)
    import jax  # pylint: disable=import-outside-toplevel

    from metatune.space import sample  # pylint: disable=import-outside-toplevel
    values, active = jax.jit(lambda k: sample(k, space, 8))(jax.random.key(0))
    for cfg in space.decode_batch(values, active):
      space.validate(cfg)
      json.dumps(cfg, allow_nan=False)
    return {"outcome": "accepted", "detail": f"{space.num_params} parameters"}
  except SpaceError as e:
    msg = str(e)
    first = msg.splitlines()[0]
    if not _located(msg, path):
      return {"outcome": "wrong", "detail": f"error names no place: {first[:200]}"}
    return {"outcome": "clear", "detail": first[:200]}
  except BaseException as e:  # pylint: disable=broad-except
    return {"outcome": "traceback", "detail": f"{type(e).__name__}: {str(e)[:200]}"}


def run_study(task: dict[str, Any]) -> dict[str, Any]:
  """One objective through `Study.optimize` (process executor, one trial)."""
  from metatune.study import Study  # pylint: disable=import-outside-toplevel
  from metatune.study.errors import StudyError  # pylint: disable=import-outside-toplevel
  folder = Path(task["folder"])
  name = task["name"]
  try:
    study = Study.create(str(folder / "space.yaml"), str(folder / f"{name}.db"), name)
    fn = task["fn"] if ":" in task["fn"] else f"objectives.py:{task['fn']}"
    study.optimize(str(folder / fn), num_trials=1, num_workers=1,
                   trial_timeout=task["trial_timeout"], memory_limit_mb=1024, progress=False)
    trials = study.trials
    study.close()
  except StudyError as e:
    return {"outcome": "clear", "detail": f"StudyError: {str(e).splitlines()[0][:200]}"}
  except BaseException as e:  # pylint: disable=broad-except
    return {"outcome": "traceback", "detail": f"{type(e).__name__}: {str(e)[:200]}"}
  if not trials:
    return {"outcome": "wrong", "detail": "no trial was recorded"}
  t = trials[-1]
  if t.state == "failed" and t.reason and t.error:
    return {"outcome": "clear", "detail": f"failed: {t.reason}: {t.error.splitlines()[-1][:160]}"}
  if t.state == "complete":
    return {"outcome": "accepted", "detail": f"complete: {t.objectives}"[:200]}
  return {"outcome": "wrong", "detail": f"state {t.state}, reason {t.reason!r}, error "
                                        f"{(t.error or '')[:100]!r}"}


def runner_main(kind: str) -> None:
  """Reads tasks (JSON lines) from stdin and prints results, until stdin closes."""
  fn = run_api if kind == "api" else run_study
  out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
  os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not look like results
  for line in sys.stdin:
    task = json.loads(line)
    t0 = time.perf_counter()
    result = fn(task)
    result["seconds"] = time.perf_counter() - t0
    out.write(_RESULT + json.dumps(result) + "\n")


class Runner:
  """A long-lived ``--runner`` subprocess; a task past its timeout kills it (a hang)."""

  def __init__(self, kind: str):
    self.kind = kind
    self.proc = None
    self.lines: queue.Queue = queue.Queue()

  def _start(self):
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, __file__, "--runner", self.kind], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        start_new_session=True)
    self.lines = queue.Queue()
    self.err: list[str] = []
    threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
    threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True).start()

  @staticmethod
  def _pump(stream, q):
    for line in stream:
      q.put(line)
    q.put(None)

  @staticmethod
  def _drain(stream, sink):
    for line in stream:
      sink.append(line)
      del sink[:-20]

  def run(self, task: dict[str, Any], timeout: float) -> dict[str, Any]:
    if self.proc is None or self.proc.poll() is not None:
      self._start()
    t0 = time.perf_counter()
    try:
      self.proc.stdin.write(json.dumps(task) + "\n")
      self.proc.stdin.flush()
    except OSError:
      pass
    deadline = t0 + timeout
    while True:
      try:
        line = self.lines.get(timeout=max(0.1, deadline - time.perf_counter()))
      except queue.Empty:
        self.stop()
        return {"outcome": "hang", "detail": f"no answer in {timeout:.0f} s",
                "seconds": time.perf_counter() - t0}
      if line is None:
        self.stop()
        tail = "".join(self.err)[-300:].strip().replace("\n", " | ")
        return {"outcome": "traceback", "detail": f"the runner died: {tail}",
                "seconds": time.perf_counter() - t0}
      if line.startswith(_RESULT):
        return json.loads(line[len(_RESULT):])

  def stop(self):
    if self.proc is not None and self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGKILL)
      self.proc.wait()
    self.proc = None


# -------------------------------------------------------------- command line
def run_cli(argv: list[str], path: str, timeout: float, expect_place: str) -> dict[str, Any]:
  """``metatune ARGV`` as a subprocess: exit 0, or exit 2 with an ``error:`` line naming a place."""
  exe = shutil.which("metatune", path=str(Path(sys.executable).parent)) or "metatune"
  t0 = time.perf_counter()
  try:
    proc = subprocess.run([exe] + argv, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(path) or ".", errors="replace",
                          start_new_session=True, check=False)
  except subprocess.TimeoutExpired:
    return {"outcome": "hang", "detail": f"no exit in {timeout:.0f} s",
            "seconds": time.perf_counter() - t0}
  seconds = time.perf_counter() - t0
  err = proc.stderr
  # A progress bar rewrites its line with carriage returns; JAX may warn on stderr.
  lines = [l for l in err.replace("\r", "\n").splitlines() if l.strip()]
  # Ours: "error: WHERE: PROBLEM"; argparse's: a usage line, then "PROG: error: ARGUMENT ...".
  errors = [l for l in lines if l.startswith("error: ") or
            (l.startswith("metatune ") and ": error: argument " in l)]
  if "Traceback (most recent call last)" in err or proc.returncode < 0:
    last = lines[-1] if lines else f"signal {-proc.returncode}"
    return {"outcome": "traceback", "detail": last[:200], "seconds": seconds}
  if proc.returncode == 0:
    return {"outcome": "accepted", "detail": "exit 0", "seconds": seconds}
  if proc.returncode == 2 and len(errors) == 1 and (expect_place in errors[0] or
                                                    os.path.basename(expect_place) in errors[0]):
    return {"outcome": "clear", "detail": errors[0][:200], "seconds": seconds}
  shown = errors[0] if errors else (lines[-1] if lines else "")
  return {"outcome": "wrong", "detail": f"exit {proc.returncode}: {shown[:180]}",
          "seconds": seconds}


# -------------------------------------------------------------------- driver
def _verdict(result: dict[str, Any], expect: str) -> dict[str, Any]:
  """Turns an outcome that contradicts the probe's expectation into ``wrong``."""
  got = result["outcome"]
  if got in ("traceback", "hang", "wrong") or expect == "either":
    return result
  want = "clear" if expect == "error" else "accepted"
  if got != want:
    return {**result, "outcome": "wrong", "detail": f"expected {want}, got {got}: "
                                                    f"{result.get('detail', '')}"[:220]}
  return result


def run_all(folder: Path, only: str | None, slice_n: int | None, jobs: int,
            pick: list[str] | None = None, log=print) -> list[Outcome]:
  spaces = probe_corpus.space_probes(folder)
  objectives = probe_corpus.objective_probes(folder)
  if pick:
    unknown = set(pick) - {p.name for p in spaces} - {o.name for o in objectives}
    if unknown:
      raise SystemExit(f"error: --pick: no probe named {sorted(unknown)}")
    spaces = [p for p in spaces if p.name in pick]
    objectives = [o for o in objectives if o.name in pick]
  if slice_n:
    # An even spread over the corpus, so that a small slice still meets every kind.
    spaces = spaces[::max(1, len(spaces) // slice_n)][:slice_n]
    num_obj = max(1, slice_n // 4)
    objectives = objectives[::max(1, len(objectives) // num_obj)][:num_obj]
  if only == "space":
    objectives = []
  elif only == "objective":
    spaces = []
  outcomes: list[Outcome] = []
  lock = threading.Lock()

  def record(probe, entry, result, expect):
    result = _verdict(result, expect)
    o = Outcome(probe, entry, result["outcome"], result.get("detail", ""),
                result.get("seconds", 0.0))
    with lock:
      outcomes.append(o)
      if o.outcome in ("traceback", "hang", "wrong"):
        log(f"  {o.outcome:9s} {entry:5s} {probe}: {o.detail}")

  def api_and_study():
    api = Runner("api")
    for p in spaces:
      record(p.name, "api", api.run({"path": str(p.path)}, p.timeout), p.expect)
    api.stop()
    study = Runner("study")
    for o in objectives:
      task = {"folder": str(folder), "fn": o.fn, "name": o.name, "trial_timeout": o.trial_timeout}
      result = study.run(task, o.trial_timeout + 90)
      if result["outcome"] != "hang" and o.check_child:
        survivor = probe_corpus.surviving_child(folder, o.fn)
        if survivor:
          result = {"outcome": "wrong", "detail": f"child process {survivor} outlived the trial "
                                                  f"({result['detail']})"[:220]}
      record(o.name, "study", result, o.expect)
    study.stop()

  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    futures = [pool.submit(api_and_study)]
    for p in spaces:
      argv = p.cli or ["space", "check", str(p.path), "--samples", "16"]
      place = p.cli_place or str(p.path)
      futures.append(pool.submit(lambda p=p, argv=argv, place=place: record(
          p.name, "cli", run_cli(argv, str(p.path), p.timeout, place), p.cli_expect or p.expect)))
    for f in futures:
      f.result()
  return outcomes


def table(outcomes: list[Outcome], probes: int, argv: list[str], seconds: float) -> str:
  lines = [
      "# Hostile-input probe",
      "",
      f"Command: `{COMMAND}{(' ' + ' '.join(argv)) if argv else ''}` "
      f"({datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPUs, "
      f"{seconds / 60:.1f} min).",
      "",
      "Each probe is a space file (through `metatune.space.io.load` plus a jitted sample, and "
      "through `metatune space check`/`sample` as a subprocess) or an objective (through "
      "`Study.optimize`, process executor). Runs are probe x entry point.",
      "",
      "| entry point | runs | clear errors | accepted | tracebacks | hangs | wrong |",
      "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for entry in ("api", "cli", "study", "all"):
    rows = [o for o in outcomes if entry in ("all", o.entry)]
    if not rows:
      continue
    counts = [sum(o.outcome == k for o in rows) for k in OUTCOMES]
    label = {"api": "space: `io.load` + sample", "cli": "space: `metatune space ...`",
             "study": "objective: `Study.optimize`", "all": "**all**"}[entry]
    lines.append(f"| {label} | {len(rows)} | " + " | ".join(map(str, counts)) + " |")
  lines += ["", f"Probes: {probes}.", ""]
  bad = [o for o in outcomes if o.outcome in ("traceback", "hang", "wrong")]
  if bad:
    lines += ["Not clear (traceback, hang or wrong):", ""]
    lines += [f"- `{o.probe}` ({o.entry}): {o.outcome}: {o.detail}" for o in
              sorted(bad, key=lambda o: (o.entry, o.probe))]
  else:
    lines.append("Every run ended in a clear error or was accepted as expected.")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--runner", choices=["api", "study"], help=argparse.SUPPRESS)
  ap.add_argument("--slice", type=int, default=None, metavar="N",
                  help="run N space probes (and N/4 objectives) spread over the corpus")
  ap.add_argument("--only", choices=["space", "objective"], default=None)
  ap.add_argument("--pick", action="append", metavar="NAME", help="run only this probe "
                  "(repeatable; names as in the table)")
  ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                  help="command-line probes run at once (default: the CPU count)")
  ap.add_argument("--out", default=str(DEFAULT_OUT), help="the table (Markdown)")
  args = ap.parse_args(argv)
  if args.runner:
    runner_main(args.runner)
    return 0
  given = list(argv if argv is not None else sys.argv[1:])
  shown = [a for i, a in enumerate(given) if not a.startswith("--out") and
           (i == 0 or given[i - 1] != "--out")]
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="metatune-probe-") as tmp:
    folder = Path(tmp)
    outcomes = run_all(folder, args.only, args.slice, max(1, args.jobs), args.pick)
    probes = len({o.probe for o in outcomes})
  text = table(outcomes, probes, shown, time.perf_counter() - t0)
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(text, encoding="utf-8")
  print(text)
  return 1 if any(o.outcome in ("traceback", "hang") for o in outcomes) else 0


if __name__ == "__main__":
  sys.exit(main())
