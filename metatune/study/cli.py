"""The ``metatune tune`` and ``metatune study`` commands (registered by `add_commands`).

Nothing here imports jax at module level; handlers import what they need.
Before the main command line registers these, run them as
``python -m metatune.study.cli tune ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from metatune.clitools import positive_int, quiet_when_stdout_closes
from metatune.study.errors import StudyError


def _positive_float(text: str) -> float:
  try:
    v = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not v > 0 or v == float("inf"):
    raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
  return v


def _nonnegative_float(text: str) -> float:
  try:
    v = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
  if not 0 <= v < float("inf"):
    raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
  return v


def _direction(text: str) -> tuple[str, str]:
  name, sep, d = text.rpartition(":")
  if not sep or not name:
    raise argparse.ArgumentTypeError(f"expected NAME:min or NAME:max, got {text!r}")
  dirs = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
  if d not in dirs:
    raise argparse.ArgumentTypeError(f"{text!r}: the direction must be min or max, got {d!r}")
  return name, dirs[d]


def _option(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def _read_configs(path: str) -> list[tuple[dict, str]]:
  """Configurations from a JSON-lines file, each with its ``file:line`` place."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
  except OSError as e:
    raise StudyError(f"cannot read it: {e.strerror}", path) from None
  out = []
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      cfg = json.loads(line)
    except json.JSONDecodeError as e:
      raise StudyError(f"not valid JSON: {e.msg} (column {e.colno})", f"{path}:{i}") from None
    out.append((cfg, f"{path}:{i}"))
  return out


def _pruner(args):
  if args.pruner == "none":
    return None
  if args.max_resource is None:
    raise StudyError(f"--pruner {args.pruner} needs --max-resource (the full number of steps)",
                     "--max-resource")
  from metatune.study import pruners  # pylint: disable=import-outside-toplevel
  try:
    if args.pruner == "curve":
      if not args.surrogate:
        raise StudyError("--pruner curve needs --surrogate DIR (a surrogate trained on learning "
                         "curves: 'metatune surrogate train')", "--surrogate")
      from metatune.space import io  # pylint: disable=import-outside-toplevel
      return pruners.CurveStop(args.surrogate, args.max_resource, args.stop_threshold,
                               args.min_resource, args.min_completed, space=io.load(args.space))
    cls = pruners.ASHA if args.pruner == "asha" else pruners.SuccessiveHalving
    min_resource = 1.0 if args.min_resource is None else args.min_resource
    return cls(min_resource, args.max_resource, args.reduction_factor)
  except ValueError as e:
    raise StudyError(str(e), "--pruner") from None


def _user_errors() -> tuple[type[Exception], ...]:
  # Imported here: metatune.space's package imports jax.
  from metatune.space.errors import SpaceError  # pylint: disable=import-outside-toplevel
  from metatune.meta.errors import PriorError  # pylint: disable=import-outside-toplevel
  return StudyError, SpaceError, PriorError


def _fail(e: Exception) -> int:
  print(f"error: {e}", file=sys.stderr)
  return 2


