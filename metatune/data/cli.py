"""``metatune dataset build`` and ``metatune dataset show`` (registered by `add_commands`)."""

from __future__ import annotations

import time

from metatune.clitools import UsageError, load_family, positive_int


def cmd_dataset_build(args) -> int:
  from metatune.data import builder  # pylint: disable=import-outside-toplevel
  from metatune.tasks import registry  # pylint: disable=import-outside-toplevel
  config, family = load_family(args.family, args.data_dir)
  data_dir = args.data_dir or registry.default_data_dir()
  t0 = time.perf_counter()
  try:
    summary = builder.build(config, family, args.out, splits=args.split,
                            max_tasks=args.max_tasks, configs_per_task=args.configs_per_task,
                            progress=not args.no_progress, data_dir=data_dir)
  except FileNotFoundError as e:  # a task's data read when its turn comes
    raise UsageError(f"{args.family}: {e}") from None
  print(f"{config.name}: {summary['tasks']} tasks ({summary['skipped_tasks']} already done), "
        f"{summary['evaluations']} new evaluations, {summary['failed']} failed, "
        f"{time.perf_counter() - t0:.1f}s -> {args.out}")
  return 0


def cmd_dataset_show(args) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel

  from metatune.data import builder  # pylint: disable=import-outside-toplevel
  data = builder.load(args.folder)
  m = data["manifest"]
  done = sum(1 for t in m["tasks"].values() if t["status"] == "done")
  print(f"{m['family']['name']} ({m['family_name']}), space {m['space_signature']}, "
        f"{m['design']['configs_per_task']} configurations per task ({m['design']['kind']}, "
        f"seed {m['design']['seed']}); {done}/{len(m['tasks'])} tasks done; metatune "
        f"{m['metatune_version']}, commit {m['git_commit'] or 'unknown'}")
  print(f"  {'task':<28} {'split':<16} {'best':>10} {'median':>10} {'failed':>7}")
  for t, arrays in sorted(data["tasks"].items()):
    obj = np.where(arrays["failed"], np.nan, arrays["objective"])
    ok = obj[np.isfinite(obj)]
    best = f"{ok.min():10.4g}" if ok.size else f"{'-':>10}"
    med = f"{np.median(ok):10.4g}" if ok.size else f"{'-':>10}"
    print(f"  {t:<28} {m['tasks'][t]['split']:<16} {best} {med} "
          f"{int(arrays['failed'].sum()):>7}")
  return 0


def cmd_dataset_export(args) -> int:
  """Writes a dataset's evaluations as one CSV table that the ``table`` family reads."""
  import csv  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel

  from metatune.data import builder  # pylint: disable=import-outside-toplevel
  from metatune.space import io  # pylint: disable=import-outside-toplevel
  folder = pathlib.Path(args.folder)
  data = builder.load(folder)
  space = io.load(folder / "space.json")
  manifest = data["manifest"]
  tasks = sorted(t for t in data["tasks"] if not args.split or
                 manifest["tasks"][t]["split"] in args.split)
  if not tasks:
    raise UsageError(f"{folder}: no finished tasks{' in ' + ', '.join(args.split) if args.split else ''}")
  cols = ["task", *space.names, "objective", "test_objective", "cost", "failed"]
  out = pathlib.Path(args.out)
  if out.is_dir():
    raise UsageError(f"--out {out}: is a folder; name a .csv file")
  tmp = out.with_name(out.name + ".tmp")
  rows = 0
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, cols)
    w.writeheader()
    for t in tasks:
      with open(folder / manifest["tasks"][t]["file"].replace(".npz", ".jsonl"),
                encoding="utf-8") as lines:
        for line in lines:
          r = json.loads(line)
          w.writerow({"task": t, **r["config"],
                      "objective": "nan" if r["failed"] else r["objective"],
                      "test_objective": "" if r["test_objective"] is None else r["test_objective"],
                      "cost": r["cost"], "failed": int(bool(r["failed"]))})
          rows += 1
  os.replace(tmp, out)
  print(f"wrote {rows} evaluations of {len(tasks)} tasks to {out}; a family config for it:\n"
        f"  family: table\n  options: {{table: {out}, space: {folder / 'space.json'}, "
        "objective: objective, test_objective: test_objective, cost: cost}")
  return 0


def add_commands(sub) -> None:
  """Registers ``dataset`` on the top-level subparsers."""
  dataset = sub.add_parser("dataset", help="build and inspect meta-datasets",
                           description="Build a meta-dataset (a shared space-filling design "
                           "evaluated on every task of a family) and inspect one.")
  dsub = dataset.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
  dsub.required = True
  build = dsub.add_parser("build", help="evaluate a design on every task of a family",
                          description="Evaluates the family's space-filling, conditional-aware "
                          "design on every task and writes an open-format folder with "
                          "provenance. Resumable: run it again after an interruption and it "
                          "continues from the last saved chunk.")
  build.add_argument("family", metavar="FAMILY.yaml", help="family config (configs/families/)")
  build.add_argument("--out", required=True, help="output folder")
  build.add_argument("--data-dir", default=None,
                     help="data folder for families that read real data (default: "
                     "$METATUNE_DATA_DIR)")
  build.add_argument("--split", action="append", default=None,
                     help="only tasks of this split (repeatable): meta_train, meta_valid, "
                     "heldout_dataset, heldout_model")
  build.add_argument("--max-tasks", type=positive_int, default=None, help="at most this many tasks")
  build.add_argument("--configs-per-task", type=positive_int, default=None,
                     help="override the config's dataset.configs_per_task")
  build.add_argument("--no-progress", action="store_true", help="no progress bar")
  build.set_defaults(fn=cmd_dataset_build)
  show = dsub.add_parser("show", help="summarize a dataset folder",
                         description="Prints provenance and per-task best/median objective.")
  show.add_argument("folder", metavar="DIR", help="a folder written by 'dataset build'")
  show.set_defaults(fn=cmd_dataset_show)
  export = dsub.add_parser("export", help="write a dataset as one CSV table (the table family)",
                           description="Writes every evaluation of a dataset folder as one CSV "
                           "table (task, parameters, objective, test objective, cost, failed), "
                           "the format the 'table' family reads.")
  export.add_argument("folder", metavar="DIR", help="a folder written by 'dataset build'")
  export.add_argument("--out", required=True, help="output .csv file")
  export.add_argument("--split", action="append", default=None,
                      help="only tasks of this split (repeatable)")
  export.set_defaults(fn=cmd_dataset_export)
