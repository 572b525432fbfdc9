"""The registry of the paper's experiments (``configs/reproduce.yaml``), read strictly.

A registry::

  entries:
    - name: prior-synthetic            # letters, digits, - _ . (it names a log and a stamp)
      kind: command                    # evaluate | script | command | argv
      args: [meta-train, configs/families/synthetic.yaml, --out, "{cache}/priors/synthetic"]
      needs: [dataset-synthetic]       # entries that must have run first
      data: false                      # needs the data folder (skipped without one)
      gpu: false                       # needs a GPU (skipped on a CPU)
      outputs: ["{cache}/priors/synthetic/card.json"]
      note: a line for the plan and the report
      quick: {args: [--updates, 20]}   # appended to args in that profile
    - name: synthetic
      kind: evaluate
      config: configs/experiments/synthetic.yaml
      quick: {set: {seeds: 2, max_tasks: 4}}   # `metatune evaluate --set KEY=VALUE`
    - name: space_sampling
      kind: script
      script: experiments/bench_space_sampling.py
      full: {skip: why the entry does not run in this profile}
      compare: {none: timings}         # exact (evaluate's default) | ci | {none: REASON}

``command`` runs ``metatune ARGS``; ``script`` runs ``python SCRIPT ARGS``; ``evaluate`` runs
``metatune evaluate CONFIG --out {paper}/evaluate/NAME`` (its table.md is an output); ``argv``
runs ``ARGV`` as written (``python`` first is this Python). Paths are relative to the
repository root. ``{paper}`` and ``{cache}`` in a string are the profile's folders
(`PROFILES`); every output of the quick profile must lie below its folders, so that a quick
run never overwrites the full-scale results.

``compare`` says how a regeneration's tables (the entry's ``*.md`` outputs below ``{paper}``)
compare with the committed ones (``metatune reproduce --compare``, metatune/reproduce/compare.py):
``exact`` (every cell equal as text, timing columns and the text around the tables aside),
``ci`` (each ``m [lo, hi]`` cell's regenerated mean inside the committed CI, labels equal) or
``{none: REASON}`` (not compared, e.g. timings). An evaluate entry is ``exact`` unless it says
otherwise; an entry that writes no table is not compared; any other entry with a table must say.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import posixpath
import re
import shlex
import sys
from typing import Any, Iterable, Sequence

from metatune.space import yamlio
from metatune.space.errors import SpaceError

KINDS = ("evaluate", "script", "command", "argv")
# The field each kind needs, and every field of what to run that it takes.
NEEDED = {"evaluate": "config", "script": "script", "command": "args", "argv": "argv"}
TAKES = {"evaluate": ("config", "args"), "script": ("script", "args"), "command": ("args",),
         "argv": ("argv",)}
ENTRY_KEYS = ("name", "kind", "config", "script", "args", "argv", "needs", "data", "gpu",
              "outputs", "note", "quick", "full", "compare")
# How a regeneration's tables compare with the committed ones (compare.py); ``none`` takes a
# reason: ``compare: {none: REASON}``.
COMPARE_MODES = ("exact", "ci", "none")
PROFILE_KEYS = ("args", "set", "skip")
PROFILES = {"quick": {"paper": "paper/quick", "cache": ".cache_data/quick"},
            "full": {"paper": "paper", "cache": ".cache_data"}}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
  # As metatune.space.model.did_you_mean, which would load numpy into `metatune --help`.
  close = difflib.get_close_matches(name, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True)
class Profile:
  """An entry's settings in one profile.

  Attributes:
    args: arguments appended to the entry's own.
    settings: ``(KEY, value)`` overrides of an evaluate entry's config (``--set KEY=VALUE``).
    skip: why the entry does not run in this profile; None when it runs.
    where: file and line of the profile's block (or of the entry when it has none).
  """
  args: tuple[str, ...] = ()
  settings: tuple[tuple[str, Any], ...] = ()
  skip: str | None = None
  where: str = ""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One experiment of the registry, as written (placeholders not filled in).

  ``compare`` is one of `COMPARE_MODES`; ``compare_why`` says why a ``none`` entry's tables are
  not compared (empty for the others).
  """
  name: str
  kind: str
  where: str
  config: str | None = None
  script: str | None = None
  args: tuple[str, ...] = ()
  argv: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()
  data: bool = False
  gpu: bool = False
  outputs: tuple[str, ...] = ()
  note: str = ""
  quick: Profile = Profile()
  full: Profile = Profile()
  compare: str = "none"
  compare_why: str = "it writes no table below {paper}"

  def profile(self, name: str) -> Profile:
    return getattr(self, name)


