"""Meta-dataset builder: a space-filling design evaluated on every task of a family, resumable.

Output folder (open formats, readable without metatune)::

  manifest.json           provenance: family config, space signature, versions, git commit,
                          seeds, design, and each task's split and status
  space.json              the space as a metatune document
  design.npz              values f32[N, D], active bool[N, D]: the configurations (same for
                          every task, so tasks are comparable)
  tasks/<task>.npz        values, active, objective, test_objective, curve, cost, num_params,
                          memory, failed, reason (arrays over the N configurations)
  tasks/<task>.jsonl      one line per configuration: its parameters and metrics

Work is saved chunk by chunk (``tasks/<task>.part-K.npz``, written through a
rename), so a killed build continues where it stopped when run again.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
import subprocess
import tempfile
from typing import Any, Callable, Iterable

import jax
import numpy as np

import metatune
from metatune.space import SpaceError, io, sampling
from metatune.tasks.base import REASONS, SPLITS, TaskFamily
from metatune.tasks.registry import FamilyConfig
from metatune.tuners import quasi_random
from metatune.tuners.base import Points

FORMAT = "metatune-dataset/1"
FIELDS = ("objective", "test_objective", "curve", "cost", "num_params", "memory", "failed",
          "reason")


def safe_name(task_id: str) -> str:
  """A file name for a task id (``digits/mlp`` -> ``digits__mlp``)."""
  return re.sub(r"[^A-Za-z0-9._-]+", "__", task_id)


def design(family: TaskFamily, num: int, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The shared configurations: scrambled Halton (conditional-aware) or random, all valid."""
  space = family.space
  if kind == "quasi_random":
    tuner = quasi_random(space, batch_size=num)
    init_key, ask_key = jax.random.split(jax.random.key(seed))
    points, _ = tuner.ask(ask_key, tuner.init(init_key))
    values, active = points.values, points.active
  else:
    values, active = sampling.sample(jax.random.key(seed), space, num)
  return np.asarray(values), np.asarray(active)


def _atomic_save(path: pathlib.Path, write: Callable[[str], None]):
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]):
  """Writes ``.npz`` atomically (a temporary file renamed over the target)."""
  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  _atomic_save(path, write)


def save_text(path: pathlib.Path, text: str):
  """Writes UTF-8 text atomically."""
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  _atomic_save(path, write)


def _git_commit() -> str | None:
  try:
    root = pathlib.Path(metatune.__file__).resolve().parents[1]
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                         text=True, timeout=5, check=True)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def _fingerprint(config: FamilyConfig, family: TaskFamily, num: int) -> dict[str, Any]:
  return {"family": config.to_dict(), "space_signature": family.space.signature,
          "configs_per_task": num}


class _Sharder:
  """Splits a batch over every local device (a 1-D mesh); one device: no-op."""

  def __init__(self, devices=None):
    self.devices = list(devices or jax.local_devices())
    self.n = len(self.devices)
    if self.n > 1:
      mesh = jax.sharding.Mesh(np.asarray(self.devices), ("batch",))
      self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))

  def put(self, values: np.ndarray, active: np.ndarray) -> tuple[Points, int]:
    b = values.shape[0]
    pad = (-b) % self.n
    if pad:
      values = np.concatenate([values, np.repeat(values[-1:], pad, 0)])
      active = np.concatenate([active, np.repeat(active[-1:], pad, 0)])
    points = Points(values, active)
    if self.n > 1:
      points = jax.device_put(points, self.sharding)
    return points, b


