"""Where a trial ran: package versions, git commits, host, and the identity of a live process."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
from typing import Any

PACKAGES = ("metatune", "jax", "jaxlib", "flax", "optax", "numpy")


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
  """The commit checked out in the git work tree holding ``folder``, or None outside one.

  Args:
    folder: any folder of the work tree (default: the current folder).

  Returns:
    The 40-hex commit with a ``+dirty`` suffix when tracked files have changes,
    or None when there is no git, no work tree, or no commit yet.

  Example:
    >>> git_commit("/")  # doctest: +SKIP
  """
  folder = os.fspath(folder or os.getcwd())
  try:
    head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=5, check=True).stdout.strip()
    if not head:
      return None
    dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    return head + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
  """Installed versions of ``names`` (None for a package that is not installed)."""
  out: dict[str, str | None] = {"python": platform.python_version()}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def environment() -> dict[str, Any]:
  """This process's environment: versions, git commits (work folder, metatune), host, platform.

  Returns:
    A JSON-ready dict.

  Example:
    >>> sorted(environment())[:3]
    ['executable', 'git_commit', 'host']
  """
  import metatune  # pylint: disable=import-outside-toplevel
  source = pathlib.Path(metatune.__file__).resolve().parents[1]
  return {
      "versions": package_versions(),
      "git_commit": git_commit(os.getcwd()),
      "metatune_commit": git_commit(source) if (source / ".git").exists() else None,
      "host": socket.gethostname(),
      "platform": platform.platform(),
      "executable": sys.executable,
  }


def environment_id(env: dict[str, Any]) -> str:
  """A short stable hash of an `environment` dict (the key environments are stored under)."""
  return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]


def _stat_fields(pid: int) -> list[str] | None:
  """The fields of /proc/PID/stat after the command name (state first), or None."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      stat = f.read()
  except OSError:
    return None
  # The command name (field 2) may hold spaces; the fields after it are fixed.
  return stat[stat.rindex(")") + 2:].split()


def process_start(pid: int) -> str | None:
  """The kernel's start time of process ``pid`` (to tell a live process from a reused pid).

  Returns:
    The start time in clock ticks since boot as text, or None where /proc is absent
    or the process does not exist.
  """
  fields = _stat_fields(pid)
  return None if fields is None else fields[19]


def process_alive(pid: int, start: str | None) -> bool:
  """Whether process ``pid`` is running and is the same process that had start time ``start``.

  A killed process that its parent has not reaped yet (a zombie) is not alive.

  Example:
    >>> process_alive(os.getpid(), process_start(os.getpid()))
    True
  """
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # alive, owned by someone else
  fields = _stat_fields(pid)
  if fields is None:
    return start is None  # no /proc: trust kill(0)
  if fields[0] in ("Z", "X"):
    return False
  return start is None or fields[19] == start
