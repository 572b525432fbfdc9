"""``metatune surrogate train`` and ``metatune surrogate eval`` (argparse; no jax at import)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

DEFAULT_KS = (0, 5, 10, 20)
HELDOUT = ("heldout_dataset", "heldout_model")


def _positive(text: str) -> int:
  try:
    v = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
  if v <= 0:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {v}")
  return v


def _ks(text: str) -> tuple[int, ...]:
  try:
    ks = tuple(int(t) for t in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}"
                                     ) from None
  if not ks or min(ks) < 0:
    raise argparse.ArgumentTypeError(f"context sizes must be >= 0, got {text!r}")
  return ks


def add_commands(subparsers) -> None:
  """Registers ``surrogate train`` and ``surrogate eval`` on the top-level subparsers.

  Args:
    subparsers: the ``add_subparsers()`` object of the ``metatune`` parser.

  Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_commands(parser.add_subparsers())
    >>> parser.parse_args(["surrogate", "eval", "runs/s"]).folder
    'runs/s'
  """
  sur = subparsers.add_parser(
      "surrogate", help="train and evaluate the in-context meta-surrogate",
      description="Train the meta-surrogate (a transformer that predicts a configuration's "
      "objective on a task from a few observations of that task) and evaluate it against an "
      "exact GP on held-out tasks.")
  ssub = sur.add_subparsers(dest="surrogate_command", metavar="SUBCOMMAND")
  ssub.required = True

  tr = ssub.add_parser(
      "train", help="meta-train a surrogate on a family's meta-training tasks",
      description="Meta-trains on the family's meta_train tasks (validation: meta_valid, the "
      "best check is kept) and writes the surrogate folder, with the meta-training "
      "observations as the environment's contexts. Data: --dataset (a folder from 'metatune "
      "dataset build'), else fresh random configurations evaluated on the tasks (synthetic "
      "families: new tasks at every step). A dataset with learning curves (a family with a "
      "fidelity) trains a fidelity-aware surrogate on curve points (contexts of full and "
      "partial curves, queries at any fidelity), unless --no-curves.")
  tr.add_argument("family", metavar="FAMILY.yaml", help="family config (configs/families/)")
  tr.add_argument("--out", required=True, help="output folder")
  tr.add_argument("--dataset", default=None, help="meta-dataset folder of this family")
  tr.add_argument("--data-dir", default=None,
                  help="data folder for families that read real data (default: "
                  "$METATUNE_DATA_DIR)")
  tr.add_argument("--steps", type=_positive, default=3000, help="optimizer steps (default 3000)")
  tr.add_argument("--batch-tasks", type=_positive, default=16, help="tasks per step (default 16)")
  tr.add_argument("--max-context", type=_positive, default=None,
                  help="largest context (default: min(48, half the observations per task); "
                  "with curves, configurations: min(16, a quarter))")
  tr.add_argument("--num-queries", type=_positive, default=None,
                  help="queries per task and step (default: min(64, the rest); with curves 16)")
  tr.add_argument("--query-configs", type=_positive, default=8,
                  help="with curves: configurations the queries ask about, each possibly "
                  "showing a prefix of its own curve in the context (default 8)")
  tr.add_argument("--no-curves", action="store_true",
                  help="train on final values only, even when the dataset has learning curves")
  tr.add_argument("--configs-per-task", type=_positive, default=1024,
                  help="without --dataset: random configurations evaluated per task "
                  "(default 1024)")
  tr.add_argument("--width", type=_positive, default=64, help="token width (default 64)")
  tr.add_argument("--depth", type=_positive, default=3, help="transformer blocks (default 3)")
  tr.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate")
  tr.add_argument("--scale-floor", type=float, default=0.05,
                  help="smallest context scale, as a fraction of the median task's objective sd "
                  "(default 0.05)")
  tr.add_argument("--eval-every", type=_positive, default=250,
                  help="steps between validation checks (default 250)")
  tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  tr.add_argument("--quiet", action="store_true", help="no progress lines")
  tr.set_defaults(fn=cmd_train)

  ev = ssub.add_parser(
      "eval", help="score a surrogate against an exact GP on held-out tasks",
      description="For k context observations of each held-out task, prints Spearman rank "
      "correlation, NLL (task-standardized units) and 90%%-interval coverage of the "
      "surrogate and of an exact GP fitted on the same k points (mean ± standard error over "
      "tasks), and writes a PNG of predicted vs observed.")
  ev.add_argument("folder", metavar="DIR", help="a folder written by 'surrogate train'")
  ev.add_argument("--dataset", default=None,
                  help="meta-dataset folder (default: fresh random configurations on the "
                  "family recorded in DIR)")
  ev.add_argument("--data-dir", default=None, help="data folder (default: $METATUNE_DATA_DIR)")
  ev.add_argument("--split", action="append", default=None,
                  help="held-out split(s) to score (repeatable; default heldout_dataset and "
                  "heldout_model)")
  ev.add_argument("--k", type=_ks, default=DEFAULT_KS, help="context sizes (default 0,5,10,20)")
  ev.add_argument("--reps", type=_positive, default=8,
                  help="random contexts per task (default 8)")
  ev.add_argument("--configs-per-task", type=_positive, default=256,
                  help="without --dataset: random configurations per task (default 256)")
  ev.add_argument("--no-gp", action="store_true", help="score the surrogate only")
  ev.add_argument("--plot", default=None, help="PNG path (default DIR/eval.png)")
  ev.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  ev.set_defaults(fn=cmd_eval)


def _error(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 2


def _load_family(path: str, data_dir: str | None):
  from metatune.tasks import registry  # pylint: disable=import-outside-toplevel
  config = registry.load_family_config(path)
  folder = data_dir or registry.default_data_dir()
  return config, registry.make_family(config, folder)


def cmd_train(args) -> int:
  """Handler of ``surrogate train``; returns the exit code."""
  from metatune.space import SpaceError  # pylint: disable=import-outside-toplevel
  try:
    return _train(args)
  except (SpaceError, ValueError, OSError) as e:
    return _error(str(e))


def _train(args) -> int:
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  import jax  # pylint: disable=import-outside-toplevel

  from metatune import surrogate as sg  # pylint: disable=import-outside-toplevel
  from metatune.tasks import SyntheticFamily  # pylint: disable=import-outside-toplevel

  out = pathlib.Path(args.out)
  if out.exists() and any(out.iterdir()) and not (out / "surrogate.json").exists():
    raise ValueError(f"--out {out}: the folder exists and does not hold a surrogate")
  config, family = _load_family(args.family, args.data_dir)
  splits = family.splits()
  say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
  table_key, valid_key, ctx_key, train_key = jax.random.split(jax.random.key(args.seed), 4)
  source: dict[str, Any] = {"family": config.name, "family_config": config.to_dict(),
                            "family_config_path": str(pathlib.Path(args.family).resolve())}
  if args.dataset:
    table, split_of = sg.load_table(args.dataset, family.space)
    train_ids = [t for t in table.task_ids if split_of[t] == "meta_train"]
    valid_ids = [t for t in table.task_ids if split_of[t] == "meta_valid"]
    if not train_ids:
      raise ValueError(f"--dataset {args.dataset}: no finished meta_train task")
    train_table = table.select(train_ids)
    valid_table = table.select(valid_ids) if valid_ids else None
    source["dataset"] = str(pathlib.Path(args.dataset).resolve())
    n = train_table.num_configs
  elif isinstance(family, SyntheticFamily):
    train_ids, valid_ids = splits["meta_train"], splits["meta_valid"]
    train_table = sg.family_table(ctx_key, family, train_ids, 64)
    valid_table = None
    n = None
  else:
    train_ids, valid_ids = splits["meta_train"], splits["meta_valid"]
    say(f"evaluating {args.configs_per_task} random configurations on {len(train_ids)} + "
        f"{len(valid_ids)} tasks")
    train_table = sg.family_table(table_key, family, train_ids, args.configs_per_task)
    valid_table = (sg.family_table(valid_key, family, valid_ids, args.configs_per_task)
                   if valid_ids else None)
    n = args.configs_per_task
  curves = n is not None and train_table.has_curves and not args.no_curves
  if curves:
    max_context = args.max_context or min(16, n // 4)
    num_queries = args.num_queries or 16
  else:
    max_context = args.max_context or (48 if n is None else min(48, n // 2))
    num_queries = args.num_queries or (64 if n is None else min(64, n - max_context))
  tc = sg.TrainConfig(num_steps=args.steps, batch_tasks=args.batch_tasks, max_context=max_context,
                      num_queries=num_queries, query_configs=args.query_configs,
                      learning_rate=args.learning_rate, eval_every=args.eval_every,
                      width=args.width, depth=args.depth)
  if args.scale_floor < 0:
    raise ValueError(f"--scale-floor must be >= 0, got {args.scale_floor}")
  floor = sg.default_scale_floor(train_table, args.scale_floor)
  if n is None:
    batch_fn = sg.family_batches(family, tc.batch_tasks, max_context, num_queries, floor)
    valid_fn = sg.family_batches(family, tc.batch_tasks, max_context, num_queries, floor)
  elif curves:
    make = lambda table: sg.curve_batches(family.space, table, tc.batch_tasks, max_context,
                                          num_queries, floor, tc.query_configs)
    batch_fn = make(train_table)
    valid_fn = None if valid_table is None else make(valid_table)
  else:
    batch_fn = sg.table_batches(family.space, train_table, tc.batch_tasks, max_context,
                                num_queries, floor)
    valid_fn = None if valid_table is None else sg.table_batches(
        family.space, valid_table, tc.batch_tasks, max_context, num_queries, floor)
  source.update(train_tasks=list(train_ids), valid_tasks=list(valid_ids),
                family_name=family.name)
  if curves:
    source["curve_steps"] = int(train_table.curve.shape[-1])
  say(f"{config.name}: training on {len(train_ids)} tasks, validating on "
      f"{len(valid_ids) if valid_fn is not None else 0}; {args.steps} steps, context up to "
      f"{max_context}" + (f" configurations' curves ({train_table.curve.shape[-1]} steps), "
                          f"{num_queries} queries on {tc.query_configs} configurations"
                          if curves else f", {num_queries} queries"))
  start = time.perf_counter()
  surrogate, record = sg.train(train_key, family.space, batch_fn, tc, valid_fn, say, source,
                               scale_floor=floor)
  seconds = time.perf_counter() - start
  sg.save_surrogate(out, surrogate, contexts=train_table)
  last = record[-1]
  print(f"{config.name}: trained in {seconds:.1f}s; train NLL {last['train_nll']:.3f}" +
        (f", best valid NLL {min(r['valid_nll'] for r in record):.3f} at step "
         f"{surrogate.info['selected_step']}" if "valid_nll" in last else "") + f" -> {out}")
  return 0


def cmd_eval(args) -> int:
  """Handler of ``surrogate eval``; returns the exit code."""
  from metatune.space import SpaceError  # pylint: disable=import-outside-toplevel
  try:
    return _eval(args)
  except (SpaceError, ValueError, OSError) as e:
    return _error(str(e))


def heldout_table(surrogate, dataset: str | None, data_dir: str | None, splits, key,
                  configs_per_task: int):
  """Held-out tasks: from a meta-dataset folder, or fresh configurations on the recorded family."""
  from metatune import surrogate as sg  # pylint: disable=import-outside-toplevel
  if dataset:
    table, _ = sg.load_table(dataset, surrogate.space, splits)
    return table
  path = surrogate.info.get("family_config_path")
  if not path or not pathlib.Path(path).is_file():
    raise ValueError(f"no --dataset, and the family config the surrogate was trained from "
                     f"({path!r}) is not readable: pass --dataset")
  _, family = _load_family(path, data_dir)
  if family.space.signature != surrogate.space.signature:
    raise ValueError(f"{path}: the family's space changed since training (signature "
                     f"{family.space.signature}, surrogate {surrogate.space.signature})")
  fam_splits = family.splits()
  ids = [t for s in splits for t in fam_splits.get(s, [])]
  if not ids:
    raise ValueError(f"family {family.name!r} has no task in split(s) {', '.join(splits)}")
  return sg.family_table(key, family, ids, configs_per_task)


def _eval(args) -> int:
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from metatune import surrogate as sg  # pylint: disable=import-outside-toplevel
  from metatune.surrogate import evaluate as ev  # pylint: disable=import-outside-toplevel

  surrogate = sg.load_surrogate(args.folder)
  splits = tuple(args.split or HELDOUT)
  table_key, eval_key = jax.random.split(jax.random.key(args.seed))
  table = heldout_table(surrogate, args.dataset, args.data_dir, splits, table_key,
                        args.configs_per_task)
  start = time.perf_counter()
  result = ev.evaluate(eval_key, surrogate, table, args.k, args.reps, with_gp=not args.no_gp)
  seconds = time.perf_counter() - start
  name = surrogate.info.get("family", surrogate.space.name)
  print(f"{name}: {table.num_tasks} held-out tasks ({', '.join(splits)}), {args.reps} random "
        f"contexts each, {result['num_queries']} query configurations per context; "
        f"mean ± standard error over tasks ({seconds:.1f}s)")
  print(ev.table_markdown(result))
  if result["gp"]:
    w = ev.wins(result)
    print("tasks where the surrogate's Spearman beats the GP's: " +
          ", ".join(f"k={k}: {a}/{b}" for k, (a, b) in w.items()))
  print("median NLL over tasks: " + "; ".join(
      f"k={k}: " + ", ".join(f"{m} {float(np.median(result[m][k]['nll'])):.2f}"
                             for m in ("meta", "gp") if k in result[m]) for k in result["ks"]))
  plot = pathlib.Path(args.plot) if args.plot else pathlib.Path(args.folder) / "eval.png"
  ev.plot(result, table, plot, f"{name}: held-out tasks")
  print(f"wrote {plot}")
  summary = {str(k): {m: {s: float(v.mean()) for s, v in result[m][k].items()}
                      for m in ("meta", "gp") if k in result[m]} for k in result["ks"]}
  (pathlib.Path(args.folder) / "eval.json").write_text(json.dumps(
      {"splits": list(splits), "tasks": result["tasks"], "reps": args.reps, "scores": summary},
      indent=2))
  return 0
