"""The report of an experiment: results.json, a markdown table and regret curves (PNG)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from metatune.evaluation import stats


def summarize(result: dict) -> dict:
  """The statistics of every tuner: regret with bootstrap CIs at each checkpoint, ranks, ...

  Returns:
    ``{"rows": {label: {...}}, "ranks": {c: {label: rank}}, "exact_random": {c: (mean, se)}}``.
  """
  runs, cps = result["runs"], result["checkpoints"]
  budget = result["budget"]
  rows: dict[str, dict[str, Any]] = {}
  curves = {k: v["regret"].mean(axis=(0, 1)) for k, v in runs.items()}
  ref = result.get("reference") or (next(iter(runs)) if runs else None)
  ref_final = float(curves[ref][-1]) if ref in curves else None
  base = result.get("no_transfer")
  for label, r in runs.items():
    reg = r["regret"]
    row = {"regret": {}, "failed_trials": int(r["failed"].sum()), "seconds": r["seconds"],
           "kind": r["kind"], "transfer": r["transfer"]}
    for c in cps:
      m, lo, hi = stats.bootstrap_ci(reg[:, :, c - 1])
      row["regret"][c] = (m, lo, hi)
    row["trials_to_reference"] = (stats.trials_to_reach(curves[label], ref_final)
                                  if ref_final is not None else None)
    row["seed_spread"] = stats.seed_spread(reg, budget)
    if r["transfer"] and base in runs and base != label:
      tol = result.get("worse_tolerance", 0.0)
      row["worse_than_no_transfer"] = {c: stats.worse_rate(reg, runs[base]["regret"], c, tol)
                                       for c in cps}
      row["paired_vs_no_transfer"] = {c: stats.paired_difference(
          reg[:, :, c - 1], runs[base]["regret"][:, :, c - 1]) for c in cps}
    if r["kind"] == "prior" or label == ref:
      # The reading of a prior (and of the reference): its paired difference with every
      # other tuner.
      row["paired_vs_each"] = {
          other: {c: stats.paired_difference(reg[:, :, c - 1], o["regret"][:, :, c - 1])
                  for c in cps}
          for other, o in runs.items() if other != label and (o["kind"] != "prior" or label == ref)}
    rows[label] = row
  noise_floor = None
  if base in runs and any("worse_than_no_transfer" in r for r in rows.values()):
    # The no-transfer tuner against itself on another seed of the same task (seed s against
    # seed s + 1, cyclically): the share of runs that end "worse" from seed noise alone, the
    # floor under any transfer row's worse@ share.
    b = np.asarray(runs[base]["regret"])
    if b.shape[1] > 1:
      tol = result.get("worse_tolerance", 0.0)
      noise_floor = {c: stats.worse_rate(b, np.roll(b, 1, axis=1), c, tol) for c in cps}
  ranks = {c: stats.mean_ranks({k: v["regret"] for k, v in runs.items()}, c) for c in cps} \
      if runs else {}
  exact = None
  if result.get("exact_random") is not None:
    e = result["exact_random"]
    exact = {c: (float(e[:, c - 1].mean()),
                 float(e[:, c - 1].std(ddof=1) / np.sqrt(e.shape[0])) if e.shape[0] > 1 else 0.0)
             for c in cps}
  pairs = [(a, b, {c: stats.paired_difference(runs[a]["regret"][:, :, c - 1],
                                                runs[b]["regret"][:, :, c - 1]) for c in cps})
           for a, b in result.get("pairs", ()) if a in runs and b in runs]
  return {"rows": rows, "ranks": ranks, "exact_random": exact, "reference": ref,
          "reference_final": ref_final, "noise_floor": noise_floor, "pairs": pairs}


def _diff_table(caption: str, first: str, rows, cps) -> str:
  """A table of paired differences ``(label, {checkpoint: (mean, lo, hi)})``, one row each,
  under ``caption``: **better** when the CI lies below 0, *worse* when above."""
  out = (f"\n{caption}\n\n| {first} | " + " | ".join(f"diff@{c}" for c in cps) + " |\n|---|"
         + "---:|" * len(cps) + "\n")
  for label, diffs in rows:
    cells = []
    for c in cps:
      v = stats.verdict(diffs[c][1], diffs[c][2])
      text = stats.fmt_ci(*diffs[c])
      cells.append(f"**{text}**" if v == "better" else f"*{text}*" if v == "worse" else text)
    out += f"| {label} | " + " | ".join(cells) + " |\n"
  return out


def table_markdown(result: dict, summary: dict) -> str:
  cps = result["checkpoints"]
  head = (["tuner"] + [f"regret@{c}" for c in cps] +
          [f"rank@{cps[-1]}", f"trials to {summary['reference']}'s final", "seed sd",
           "failed", "seconds"])
  lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  last = cps[-1]
  for label, row in summary["rows"].items():
    cells = [stats.fmt_ci(*row["regret"][c]) for c in cps]
    ttr = row["trials_to_reference"]
    cells += [f"{summary['ranks'][last][label]:.2f}", "-" if ttr is None else str(ttr),
              f"{row['seed_spread'][0]:.3f}", str(row["failed_trials"]), f"{row['seconds']:.0f}"]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if summary["exact_random"]:
    cells = [f"{m:.3f} ± {se:.3f}" for m, se in (summary["exact_random"][c] for c in cps)]
    lines.append("| random (exact expectation) | " + " | ".join(cells) + " |" +
                 " - |" * (len(head) - 1 - len(cps)))
  out = "\n".join(lines) + "\n"
  transfer = {k: v for k, v in summary["rows"].items() if "worse_than_no_transfer" in v}
  if transfer:
    base = result["no_transfer"]
    tol = result.get("worse_tolerance", 0.0)
    out += (f"\nNegative transfer against `{base}`: share of runs (task x seed) whose regret is "
            f"higher than `{base}`'s on the same task and seed"
            + (f" by more than {tol:g}" if tol else "") + f"; paired difference (transfer - "
            f"{base}) with its 95% CI."
            + (f" The row `{base} (another seed)` is the noise floor: the share of runs where "
               f"`{base}` on one seed ends worse, by the same rule, than `{base}` on the next "
               "seed of the same task." if summary.get("noise_floor") else "") + "\n\n")
    out += "| tuner | " + " | ".join(f"worse@{c}" for c in cps) + " | " + " | ".join(
        f"diff@{c}" for c in cps) + " |\n|---|" + "---:|" * (2 * len(cps)) + "\n"
    for label, row in transfer.items():
      out += (f"| {label} | " + " | ".join(f"{row['worse_than_no_transfer'][c]:.0%}" for c in cps)
              + " | " + " | ".join(stats.fmt_ci(*row["paired_vs_no_transfer"][c]) for c in cps)
              + " |\n")
    if summary.get("noise_floor"):
      out += (f"| {base} (another seed) | "
              + " | ".join(f"{summary['noise_floor'][c]:.0%}" for c in cps)
              + " |" + " - |" * len(cps) + "\n")
  verdicts = "mean [95% CI]; **better** when the CI lies below 0, *worse* when above, else a tie."
  paired = {k: v for k, v in summary["rows"].items() if v.get("paired_vs_each")}
  for label, row in paired.items():
    out += _diff_table(f"Paired difference `{label}` - other tuner (same task and seed), "
                       + verdicts, "other", row["paired_vs_each"].items(), cps)
  if summary.get("pairs"):
    out += _diff_table("Pairs the experiment names (`pairs:`): paired difference A - B (same "
                       "task and seed), " + verdicts, "A - B",
                       [(f"{a} - {b}", diffs) for a, b, diffs in summary["pairs"]], cps)
  return out


def plot(result: dict, path: pathlib.Path) -> None:
  """Mean regret per trial with its bootstrap 95% band, one line per tuner (log scale)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4.2))
  trials = np.arange(1, result["budget"] + 1)
  for label, r in result["runs"].items():
    mean, lo, hi = stats.bootstrap_ci(r["regret"], num=500)
    floor = 1e-4
    ax.plot(trials, np.maximum(mean, floor), label=label)
    ax.fill_between(trials, np.maximum(lo, floor), np.maximum(hi, floor), alpha=0.2)
  if result.get("exact_random") is not None:
    ax.plot(trials, np.maximum(result["exact_random"].mean(0), 1e-4), "k:",
            label="random (exact)")
  ax.set_yscale("log")
  ax.set_xlabel("trials")
  ax.set_ylabel("normalized regret (mean, 95% CI)")
  ax.set_title(f"{result['experiment']}: {len(result['tasks'])} tasks x {result['seeds']} seeds",
               fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _jsonable(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return x


def _provenance(result: dict) -> str:
  """Which command wrote the table, where, and what the cells cost."""
  if "command" not in result:
    return ""
  m = result.get("machine", {})
  seconds = sum(float(r["seconds"]) for r in result["runs"].values())
  compiled = result.get("compile_seconds") or {}
  compiling = ("; the first cell of each tuner compiled in the last run, compilation "
               "included: " + ", ".join(f"{k} {v:.0f} s" for k, v in compiled.items())
               ) if compiled else ""
  cpu = f"CPU: {m['cpu']}, " if m.get("cpu") else ""
  return (f"Produced by `{result['command']}` ({m.get('platform')}, {cpu}"
          f"{m.get('cpus')} CPU cores, "
          f"jax {m.get('jax')} on {m.get('backend')}, 1-minute load average "
          f"{m.get('load_average')} when written). Wall time of the cells, summed over tuners "
          f"(compilation included): {seconds / 60:.1f} min{compiling}; the cells may come from "
          "several resumed runs.\n\n")


def heading(result: dict) -> str:
  """The text of table.md above the tables: what ran, settings overridden, provenance.

  Example:
    >>> print(heading({"experiment": "e", "tasks": ["a"], "family": "f", "seeds": 2,
    ...                "budget": 5, "pooled": False, "overrides": ["seeds=2"]}).splitlines()[4])
    Settings overridden on the command line, over the config's: `seeds=2`.
  """
  text = (f"# {result['experiment']}\n\n{len(result['tasks'])} tasks of {result['family']} "
          f"x {result['seeds']} seeds, {result['budget']} trials "
          f"({'pool-based: recorded evaluations' if result['pooled'] else 'live'}). Normalized "
          "regret of the best so far, mean [bootstrap 95% CI over tasks, then seeds].\n\n")
  if result.get("overrides"):
    text += ("Settings overridden on the command line, over the config's: "
             + ", ".join(f"`{o}`" for o in result["overrides"]) + ".\n\n")
  return text + _provenance(result)


def write(result: dict, out: pathlib.Path) -> dict:
  """Writes results.json, table.md and curves.png; returns the summary."""
  summary = summarize(result)
  result["summary"] = summary
  (out / "results.json").write_text(json.dumps(_jsonable(result)) + "\n")
  (out / "table.md").write_text(heading(result) + table_markdown(result, summary))
  if result["runs"]:
    plot(result, out / "curves.png")
  return summary