@dataclasses.dataclass(frozen=True)
class Registry:
  """The entries in file order, and the file."""
  entries: dict[str, Entry]
  source: str


@dataclasses.dataclass(frozen=True)
class Step:
  """An entry resolved for a profile.

  Attributes:
    entry: the entry.
    profile: ``quick`` or ``full``.
    argv: the command as run (this Python for ``python`` and ``metatune``).
    command: the command as shown (``metatune ...``, ``python experiments/...``).
    settings: for an evaluate entry, its ``KEY=VALUE`` overrides.
    outputs: files it writes.
    log: its log file.
    stamp: its stamp file (written when it succeeds).
    skip: why it does not run in this profile, or None.
  """
  entry: Entry
  profile: str
  argv: tuple[str, ...]
  command: str
  settings: tuple[str, ...]
  outputs: tuple[str, ...]
  log: str
  stamp: str
  skip: str | None


def _string(node, what: str) -> str:
  v = node.scalar()
  if isinstance(v, bool) or not isinstance(v, (str, int, float)):
    raise node.error(f"{what} must be a string, got {v!r}")
  return str(v)


def _strings(node, what: str) -> tuple[str, ...]:
  if node.kind != "list":
    raise node.error(f"{what} must be a list, e.g. [--out, \"{{paper}}/tables/x.md\"]")
  return tuple(_string(child, f"an item of {what}") for child in node.list())


def _bool(node, what: str) -> bool:
  v = node.scalar()
  if not isinstance(v, bool):
    raise node.error(f"{what} must be true or false, got {v!r}")
  return v


def fill(text: str, profile: str) -> str:
  """``text`` with ``{paper}`` and ``{cache}`` replaced by the profile's folders.

  Example:
    >>> fill("{paper}/tables/x.md", "quick")
    'paper/quick/tables/x.md'
  """
  folders = PROFILES[profile]
  return _PLACEHOLDER.sub(lambda m: folders[m.group(1)], text)


def _check_placeholders(node, text: str, what: str) -> None:
  for m in _PLACEHOLDER.finditer(text):
    if m.group(1) not in PROFILES["full"]:
      raise node.error(f"{what}: unknown placeholder {m.group(0)}"
                       f"{did_you_mean(m.group(1), PROFILES['full'])}; known: "
                       + ", ".join(f"{{{k}}}" for k in PROFILES["full"]))


def _fill_value(value: Any, profile: str) -> Any:
  if isinstance(value, str):
    return fill(value, profile)
  if isinstance(value, list):
    return [_fill_value(v, profile) for v in value]
  if isinstance(value, dict):
    return {k: _fill_value(v, profile) for k, v in value.items()}
  return value


def _strings_in(value: Any) -> Iterable[str]:
  if isinstance(value, str):
    yield value
  elif isinstance(value, list):
    for v in value:
      yield from _strings_in(v)
  elif isinstance(value, dict):
    for v in value.values():
      yield from _strings_in(v)


def setting_text(key: str, value: Any) -> str:
  """``KEY=VALUE`` for ``metatune evaluate --set``, the value written so that YAML reads it back.

  Example:
    >>> setting_text("seeds", 2), setting_text("tasks", [1, "a"]), setting_text("name", "true")
    ('seeds=2', 'tasks=[1, "a"]', 'name="true"')
  """
  if isinstance(value, str):
    try:
      same = yamlio.load(value, "value").plain() == value
    except SpaceError:
      same = False
    if same:
      return f"{key}={value}"
  return f"{key}={json.dumps(value)}"


def _relative_path(node, text: str, what: str) -> str:
  """A path below the repository root, in posix form (``..`` and absolute paths refused)."""
  norm = posixpath.normpath(text)
  if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
    raise node.error(f"{what} {text!r} must be a path inside the repository, relative to its root")
  return norm