@quiet_when_stdout_closes
def cmd_tune(args) -> int:
  """Creates or resumes a study and runs it to its budget."""
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  from metatune.study.study import Study  # pylint: disable=import-outside-toplevel
  try:
    if (args.trials is None and args.time_budget is None and args.max_cost is None and
        not args.stop_on_plateau):
      raise StudyError("give --trials, --time-budget, --max-cost or --stop-on-plateau, or the "
                       "study never ends", "tune")
    pruner = _pruner(args)
    from metatune.study.worker import load_objective  # pylint: disable=import-outside-toplevel
    load_objective(args.objective)  # before any file is written
    if args.tuner == "prior" and "path" in dict(args.tuner_option or []):
      from metatune.meta.prior import check_prior  # pylint: disable=import-outside-toplevel
      check_prior(dict(args.tuner_option)["path"])  # a bad prior folder, too
    configs = _read_configs(args.enqueue) if args.enqueue else []
    name = args.study or os.path.splitext(os.path.basename(args.storage))[0]
    exists = False
    if os.path.exists(args.storage):
      from metatune.study.storage import Storage  # pylint: disable=import-outside-toplevel
      with Storage(args.storage) as s:
        exists = s.find_study(name) is not None
    study = Study.create(args.space, args.storage, name, objectives=args.directions,
                         constraints=args.constraint or (), tuner=args.tuner,
                         tuner_options=dict(args.tuner_option or []), seed=args.seed,
                         divergence_threshold=args.divergence_threshold, load_if_exists=True,
                         synchronous=args.sync)
    with study:
      if configs and exists:
        print(f"note: the study {name!r} exists; --enqueue is used only when it is created",
              file=sys.stderr)
      elif configs:
        for cfg, where in configs:
          study.space.validate(cfg, where)  # all checked before any is queued
        for cfg, where in configs:
          study.enqueue(cfg, where)
      if exists:
        c = study.counts()
        print(f"resuming study {name!r}: {c['complete'] + c['failed'] + c['pruned']} finished "
              f"trials, {c['running']} were running (asked again)", file=sys.stderr)
      callbacks = [_print_trial] if args.verbose else []
      result = study.optimize(
          args.objective, num_trials=args.trials, num_workers=args.workers,
          executor=args.executor, timeout=args.time_budget, max_cost=args.max_cost,
          trial_timeout=args.trial_timeout, memory_limit_mb=args.memory_limit, pruner=pruner,
          stop_on_plateau=args.stop_on_plateau, plateau_window=args.plateau_window,
          progress=not args.no_progress, ray_address=args.address, callbacks=callbacks,
          log_limit_kb=args.log_limit)
      print(f"stopped ({result.stop_reason}) after {result.num_finished} new trials in "
            f"{result.elapsed:.1f}s: {result.num_complete} complete, {result.num_failed} failed, "
            f"{result.num_pruned} pruned in the study")
      if result.plateau:
        print(result.plateau)
      front = study.best_trials
      names = study.spec.names
      for t in front[:5]:
        vals = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, t.objectives))
        print(f"best: trial {t.number}: {vals}  {json.dumps(t.config)}")
    return 0
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, _user_errors()):
      return _fail(e)
    raise


def _print_trial(study, rec):
  vals = "" if rec.objectives is None else " " + ",".join(f"{v:.6g}" for v in rec.objectives)
  why = f" {rec.reason}" if rec.reason else ""
  print(f"trial {rec.number} {rec.state}{vals}{why}", flush=True)


def _load(args):
  from metatune.study.study import Study  # pylint: disable=import-outside-toplevel
  return Study.load(args.storage, args.study)


@quiet_when_stdout_closes
def cmd_show(args) -> int:
  """Prints a study's summary and failure report; writes plots on request."""
  from metatune.study import report  # pylint: disable=import-outside-toplevel
  try:
    with _load(args) as study:
      if args.trial is not None:
        d = report.trial_detail(study, args.trial)
        print(json.dumps(d, indent=2, default=str) if args.json else report.format_trial(d))
        return 0
      s = report.summary(study)
      if args.json:
        print(json.dumps(s, indent=2, default=str))
      else:
        print(report.format_summary(s))
      if args.plots:
        for path in report.write_plots(study, args.plots):
          print(f"wrote {path}", file=sys.stderr)
    return 0
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, _user_errors()):
      return _fail(e)
    raise


@quiet_when_stdout_closes
def cmd_list(args) -> int:
  """Lists the studies in a file with their trial counts."""
  # Counts from the storage alone: opening a `Study` compiles its space, which imports jax.
  from metatune.study.storage import Storage  # pylint: disable=import-outside-toplevel
  try:
    if not os.path.exists(args.storage):
      raise StudyError("no such study file", args.storage)
    with Storage(args.storage) as storage:
      for name in storage.study_names():
        c = dict.fromkeys(("complete", "failed", "pruned", "running", "stale"), 0)
        for t in storage.trials(storage.find_study(name)["study_id"]):
          c[t.state] += 1
        print(f"{name}: {c['complete']} complete, {c['failed']} failed, {c['pruned']} pruned, "
              f"{c['running']} running, {c['stale']} stale")
    return 0
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, _user_errors()):
      return _fail(e)
    raise