def build(config: FamilyConfig, family: TaskFamily, out: str | os.PathLike,
          splits: Iterable[str] | None = None, max_tasks: int | None = None,
          configs_per_task: int | None = None, progress: bool = True,
          data_dir: str | None = None) -> dict[str, Any]:
  """Evaluates the design on every task (of ``splits``) and writes the dataset folder.

  Safe to interrupt: rerunning continues from the last saved chunk. A folder
  that holds a dataset of another family or design is refused, never overwritten.

  Returns:
    A summary: tasks done, evaluations, failures.
  """
  settings = config.dataset
  num = configs_per_task or settings.configs_per_task
  out = pathlib.Path(out)
  (out / "tasks").mkdir(parents=True, exist_ok=True)
  fingerprint = _fingerprint(config, family, num)
  manifest_path = out / "manifest.json"
  if manifest_path.exists():
    old = json.loads(manifest_path.read_text())
    if old.get("fingerprint") != fingerprint:
      raise SpaceError(f"{out} holds a dataset of another family, space or design "
                       f"({old.get('fingerprint', {}).get('family', {}).get('name')!r}); "
                       "choose another --out", str(out))
  split_names = list(splits) if splits else list(SPLITS)
  for s in split_names:
    if s not in SPLITS:
      raise SpaceError(f"unknown split {s!r}; expected one of {', '.join(SPLITS)}")
  all_splits = family.splits()
  jobs = [(t, s) for s in split_names for t in all_splits.get(s, [])]
  if max_tasks is not None:
    jobs = jobs[:max_tasks]

  design_path = out / "design.npz"
  if design_path.exists():
    with np.load(design_path) as d:
      values, active = d["values"], d["active"]
  else:
    values, active = design(family, num, settings.design, settings.seed)
    save_npz(design_path, {"values": values, "active": active})
  if not (out / "space.json").exists():
    save_text(out / "space.json", io.dumps(family.space))

  manifest = {
      "format": FORMAT,
      "fingerprint": fingerprint,
      "family": config.to_dict(),
      "family_name": family.name,
      "space_signature": family.space.signature,
      "fidelity": None if family.fidelity is None else dataclasses.asdict(family.fidelity),
      "cost_unit": family.cost_unit,
      "design": {"kind": settings.design, "seed": settings.seed, "configs_per_task": num},
      "metatune_version": metatune.__version__,
      "jax_version": jax.__version__,
      "git_commit": _git_commit(),
      "data_dir": None if data_dir is None else str(data_dir),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "reasons": list(REASONS),
      "tasks": {},
  }
  if manifest_path.exists():
    manifest["created"] = json.loads(manifest_path.read_text()).get("created",
                                                                     manifest["created"])
    manifest["tasks"] = json.loads(manifest_path.read_text()).get("tasks", {})
  for t, s in jobs:
    manifest["tasks"].setdefault(t, {"split": s, "file": f"tasks/{safe_name(t)}.npz",
                                     "status": "pending"})
  save_text(manifest_path, json.dumps(manifest, indent=2))

  batch = max(1, min(settings.batch_size, num))
  num_chunks = math.ceil(num / batch)
  sharder = _Sharder()
  total = sum(num_chunks for t, _ in jobs if not (out / manifest["tasks"][t]["file"]).exists())
  bar = _progress(total, progress)
  summary = {"tasks": len(jobs), "evaluations": 0, "failed": 0, "skipped_tasks": 0}
  try:
    for index, (task_id, _) in enumerate(jobs):
      final = out / manifest["tasks"][task_id]["file"]
      if final.exists():
        summary["skipped_tasks"] += 1
        continue
      task = family.task(task_id)
      evaluate = jax.jit(task.evaluate)
      parts = []
      for c in range(num_chunks):
        part = out / "tasks" / f"{safe_name(task_id)}.part-{c:05d}.npz"
        parts.append(part)
        if part.exists():
          continue
        lo, hi = c * batch, min(num, (c + 1) * batch)
        points, real = sharder.put(values[lo:hi], active[lo:hi])
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(settings.seed + 1), index), c)
        metrics = jax.device_get(evaluate(key, points))
        save_npz(part, {f: np.asarray(getattr(metrics, f))[:real] for f in FIELDS})
        bar.set_postfix_str(task_id)
        bar.update(1)
      merged = _merge(parts)
      _write_task(out, family, task_id, values, active, merged)
      for p in parts:
        p.unlink()
      summary["evaluations"] += num
      summary["failed"] += int(merged["failed"].sum())
      manifest["tasks"][task_id]["status"] = "done"
      manifest["tasks"][task_id]["failed"] = int(merged["failed"].sum())
      save_text(manifest_path, json.dumps(manifest, indent=2))
  finally:
    bar.close()
  return summary


def _merge(parts: list[pathlib.Path]) -> dict[str, np.ndarray]:
  """Concatenates the chunk files of a task, opening each once."""
  chunks = []
  for p in parts:
    with np.load(p) as d:
      chunks.append({f: d[f] for f in FIELDS})
  return {f: np.concatenate([c[f] for c in chunks]) for f in FIELDS}


def _write_task(out, family, task_id, values, active, merged):
  configs = family.space.decode_batch(values, active)
  lines = []
  for i, cfg in enumerate(configs):
    row = {"task": task_id, "config": cfg}
    for f in ("objective", "test_objective", "cost", "num_params", "memory"):
      v = float(merged[f][i])
      row[f] = v if math.isfinite(v) else None
    row["curve"] = [float(x) if math.isfinite(x) else None for x in merged["curve"][i]]
    row["failed"] = bool(merged["failed"][i])
    row["reason"] = REASONS[int(merged["reason"][i])]
    lines.append(json.dumps(row))
  save_text(out / "tasks" / f"{safe_name(task_id)}.jsonl", "\n".join(lines) + "\n")
  save_npz(out / "tasks" / f"{safe_name(task_id)}.npz",
            {"values": values, "active": active, **merged})


def _progress(total: int, enabled: bool):
  try:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  except ImportError:  # pragma: no cover
    tqdm = None
  if tqdm is None or not enabled:
    return _NoBar()
  return tqdm(total=total, unit="chunk", desc="evaluating", dynamic_ncols=True)


class _NoBar:

  def update(self, n):
    del n

  def set_postfix_str(self, s):
    del s

  def close(self):
    pass


def load(folder: str | os.PathLike) -> dict[str, Any]:
  """Reads a dataset folder back: manifest plus ``{task_id: arrays}`` for finished tasks."""
  folder = pathlib.Path(folder)
  try:
    manifest = json.loads((folder / "manifest.json").read_text())
  except OSError as e:
    raise SpaceError(f"not a dataset folder: {e.strerror}", str(folder)) from None
  tasks = {}
  for t, info in manifest["tasks"].items():
    path = folder / info["file"]
    if path.exists():
      with np.load(path) as d:
        tasks[t] = {k: d[k] for k in d.files}
  return {"manifest": manifest, "tasks": tasks}
