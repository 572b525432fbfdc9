"""The ``metatune`` command line: a thin shell over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Sequence

from metatune.space.errors import SpaceError


class UsageError(Exception):
  """A bad command-line argument (exit code 2)."""


def positive_int(text: str) -> int:
  """argparse type: a positive whole number (shared by the subcommand modules)."""
  try:
    v = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
  if v <= 0:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {v}")
  return v


def _describe(p) -> str:
  if p.kind in ("float", "int"):
    return f"{p.kind} [{p.low:g}, {p.high:g}]" + (" log" if p.log else "")
  if p.kind == "bool":
    return "bool"
  shown = ", ".join(map(str, p.choices[:6])) + (", ..." if len(p.choices) > 6 else "")
  return f"{p.kind} {{{shown}}}"


def tree_lines(space) -> list[str]:
  """The space as an indented tree: children under their parents, with their conditions."""
  depth = space.depth()
  width = max(len(n) + 2 * depth[n] for n in space.names)
  lines = []
  for p in space.params:
    pad = "  " * depth[p.name]
    when = f"  when {p.condition_text}" if p.condition_text else ""
    lines.append(f"  {pad}{p.name:<{width - len(pad)}}  {_describe(p)}{when}")
  for c in space.constraints:
    lines.append(f"  {'require' if c.mode == 'require' else 'forbid '}  {c.text}")
  return lines


def check_samples(space, num: int, seed: int) -> dict[str, Any]:
  """Samples ``num`` configurations with the jitted sampler and checks each with `validate`."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from metatune.space import sampling  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  values, active = jax.jit(lambda k: sampling.sample(k, space, num))(jax.random.key(seed))
  values, active = jax.device_get((values, active))
  elapsed = time.perf_counter() - t0
  invalid, first_error = 0, None
  for i, cfg in enumerate(space.decode_batch(values, active)):
    try:
      space.validate(cfg)
    except SpaceError as e:
      invalid += 1
      first_error = first_error or f"sample {i}: {e}"
  rate = sampling.feasibility(space)[0] if space.constraints else 1.0
  return {
      "space": space.name,
      "signature": space.signature,
      "num_params": space.num_params,
      "num_conditional": sum(c is not None for c in space.conditions),
      "num_constraints": len(space.constraints),
      "samples": num,
      "invalid": invalid,
      "first_invalid": first_error,
      "feasible_fraction": rate,
      "active_fraction": {n: float(f) for n, f in zip(space.names,
                                                        np.asarray(active).mean(axis=0))},
      "seconds": elapsed,
  }


def cmd_space_check(args) -> int:
  from metatune.space import io  # pylint: disable=import-outside-toplevel
  space = io.load(args.space)
  report = check_samples(space, args.samples, args.seed)
  if args.json:
    print(json.dumps({**report, "tree": tree_lines(space)}, indent=2))
    return 0 if report["invalid"] == 0 else 1
  print(f"{space.name}: {space.num_params} parameters ({report['num_conditional']} conditional), "
        f"{len(space.constraints)} constraints, signature {space.signature}")
  print("\n".join(tree_lines(space)))
  print(f"\nsampled {args.samples} configurations in {report['seconds']:.2f}s "
        f"(compile included): {report['invalid']} invalid")
  if report["first_invalid"]:
    print(f"  first invalid: {report['first_invalid']}")
  if space.constraints:
    print(f"feasible fraction of the unconstrained space: {report['feasible_fraction']:.3f}")
  print("how often each parameter was active:")
  for name, frac in report["active_fraction"].items():
    print(f"  {name:<{max(map(len, space.names))}}  {frac:6.1%}")
  return 0 if report["invalid"] == 0 else 1