def _profile(node, name: str, kind: str, pname: str) -> Profile:
  if node.kind == "scalar" and node.scalar() == "skip":
    raise node.error(f"entry {name!r}: write {pname}: {{skip: REASON}}, saying why it does not "
                     f"run in the {pname} profile")
  if node.kind != "mapping":
    raise node.error(f"entry {name!r}: {pname} must be a mapping ({', '.join(PROFILE_KEYS)})")
  f = dict(node.items())
  for k, v in f.items():
    if k not in PROFILE_KEYS:
      raise v.error(f"entry {name!r}: unknown key {k!r} in {pname}{did_you_mean(k, PROFILE_KEYS)}"
                    f"; allowed: {', '.join(PROFILE_KEYS)}")
  skip = None
  if "skip" in f:
    skip = _string(f["skip"], f"entry {name!r}: {pname}.skip").strip()
    if not skip:
      raise f["skip"].error(f"entry {name!r}: {pname}.skip must say why it is skipped")
    if len(f) > 1:
      raise node.error(f"entry {name!r}: a skipped {pname} profile takes no args or set")
  args = _strings(f["args"], f"entry {name!r}: {pname}.args") if "args" in f else ()
  for child, a in zip(f["args"].list() if "args" in f else (), args):
    _check_placeholders(child, a, f"entry {name!r}: {pname}.args")
  settings: list[tuple[str, Any]] = []
  if "set" in f:
    snode = f["set"]
    if kind != "evaluate":
      raise snode.error(f"entry {name!r}: only an evaluate entry takes {pname}.set (overrides "
                        f"of its config); pass a {kind} entry's options in args")
    if snode.kind != "mapping":
      raise snode.error(f"entry {name!r}: {pname}.set must be a mapping of config fields to "
                        "values, e.g. {seeds: 2, max_tasks: 4}")
    for key, child in snode.items():
      value = child.plain()
      for s in _strings_in(value):
        _check_placeholders(child, s, f"entry {name!r}: {pname}.set.{key}")
      settings.append((key, value))
  return Profile(args, tuple(settings), skip, node.where)


def is_table(output: str) -> bool:
  """Whether an output (as written, with placeholders) is a table: a ``.md`` file below {paper}.

  Example:
    >>> is_table("{paper}/tables/x.md"), is_table("{paper}/figures/x.png")
    (True, False)
  """
  quick = posixpath.normpath(fill(output, "quick"))
  return quick.startswith(PROFILES["quick"]["paper"] + "/") and quick.endswith(".md")


def _compare(node, name: str, kind: str, tables: Sequence[str],
             where: str) -> tuple[str, str]:
  """The entry's compare mode and, for ``none``, why (``node`` None: the field is absent)."""
  usage = "compare: exact, compare: ci or compare: {none: REASON}"
  if node is None:
    if not tables:
      return "none", "it writes no table below {paper}"
    if kind == "evaluate":
      return "exact", ""
    raise SpaceError(f"entry {name!r} writes the table {tables[0]}: say how a regeneration's "
                     f"tables compare with the committed ones ({usage})", where)
  if node.kind == "mapping":
    f = dict(node.items())
    if list(f) != ["none"]:
      k = next((k for k in f if k != "none"), "none")
      if "none" in f:  # {none: a, b} is two keys in YAML
        raise node.error(f"entry {name!r}: compare.none's reason has a comma: quote it, "
                         "{none: \"REASON\"}")
      raise node.error(f"entry {name!r}: compare takes a mode or {{none: REASON}}, not {k!r}"
                       f"{did_you_mean(k, ['none'])}; write {usage}")
    why = " ".join(_string(f["none"], f"entry {name!r}: compare.none").split())
    if not why:
      raise f["none"].error(f"entry {name!r}: compare.none must say why its tables are not "
                            "compared")
    return "none", why
  if node.kind != "scalar":
    raise node.error(f"entry {name!r}: compare must be a mode or a mapping; write {usage}")
  mode = _string(node, f"entry {name!r}: compare")
  if mode == "none":
    raise node.error(f"entry {name!r}: write compare: {{none: REASON}}, saying why its tables "
                     "are not compared")
  if mode not in COMPARE_MODES:
    raise node.error(f"entry {name!r}: unknown compare mode {mode!r}"
                     f"{did_you_mean(mode, COMPARE_MODES)}; write {usage}")
  if not tables:
    raise node.error(f"entry {name!r}: compare: {mode}, but it writes no table (a .md output "
                     "below {paper}); leave compare out")
  return mode, ""


