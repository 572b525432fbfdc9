"""A study in words: counts, best trials, Pareto front and hypervolume, where failures cluster."""

from __future__ import annotations

import collections
import math
import os
from typing import Any

import numpy as np

from metatune.study import pareto
from metatune.study.storage import TERMINAL

MIN_SUPPORT = 3  # a cluster needs at least this many failures to be named


def failure_report(study) -> dict[str, Any]:
  """Failures by reason, and failure rates per categorical value and per quartile of numbers.

  Only finished trials count (complete, failed, pruned); a failure is a trial in
  state ``failed``. For each parameter, trials where it was active are split by
  its value (categorical, bool, ordinal) or by the quartiles of its values
  (float, int); each group gets its failure count and rate. ``clusters`` lists
  the groups whose rate is at least twice the overall rate, with at least
  `MIN_SUPPORT` failures, highest rate first.

  Args:
    study: a `metatune.study.Study`.

  Returns:
    ``{"num_finished", "num_failed", "rate", "by_reason": {reason: count},
    "by_param": {name: [{"group", "trials", "failed", "rate"}]}, "clusters": [...],
    "examples": {reason: first error line}}``.

  Example:
    >>> failure_report(Study.load("study.db"))["by_reason"]  # doctest: +SKIP
    {'exception': 4, 'timeout': 2}
  """
  done = [t for t in study.trials if t.state in TERMINAL]
  failed = np.array([t.state == "failed" for t in done], bool)
  by_reason = collections.Counter(t.reason for t in done if t.state == "failed")
  examples = {}
  for t in done:
    if t.state == "failed" and t.reason not in examples and t.error:
      lines = [ln for ln in t.error.strip().splitlines() if ln.strip()]
      examples[t.reason] = f"trial {t.number}: {lines[-1].strip()[:200]}" if lines else ""
  overall = float(failed.mean()) if done else 0.0
  by_param: dict[str, list[dict[str, Any]]] = {}
  clusters = []
  for p in study.space.params:
    idx = [i for i, t in enumerate(done) if p.name in t.config]
    if not idx:
      continue
    vals = [done[i].config[p.name] for i in idx]
    groups: list[tuple[str, np.ndarray]] = []
    if p.kind in ("float", "int"):
      x = np.asarray(vals, np.float64)
      edges = np.unique(np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0]))
      if edges.size < 2:
        groups.append((f"= {edges[0]:.4g}", np.ones(len(idx), bool)))
      else:
        bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
        for b in range(edges.size - 1):
          close = "]" if b == edges.size - 2 else ")"
          groups.append((f"[{edges[b]:.4g}, {edges[b + 1]:.4g}{close}", bins == b))
    else:
      for c in p.choices:
        groups.append((f"= {c!r}", np.array([v == c for v in vals], bool)))
    rows = []
    f_act = failed[idx]
    for label, member in groups:
      n = int(member.sum())
      if n == 0:
        continue
      k = int(f_act[member].sum())
      row = {"group": label, "trials": n, "failed": k, "rate": k / n}
      rows.append(row)
      if k >= MIN_SUPPORT and overall > 0 and k / n >= 2 * overall:
        clusters.append({"param": p.name, **row})
    by_param[p.name] = rows
  clusters.sort(key=lambda c: (-c["rate"], -c["failed"]))
  return {"num_finished": len(done), "num_failed": int(failed.sum()), "rate": overall,
          "by_reason": dict(by_reason.most_common()), "by_param": by_param,
          "clusters": clusters, "examples": examples}


def front_and_hypervolume(study) -> dict[str, Any] | None:
  """The Pareto front of feasible complete trials and its hypervolume (several objectives).

  The reference point is the worst feasible value of each objective plus 10% of
  its range (minimized form), reported in natural directions.

  Returns:
    ``{"front": [trial numbers], "hypervolume", "reference"}``, or None with one
    objective or no feasible complete trial.
  """
  if len(study.spec.objectives) < 2:
    return None
  front = study.best_trials
  done = [t for t in study.trials if t.state == "complete"]
  if study.spec.constraints and done:
    ok = pareto.feasible(np.array([t.constraints for t in done], np.float64))
    done = [t for t, good in zip(done, ok) if good]
  if not done:
    return None
  signs = np.asarray(study.spec.signs)
  signed = np.array([t.objectives for t in done], np.float64) * signs
  hi, lo = signed.max(axis=0), signed.min(axis=0)
  ref = hi + 0.1 * np.maximum(hi - lo, 1e-12 + 1e-3 * np.abs(hi))
  hv = pareto.hypervolume(signed, ref)
  return {"front": [t.number for t in front], "hypervolume": float(hv),
          "reference": (ref * signs).tolist()}


