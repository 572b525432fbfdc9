"""A worker process kept to itself: dies with its driver, stays under a cap, ends what it started.

A worker leads its own process group (`metatune.study.processes` starts it so);
the processes an objective starts join that group, so ending the group's other
members ends them, whether they are children or grandchildren. Nothing here
imports jax.
"""

from __future__ import annotations

import os
import signal
import time


def die_with_parent(parent_pid: int):
  """Asks Linux to SIGKILL this process when its parent dies (a killed driver leaves no orphans)."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass
  if os.getppid() != parent_pid:  # the parent died before prctl
    os._exit(1)


def limit_memory(memory_limit_mb: float | None):
  """Caps this process's address space (RLIMIT_AS); allocations past it raise MemoryError."""
  if memory_limit_mb:
    import resource  # pylint: disable=import-outside-toplevel
    limit = int(memory_limit_mb * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _group_members(group: int) -> list[int]:
  """The other live processes of process group ``group`` (from /proc; empty without it)."""
  me = os.getpid()
  out = []
  try:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
  except OSError:
    return out
  for pid in pids:
    if pid == me:
      continue
    try:
      with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
      continue
    if int(fields[2]) == group and fields[0] not in ("Z", "X"):
      out.append(pid)
  return out


def adopt_orphans() -> bool:
  """Makes this process the reaper of its orphaned descendants (Linux's child subreaper).

  Then every process the objective started, however deep, is a child of this
  process until it ends, so `end_group` can tell cheaply that none is left.

  Returns:
    Whether the kernel agreed.
  """
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    return ctypes.CDLL(None, use_errno=True).prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER
  except (OSError, AttributeError):
    return False


def end_group(adopted: bool = False, grace_s: float = 1.0):
  """Ends the processes the objective left in this worker's group: SIGTERM, then SIGKILL.

  Only when this worker leads its own group (it never signals the driver's).
  Processes that left the group (``setsid``) are not ended.

  Args:
    adopted: `adopt_orphans` succeeded: no child left means nothing left, and the
      slower search of /proc is skipped.
    grace_s: how long SIGTERM has to work before SIGKILL.
  """
  group = os.getpgid(0)
  if group != os.getpid():
    return
  previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the whole group but this one
  try:
    os.killpg(group, signal.SIGTERM)
  finally:
    signal.signal(signal.SIGTERM, previous)
  if adopted and not _reap():
    return  # the common case: the trial started nothing that still runs
  deadline = time.time() + grace_s
  left = _group_members(group)
  while left and time.time() < deadline:
    _reap()
    time.sleep(0.02)
    left = _group_members(group)
  for pid in left:
    try:
      os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
  _reap()


def _reap() -> bool:
  """Collects the exit status of this process's dead children (they would stay zombies).

  Returns:
    Whether a child is still running.
  """
  while True:
    try:
      pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return False
    if pid == 0:
      return True