def _entry(node) -> tuple[Entry, list[tuple[str, str]]]:
  """An entry and, for each name it needs, where that name is written."""
  if node.kind != "mapping":
    raise node.error("an entry must be a mapping (name, kind, ...)")
  f = dict(node.items())
  for k, v in f.items():
    if k not in ENTRY_KEYS:
      raise v.error(f"unknown key {k!r} in an entry{did_you_mean(k, ENTRY_KEYS)}; allowed: "
                    f"{', '.join(ENTRY_KEYS)}")
  for k in ("name", "kind"):
    if k not in f:
      raise node.error(f"an entry needs {k!r}")
  name = _string(f["name"], "name")
  if not _NAME.fullmatch(name):
    raise f["name"].error(f"entry name {name!r}: use letters, digits, '-', '_' and '.' (it "
                          "names a log file and an output folder)")
  kind = _string(f["kind"], f"entry {name!r}: kind")
  if kind not in KINDS:
    raise f["kind"].error(f"entry {name!r}: unknown kind {kind!r}{did_you_mean(kind, KINDS)}; "
                          f"known: {', '.join(KINDS)}")
  if NEEDED[kind] not in f:
    raise node.error(f"entry {name!r}: a {kind} entry needs {NEEDED[kind]!r}")
  for k in ("config", "script", "args", "argv"):
    if k in f and k not in TAKES[kind]:
      raise f[k].error(f"entry {name!r}: a {kind} entry takes no {k!r} (it takes "
                       f"{', '.join(TAKES[kind])})")
  fields: dict[str, Any] = {}
  for k in ("config", "script"):
    if k in f:
      fields[k] = _relative_path(f[k], _string(f[k], f"entry {name!r}: {k}"),
                                 f"entry {name!r}: {k}")
  for k in ("args", "argv"):
    if k in f:
      fields[k] = _strings(f[k], f"entry {name!r}: {k}")
      for child, a in zip(f[k].list(), fields[k]):
        _check_placeholders(child, a, f"entry {name!r}: {k}")
  if kind == "argv" and not fields["argv"]:
    raise f["argv"].error(f"entry {name!r}: argv is empty")
  needs: list[tuple[str, str]] = []
  if "needs" in f:
    if f["needs"].kind != "list":
      raise f["needs"].error(f"entry {name!r}: needs must be a list of entry names")
    for child in f["needs"].list():
      needs.append((_string(child, f"entry {name!r}: an item of needs"), child.where))
  flags = {k: _bool(f[k], f"entry {name!r}: {k}") for k in ("data", "gpu") if k in f}
  outputs: list[str] = []
  if "outputs" in f:
    for child, out in zip(f["outputs"].list() if f["outputs"].kind == "list" else (),
                          _strings(f["outputs"], f"entry {name!r}: outputs")):
      _check_placeholders(child, out, f"entry {name!r}: outputs")
      _relative_path(child, fill(out, "full"), f"entry {name!r}: output")
      quick = posixpath.normpath(fill(out, "quick"))
      if not any(quick.startswith(folder + "/") for folder in PROFILES["quick"].values()):
        raise child.error(f"entry {name!r}: output {out!r} is {quick} in the quick profile, "
                          f"outside {' and '.join(PROFILES['quick'].values())}; write it with "
                          "{paper} or {cache} so that a quick run leaves the full results alone")
      outputs.append(out)
  if kind == "evaluate":
    outputs.append(f"{{paper}}/evaluate/{name}/table.md")
  profiles = {p: _profile(f[p], name, kind, p) if p in f else Profile(where=node.where)
              for p in PROFILES}
  note = " ".join(_string(f["note"], f"entry {name!r}: note").split()) if "note" in f else ""
  compare, why = _compare(f.get("compare"), name, kind, [o for o in outputs if is_table(o)],
                          node.where)
  entry = Entry(name, kind, node.where, needs=tuple(n for n, _ in needs), outputs=tuple(outputs),
                note=note, compare=compare, compare_why=why, **fields, **flags, **profiles)
  return entry, needs