@quiet_when_stdout_closes
def cmd_export(args) -> int:
  """Writes a study's trials as CSV or JSON (by the file's extension)."""
  from metatune.study import export  # pylint: disable=import-outside-toplevel
  try:
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".csv", ".json"):
      raise StudyError("the output must end in .csv or .json", "--out")
    with _load(args) as study:
      n = (export.to_csv if ext == ".csv" else export.to_json)(study, args.out)
    print(f"wrote {n} trials to {args.out}", file=sys.stderr)
    return 0
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, _user_errors()):
      return _fail(e)
    raise


def add_commands(subparsers) -> None:
  """Registers ``tune`` and ``study {show,list,export}`` on an argparse subparsers object.

  Example:
    >>> parser = argparse.ArgumentParser(prog="metatune")
    >>> add_commands(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["study", "list", "s.db"]).fn.__name__
    'cmd_list'
  """
  tune = subparsers.add_parser(
      "tune", help="run (or resume) a study of your objective",
      description="Tunes OBJECTIVE over SPACE, storing every trial in an SQLite file. Run the "
      "same command again after an interruption (even kill -9) and the study resumes: "
      "finished trials are kept, running ones are asked again, the tuner state is rebuilt "
      "exactly. --trials counts the study's finished trials, earlier runs included.")
  tune.add_argument("space", metavar="SPACE", help="space file (.yaml, .yml or .json)")
  tune.add_argument("--objective", required=True, metavar="MODULE:FUNCTION",
                    help="objective(trial) -> float or dict; 'module:function' or "
                    "'path/file.py:function'")
  tune.add_argument("--storage", required=True, metavar="FILE.db", help="the study file")
  tune.add_argument("--study", default=None, help="the study's name in the file "
                    "(default: the file's name)")
  tune.add_argument("--trials", type=positive_int, default=None,
                    help="finished trials to reach (the study's total)")
  tune.add_argument("--workers", type=positive_int, default=1,
                    help="most trials at once (default 1)")
  tune.add_argument("--tuner", default="quasi_random",
                    help="quasi_random (default), random, grid, gp_bo, or prior (a meta-trained "
                    "policy: --tuner prior --tuner-option path=PRIOR_DIR)")
  tune.add_argument("--tuner-option", type=_option, action="append", metavar="KEY=VALUE",
                    help="a tuner argument, e.g. num_candidates=256 (repeatable)")
  tune.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
  tune.add_argument("--directions", type=_direction, nargs="+", default=None,
                    metavar="NAME:min|max", help="several objectives: names and directions, "
                    "e.g. loss:min accuracy:max (the objective returns a dict)")
  tune.add_argument("--constraint", action="append", metavar="NAME",
                    help="an outcome constraint the objective returns; feasible when <= 0 "
                    "(repeatable)")
  tune.add_argument("--executor", choices=("process", "ray", "inline"), default="process",
                    help="where trials run: process (default: local worker processes, each "
                    "trial isolated), ray, or inline (in this process, one at a time: the least "
                    "overhead but no isolation, since a crash of the objective is a crash of the "
                    "driver; the trial is asked again when the study resumes, and failed as "
                    "crashed if it brings the driver down twice; no --trial-timeout or "
                    "--memory-limit)")
  tune.add_argument("--address", default=None, help="Ray cluster address (--executor ray)")
  tune.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                    help="no new trial after this many seconds")
  tune.add_argument("--max-cost", type=_positive_float, default=None,
                    help="budget on the total cost (the 'cost' the objective returns, else "
                    "seconds)")
  tune.add_argument("--trial-timeout", type=_positive_float, default=None, metavar="SECONDS",
                    help="kill a trial after this long and record it as timeout")
  tune.add_argument("--memory-limit", type=_positive_float, default=None, metavar="MB",
                    help="memory cap of each trial's process")
  tune.add_argument("--pruner", choices=("none", "sh", "asha", "curve"), default="none",
                    help="early stopping on trial.report values: successive halving, ASHA, or "
                    "curve (stop when a meta-surrogate's extrapolation of the trial's curve "
                    "gives it little chance to beat the best completed trial)")
  tune.add_argument("--min-resource", type=_positive_float, default=None,
                    help="the pruner's first rung (default 1); curve: never stop before this "
                    "step (default: from the first report)")
  tune.add_argument("--max-resource", type=_positive_float, default=None,
                    help="the pruner's full budget (steps)")
  tune.add_argument("--reduction-factor", type=_positive_float, default=3.0,
                    help="the pruner's eta (default 3)")
  tune.add_argument("--surrogate", default=None, metavar="DIR",
                    help="--pruner curve: a surrogate folder trained on learning curves")
  tune.add_argument("--stop-threshold", type=float, default=0.05,
                    help="--pruner curve: stop below this probability of beating the best "
                    "(default 0.05)")
  tune.add_argument("--min-completed", type=positive_int, default=3,
                    help="--pruner curve: completed trials needed before any stop (default 3)")
  tune.add_argument("--stop-on-plateau", action="store_true",
                    help="end the study when more trials stop paying")
  tune.add_argument("--plateau-window", type=positive_int, default=20,
                    help="trials the plateau check looks back over (default 20)")
  tune.add_argument("--divergence-threshold", type=float, default=None,
                    help="a (minimized) first objective above this marks the trial diverged")
  tune.add_argument("--enqueue", default=None, metavar="FILE.jsonl",
                    help="configurations to run first, one JSON object per line (checked "
                    "against the space; used when the study is created)")
  tune.add_argument("--sync", choices=("normal", "full"), default="normal",
                    help="SQLite durability: normal survives killed processes, full also "
                    "power loss (default normal)")
  tune.add_argument("--log-limit", type=_nonnegative_float, default=32.0, metavar="KiB",
                    help="what each trial prints (stdout and stderr) is kept with it, the last "
                    "this many KiB (default 32); see 'metatune study show FILE --trial N'")
  tune.add_argument("--no-progress", action="store_true", help="no progress bar")
  tune.add_argument("--verbose", action="store_true",
                    help="print a line per finished trial (after it is stored)")
  tune.set_defaults(fn=cmd_tune)

  study = subparsers.add_parser("study", help="inspect and export stored studies",
                                description="Inspect and export studies stored by "
                                "'metatune tune' or the Python Study.")
  ssub = study.add_subparsers(dest="study_command", metavar="SUBCOMMAND")
  ssub.required = True
  show = ssub.add_parser("show", help="summary, best trials and failure report",
                         description="Prints the study's settings, trial counts, best trial "
                         "(or Pareto front and hypervolume), plateau verdict, failures by "
                         "reason and where in the space they cluster, and provenance.")
  show.add_argument("storage", metavar="STORAGE", help="the study file")
  show.add_argument("--study", default=None, help="the study (needed when the file holds "
                    "several)")
  show.add_argument("--plots", default=None, metavar="DIR", help="also write PNG plots here")
  show.add_argument("--json", action="store_true", help="print the summary as JSON")
  show.add_argument("--trial", type=int, default=None, metavar="N",
                    help="print trial N instead: its record, error, reports and the last part "
                    "of what it printed")
  show.set_defaults(fn=cmd_show)
  lst = ssub.add_parser("list", help="the studies in a file",
                        description="Lists the studies in a file with their trial counts.")
  lst.add_argument("storage", metavar="STORAGE", help="the study file")
  lst.set_defaults(fn=cmd_list)
  exp = ssub.add_parser("export", help="trials as CSV or JSON",
                        description="Writes one row per trial: state, reason, objectives, "
                        "constraints, parameters, cost, seed and provenance.")
  exp.add_argument("storage", metavar="STORAGE", help="the study file")
  exp.add_argument("--study", default=None, help="the study")
  exp.add_argument("--out", required=True, metavar="FILE", help="output .csv or .json")
  exp.set_defaults(fn=cmd_export)


def main(argv: Sequence[str] | None = None) -> int:
  """A stand-alone parser with these commands only (until the main CLI registers them)."""
  parser = argparse.ArgumentParser(prog="metatune")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  add_commands(sub)
  args = parser.parse_args(argv)
  try:
    return args.fn(args)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