def summary(study) -> dict[str, Any]:
  """Everything `metatune study show` prints, as JSON-ready data.

  Args:
    study: a `metatune.study.Study` (read only: nothing is written).

  Returns:
    A dict: settings, counts, best trial(s), front and hypervolume, failures,
    total cost, plateau verdict and the environments trials ran in.
  """
  from metatune.study import plateau  # pylint: disable=import-outside-toplevel
  trials = study.trials
  spec = study.spec
  out: dict[str, Any] = {
      "study": study.name, "file": study.storage.path, "space": study.space.name,
      "space_signature": study.space.signature, "tuner": spec.tuner, "seed": spec.seed,
      "objectives": [list(o) for o in spec.objectives], "constraints": list(spec.constraints),
      "counts": study.counts(),
      "total_cost": float(sum(t.cost or 0.0 for t in trials if t.state in TERMINAL)),
  }
  best = study.best_trials
  out["best"] = [{"number": t.number, "objectives": dict(zip(spec.names, t.objectives)),
                  "config": t.config} for t in best]
  out["pareto"] = front_and_hypervolume(study)
  out["failures"] = failure_report(study)
  if len(spec.objectives) == 1:
    curve = study.best_so_far()
    try:
      out["plateau"] = plateau.plateau_signal(curve).message
    except ValueError as e:
      out["plateau"] = f"not judged: {e}"
  sizes = study.storage.log_sizes(study.study_id)
  out["output"] = {"num_trials": len(sizes), "num_bytes": int(sum(sizes.values()))}
  envs = study.storage.environments()
  used = sorted({t.env_id for t in trials if t.env_id})
  out["environments"] = {e: envs.get(e, {}) for e in used}
  return out


def trial_detail(study, number: int) -> dict[str, Any]:
  """One trial as `metatune study show --trial` prints it: record, error and output.

  Raises:
    StudyError: no such trial.
  """
  from metatune.study.errors import StudyError  # pylint: disable=import-outside-toplevel
  by_number = {t.number: t for t in study.trials}
  if number not in by_number:
    raise StudyError(f"no trial {number}; the study has trials 0 to {len(by_number) - 1}"
                     if by_number else "the study has no trials yet", "--trial")
  t = by_number[number]
  log = study.log(number)
  names = study.spec.names
  return {
      "number": t.number, "state": t.state, "reason": t.reason, "source": t.source,
      "retry_of": t.retry_of, "executor": t.executor, "seed": t.seed, "config": t.config,
      "objectives": None if t.objectives is None else dict(zip(names, t.objectives)),
      "constraints": (None if t.constraints is None else
                      dict(zip(study.spec.constraints, t.constraints))),
      "attrs": t.attrs, "cost": t.cost, "duration": t.duration, "reports": study.reports.get(
          number, {}), "error": t.error,
      "output": None if log is None else {"text": log.text, "num_bytes": log.num_bytes}}


def _size(num_bytes: int) -> str:
  for unit in ("bytes", "KiB", "MiB", "GiB"):
    if num_bytes < 1024 or unit == "GiB":
      return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
    num_bytes /= 1024
  return ""


def format_trial(d: dict[str, Any]) -> str:
  """`trial_detail` as text for a terminal."""
  state = d["state"] + (f" ({d['reason']})" if d["reason"] else "")
  more = [f"source {d['source']}" + (f" (retry of trial {d['retry_of']})"
                                     if d["retry_of"] is not None else ""),
          f"seed {d['seed']}"]
  if d["executor"]:
    more.append(f"executor {d['executor']}")
  if d["duration"] is not None:
    more.append(f"{d['duration']:.3g} s")
  lines = [f"trial {d['number']}: {state}; " + ", ".join(more), f"config: {d['config']}"]
  if d["objectives"]:
    lines.append("objectives: " + ", ".join(f"{k}={_fmt(v)}" for k, v in d["objectives"].items()))
  if d["constraints"]:
    lines.append("constraints: " + ", ".join(f"{k}={_fmt(v)}"
                                             for k, v in d["constraints"].items()))
  if d["attrs"]:
    lines.append(f"attrs: {d['attrs']}")
  if d["reports"]:
    lines.append("reports: " + ", ".join(f"{_fmt(s)}: {_fmt(v)}" for s, v in d["reports"].items()))
  if d["error"]:
    lines += ["error:"] + ["  " + ln for ln in d["error"].rstrip().splitlines()]
  out = d["output"]
  if out is None:
    lines.append("output: none kept (it printed nothing, or ran through ask/tell)")
  else:
    kept = len(out["text"].encode("utf-8"))
    head = (f"output ({_size(out['num_bytes'])}):" if kept >= out["num_bytes"] else
            f"output (the last {_size(kept)} of {_size(out['num_bytes'])}):")
    lines += [head] + ["  " + ln for ln in out["text"].rstrip("\n").splitlines()]
  return "\n".join(lines)


def _fmt(v: float) -> str:
  return f"{v:.6g}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)


