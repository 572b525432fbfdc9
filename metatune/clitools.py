"""Helpers shared by the command modules (argument types, usage errors, atomic writes, families).

A leaf module: the subcommand modules (`metatune.space.cli`, `metatune.study.cli`, ...) and
`metatune.cli` import it, it imports none of them.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from typing import Callable


class UsageError(Exception):
  """A bad command-line argument (exit code 2)."""


def positive_int(text: str) -> int:
  """argparse type: a positive whole number."""
  try:
    v = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
  if v <= 0:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {v}")
  return v


def atomic_write(path: str, text: str):
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


def load_family(path: str, data_dir: str | None):
  """``(config, family)`` of a family config, with data-folder problems as usage errors.

  A family that reads real data (YAHPO surrogates, datasets) raises `FileNotFoundError` when
  the data folder lacks its files; on the command line that is a wrong setting, said in one
  line with the config that asked for the files.

  Args:
    path: the family config (YAML).
    data_dir: ``--data-dir``, or None for ``$METATUNE_DATA_DIR``.

  Raises:
    UsageError: the data folder does not exist or lacks a file the family needs.
    SpaceError: a malformed config (file and line).
  """
  from metatune.tasks import registry  # pylint: disable=import-outside-toplevel
  config = registry.load_family_config(path)
  folder = data_dir or registry.default_data_dir()
  setting = "--data-dir" if data_dir else "METATUNE_DATA_DIR"
  if folder is not None and not os.path.isdir(folder):
    raise UsageError(f"{setting}={folder}: no such folder (the data folder for {path})")
  try:
    return config, registry.make_family(config, folder)
  except FileNotFoundError as e:
    raise UsageError(f"{path}: {e} (data folder from {setting})") from None


def quiet_when_stdout_closes(fn: Callable[[argparse.Namespace], int]
                             ) -> Callable[[argparse.Namespace], int]:
  """Wraps a command so that a reader closing our stdout (``| head``) ends it quietly.

  The command stops at its next write (a study being run is left to resume, like
  after Ctrl-C) and exits with 141, as a process killed by SIGPIPE does, instead of
  a BrokenPipeError traceback. SIGPIPE itself stays ignored: the driver's pipes to
  its workers must not kill it.

  Example:
    >>> quiet_when_stdout_closes(lambda args: 0)(None)
    0
  """

  @functools.wraps(fn)
  def run(args) -> int:
    try:
      code = fn(args)
      sys.stdout.flush()  # inside the try: a small output is written only now
      return code
    except BrokenPipeError:
      # Python flushes stdout again at exit; point it at /dev/null so that flush succeeds.
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, sys.stdout.fileno())
      os.close(devnull)
      return 141

  return run
