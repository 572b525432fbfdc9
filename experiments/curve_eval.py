"""Learning-curve extrapolation on held-out tasks: the fidelity-aware surrogate vs two baselines.

Given k = 10 other configurations' full curves and the first e = 1, 2, 3 epochs
of a query configuration's curve, predict its final (epoch 10) validation
objective, on the held-out tasks of the small real-training family
(``heldout_dataset`` and ``heldout_model``, as `metatune surrogate eval` splits
them). Baselines: the last observed value, and a least-squares fit of
``a + b / sqrt(t)`` on the observed epochs (`metatune.surrogate.extrapolation`).

Usage (from the repository root; the surrogate is trained by the command line):
  metatune surrogate train configs/families/training_small.yaml \\
      --dataset .cache_data/training_small --out .cache_data/surrogates/training_curves \\
      --steps 1500 --data-dir ../shared/data
  python experiments/curve_eval.py

Writes ``paper/tables/curve_eval.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from metatune import surrogate as sg  # noqa: E402
from metatune.surrogate import extrapolation as ex  # noqa: E402
from metatune.surrogate.evaluate import mean_se  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python experiments/curve_eval.py"
TRAIN_COMMAND = ("metatune surrogate train configs/families/training_small.yaml --dataset "
                 ".cache_data/training_small --out .cache_data/surrogates/training_curves "
                 "--steps 1500")
HELDOUT = ("heldout_dataset", "heldout_model")


def render(result: dict, surrogate, argv: Sequence[str], seconds: float) -> str:
  info, config = surrogate.info, surrogate.config
  tc = info.get("train_config", {})
  record = info.get("record", [])
  es = result["es"]
  lines = [
      "# Learning-curve extrapolation on held-out tasks (training-small)",
      "",
      f"Produced by `{' '.join([COMMAND, *argv])}` on {datetime.date.today().isoformat()} in "
      f"{seconds / 60:.1f} min ({platform.machine()}, {os.cpu_count()} CPU cores shared with "
      f"other jobs, 1-minute load average at the end {os.getloadavg()[0]:.1f}; "
      f"{jax.default_backend()}, jax {jax.__version__}).",
      "",
      f"Surrogate: `{TRAIN_COMMAND}` (a fidelity-aware set transformer, width {config.width}, "
      f"depth {config.depth}: context tokens [configuration, epoch / 10, value], values "
      f"normalized by the context's median and IQR; trained on the "
      f"{len(info.get('train_tasks', []))} meta_train tasks' curves, {tc.get('num_steps')} steps of {tc.get('batch_tasks')} tasks, "
      f"up to {tc.get('max_context')} context configurations with full or partial curves, "
      f"{tc.get('num_queries')} queries on {tc.get('query_configs')} configurations that show "
      f"their own first epochs with probability 0.7; selected step "
      f"{info.get('selected_step')} by validation NLL on the "
      f"{len(info.get('valid_tasks', []))} meta_valid tasks"
      + (f" ({min(r.get('valid_nll', np.inf) for r in record):.3f})" if record else "")
      + f", output temperature {config.temperature:.3g}; "
      f"{record[-1]['seconds'] if record else '?'} s of training steps).",
      "",
      f"Held-out tasks ({len(result['tasks'])}): {', '.join(result['tasks'])}. For each, "
      f"{result['num_reps']} random orders of its 64 configurations: the first k = "
      f"{result['k']} show their full curves, the other {result['num_queries']} are queries, "
      "each seen with its own first e epochs (one context per query: the k curves plus those "
      "e points). Scores per task over the queries (failed runs left out), averaged over the "
      "orders: Spearman of predicted vs observed final value; MAE in the task's standardized "
      "units (over the sd of its final values); coverage of the central 90% interval. Mean ± "
      "standard error over tasks. Baselines: `last value` (the value at epoch e) and `curve "
      "fit` (least squares of a + b / sqrt(epoch / 10) on the e points, evaluated at the last "
      "epoch; with e = 1 the last value); their 90% intervals add the 5% and 95% quantiles of "
      "the same method's errors on the k context curves. e = 0: the surrogate from the other "
      "curves alone.",
      "",
      ex.table_markdown(result),
      "",
      "Median over tasks of the per-task MAE (the mean is dominated by tasks whose objective "
      "has a few huge values, e.g. diverged regression runs): " + "; ".join(
          f"e={e}: " + ", ".join(f"{ex.LABELS[m]} {np.median(result[(m, e)]['mae']):.3f}"
                                 for m in ex.METHODS if (m, e) in result) for e in es) + ".",
      "",
      "Per-task Spearman (surrogate / last value / curve fit):",
      "",
      "| task | " + " | ".join(f"e={e}" for e in es if e >= 1) + " |",
      "|---|" + "---|" * sum(e >= 1 for e in es),
  ]
  for i, task in enumerate(result["tasks"]):
    lines.append(f"| {task} | " + " | ".join(
        " / ".join(f"{result[(m, e)]['spearman'][i]:.2f}" for m in ex.METHODS)
        for e in es if e >= 1) + " |")
  verdict = []
  for e in es:
    if e < 1:
      continue
    meta = result[("meta", e)]
    best = max(("last", "fit"), key=lambda m: np.mean(result[(m, e)]["spearman"]))
    diff = meta["spearman"] - result[(best, e)]["spearman"]
    m, se = mean_se(diff)
    verdict.append(f"e={e}: surrogate minus {ex.LABELS[best]} (the better baseline) "
                   f"{m:+.3f} ± {se:.3f} (paired over tasks)")
  lines += ["", "Spearman differences: " + "; ".join(verdict) + "."]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", type=Path, default=REPO / ".cache_data" / "training_small")
  parser.add_argument("--surrogate", type=Path,
                      default=REPO / ".cache_data" / "surrogates" / "training_curves")
  parser.add_argument("--k", type=int, default=10, help="context configurations (full curves)")
  parser.add_argument("--e", default="1,2,3", help="observed epochs of each query (comma list)")
  parser.add_argument("--reps", type=int, default=4, help="random orders per task")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=Path, default=REPO / "paper" / "tables" / "curve_eval.md")
  args = parser.parse_args(argv)
  if not (args.surrogate / "surrogate.json").is_file():
    parser.error(f"{args.surrogate}: no surrogate (train it first: see this script's docstring)")
  start = time.perf_counter()
  surrogate = sg.load_surrogate(args.surrogate)
  table, _ = sg.load_table(args.dataset, surrogate.space, HELDOUT)
  es = (0,) + tuple(int(e) for e in args.e.split(","))
  result = ex.evaluate_extrapolation(jax.random.key(args.seed), surrogate, table, args.k, es,
                                     args.reps)
  text = render(result, surrogate, argv, time.perf_counter() - start)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(text)
  print(text)
  return {"result": result, "text": text}


if __name__ == "__main__":
  main()
