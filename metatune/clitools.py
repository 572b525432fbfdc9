"""Helpers shared by the command modules (argument types, usage errors, atomic writes).

A leaf module: the subcommand modules (`metatune.space.cli`, `metatune.study.cli`, ...) and
`metatune.cli` import it, it imports none of them.
"""

from __future__ import annotations

import argparse
import os
import tempfile


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
