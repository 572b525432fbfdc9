"""``metatune space check`` and ``metatune space sample`` (registered by `add_commands`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from metatune.clitools import atomic_write, positive_int
from metatune.space.errors import SpaceError


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
    atomic_write(args.out, text)
    print(f"wrote {len(configs)} configurations of {space.name} to {args.out}", file=sys.stderr)
  return 0


def add_commands(sub) -> None:
  """Registers ``space`` on the top-level subparsers."""
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