def format_summary(s: dict[str, Any]) -> str:
  """`summary` as text for a terminal."""
  c = s["counts"]
  objs = ", ".join(f"{n} ({d})" for n, d in s["objectives"])
  lines = [
      f"study {s['study']} in {s['file']}: space {s['space']} (signature "
      f"{s['space_signature']}), tuner {s['tuner']}, seed {s['seed']}",
      f"objectives: {objs}" + (f"; constraints: {', '.join(s['constraints'])} (<= 0)"
                               if s["constraints"] else ""),
      f"trials: {c['complete']} complete, {c['failed']} failed, {c['pruned']} pruned, "
      f"{c['running']} running, {c['stale']} stale (asked again); total cost "
      f"{s['total_cost']:.4g}",
  ]
  if not s["best"]:
    lines.append("best: none yet (no complete, feasible trial)")
  elif len(s["objectives"]) == 1:
    b = s["best"][0]
    lines.append(f"best: trial {b['number']}: " +
                 ", ".join(f"{k}={_fmt(v)}" for k, v in b["objectives"].items()) +
                 f"  {b['config']}")
  else:
    p = s["pareto"]
    lines.append(f"Pareto front: {len(s['best'])} trials; hypervolume {_fmt(p['hypervolume'])} "
                 f"(reference {[round(r, 6) for r in p['reference']]})")
    for b in s["best"][:10]:
      lines.append(f"  trial {b['number']}: " +
                   ", ".join(f"{k}={_fmt(v)}" for k, v in b["objectives"].items()))
    if len(s["best"]) > 10:
      lines.append(f"  ... and {len(s['best']) - 10} more")
  if "plateau" in s:
    lines.append(f"plateau: {s['plateau']}")
  f = s["failures"]
  lines.append(f"failures: {f['num_failed']} of {f['num_finished']} finished trials "
               f"({f['rate']:.1%})")
  for reason, n in f["by_reason"].items():
    ex = f["examples"].get(reason)
    lines.append(f"  {reason:<15} {n:>5}" + (f"   e.g. {ex}" if ex else ""))
  if f["clusters"]:
    lines.append("where failures cluster (rate at least twice the overall rate):")
    for cl in f["clusters"][:10]:
      lines.append(f"  {cl['param']} {cl['group']}: {cl['failed']}/{cl['trials']} failed "
                   f"({cl['rate']:.0%})")
  elif f["num_failed"]:
    lines.append("failures do not cluster in any parameter value or quartile")
  if f["num_failed"]:
    lines.append("failure rate by parameter:")
    for name, rows in f["by_param"].items():
      parts = ", ".join(f"{r['group']} {r['failed']}/{r['trials']}" for r in rows)
      lines.append(f"  {name}: {parts}")
  o = s["output"]
  if o["num_trials"]:
    lines.append(f"output: {o['num_trials']} trials printed {_size(o['num_bytes'])} in all; the "
                 f"last part of each is kept: metatune study show {s['file']} --study "
                 f"{s['study']} --trial N")
  for env_id, env in s["environments"].items():
    v = env.get("versions", {})
    lines.append(f"environment {env_id}: metatune {v.get('metatune')}, jax {v.get('jax')}, "
                 f"python {v.get('python')}, git {env.get('git_commit') or 'none'}, "
                 f"host {env.get('host')}")
  return "\n".join(lines)


def write_plots(study, folder: str | os.PathLike) -> list[str]:
  """Writes ``history.png``, ``parallel_coordinates.png`` and (two objectives) ``pareto.png``.

  The history shows complete and failed trials (an infeasible complete trial is
  drawn as a failure: it never counts for the best); pruned trials are left out.

  Args:
    study: a `metatune.study.Study`.
    folder: the output folder (created when missing).

  Returns:
    The paths written (none when no trial has finished).
  """
  from metatune.study import plots  # pylint: disable=import-outside-toplevel
  folder = os.fspath(folder)
  os.makedirs(folder, exist_ok=True)
  # Pruned trials stopped early: their last value is not comparable, so they are left out.
  trials = [t for t in study.trials if t.state in ("complete", "failed")]
  if not trials:
    return []
  sign = study.spec.signs[0]
  good = {t.number for t in study.trials if t.state == "complete" and
          all(c <= 0 for c in (t.constraints or []))}
  numbers = [t.number for t in trials]
  values = [sign * t.objectives[0] if t.number in good else math.nan for t in trials]
  failed = [t.number not in good for t in trials]
  out = [plots.plot_history(os.path.join(folder, "history.png"), numbers, values, failed)]
  out.append(plots.plot_parallel_coordinates(os.path.join(folder, "parallel_coordinates.png"),
                                             [t.config for t in trials], values,
                                             space=study.space))
  if len(study.spec.objectives) == 2:
    done = [t for t in trials if t.state == "complete"]
    if done:
      signed = np.array([t.objectives for t in done], np.float64) * np.asarray(study.spec.signs)
      front = {t.number for t in study.best_trials}
      mask = np.array([t.number in front for t in done], bool)
      out.append(plots.plot_pareto(os.path.join(folder, "pareto.png"), signed, mask,
                                   names=study.spec.names))
  return out