def _atomic_write(path: str, text: str):
  """Writes a file through a temporary file and a rename, so a crash never leaves half a file."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UsageError(f"--out {path}: the folder {folder} does not exist")
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".metatune-", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def cmd_space_sample(args) -> int:
  import jax  # pylint: disable=import-outside-toplevel

  from metatune.space import io, sampling  # pylint: disable=import-outside-toplevel
  space = io.load(args.space)
  values, active = jax.jit(lambda k: sampling.sample(k, space, args.num))(jax.random.key(args.seed))
  configs = space.decode_batch(*jax.device_get((values, active)))
  text = "".join(json.dumps(c) + "\n" for c in configs)
  if args.out == "-":
    sys.stdout.write(text)
  else:
    _atomic_write(args.out, text)
    print(f"wrote {len(configs)} configurations of {space.name} to {args.out}", file=sys.stderr)
  return 0


def cmd_dataset_build(args) -> int:
  from metatune.data import builder  # pylint: disable=import-outside-toplevel
  from metatune.tasks import registry  # pylint: disable=import-outside-toplevel
  config = registry.load_family_config(args.family)
  data_dir = args.data_dir or registry.default_data_dir()
  family = registry.make_family(config, data_dir)
  t0 = time.perf_counter()
  summary = builder.build(config, family, args.out, splits=args.split, max_tasks=args.max_tasks,
                          configs_per_task=args.configs_per_task, progress=not args.no_progress,
                          data_dir=data_dir)
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


def cmd_demo(args) -> int:
  from metatune import demo  # pylint: disable=import-outside-toplevel
  return demo.main(num_updates=args.updates, num_trials=args.trials, seed=args.seed,
                   out=args.out, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
  from metatune import __version__  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      prog="metatune",
      description="Meta-learned hyperparameter tuners over structured search spaces.")
  parser.add_argument("--version", action="version", version=f"metatune {__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True

  demo = sub.add_parser("demo", help="the main job on the embedded default (no data folder)",
                        description="Meta-trains the structured policy with PPO on the "
                        "meta-training tasks of the synthetic conditional family over the "
                        "embedded default space, then compares it with random, quasi-random and "
                        "grid search on the held-out tasks and prints the normalized regret.")
  demo.add_argument("--updates", type=positive_int, default=100,
                    help="meta-training iterations (default 100)")
  demo.add_argument("--trials", type=positive_int, default=20,
                    help="trials per study (default 20)")
  demo.add_argument("--out", default=None, help="keep the prior in this folder")
  demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  demo.add_argument("--json", action="store_true", help="print the results as JSON")
  demo.set_defaults(fn=cmd_demo)

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

  space = sub.add_parser("space", help="check and sample search spaces",
                         description="Check and sample search spaces (metatune YAML/JSON or "
                         "ConfigSpace JSON).")
  ssub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
  ssub.required = True
  check = ssub.add_parser("check", help="print the tree, sample, count invalid configurations",
                          description="Prints the space as a tree, samples N configurations "
                          "with the jitted sampler, checks each with the independent validator "
                          "and reports how many were invalid and how often each parameter was "
                          "active. Exits 1 if any sample is invalid.")
  check.add_argument("space", metavar="SPACE", help="space file (.yaml, .yml or .json)")
  check.add_argument("--samples", type=positive_int, default=1000,
                     help="number of configurations to sample (default 1000)")
  check.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  check.add_argument("--json", action="store_true", help="print the report as JSON")
  check.set_defaults(fn=cmd_space_check)
  samp = ssub.add_parser("sample", help="write sampled configurations as JSON lines",
                         description="Writes NUM valid configurations, one JSON object per "
                         "line with the active parameters only (ConfigSpace spaces keep their "
                         "parameter names and value types).")
  samp.add_argument("space", metavar="SPACE", help="space file (.yaml, .yml or .json)")
  samp.add_argument("--num", type=positive_int, required=True, help="number of configurations")
  samp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  samp.add_argument("--out", required=True, help="output .jsonl file, or - for stdout")
  samp.set_defaults(fn=cmd_space_sample)

  # pylint: disable=import-outside-toplevel
  from metatune.meta import cli as meta_cli
  from metatune.study import cli as study_cli
  from metatune.surrogate import cli as surrogate_cli
  meta_cli.add_commands(sub)
  surrogate_cli.add_commands(sub)
  study_cli.add_commands(sub)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return args.fn(args)
  except SpaceError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
