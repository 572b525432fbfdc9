"""`metatune evaluate`: every tuner x task x seed of an experiment, compiled once, resumable.

Output folder::

  experiment.json        the resolved experiment (what a rerun must match)
  reference.json         each task's optimum, median and worst (regret's normalization)
  cells/<tuner>/<task>.npz   best-so-far per seed and trial, failures, seconds (one per
                         finished tuner x task: kill the run and rerun, it continues)
  portfolios/<tuner>.json    portfolios the harness built (usable by a study)
  results.json           regrets of every run, the statistics, timings, compile counts
  table.md, curves.png   the report (`metatune.evaluation.report`)

Normalized regret is ``(f(best so far) - f*) / (median - f*)`` on the noise-free
objective, where ``f*`` and the median are exact on pools (recorded
evaluations) and estimated by random configurations refined by local search on
live tasks; before the first successful trial ``f(best)`` is the task's worst.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import shlex
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune import machine as hostcpu
from metatune.data import builder
from metatune.evaluation import peers
from metatune.evaluation.experiment import DEFAULT_CHECKPOINTS, Experiment, TunerSpec, error_at
from metatune.evaluation.runs import live_run, many_seeds, nearest_available, pool_run
from metatune.meta.errors import PriorError
from metatune.space import SpaceError
from metatune.tasks import registry
from metatune.tuners import portfolio as pf
from metatune.tuners.base import Points
from metatune.tuners.gp import gp_bo
from metatune.tuners.search import TUNERS

ENV_METHODS = ("task_params", "clean", "evaluate", "reference", "all_task_ids")


def _hash(doc: Any) -> str:
  return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _shown(path) -> str:
  """``path`` relative to the working directory when it is below it."""
  try:
    return str(pathlib.Path(path).resolve().relative_to(pathlib.Path.cwd().resolve()))
  except ValueError:
    return str(path)


def _safe(name: str) -> str:
  return builder.safe_name(name)


class Harness:
  """Runs an experiment into a folder (see the module docstring).

  Args:
    exp: the experiment.
    out: the output folder (created; a folder of another experiment is refused).
    data_dir: the data folder for families that read real data.
    progress: show a progress bar on stderr.
    log: where messages go.
  """

  def __init__(self, exp: Experiment, out: str | os.PathLike, data_dir=None,
               progress: bool = True, log: Callable[[str], Any] = print):
    self.exp = exp
    self.out = pathlib.Path(out)
    self.log = log
    self.progress = progress
    config = registry.load_family_config(exp.family_path)
    self.family_config = config
    self.family = registry.make_family(config, data_dir)
    missing = [m for m in ENV_METHODS if not hasattr(self.family, m)]
    if missing:
      raise SpaceError(f"family {config.family!r} ({exp.family_path}) cannot be evaluated by "
                       f"the harness: it is not a jittable environment (it lacks "
                       f"{', '.join(missing)})", exp.source)
    self.space = self.family.space
    self.pooled = hasattr(self.family, "pool_data")
    all_ids = self.family.all_task_ids()
    self.index_of = {t: i for i, t in enumerate(all_ids)}
    if isinstance(exp.tasks, str):
      ids = self.family.task_ids(exp.tasks)
      if not ids:
        raise SpaceError(f"the family {config.name!r} has no tasks in split {exp.tasks!r}",
                         exp.source)
    else:
      ids = list(exp.tasks)
      for t in ids:
        if t not in self.index_of:
          close = sorted(all_ids, key=lambda k: (len(set(k) ^ set(t)), k))[:3]
          raise SpaceError(f"task {t!r} is not a task of the family {config.name!r} (e.g. "
                           f"{', '.join(close)})", exp.source)
    self.task_ids = ids[:exp.max_tasks] if exp.max_tasks else ids
    if self.pooled:
      sizes = self.family.pool_sizes(self.task_ids)
      small = min(sizes, key=sizes.get)
      if exp.budget > sizes[small]:
        raise SpaceError(f"budget {exp.budget} exceeds the pool of task {small!r} "
                         f"({sizes[small]} recorded configurations); pool runs draw without "
                         "replacement", exp.source)
    past = [c for c in exp.checkpoints if c > exp.budget]
    if past and exp.checkpoints != DEFAULT_CHECKPOINTS:
      # Not an error: `--set budget=20` on a config written for 50 trials is a common shortcut
      # (the quick profile uses it), but the table should not lose columns without a word.
      log(f"note: checkpoint{'s' if len(past) > 1 else ''} {', '.join(map(str, past))} of "
          f"{exp.source} lie{'' if len(past) > 1 else 's'} past the budget of {exp.budget} "
          f"trials and {'are' if len(past) > 1 else 'is'} not reported")
    self.compiles: dict[str, int] = {}
    self.seconds: dict[str, float] = {}
    self.compile_seconds: dict[str, float] = {}
    self.unavailable: dict[str, str] = {}
    self._spec_hashes: dict[str, str] = {}

  # --------------------------------------------------------------- setup
  def fingerprint(self) -> dict:
    e = self.exp
    return {"family": self.family_config.to_dict(), "space_signature": self.space.signature,
            "tasks": self.task_ids, "budget": e.budget, "seeds": e.seeds, "seed": e.seed,
            "reference_samples": e.reference_samples, "reference_refine": e.reference_refine}

  def _prepare_folder(self):
    self.out.mkdir(parents=True, exist_ok=True)
    path = self.out / "experiment.json"
    doc = {"name": self.exp.name, "source": self.exp.source, "fingerprint": self.fingerprint(),
           "tuners": {t.label: t.fingerprint() for t in self.exp.tuners}}
    if path.exists():
      old = json.loads(path.read_text())
      if _hash(old.get("fingerprint")) != _hash(json.loads(json.dumps(doc["fingerprint"],
                                                                      default=str))):
        raise SpaceError(f"{self.out} holds results of another experiment (other family, "
                         "tasks, budget, seeds or references); use another --out or delete it",
                         str(self.out))
      doc["tuners"] = {**old.get("tuners", {}), **doc["tuners"]}
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")

  def task_data(self, task_id: str):
    return self.family.task_params(jnp.asarray(self.index_of[task_id], jnp.int32))

  def references(self) -> dict[str, tuple[float, float, float]]:
    """``{task: (optimum, median, worst)}``, computed once and stored."""
    path = self.out / "reference.json"
    key = _hash(self.fingerprint())
    if path.exists():
      doc = json.loads(path.read_text())
      if doc.get("key") == key:
        return {t: tuple(v) for t, v in doc["tasks"].items()}
    e = self.exp
    fn = jax.jit(lambda k, task: self.family.reference(k, task, e.reference_samples,
                                                       e.reference_refine))
    out = {}
    for t in self.task_ids:
      k = jax.random.fold_in(jax.random.key(e.seed + 7919), self.index_of[t])
      out[t] = tuple(float(x) for x in fn(k, self.task_data(t)))
    path.write_text(json.dumps({"key": key, "tasks": out}, indent=1) + "\n")
    return out

  # -------------------------------------------------------------- tuners
  def _portfolio_path(self, spec: TunerSpec) -> str:
    if "path" in spec.options:
      return spec.options["path"]
    build = spec.build
    path = self.out / "portfolios" / f"{_safe(spec.label)}.json"
    if path.exists():
      doc = json.loads(path.read_text())
      if doc.get("source", {}).get("build") == build:
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = build_portfolio_from_dataset(self.space, build["dataset"],
                                       self.family.task_ids(build["split"]), build["size"],
                                       where=spec.where)
    doc["source"]["build"] = build
    pf.save_portfolio(path, doc)
    self.log(f"{spec.label}: built a portfolio of {doc['size']} configurations from "
             f"{len(doc['training_tasks'])} {build['split']} tasks -> {path}")
    return str(path)

  def make_tuner(self, spec: TunerSpec):
    """The `Tuner` of a compiled tuner spec."""
    space, budget, b = self.space, self.exp.budget, spec.batch_size
    options = dict(spec.options)
    try:
      if spec.kind == "gp_bo":
        return gp_bo(space, batch_size=b, budget=budget, **options)
      if spec.kind == "portfolio":
        options.pop("path", None)
        return pf.portfolio_tuner(space, batch_size=b, path=self._portfolio_path(spec),
                                  history_size=max(budget, b), name=spec.label, **options)
      if spec.kind == "prior":
        from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
        return prior_tuner(space, batch_size=b, budget=budget, **options)
      return TUNERS[spec.kind](space, batch_size=b, history_size=max(budget, b), **options)
    except (SpaceError, PriorError):
      raise  # they name their place (a space file, a prior folder) themselves
    except (TypeError, ValueError) as e:
      raise SpaceError(f"tuner {spec.label!r}: bad options {spec.options}: {e}",
                       spec.where) from None

  def run_keys(self, task_id: str) -> jax.Array:
    base = jax.random.fold_in(jax.random.key(self.exp.seed), self.index_of[task_id])
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(self.exp.seeds))

  def peer_seed(self, task_id: str, s: int) -> int:
    return int(np.random.SeedSequence([self.exp.seed % 2**32, self.index_of[task_id], s]
                                      ).generate_state(1)[0] >> 1)

  # ----------------------------------------------------------------- run
  def _cell_path(self, spec: TunerSpec, task_id: str) -> pathlib.Path:
    return self.out / "cells" / _safe(spec.label) / f"{_safe(task_id)}.npz"

  def _spec_hash(self, spec: TunerSpec) -> str:
    """The tuner's settings and, for a prior, what its folder and its beliefs file hold (the
    cells of a retrained prior or of edited beliefs are not reused)."""
    if spec.label not in self._spec_hashes:
      doc = spec.fingerprint()
      if spec.kind == "prior" and spec.options.get("path"):
        folder = pathlib.Path(spec.options["path"])
        doc = {**doc, "contents": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                                   for name in ("card.json", "transfer.npz")
                                   if (folder / name).is_file()}}
        beliefs = spec.options.get("beliefs")
        if isinstance(beliefs, str) and os.path.isfile(beliefs):
          doc["contents"]["beliefs"] = hashlib.sha256(
              pathlib.Path(beliefs).read_bytes()).hexdigest()
      self._spec_hashes[spec.label] = _hash(doc)
    return self._spec_hashes[spec.label]

  def _done(self, spec: TunerSpec, task_id: str) -> bool:
    path = self._cell_path(spec, task_id)
    if not path.exists():
      return False
    with np.load(path) as d:
      return str(d["spec"]) == self._spec_hash(spec)

  def _save(self, spec, task_id, best, failed, seconds):
    path = self._cell_path(spec, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, best=np.asarray(best, np.float32), failed=np.asarray(failed, bool),
             seconds=np.float64(seconds), spec=self._spec_hash(spec))
    os.replace(tmp, path)

  def run(self, only: Sequence[str] | None = None, rerun: Sequence[str] = ()) -> dict:
    """Runs what is not stored yet, then writes and returns the results.

    ``rerun``: tuners whose stored cells are discarded first and run again. Cells are keyed
    by a tuner's settings, its prior folder and beliefs file, not by metatune's code: after
    changing a tuner's code, rerun it.
    """
    self._prepare_folder()
    for label in rerun:
      spec = next((t for t in self.exp.tuners if t.label == label), None)
      if spec is None:
        raise error_at(self.exp, f"rerun: {label!r} is not one of this experiment's tuners")
      for t in self.task_ids:
        self._cell_path(spec, t).unlink(missing_ok=True)
    refs = self.references()
    specs = [t for t in self.exp.tuners if not only or t.label in only]
    pending = {s.label: [t for t in self.task_ids if not self._done(s, t)] for s in specs}
    todo = sum(len(cells) for cells in pending.values())
    # Every tuner is made before the first cell runs: bad options fail at once, not after
    # hours of other tuners' cells.
    tuners = {s.label: self.make_tuner(s) for s in specs
              if pending[s.label] and s.kind not in peers.SAMPLERS}
    for s in specs:
      if pending[s.label] and s.kind in peers.SAMPLERS:
        try:
          peers.make_sampler(s.kind, 0, s.options)
        except peers.PeerUnavailable:
          pass  # skipped, with the reason, when its turn comes
        except ValueError as e:
          raise SpaceError(f"tuner {s.label!r}: {e}", s.where) from None
    bar = None
    if self.progress and todo:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      total = len(specs) * len(self.task_ids)
      bar = tqdm(total=total, initial=total - todo, desc="evaluate", unit="cell",
                 file=sys.stderr, dynamic_ncols=True)
    for spec in specs:
      cells = pending[spec.label]
      if not cells:
        continue
      if spec.kind in peers.SAMPLERS:
        self._run_peer(spec, cells, bar)
      else:
        self._run_compiled(spec, tuners.pop(spec.label), cells, bar)
    if bar is not None:
      bar.close()
    return self.collect(refs, specs)

  def _run_compiled(self, spec: TunerSpec, tuner, cells: list[str], bar) -> None:
    budget = self.exp.budget
    run = (pool_run(tuner, self.family, budget) if self.pooled
           else live_run(tuner, self.family, budget))
    fn = jax.jit(many_seeds(run, tuner.sequential))
    for i, t in enumerate(cells):
      if bar is not None:
        bar.set_postfix_str(f"{spec.label}: {'compiling' if i == 0 else t}")
      start = time.perf_counter()
      outs = jax.device_get(fn(self.run_keys(t), self.task_data(t)))
      elapsed = time.perf_counter() - start
      if i == 0:
        self.compile_seconds[spec.label] = elapsed
      self._save(spec, t, outs[0], outs[1], elapsed)
      if bar is not None:
        bar.update(1)
    self.compiles[spec.label] = fn._cache_size()  # pylint: disable=protected-access

  def _run_peer(self, spec: TunerSpec, cells: list[str], bar) -> None:
    space, budget, family = self.space, self.exp.budget, self.family
    clean = jax.jit(lambda task, u, a: family.clean(task, Points(u[None], a[None]))[0])
    snap_fn = None
    if self.pooled:
      snap_fn = jax.jit(lambda task, avail, u, a: nearest_available(
          space, family.pool_data(task)[0], avail, Points(u[None], a[None]))[0])
    for t in cells:
      if bar is not None:
        bar.set_postfix_str(f"{spec.label}: {t}")
      task = self.task_data(t)
      start = time.perf_counter()
      best = np.empty((self.exp.seeds, budget), np.float32)
      failed = np.empty((self.exp.seeds, budget), bool)
      for s in range(self.exp.seeds):
        snap = None
        if self.pooled:
          pool, _, valid = family.pool_data(task)
          pool_u, pool_a = np.asarray(pool.values), np.asarray(pool.active)
          avail = np.asarray(valid).copy()

          def snap(u, a, avail=avail, pool_u=pool_u, pool_a=pool_a):
            j = int(snap_fn(task, avail, u, a))
            avail[j] = False
            return pool_u[j], pool_a[j]
        try:
          values = peers.run_peer(spec.kind, space, self.peer_seed(t, s), spec.options, budget,
                                  lambda u, a: float(clean(task, u, a)), snap)
        except peers.PeerUnavailable as e:
          self.unavailable[spec.label] = str(e)
          self.log(f"{spec.label}: skipped ({e})")
          return
        except ValueError as e:
          raise SpaceError(f"tuner {spec.label!r}: {e}", spec.where) from None
        bad = ~np.isfinite(values)
        failed[s] = bad
        best[s] = np.minimum.accumulate(np.where(bad, np.inf, values))
      self._save(spec, t, best, failed, time.perf_counter() - start)
      if bar is not None:
        bar.update(1)

  # -------------------------------------------------------------- results
  def regrets(self, spec: TunerSpec, refs) -> tuple[np.ndarray, np.ndarray, float]:
    """``(regret f64[T, S, budget], failed bool[T, S, budget], seconds)`` of a finished tuner."""
    regret, failed, seconds = [], [], 0.0
    for t in self.task_ids:
      with np.load(self._cell_path(spec, t)) as d:
        opt, med, worst = refs[t]
        best = np.minimum(d["best"].astype(np.float64), worst)
        regret.append((best - opt) / max(med - opt, 1e-12))
        failed.append(d["failed"])
        seconds += float(d["seconds"])
    return np.stack(regret), np.stack(failed), seconds

  def exact_random(self, refs) -> np.ndarray | None:
    """f64[T, budget]: the exact expected regret of random search on each pool task."""
    if not self.pooled:
      return None
    from metatune.evaluation.stats import expected_random_best  # pylint: disable=C0415
    out = []
    for t in self.task_ids:
      _, objective, valid = self.family.pool_data(self.task_data(t))
      v = np.asarray(objective, np.float64)[np.asarray(valid)]
      opt, med, worst = refs[t]
      v = np.where(np.isfinite(v), np.minimum(v, worst), worst)
      out.append((expected_random_best(v, self.exp.budget) - opt) / max(med - opt, 1e-12))
    return np.stack(out)

  def collect(self, refs, specs) -> dict:
    from metatune.evaluation import report  # pylint: disable=import-outside-toplevel
    runs = {}
    for spec in specs:
      if spec.label in self.unavailable or not all(self._done(spec, t) for t in self.task_ids):
        continue
      regret, failed, seconds = self.regrets(spec, refs)
      runs[spec.label] = {"regret": regret, "failed": failed, "seconds": seconds,
                          "transfer": spec.transfer, "kind": spec.kind}
    result = {
        "experiment": self.exp.name, "source": self.exp.source,
        "family": self.family_config.name, "family_config": self.exp.family_path,
        "space": self.space.name, "pooled": self.pooled, "tasks": self.task_ids,
        "budget": self.exp.budget, "seeds": self.exp.seeds, "seed": self.exp.seed,
        "checkpoints": [c for c in self.exp.checkpoints if c <= self.exp.budget],
        "reference": self.exp.reference, "no_transfer": self.exp.no_transfer,
        "worse_tolerance": self.exp.worse_tolerance,
        "pairs": [list(p) for p in self.exp.pairs],
        "references": refs, "runs": runs, "exact_random": self.exact_random(refs),
        "compiles": self.compiles, "compile_seconds": self.compile_seconds,
        "unavailable": self.unavailable,
        "overrides": list(self.exp.overrides),
        "command": (f"metatune evaluate {_shown(self.exp.source)} --out {_shown(self.out)}"
                    + "".join(f" --set {shlex.quote(o)}" for o in self.exp.overrides)),
        "machine": {"platform": platform.platform(), "cpu": hostcpu.cpu(),
                    "cpus": os.cpu_count(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "load_average": round(os.getloadavg()[0], 2)},
    }
    report.write(result, self.out)
    return result


def build_portfolio_from_dataset(space, folder: str, task_ids: Sequence[str], size: int,
                                 where: str = "") -> dict:
  """A greedy portfolio from a meta-dataset folder's design evaluated on ``task_ids``.

  Raises:
    SpaceError: the folder is not a dataset of this space, or lacks some of the tasks.
  """
  folder_p = pathlib.Path(folder)
  if not (folder_p / "manifest.json").is_file():
    raise SpaceError(f"no meta-dataset at {folder} (build it with 'metatune dataset build "
                     "FAMILY.yaml --out DIR')", where or folder)
  data = builder.load(folder_p)
  manifest = data["manifest"]
  if manifest.get("space_signature") != space.signature:
    raise SpaceError(f"the dataset {folder} is of another space ({manifest.get('space_signature')}"
                     f", the family's is {space.signature})", where or folder)
  missing = [t for t in task_ids if t not in data["tasks"]]
  if missing:
    raise SpaceError(f"the dataset {folder} lacks {len(missing)} of the {len(task_ids)} "
                     f"training tasks (e.g. {missing[0]!r}); build them with 'metatune dataset "
                     "build'", where or folder)
  with np.load(folder_p / "design.npz") as d:
    values, active = d["values"], d["active"]
  objective = np.stack([np.where(data["tasks"][t]["failed"], np.nan,
                                 data["tasks"][t]["objective"]) for t in task_ids])
  return pf.build_portfolio(space, values, active, objective, size, list(task_ids),
                            {"dataset": str(folder_p.resolve()),
                             "dataset_manifest_fingerprint": _hash(manifest.get("fingerprint"))})


def run_experiment(exp: Experiment, out: str | os.PathLike, data_dir=None, progress: bool = True,
                   only: Sequence[str] | None = None, log: Callable[[str], Any] = print,
                   rerun: Sequence[str] = ()) -> dict:
  """Runs an experiment (`Harness`) and returns its results (``rerun``: see `Harness.run`)."""
  return Harness(exp, out, data_dir, progress, log).run(only, rerun)
