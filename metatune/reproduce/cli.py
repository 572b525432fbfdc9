"""``metatune reproduce`` (registered by `add_commands`); nothing here imports jax."""

from __future__ import annotations

import os
import pathlib
import sys
import time

from metatune.clitools import UsageError, positive_int

REGISTRY = "configs/reproduce.yaml"


def _tail(path: pathlib.Path, lines: int = 15) -> str:
  try:
    text = path.read_text(encoding="utf-8", errors="replace")
  except OSError:
    return ""
  # Progress bars rewrite their line with carriage returns: keep what each line ended as.
  return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])


def _compare(registry, args, root: pathlib.Path) -> int:
  """``--compare ACTUAL``: the regeneration's tables against the committed ones."""
  # pylint: disable=import-outside-toplevel
  from metatune.reproduce import compare
  from metatune.reproduce.registry import PROFILES
  if args.list or args.dry_run:
    raise UsageError("--compare runs nothing: leave out --list and --dry-run")
  paper = PROFILES[args.profile]["paper"]
  expected = root / paper
  actual = pathlib.Path(args.compare)
  if (actual / paper).is_dir():  # the root of a clone that regenerated the profile
    actual = actual / paper
  if not actual.is_dir():
    raise UsageError(f"--compare {args.compare}: no such folder (give a regeneration's {paper} "
                     "or the root of the clone that holds it)")
  if not expected.is_dir():
    raise UsageError(f"{paper}: no such folder here, nothing committed to compare with (run "
                     "metatune reproduce from the repository root)")
  if actual.resolve() == expected.resolve():
    raise UsageError(f"--compare {args.compare} is this repository's own {paper}: give a "
                     "regeneration's (for example of a fresh clone)")
  outcome = compare.compare_outputs(registry, args.profile, expected, actual, args.only or ())
  for line in outcome.differences:
    print(line)
  if outcome.differences:
    n = len(outcome.differences)
    print(f"error: {n} difference{'s' * (n != 1)} between {actual} and the committed {paper} "
          f"({outcome.summary()})", file=sys.stderr)
    return 1
  print(f"{actual} matches the committed {paper}: {outcome.summary()}")
  return 0


def cmd_reproduce(args) -> int:
  # pylint: disable=import-outside-toplevel
  from metatune.reproduce import registry as reg
  from metatune.reproduce import runner, text
  root = pathlib.Path.cwd()
  path = pathlib.Path(args.registry or REGISTRY)
  if not path.is_file():
    raise UsageError(f"{path}: no such registry" + ("" if args.registry else
                     " (run metatune reproduce from the repository root, or pass --registry)"))
  if args.compare:
    return _compare(reg.load_registry(path), args, root)
  data_dir = args.data_dir or os.environ.get("METATUNE_DATA_DIR") or None
  if data_dir and not os.path.isdir(data_dir):
    setting = "--data-dir" if args.data_dir else "METATUNE_DATA_DIR"
    raise UsageError(f"{setting}={data_dir}: no such folder")
  registry = reg.load_registry(path)
  wanted = {e.name for e in reg.order(registry, args.only or ())}
  gpu = None
  if any(e.gpu and not e.profile(args.profile).skip and e.name in wanted
         for e in registry.entries.values()):
    gpu = runner.detect_gpu()
  items = runner.plan(registry, args.profile, root, args.only or (), data_dir, gpu=gpu)
  if args.list:
    print(text.plan_text(items, args.profile, str(path)))
    return 0
  if args.dry_run:
    print(text.commands_text(items, args.profile, data_dir))
    return 0
  print(f"metatune reproduce --profile {args.profile}: {text.summary(items)} "
        "(--list says why)", flush=True)
  ok = False
  start = time.perf_counter()
  try:
    ok = runner.run(items, root, data_dir, out=sys.stderr, live=sys.stderr.isatty(),
                    jobs=args.jobs)
  finally:
    written = text.write_report(items, args.profile, root, data_dir, gpu,
                                wall=(time.perf_counter() - start, args.jobs))
  if not ok:
    # With --jobs, entries that were running when one failed may have failed too.
    for failed in (i for i in items if i.status == "failed"):
      tail = _tail(root / failed.step.log)
      print(f"error: entry {failed.name!r} failed ({failed.reason}); its log: {failed.step.log}"
            + (f"; it ends:\n{tail}" if tail else ""), file=sys.stderr)
    print(f"report: {written}")
    return 1
  print(f"report: {written}")
  return 0


def add_commands(sub) -> None:
  """Registers ``reproduce`` on the top-level subparsers."""
  from metatune.reproduce.registry import PROFILES  # pylint: disable=import-outside-toplevel
  p = sub.add_parser(
      "reproduce", help="regenerate the paper's tables and figures (configs/reproduce.yaml)",
      description="Runs the experiments of the registry (configs/reproduce.yaml: evaluate "
      "configs, experiment scripts and the dataset builds and meta-training they need) in "
      "dependency order, each as a subprocess from the repository root with its output in a "
      "log. Resumable: an entry that succeeded is stamped and skipped on the next run until "
      "its command, its input files or an entry it needs change. Entries that need the data "
      "folder or a GPU are skipped, with the reason, where there is none. The quick profile "
      "runs small versions and writes below paper/quick/ and .cache_data/quick/; the full "
      "profile writes the paper's results (paper/evaluate/, paper/tables/). Ends with "
      "REPRODUCE.md: every entry, its command, status, seconds and machine. With --compare, "
      "runs nothing and compares a regeneration's tables with the committed ones, as each "
      "entry's compare field says (exact, within the CIs, or not at all).")
  p.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                 help="quick (small, minutes to hours on a CPU; the default) or full (the "
                 "paper's settings)")
  p.add_argument("--only", action="extend", nargs="+", default=None, metavar="NAME",
                 help="run only these entries and what they need (repeatable)")
  p.add_argument("--list", action="store_true",
                 help="print the plan (order, up-to-date and skipped entries with reasons)")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                 help="run up to N entries at once, each when the entries it needs have "
                 "succeeded (default 1: one at a time, in order); a failure starts nothing more "
                 "and lets the running entries finish. With N > 1 the progress is a line when an "
                 "entry starts and one when it ends (no live line); the report and stamps are "
                 "the same")
  p.add_argument("--data-dir", default=None, help="data folder (default: $METATUNE_DATA_DIR)")
  p.add_argument("--compare", default=None, metavar="ACTUAL_DIR",
                 help="compare a regeneration's tables (ACTUAL_DIR: its paper/quick for the "
                 "quick profile, or the root of the clone that holds it) with this repository's "
                 "committed ones; prints the differences, exit code 1 if there are any")
  p.add_argument("--registry", default=None, metavar="FILE",
                 help=f"the registry (default: {REGISTRY} in the current folder, the root)")
  p.set_defaults(fn=cmd_reproduce)