def load_registry(path: str | os.PathLike) -> Registry:
  """Reads a registry and checks its graph.

  Raises:
    SpaceError: an unknown key or kind, a bad value, a duplicate name, a need that is no
      entry, a cycle, a quick output outside the quick folders, an entry with a table but no
      compare mode; naming the file and line.
  """
  path = os.fspath(path)
  root = yamlio.load(yamlio.read_text(path, "reproduce registry"), path)
  if root.kind != "mapping":
    raise root.error("a reproduce registry is a mapping with 'entries:', a list of entries")
  fields = dict(root.items())
  for k, v in fields.items():
    if k != "entries":
      raise v.error(f"unknown key {k!r}{did_you_mean(k, ['entries'])}; allowed: entries")
  if "entries" not in fields or fields["entries"].kind != "list":
    raise (fields.get("entries") or root).error("'entries' must be a list of entries")
  entries: dict[str, Entry] = {}
  wheres: dict[str, list[tuple[str, str]]] = {}
  for node in fields["entries"].list():
    entry, needs = _entry(node)
    if entry.name in entries:
      raise node.error(f"duplicate entry name {entry.name!r} (first at "
                       f"{entries[entry.name].where})")
    entries[entry.name] = entry
    wheres[entry.name] = needs
  for name, needs in wheres.items():
    for need, where in needs:
      if need not in entries:
        raise SpaceError(f"entry {name!r} needs {need!r}, which is not an entry"
                         f"{did_you_mean(need, entries)}", where)
      if need == name:
        raise SpaceError(f"entry {name!r} needs itself", where)
  _check_cycles(entries)
  return Registry(entries, path)


def _check_cycles(entries: dict[str, Entry]) -> None:
  state: dict[str, int] = {}  # 1: on the current path, 2: done

  def visit(name: str, path: list[str]) -> None:
    state[name] = 1
    for need in entries[name].needs:
      if state.get(need) == 1:
        cycle = path[path.index(need):] + [need]
        first = entries[need]
        raise SpaceError(f"entries need each other in a cycle: {' -> '.join(cycle)} (an arrow "
                         "reads 'needs')", first.where)
      if need not in state:
        visit(need, path + [need])
    state[name] = 2

  for name in entries:
    if name not in state:
      visit(name, [name])


def order(registry: Registry, only: Sequence[str] = ()) -> list[Entry]:
  """The entries in dependency order; with ``only``, those and what they need.

  Among entries whose needs are met, the one written first comes first.

  Raises:
    SpaceError: a name of ``only`` is not an entry (at ``--only NAME``).
  """
  entries = registry.entries
  for name in only:
    if name not in entries:
      raise SpaceError(f"no entry {name!r} in {registry.source}{did_you_mean(name, entries)}",
                       f"--only {name}")
  selected = set(entries) if not only else set()
  todo = list(only)
  while todo:
    name = todo.pop()
    if name not in selected:
      selected.add(name)
      todo.extend(entries[name].needs)
  out: list[Entry] = []
  done: set[str] = set()
  remaining = [n for n in entries if n in selected]
  while remaining:
    # The graph has no cycle (load_registry), so some remaining entry is always ready.
    name = next(n for n in remaining if all(d in done for d in entries[n].needs))
    remaining.remove(name)
    done.add(name)
    out.append(entries[name])
  return out


def resolve(entry: Entry, profile: str) -> Step:
  """The entry's command, outputs, log and stamp in a profile (``quick`` or ``full``).

  Example:
    >>> e = Entry("t", "command", "r.yaml:2", args=("demo",), quick=Profile(args=("--trials",
    ...           "5")))
    >>> resolve(e, "quick").command
    'metatune demo --trials 5'
  """
  if profile not in PROFILES:
    raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
  prof = entry.profile(profile)
  paper = PROFILES[profile]["paper"]
  args = tuple(fill(a, profile) for a in entry.args + prof.args)
  settings = tuple(setting_text(k, _fill_value(v, profile)) for k, v in prof.settings)
  if entry.kind == "evaluate":
    words = ("evaluate", entry.config, "--out", f"{paper}/evaluate/{entry.name}")
    words += tuple(w for s in settings for w in ("--set", s)) + args
    argv, command = (sys.executable, "-m", "metatune") + words, "metatune " + shlex.join(words)
  elif entry.kind == "command":
    argv, command = (sys.executable, "-m", "metatune") + args, "metatune " + shlex.join(args)
  elif entry.kind == "script":
    words = (entry.script,) + args
    argv, command = (sys.executable,) + words, "python " + shlex.join(words)
  else:
    words = tuple(fill(a, profile) for a in entry.argv) + args
    argv = ((sys.executable,) if words[0] == "python" else (words[0],)) + words[1:]
    command = shlex.join(words)
  return Step(entry, profile, argv, command, settings,
              tuple(posixpath.normpath(fill(o, profile)) for o in entry.outputs),
              f"{paper}/logs/{entry.name}.log", f"{paper}/logs/{entry.name}.stamp.json",
              prof.skip)
