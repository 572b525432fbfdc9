"""Plans a profile of the registry, runs what is not up to date and stamps it (the report: `text`).

Each entry runs as a subprocess from the repository root, its output in ``{paper}/logs/NAME.log``.
When it succeeds (exit code 0 and every declared output written) a stamp
``{paper}/logs/NAME.stamp.json`` records its command, profile, exit code, seconds, machine and a
hash of its definition, its input files and the hashes of the entries it needs; a later run
skips an entry whose stamp matches and whose outputs exist, and reruns it (and what needs it)
when any of them changed.

Entries run with the root first on ``PYTHONPATH`` (a script imports this checkout's metatune,
not one installed from elsewhere) and share JAX's persistent compilation cache in
``{cache}/jax_cache`` (`entry_env`). With ``jobs`` above 1, entries that do not need each other
run at once (most use about one CPU core); stamps and the report are those of a sequential run.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Sequence, TextIO

from metatune import machine as hostcpu
from metatune.reproduce.registry import PROFILES, Registry, Step, order, resolve
from metatune.space import yamlio
from metatune.space.errors import SpaceError

NO_DATA = "needs the data folder (METATUNE_DATA_DIR or --data-dir)"
NO_GPU = "needs a GPU (jax's backend here is the CPU)"


@dataclasses.dataclass
class Item:
  """An entry of a plan and what happens to it.

  Attributes:
    step: the entry resolved for the profile.
    hash: of its definition, its input files and the hashes of the entries it needs.
    inputs: its input files and their hashes.
    status: before a run ``run``, ``done`` (its stamp matches), ``skip`` or ``unselected``
      (outside ``--only``); after one also ``ran``, ``failed`` or ``not run``.
    reason: why (the skip's reason, what changed since the stamp, why it failed, ...).
    stamp: its stamp when it matches (or was just written).
    seconds: how long it ran in this run.
  """
  step: Step
  hash: str
  inputs: dict[str, str]
  status: str
  reason: str = ""
  stamp: dict | None = None
  seconds: float | None = None

  @property
  def name(self) -> str:
    return self.step.entry.name


def _hash(doc: Any) -> str:
  return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _file_hash(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def detect_gpu() -> bool:
  """Whether jax sees a GPU, asked in a subprocess so that this process never holds the device."""
  try:
    done = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                          capture_output=True, text=True, timeout=300, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return False
  lines = done.stdout.split()
  return done.returncode == 0 and bool(lines) and lines[-1] == "gpu"


def machine() -> dict[str, Any]:
  """Platform, CPU (`metatune.machine.cpu`), CPU count, jax version and 1-minute load average
  (jax is not imported)."""
  try:
    jax_version = importlib.metadata.version("jax")
  except importlib.metadata.PackageNotFoundError:
    jax_version = "not installed"
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  return {"platform": platform.platform(), "cpu": hostcpu.cpu(), "cpus": os.cpu_count(),
          "jax": jax_version, "load_average": round(load, 2)}


def _files_of(config: pathlib.Path) -> list[pathlib.Path]:
  """The files an experiment config names: its family and its tuners' beliefs files (none
  when it cannot be read)."""
  try:
    fields = dict(yamlio.load(yamlio.read_text(str(config), "experiment config"),
                              str(config)).items())
    out = [(config.parent / str(fields["family"].scalar())).resolve()]
    tuners = fields["tuners"].plain() if "tuners" in fields else {}
  except (SpaceError, KeyError, TypeError):
    return []
  for spec in (tuners or {}).values():
    beliefs = ((spec or {}).get("options") or {}).get("beliefs") if isinstance(spec, dict) else None
    if isinstance(beliefs, str):
      out.append((config.parent / beliefs).resolve())
  return out


def _inputs(step: Step, root: pathlib.Path, produced: set[str]) -> dict[str, str]:
  """The files a step reads that no entry writes: its config, family and beliefs files, its
  script, and the arguments that name files."""
  e = step.entry
  found: list[pathlib.Path] = []
  if e.config:
    found.append(root / e.config)
    found += _files_of(root / e.config)
  found += [root / w for w in step.argv[1:] if not os.path.isabs(w) and w not in produced]
  out = {}
  for path in found:
    try:
      rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
      continue
    if rel not in produced and path.is_file():
      out[rel] = _file_hash(path)
  return dict(sorted(out.items()))


def _check_step(step: Step, root: pathlib.Path, check_configs: bool) -> None:
  e = step.entry
  for what in ("config", "script"):
    path = getattr(e, what)
    if path and not (root / path).is_file():
      raise SpaceError(f"entry {e.name!r}: its {what} {path} does not exist", e.where)
  if e.kind == "evaluate" and check_configs:
    # The settings are checked as `metatune evaluate --set` checks them: before anything runs.
    # pylint: disable=import-outside-toplevel
    from metatune.evaluation.experiment import load_experiment
    try:
      load_experiment(root / e.config, step.settings)
    except SpaceError as err:
      raise SpaceError(f"entry {e.name!r} ({step.profile} profile): {err}",
                       e.profile(step.profile).where) from None


def read_stamp(path: pathlib.Path) -> dict | None:
  try:
    doc = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None
  return doc if isinstance(doc, dict) else None


def plan(registry: Registry, profile: str, root: str | os.PathLike, only: Sequence[str] = (),
         data_dir: str | None = None, gpu: bool | None = None,
         check_configs: bool = True) -> list[Item]:
  """Every entry of the registry in dependency order, with what a run would do to it.

  Args:
    registry: the registry.
    profile: ``quick`` or ``full``.
    root: the repository root (paths of the registry are relative to it).
    only: run only these entries and what they need (the others are ``unselected``).
    data_dir: the data folder, or None when there is none (entries with ``data`` skip).
    gpu: whether a GPU is there; None asks jax (in a subprocess) when an entry needs one.
    check_configs: load every evaluate entry's config with its settings (imports jax).

  Returns:
    the items, in the order a run takes them.

  Raises:
    SpaceError: a config or script that does not exist, a bad setting of an evaluate entry,
      a name of ``only`` that is no entry.
  """
  root = pathlib.Path(root)
  entries = order(registry)
  selected = {e.name for e in order(registry, only)}
  steps = {e.name: resolve(e, profile) for e in entries}
  produced = {o for s in steps.values() for o in s.outputs}
  items: dict[str, Item] = {}
  found_gpu: list[bool] = [] if gpu is None else [gpu]

  def gpu_here() -> bool:
    if not found_gpu:
      found_gpu.append(detect_gpu())
    return found_gpu[0]

  for e in entries:
    step = steps[e.name]
    _check_step(step, root, check_configs)
    inputs = _inputs(step, root, produced)
    needs = {n: items[n].hash for n in e.needs}
    digest = _hash({"kind": e.kind, "command": step.command, "outputs": list(step.outputs),
                    "inputs": inputs, "needs": needs})
    item = Item(step, digest, inputs, "run")
    items[e.name] = item
    stamp = read_stamp(root / step.stamp)
    matches = stamp is not None and stamp.get("hash") == digest
    missing = [o for o in step.outputs if not (root / o).exists()]
    skipped = [n for n in e.needs if items[n].status == "skip"]
    rerun = [n for n in e.needs if items[n].status == "run"]
    if e.name not in selected:
      item.status, item.stamp = "unselected", stamp if matches and not missing else None
    elif step.skip:
      item.status, item.reason = "skip", step.skip
    elif e.data and not data_dir:
      item.status, item.reason = "skip", NO_DATA
    elif skipped:
      item.status, item.reason = "skip", f"needs {skipped[0]!r}, which is skipped"
    elif e.gpu and not gpu_here():
      item.status, item.reason = "skip", NO_GPU
    elif rerun:
      item.reason = f"needs {rerun[0]!r}, which runs"
    elif stamp is None:
      item.reason = "no stamp yet"
    elif not matches:
      item.reason = "its command, input files or needs changed since its stamp"
    elif missing:
      item.reason = f"its output {missing[0]} is missing"
    else:
      item.status, item.stamp = "done", stamp
  return list(items.values())


def _clock(seconds: float) -> str:
  m, s = divmod(round(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Progress:
  """A line per entry as it starts, ``[k/n] NAME: running (log ...)``, and one as it ends, with
  its elapsed time; with ``live``, one live tqdm line per entry instead (for a terminal, and for
  one entry at a time). ``k`` counts the entries in the order they start."""

  def __init__(self, total: int, out: TextIO, live: bool):
    self.total, self.out, self.live = total, out, live
    self.bar = None
    self.started = 0
    self.labels: dict[str, str] = {}

  def start(self, name: str, log: str) -> None:
    self.started += 1
    label = self.labels[name] = f"[{self.started}/{self.total}] {name}"
    if self.live:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      # A terminal that reports no width (some ptys) would truncate the line to nothing.
      self.bar = tqdm(total=None, desc=f"{label}: running (log {log})",
                      bar_format="{desc} {elapsed}", file=self.out, leave=True,
                      ncols=shutil.get_terminal_size((100, 20)).columns)
    else:
      print(f"{label}: running (log {log})", file=self.out, flush=True)

  def tick(self) -> None:
    if self.bar is not None:
      self.bar.refresh()

  def end(self, name: str, text: str, seconds: float) -> None:
    label = self.labels.pop(name)
    if self.bar is not None:
      self.bar.set_description_str(f"{label}: {text}, in", refresh=True)
      self.bar.close()
      self.bar = None
    else:
      print(f"{label}: {text}, in {_clock(seconds)}", file=self.out, flush=True)


@dataclasses.dataclass
class _Running:
  """An entry that was started: its subprocess (None: it could not start) and when."""
  item: Item
  proc: subprocess.Popen | None
  start: float

  def code(self) -> int | None:
    """Its exit code, None while it runs (127: it could not start)."""
    return 127 if self.proc is None else self.proc.poll()


def _launch(step: Step, root: pathlib.Path, env: dict[str, str],
            log_path: pathlib.Path) -> subprocess.Popen | None:
  """Starts the step with its output in its log; None when it cannot start (said in the log)."""
  with open(log_path, "w", encoding="utf-8") as log:
    log.write(f"# {step.command}\n# started {datetime.datetime.now().isoformat(timespec='seconds')}"
              f" in {root}\n")
    log.flush()
    try:
      # The child writes to its own copy of the log's descriptor: this one can close.
      return subprocess.Popen(step.argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    except OSError as e:
      log.write(f"could not start {step.argv[0]}: {e}\n")
      return None


def _wait(running: list[_Running], tick: Callable[[], None]) -> list[_Running]:
  """Waits until one or more of the running entries end; returns those, in their order."""
  while True:
    done = [r for r in running if r.code() is not None]
    if done:
      return done
    try:
      # One entry: wake on its end at once. Several: poll them all, 20 times a second.
      running[0].proc.wait(timeout=1.0 if len(running) == 1 else 0.05)
    except subprocess.TimeoutExpired:
      tick()


def _terminate(running: list[_Running]) -> None:
  """Stops the running entries (Ctrl-C): terminate, and kill what is still there 10 s later."""
  procs = [r.proc for r in running if r.proc is not None]
  for proc in procs:
    proc.terminate()
  deadline = time.monotonic() + 10
  for proc in procs:
    try:
      proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def entry_env(root: str | os.PathLike, profile: str, data_dir: str | None = None,
              base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of a profile's entries: ``base`` (this process's) plus what they share.

  The root goes first on ``PYTHONPATH``: ``python experiments/x.py`` puts only experiments/ on
  the path, so it would otherwise import whichever metatune is installed (another checkout's,
  when that one is installed editable). JAX's persistent compilation cache in
  ``{cache}/jax_cache`` (compilations of a second or more) lets an entry reuse what an earlier
  one compiled; settings of these in ``base`` are kept.

  Example:
    >>> env = entry_env("/repo", "quick", base={})
    >>> env["PYTHONPATH"], env["JAX_COMPILATION_CACHE_DIR"]
    ('/repo', '/repo/.cache_data/quick/jax_cache')
  """
  env = dict(os.environ if base is None else base, PYTHONUNBUFFERED="1")
  root = os.path.abspath(root)
  env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                else []))
  env.setdefault("JAX_COMPILATION_CACHE_DIR",
                 os.path.join(root, PROFILES[profile]["cache"], "jax_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
  if data_dir:
    env["METATUNE_DATA_DIR"] = os.path.abspath(data_dir)
  return env


def _write_json(path: pathlib.Path, doc: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
  os.replace(tmp, path)


def _stop_after(failed: Sequence[Item], later: list[Item]) -> None:
  """Marks the entries that failed (or interrupted) ones leave unrun, saying why.

  Args:
    failed: the entries that failed, the one that stopped the run first.
    later: the entries that did not start, in dependency order; updated in place.
  """
  failed_names = {item.name for item in failed}
  blocked = set(failed_names)
  for item in later:
    cause = next((n for n in item.step.entry.needs if n in blocked), None)
    item.status = "not run"
    if cause is not None:
      blocked.add(item.name)
      item.reason = f"needs {cause!r}, which {'failed' if cause in failed_names else 'did not run'}"
    else:
      item.reason = f"the run stopped when {failed[0].name!r} failed"


def _check_order(todo: list[Item]) -> None:
  names = {item.name for item in todo}
  seen: set[str] = set()
  for item in todo:
    late = [n for n in item.step.entry.needs if n in names and n not in seen]
    if late:
      raise ValueError(f"entry {item.name!r} comes before {late[0]!r}, which it needs: the "
                       "items must be in dependency order (as plan returns them)")
    seen.add(item.name)


def _finish(running: _Running, root: pathlib.Path, progress: _Progress) -> bool:
  """Records how an entry that ended did (stamped when it succeeded); whether it succeeded."""
  item, step, code = running.item, running.item.step, running.code()
  item.seconds = time.perf_counter() - running.start
  missing = [o for o in step.outputs if not (root / o).exists()]
  if code != 0 or missing:
    item.status = "failed"
    item.reason = (f"exit code {code}" if code != 0 else
                   f"exit code 0 but its output {missing[0]} was not written")
    progress.end(item.name, f"FAILED ({item.reason}; log {step.log})", item.seconds)
    return False
  item.stamp = {"name": item.name, "profile": step.profile, "command": step.command,
                "exit_code": code, "seconds": round(item.seconds, 1), "hash": item.hash,
                "inputs": item.inputs,
                "finished": datetime.datetime.now().isoformat(timespec="seconds"),
                "machine": machine()}
  _write_json(root / step.stamp, item.stamp)
  item.status, item.reason = "ran", ""
  progress.end(item.name, "ok", item.seconds)
  return True


def run(items: list[Item], root: str | os.PathLike, data_dir: str | None = None,
        out: TextIO = sys.stdout, live: bool = False, jobs: int = 1) -> bool:
  """Runs the items whose status is ``run``, up to ``jobs`` at once, stamping each that succeeds.

  An item starts when every item it needs that is part of the run has succeeded; of the items
  ready to start, the earliest in ``items`` goes first, so ``jobs=1`` runs them in order. The
  first failure (an exit code other than 0, or a declared output not written) stops the run: no
  item starts after it, the running ones finish (and are stamped when they succeed), the failed
  become ``failed`` and the rest ``not run``. Ctrl-C terminates the running items (``failed``,
  interrupted) and raises KeyboardInterrupt. Stamps and seconds (each item's own wall time) are
  those a run one at a time would write.

  Args:
    items: a plan (`plan`), in its order; updated in place.
    root: the repository root (each entry's working directory).
    data_dir: the data folder, passed to the entries as ``METATUNE_DATA_DIR`` (their whole
      environment: `entry_env`).
    out: where the progress lines go.
    live: one live line per entry with its elapsed time (tqdm), for a terminal; only with
      ``jobs=1`` (with more, a line when an entry starts and one when it ends).
    jobs: how many entries may run at once.

  Returns:
    whether every entry that was to run succeeded.

  Raises:
    ValueError: ``jobs`` below 1, or items out of dependency order.

  Example:
    >>> ok = run(plan(registry, "quick", "."), ".", jobs=2)  # doctest: +SKIP
  """
  if jobs < 1:
    raise ValueError(f"jobs must be at least 1, got {jobs}")
  root = pathlib.Path(root)
  todo = [item for item in items if item.status == "run"]
  _check_order(todo)
  by_name = {item.name: item for item in todo}
  progress = _Progress(len(todo), out, live and jobs == 1)
  pending, running, failed = list(todo), [], []

  def ready(item: Item) -> bool:  # what it needs of this run succeeded
    return all(n not in by_name or by_name[n].status == "ran" for n in item.step.entry.needs)

  try:
    while pending or running:
      while not failed and len(running) < jobs:
        item = next((i for i in pending if ready(i)), None)
        if item is None:
          break
        pending.remove(item)
        step = item.step
        for path in (step.log,) + step.outputs:
          (root / path).parent.mkdir(parents=True, exist_ok=True)
        progress.start(item.name, step.log)
        running.append(_Running(item, None, time.perf_counter()))
        running[-1].proc = _launch(step, root, entry_env(root, step.profile, data_dir),
                                   root / step.log)
      if not running:
        break  # a failure: what is pending does not start
      for ended in _wait(running, progress.tick):
        running.remove(ended)
        if not _finish(ended, root, progress):
          failed.append(ended.item)
  except BaseException:  # Ctrl-C (or an error here): stop the running entries before leaving
    _terminate(running)
    for stopped in running:
      stopped.item.status, stopped.item.reason = "failed", "interrupted"
      stopped.item.seconds = time.perf_counter() - stopped.start
      progress.end(stopped.item.name, "interrupted", stopped.item.seconds)
      failed.append(stopped.item)
    rest = [i for i in todo if i.status == "run"]
    if failed:
      _stop_after(failed, rest)
    else:  # interrupted between two entries
      for unrun in rest:
        unrun.status, unrun.reason = "not run", "the run was interrupted"
    raise
  if failed:
    _stop_after(failed, pending)
  return not failed
