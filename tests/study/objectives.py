"""Objectives the study tests run in worker processes (importable by module path)."""

import math
import os
import subprocess
import sys
import time

from metatune.study import TrialPruned


def quadratic(trial):
  """A bowl in x and y; the categorical branch adds a small offset."""
  c = trial.config
  return (c["x"] - 1.0) ** 2 + (c["y"] + 0.5) ** 2 + (0.1 * c["z"] if c["opt"] == "b" else 0.0)


def bad(trial):
  """One trial in five misbehaves: raises, returns NaN, or hangs (by trial number)."""
  kind = trial.number % 15
  if kind == 3:
    raise RuntimeError(f"boom in trial {trial.number}")
  if kind == 8:
    return float("nan")
  if kind == 13:
    time.sleep(3600)
  return quadratic(trial)


def curve(trial):
  """A learning curve over 9 epochs; the final loss is the quadratic; prunable."""
  final = quadratic(trial)
  for epoch in range(1, 10):
    trial.report(epoch, final + 5.0 / epoch)
    if trial.should_prune():
      raise TrialPruned()
  return final


def multi(trial):
  """Two objectives (loss minimized, score maximized) and one constraint (x <= 2)."""
  c = trial.config
  return {"loss": (c["x"] - 1.0) ** 2, "score": -((c["y"] - 1.0) ** 2), "limit": c["x"] - 2.0,
          "note": "extra"}


def logged(trial):
  """The quadratic after a short random-ish sleep; appends the trial number to $FAULT_LOG."""
  time.sleep(0.02 + (trial.seed % 100) / 1000.0)
  value = quadratic(trial)
  path = os.environ.get("FAULT_LOG")
  if path:
    with open(path, "a", encoding="utf-8") as f:
      f.write(f"{trial.number} {value!r}\n")
  return value


def diverging(trial):
  """Reports a NaN loss at epoch 2 for odd trials (training diverged), then returns a value."""
  for epoch in range(1, 4):
    loss = math.nan if (trial.number % 2 and epoch == 2) else 1.0 / epoch
    trial.report(epoch, loss)
    if trial.should_prune():
      break
  return 0.5


TOY_SPACE = """
name: toy
parameters:
  x: {type: float, low: -5.0, high: 5.0}
  y: {type: float, low: -5.0, high: 5.0}
  opt: {type: categorical, choices: [a, b]}
  z: {type: int, low: 1, high: 8, when: "opt == 'b'"}
constraints:
  - "x + y <= 9"
"""


def toy_space_file(folder):
  """Writes the toy space (conditional, constrained) to ``folder/toy.yaml``; returns its path."""
  path = os.path.join(str(folder), "toy.yaml")
  with open(path, "w", encoding="utf-8") as f:
    f.write(TOY_SPACE)
  return path


def crash(trial):
  """Exits the worker process abruptly on even trials."""
  if trial.number % 2 == 0:
    os._exit(3)
  return quadratic(trial)


def hog(trial):
  """Allocates about 1 GiB on trial 0 (past a memory limit), else the quadratic."""
  if trial.number == 0:
    block = bytearray(1 << 30)
    return float(len(block))
  return quadratic(trial)


def fails_on_b(trial):
  """Fails whenever the categorical takes 'b' (a failure cluster for the report)."""
  if trial.config["opt"] == "b":
    raise ValueError("branch b is broken")
  return quadratic(trial)


def bad_inline(trial):
  """Like `bad` without the hang (for the inline executor): raises or returns NaN."""
  if trial.number % 5 == 1:
    raise RuntimeError(f"boom in trial {trial.number}")
  if trial.number % 5 == 3:
    return float("nan")
  return quadratic(trial)


def chatty(trial):
  """Prints about 1 MB to stdout and a little to stderr; odd trials then kill their process."""
  for i in range(20000):
    print(f"trial {trial.number} line {i:05d} " + "x" * 32)
  print(f"stderr of trial {trial.number}", file=sys.stderr)
  print(f"done {trial.number}")
  if trial.number % 2:
    sys.stdout.flush()
    os._exit(5)
  return quadratic(trial)


def spawner(trial):
  """Starts a long `sleep` child and leaves it running; reports whether the last one still runs.

  The pid of each child goes to $SPAWN_LOG; the value is 1.0 when the previous trial's child
  is still alive, else 0.0.
  """
  path = os.environ["SPAWN_LOG"]
  alive = 0.0
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      last = int(f.read().split()[-1])
    alive = float(pid_alive(last))
  child = subprocess.Popen(["sleep", "60"])
  with open(path, "a", encoding="utf-8") as f:
    f.write(f"{child.pid}\n")
  return alive


def pid_alive(pid):
  """Whether process ``pid`` exists and is not a zombie."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
  except OSError:
    return False


class DiesWhenLoaded:
  """An objective whose unpickling ends the worker process (a worker that dies while starting)."""

  def __call__(self, trial):
    return 0.0

  def __reduce__(self):
    return (os._exit, (3,))

