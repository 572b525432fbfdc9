"""What a plan or a run of `metatune reproduce` says: ``--list``, ``--dry-run`` and REPRODUCE.md."""

from __future__ import annotations

import datetime
import os
import pathlib

from metatune.reproduce.registry import PROFILES
from metatune.reproduce.runner import Item, machine


def _needs_text(item: Item) -> str:
  needs = item.step.entry.needs
  return f" [needs {', '.join(needs)}]" if needs else ""


def _state(item: Item) -> str:
  """What happens (or happened) to an item, in words."""
  s = item.status
  if s == "done" or (s == "unselected" and item.stamp):
    return f"up to date (stamp of {item.stamp.get('finished', '?')})"
  if s == "unselected":
    return "not selected (--only)"
  if s == "skip":
    return f"skipped: {item.reason}"
  if s == "run":
    return f"runs: {item.reason}" if item.reason else "runs"
  if s == "failed":
    return f"FAILED: {item.reason}; log {item.step.log}"
  return f"{s}: {item.reason}" if item.reason else s


_COUNTED = {"ran": "ran", "failed": "failed", "not run": "not run", "run": "to run",
            "done": "up to date", "skip": "skipped", "unselected": "not selected"}


def summary(items: list[Item]) -> str:
  """``N entries: 3 to run, 1 up to date, 2 skipped`` (what a plan or a run came to)."""
  counts = {k: sum(i.status == k for i in items) for k in _COUNTED}
  shown = [f"{n} {_COUNTED[k]}" for k, n in counts.items()
           if n or k in ("run", "done", "skip") and not counts["ran"] + counts["failed"]]
  return f"{len(items)} entries: " + ", ".join(shown)


def plan_text(items: list[Item], profile: str, source: str) -> str:
  """The plan, one line per entry (``--list``)."""
  width = max((len(i.name) for i in items), default=0)
  lines = [f"metatune reproduce --profile {profile} ({source}): {summary(items)}"]
  for k, item in enumerate(items, 1):
    lines.append(f"{k:3d}. {item.name:<{width}}  {item.step.entry.kind:<8}  {_state(item)}"
                 f"{_needs_text(item)}")
    if item.step.entry.note:
      lines.append(f"     {'':<{width}}  {'':<8}  note: {item.step.entry.note}")
  return "\n".join(lines)


def commands_text(items: list[Item], profile: str, data_dir: str | None) -> str:
  """The commands a run would start, in order, as a shell script (``--dry-run``)."""
  lines = [f"# metatune reproduce --profile {profile}: {summary(items)}",
           "# from the repository root" + (f", with METATUNE_DATA_DIR={os.path.abspath(data_dir)}"
                                           if data_dir else ""),
           "# (each with the root first on PYTHONPATH and, unless set, "
           f"JAX_COMPILATION_CACHE_DIR={PROFILES[profile]['cache']}/jax_cache)"]
  for k, item in enumerate(items, 1):
    if item.status == "run":
      lines += [f"# {k}. {item.name} (log {item.step.log}){_needs_text(item)}", item.step.command]
    else:
      lines += [f"# {k}. {item.name}: {_state(item)}", f"#   {item.step.command}"]
  return "\n".join(lines)


def _machine_text(m: dict | None) -> str:
  if not m:
    return "-"
  cpu = f"{m['cpu']}, " if m.get("cpu") else ""
  return (f"{m.get('platform')}, {cpu}{m.get('cpus')} CPUs, jax {m.get('jax')}, load "
          f"{m.get('load_average')}")


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def report(items: list[Item], profile: str, data_dir: str | None, gpu: bool | None,
           wall: tuple[float, int] | None = None) -> str:
  """REPRODUCE.md: every entry, its command, status, seconds, when and where it ran.

  ``wall`` is this run's whole wall time in seconds and its ``--jobs``, said in the header (the
  entries' seconds are each their own and overlap when more than one ran at once).
  """
  now = machine()
  wall_text = ""
  if wall is not None:
    ran = sum(i.status in ("ran", "failed") for i in items)
    wall_text = (f" This run: {ran} {'entry' if ran == 1 else 'entries'} in {wall[0]:.0f} s of "
                 f"wall time ({wall[0] / 60:.1f} min) with --jobs {wall[1]}, from its start to "
                 "this report.")
  gpu_text = {True: "yes", False: "no", None: "not checked"}[gpu]
  paper = PROFILES[profile]["paper"]
  lines = [
      f"# Reproducing the paper: the {profile} profile", "",
      f"Written by `metatune reproduce --profile {profile}` on "
      f"{datetime.datetime.now().isoformat(timespec='seconds')} ({now['platform']}, "
      f"CPU: {now['cpu']}, {now['cpus']} CPU cores, jax {now['jax']}, 1-minute load average "
      f"{now['load_average']} "
      f"when written); data folder: {'given' if data_dir else 'none'}; GPU: {gpu_text}. "
      f"{summary(items)}.{wall_text}", "",
      f"Each entry's output is in `{paper}/logs/NAME.log`. An entry is up to date when its stamp "
      f"(`{paper}/logs/NAME.stamp.json`) matches its command, its input files and the entries it "
      "needs; seconds, time and machine of such an entry are those of the run that stamped it. "
      + ("Quick outputs are written below `paper/quick/` and `.cache_data/quick/`, never over "
         "the full-scale results." if profile == "quick" else ""), "",
      "| # | entry | command | status | seconds | finished | machine |",
      "|---:|---|---|---|---:|---|---|"]
  for k, item in enumerate(items, 1):
    stamp = item.stamp if item.status in ("ran", "done", "unselected") else None
    seconds = item.seconds if item.seconds is not None else (stamp or {}).get("seconds")
    mach = (stamp or {}).get("machine") or (now if item.status == "failed" else None)
    lines.append(f"| {k} | {item.name} | `{_cell(item.step.command)}` | {_cell(_state(item))} | "
                 f"{'-' if seconds is None else f'{seconds:.0f}'} | "
                 f"{(stamp or {}).get('finished', '-')} | {_cell(_machine_text(mach))} |")
  return "\n".join(lines) + "\n"


def write_report(items: list[Item], profile: str, root: str | os.PathLike,
                 data_dir: str | None = None, gpu: bool | None = None,
                 wall: tuple[float, int] | None = None) -> pathlib.Path:
  """Writes ``{paper}/REPRODUCE.md`` (`report`, with ``wall``); returns its path."""
  path = pathlib.Path(root) / PROFILES[profile]["paper"] / "REPRODUCE.md"
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(report(items, profile, data_dir, gpu, wall), encoding="utf-8")
  os.replace(tmp, path)
  return path
