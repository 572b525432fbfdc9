"""``metatune evaluate`` and ``metatune portfolio build`` (registered by `add_commands`).

Nothing here imports jax at module level; handlers import what they need.
"""

from __future__ import annotations

from metatune.clitools import UsageError, positive_int


def cmd_evaluate(args) -> int:
  # pylint: disable=import-outside-toplevel
  from metatune.evaluation.experiment import load_experiment
  from metatune.evaluation.harness import run_experiment
  # The shortcut flags are settings like --set ones, so the table says they were used.
  shortcuts = [f"{k}={v}" for k, v in (("seeds", args.seeds), ("max_tasks", args.max_tasks),
                                       ("budget", args.budget)) if v is not None]
  exp = load_experiment(args.config, list(args.overrides or []) + shortcuts)
  labels = [t.label for t in exp.tuners]
  for flag, given in (("--tuner", args.tuner), ("--rerun", args.rerun)):
    for label in given or []:
      if label not in labels:
        raise UsageError(f"{flag} {label}: not a tuner of {args.config} ({', '.join(labels)})")
  result = run_experiment(exp, args.out, args.data_dir, progress=not args.no_progress,
                          only=args.tuner, rerun=args.rerun or ())
  print((__import__("pathlib").Path(args.out) / "table.md").read_text())
  if result["unavailable"]:
    for label, why in result["unavailable"].items():
      print(f"{label}: not run ({why})")
  return 0


def cmd_portfolio_build(args) -> int:
  # pylint: disable=import-outside-toplevel
  from metatune.evaluation.harness import build_portfolio_from_dataset
  from metatune.space import io
  from metatune.tasks import registry
  from metatune.tuners.portfolio import save_portfolio
  if args.family:
    family = registry.make_family(registry.load_family_config(args.family), args.data_dir)
    space, tasks = family.space, family.task_ids(args.split)
  else:
    from metatune.data import builder
    data = builder.load(args.dataset)
    space = io.load(f"{args.dataset}/space.json")
    tasks = sorted(t for t, info in data["manifest"]["tasks"].items()
                   if info["split"] == args.split and t in data["tasks"])
  if not tasks:
    raise UsageError(f"no {args.split} tasks to build a portfolio from")
  doc = build_portfolio_from_dataset(space, args.dataset, tasks, args.size)
  doc["source"]["split"] = args.split
  save_portfolio(args.out, doc)
  curve = doc["mean_best_regret"]
  print(f"portfolio of {doc['size']} configurations from {len(tasks)} {args.split} tasks -> "
        f"{args.out}; mean best normalized regret on them after 1 / 5 / {len(curve)}: "
        f"{curve[0]:.3f} / {curve[min(4, len(curve) - 1)]:.3f} / {curve[-1]:.3f}")
  return 0


def add_commands(sub) -> None:
  """Registers ``evaluate`` and ``portfolio`` on the top-level subparsers."""
  p = sub.add_parser(
      "evaluate", help="compare tuners on held-out tasks (an experiment config)",
      description="Runs every tuner x task x seed of an experiment config (configs/"
      "experiments/) with paired keys: pool-based on tables of recorded evaluations, live "
      "otherwise; each tuner compiles once for all tasks. Resumable: rerun with the same --out "
      "and it continues. Writes results.json, table.md (normalized regret with bootstrap 95% "
      "CIs, ranks, trials to the reference's final regret, seed spread, negative transfer) "
      "and curves.png.")
  p.add_argument("config", metavar="EXPERIMENT.yaml", help="experiment config")
  p.add_argument("--out", required=True, help="output folder (created; resumed if it exists)")
  p.add_argument("--data-dir", default=None, help="data folder (default: $METATUNE_DATA_DIR)")
  p.add_argument("--tuner", action="append", default=None, metavar="LABEL",
                 help="run only this tuner of the config (repeatable)")
  p.add_argument("--rerun", action="append", default=None, metavar="LABEL",
                 help="discard this tuner's stored cells and run them again (repeatable): cells "
                 "are keyed by a tuner's settings, prior folder and beliefs file, not by "
                 "metatune's code, so rerun a tuner whose code changed")
  p.add_argument("--set", action="append", default=None, dest="overrides", metavar="KEY=VALUE",
                 help="override a field of the config, as if written in it (repeatable): "
                 "seeds=3, max_tasks=4, budget=20, tuners.LABEL.options.path=DIR (relative "
                 "paths are relative to the config); checked like the file, and named in "
                 "table.md")
  p.add_argument("--seeds", type=positive_int, default=None, help="override the seeds (--set "
                 "seeds=N)")
  p.add_argument("--max-tasks", type=positive_int, default=None,
                 help="only the first N tasks (--set max_tasks=N)")
  p.add_argument("--budget", type=positive_int, default=None, help="override the budget (--set "
                 "budget=N)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(fn=cmd_evaluate)

  port = sub.add_parser("portfolio", help="build greedy portfolios from meta-datasets",
                        description="Greedy portfolios: configurations that were good across "
                        "past tasks, in order (a zero-shot transfer baseline; use it in a "
                        "study with --tuner portfolio --tuner-option path=FILE).")
  psub = port.add_subparsers(dest="portfolio_command", metavar="SUBCOMMAND")
  psub.required = True
  b = psub.add_parser("build", help="build a portfolio from a meta-dataset's training tasks",
                      description="Picks greedily the design configurations that most lower "
                      "the mean best normalized regret over the training tasks.")
  b.add_argument("dataset", metavar="DATASET_DIR", help="a folder written by 'dataset build'")
  b.add_argument("--out", required=True, help="portfolio file (.json)")
  b.add_argument("--size", type=positive_int, default=100, help="configurations (default 100)")
  b.add_argument("--split", default="meta_train", help="the training split (default "
                 "meta_train)")
  b.add_argument("--family", default=None, metavar="FAMILY.yaml",
                 help="take the split from this family config instead of the dataset's manifest")
  b.add_argument("--data-dir", default=None, help="data folder (default: $METATUNE_DATA_DIR)")
  b.set_defaults(fn=cmd_portfolio_build)
