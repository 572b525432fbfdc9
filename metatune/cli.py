"""The ``metatune`` command line: a thin shell over the library."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

# Leaf modules only (no jax): `metatune --help` and argument errors must not pay for it.
from metatune.clitools import UsageError, positive_int, quiet_when_stdout_closes
from metatune.meta.errors import PriorError
from metatune.space.errors import SpaceError


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

  # pylint: disable=import-outside-toplevel
  from metatune.data import cli as data_cli
  from metatune.evaluation import cli as evaluation_cli
  from metatune.meta import cli as meta_cli
  from metatune.reproduce import cli as reproduce_cli
  from metatune.space import cli as space_cli
  from metatune.study import cli as study_cli
  from metatune.surrogate import cli as surrogate_cli
  data_cli.add_commands(sub)
  space_cli.add_commands(sub)
  meta_cli.add_commands(sub)
  surrogate_cli.add_commands(sub)
  study_cli.add_commands(sub)
  evaluation_cli.add_commands(sub)
  reproduce_cli.add_commands(sub)
  return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
  # metatune's own warnings (a prior used on another space, ...) speak to the user of the
  # command, not to a developer: one line, without the source line that raised it.
  if category.__module__.startswith("metatune."):
    print(f"warning: {message}", file=file or sys.stderr)
  else:
    _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    with warnings.catch_warnings():
      warnings.showwarning = _show_warning
      return quiet_when_stdout_closes(args.fn)(args)
  except (SpaceError, UsageError, PriorError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
