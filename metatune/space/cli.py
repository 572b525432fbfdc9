"""``metatune space check`` and ``metatune space sample`` (registered by `add_commands`).

Both stream: configurations are drawn, checked and written in chunks of a fixed
size (one compiled sampler), with a progress bar on stderr when the job is
large, so memory stays flat and no run is silent. Sizes beyond the stated
limits are refused up front.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Any, Iterator

from metatune.clitools import UsageError, positive_int
from metatune.space.errors import SpaceError

MAX_CHECK_SAMPLES = 1_000_000
MAX_SAMPLE_NUM = 100_000_000
# Rows per chunk: at most 10,000, and fewer for wide spaces so that a chunk's
# arrays (rows x parameters x choices for the discrete bins) stay near 64 MB.
_CHUNK_ROWS = 10_000
_CHUNK_CELLS = 16_000_000
_TREE_INDENT_CAP = 16


def _describe(p) -> str:
  if p.kind in ("float", "int"):
    return f"{p.kind} [{p.low:g}, {p.high:g}]" + (" log" if p.log else "")
  if p.kind == "bool":
    return "bool"
  shown = ", ".join(map(str, p.choices[:6])) + (", ..." if len(p.choices) > 6 else "")
  return f"{p.kind} {{{shown}}}"


def tree_lines(space) -> list[str]:
  """The space as an indented tree: each child right under its parent, with its condition.

  A parameter whose condition reads several parents hangs under the deepest of
  them. Indentation stops growing at 16 levels; deeper lines say their depth.
  """
  depth = space.depth()
  children: dict[str, list[str]] = {n: [] for n in space.names}
  roots = []
  for n in space.names:
    parents = space.parents[n]
    if parents:
      children[max(parents, key=lambda q: (depth[q], space.index[q]))].append(n)
    else:
      roots.append(n)
  order = []
  stack = roots[::-1]
  while stack:  # depth-first without recursion: chains of conditions may be long
    n = stack.pop()
    order.append(n)
    stack.extend(children[n][::-1])
  indent = {n: min(depth[n], _TREE_INDENT_CAP) for n in space.names}
  width = max(len(n) + 2 * indent[n] for n in space.names)
  lines = []
  for n in order:
    p = space.params[space.index[n]]
    pad = "  " * indent[n]
    deep = f"  (depth {depth[n]})" if depth[n] > _TREE_INDENT_CAP else ""
    when = f"  when {p.condition_text}" if p.condition_text else ""
    lines.append(f"  {pad}{n:<{width - len(pad)}}  {_describe(p)}{deep}{when}")
  for c in space.constraints:
    lines.append(f"  {'require' if c.mode == 'require' else 'forbid '}  {c.text}")
  return lines


def chunk_rows(space) -> int:
  """Configurations per chunk for this space (see `_CHUNK_CELLS`)."""
  cells = space.num_params * max(space.max_choices, 8)
  return max(1, min(_CHUNK_ROWS, _CHUNK_CELLS // cells))


def sample_chunks(space, num: int, seed: int, progress: bool | None = None
                  ) -> Iterator[tuple[Any, Any]]:
  """Yields ``(values f32[n, D], active bool[n, D])`` chunks of ``num`` valid configurations.

  Up to one chunk, the result is exactly ``sample(key(seed), space, num)``;
  beyond, chunk ``i`` is drawn with ``fold_in(key(seed), i)``.

  Args:
    space: the space.
    num: number of configurations.
    seed: random seed.
    progress: show a progress bar on stderr; by default, when the job has more
      than one chunk or the space has 1,000 parameters or more.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from metatune.space import sampling  # pylint: disable=import-outside-toplevel

  rows = chunk_rows(space)
  num_chunks = -(-num // rows)
  if progress is None:
    progress = num_chunks > 1 or space.num_params >= 1000
  size = min(rows, num)
  draw = jax.jit(lambda k: sampling.sample(k, space, size))
  key = jax.random.key(seed)
  with tqdm(total=num, unit=" configs", file=sys.stderr, disable=not progress,
            mininterval=1.0, desc=f"sampling {space.name}") as bar:
    for i in range(num_chunks):
      values, active = jax.device_get(draw(key if num_chunks == 1 else
                                           jax.random.fold_in(key, i)))
      n = min(size, num - i * size)
      bar.update(n)
      yield values[:n], active[:n]


def check_samples(space, num: int, seed: int) -> dict[str, Any]:
  """Samples ``num`` configurations with the jitted sampler and checks each with `validate`."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from metatune.space import sampling  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  invalid, first_error = 0, None
  active_count = np.zeros(space.num_params, np.int64)
  done = 0
  for values, active in sample_chunks(space, num, seed):
    for i, cfg in enumerate(space.decode_batch(values, active)):
      try:
        space.validate(cfg)
      except SpaceError as e:
        invalid += 1
        first_error = first_error or f"sample {done + i}: {e}"
    active_count += np.asarray(active).sum(axis=0)
    done += len(values)
  elapsed = time.perf_counter() - t0
  rate = sampling.feasibility(space)[0] if space.constraints else 1.0
  return {
      "space": space.name,
      "signature": space.signature,
      "num_params": space.num_params,
      "num_conditional": sum(c is not None for c in space.conditions),
      "num_constraints": len(space.constraints),
      "max_depth": space.max_depth,
      "samples": num,
      "invalid": invalid,
      "first_invalid": first_error,
      "feasible_fraction": rate,
      "active_fraction": {n: float(f) for n, f in zip(space.names, active_count / num)},
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
  print(f"\nsampled and checked {args.samples} configurations in {report['seconds']:.2f}s "
        f"(compile included): {report['invalid']} invalid")
  if report["first_invalid"]:
    print(f"  first invalid: {report['first_invalid']}")
  if space.constraints:
    print(f"feasible fraction of the unconstrained space: {report['feasible_fraction']:.3f}")
  print("how often each parameter was active:")
  for name, frac in report["active_fraction"].items():
    print(f"  {name:<{max(map(len, space.names))}}  {frac:6.1%}")
  return 0 if report["invalid"] == 0 else 1


@contextlib.contextmanager
def _output(path: str):
  """A text stream to ``path`` (``-`` for stdout), renamed into place only once complete."""
  if path == "-":
    yield sys.stdout
    return
  if os.path.isdir(path):
    raise UsageError(f"--out {path}: is a folder; name a file, such as "
                     f"{os.path.join(path, 'configs.jsonl')}")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UsageError(f"--out {path}: the folder {folder} does not exist")
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".metatune-", suffix=".tmp")
  except OSError as e:
    raise UsageError(f"--out {path}: cannot write in {folder}: {e.strerror or e}") from None
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result private
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      yield f
    os.replace(tmp, path)
  except OSError as e:
    raise UsageError(f"--out {path}: cannot write: {e.strerror or e}") from None
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def cmd_space_sample(args) -> int:
  from metatune.space import io  # pylint: disable=import-outside-toplevel
  space = io.load(args.space)
  written = 0
  try:
    with _output(args.out) as f:
      for values, active in sample_chunks(space, args.num, args.seed):
        lines = []
        for cfg in space.decode_batch(values, active):
          try:
            lines.append(json.dumps(cfg, allow_nan=False))
          except ValueError:  # the encoding's checks exclude this; never write invalid JSON
            raise SpaceError(f"configuration {written + len(lines)} holds a value that is not "
                             f"a finite number: {cfg}", args.space) from None
        f.write("\n".join(lines) + "\n")
        written += len(lines)
  except BrokenPipeError:
    # The reader of stdout stopped (``| head``): not an error of ours.
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    return 0
  if args.out != "-":
    print(f"wrote {written} configurations of {space.name} to {args.out}", file=sys.stderr)
  return 0


def _at_most(limit: int):
  def parse(text: str) -> int:
    v = positive_int(text)
    if v > limit:
      raise argparse.ArgumentTypeError(f"at most {limit:,} (the limit; got {v:,})")
    return v
  return parse


_LIMITS = ("Limits: a space file of at most 8 MiB, lists and mappings nested at most 64 deep, "
           "at most 10,000 parameters, 10,000 choices per parameter and 1,000 constraints; "
           "expressions of at most 10,000 characters and 100 levels deep. Bounds must be "
           "float32 numbers (the encoding's type).")


def add_commands(sub) -> None:
  """Registers ``space`` on the top-level subparsers."""
  space = sub.add_parser("space", help="check and sample search spaces",
                         description="Check and sample search spaces (metatune YAML/JSON or "
                         "ConfigSpace JSON).")
  ssub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
  ssub.required = True
  check = ssub.add_parser("check", help="print the tree, sample, count invalid configurations",
                          description="Prints the space as a tree, samples N configurations "
                          "with the jitted sampler (in chunks, with a progress bar on stderr "
                          "for large jobs), checks each with the independent validator and "
                          "reports how many were invalid and how often each parameter was "
                          f"active. Exits 1 if any sample is invalid. {_LIMITS}")
  check.add_argument("space", metavar="SPACE", help="space file (.yaml, .yml or .json)")
  check.add_argument("--samples", type=_at_most(MAX_CHECK_SAMPLES), default=1000,
                     help=f"number of configurations to sample and check (default 1000, at "
                     f"most {MAX_CHECK_SAMPLES:,})")
  check.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  check.add_argument("--json", action="store_true", help="print the report as JSON")
  check.set_defaults(fn=cmd_space_check)
  samp = ssub.add_parser("sample", help="write sampled configurations as JSON lines",
                         description="Writes NUM valid configurations, one JSON object per "
                         "line with the active parameters only (ConfigSpace spaces keep their "
                         "parameter names and value types). Streams in chunks of up to "
                         f"{_CHUNK_ROWS:,} configurations, with a progress bar on stderr "
                         "beyond one chunk; a file appears only once complete. " + _LIMITS)
  samp.add_argument("space", metavar="SPACE", help="space file (.yaml, .yml or .json)")
  samp.add_argument("--num", type=_at_most(MAX_SAMPLE_NUM), required=True,
                    help=f"number of configurations (at most {MAX_SAMPLE_NUM:,})")
  samp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  samp.add_argument("--out", required=True, help="output .jsonl file, or - for stdout")
  samp.set_defaults(fn=cmd_space_sample)
