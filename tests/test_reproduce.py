"""`metatune reproduce`: dependency order, strict registry, resume by stamps, stops, skips."""

import io
import itertools
import json
import pathlib
import re
import textwrap

import pytest

from metatune import cli
from metatune.evaluation.experiment import load_experiment
from metatune.reproduce import registry as reg
from metatune.reproduce import runner, text
from metatune.space import SpaceError

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A tiny entry: writes its first argument (a file) with the rest as text, and appends its name
# to runs.txt, so that a test can count how often it ran. No jax, no metatune import.
WRITE = ("import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:])); "
         "open('runs.txt', 'a').write(sys.argv[2] + chr(10))")


def entry(name, needs=(), extra="", text=None):
  """A registry entry (YAML) that writes {paper}/NAME.txt."""
  lines = [f"  - name: {name}", "    kind: argv",
           f"    argv: [python, -c, {json.dumps(WRITE)}, \"{{paper}}/{name}.txt\", {name}"
           + (f", {json.dumps(text)}" if text else "") + "]",
           f"    outputs: [\"{{paper}}/{name}.txt\"]"]
  if needs:
    lines.append(f"    needs: [{', '.join(needs)}]")
  return "\n".join(lines) + "\n" + textwrap.indent(textwrap.dedent(extra), "    ")


def write_registry(root: pathlib.Path, *entries: str) -> pathlib.Path:
  path = root / "configs" / "reproduce.yaml"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("entries:\n" + "".join(entries))
  return path


def runs(root: pathlib.Path) -> list[str]:
  path = root / "runs.txt"
  return path.read_text().split() if path.exists() else []


def plan(root, profile="quick", **kw):
  kw.setdefault("gpu", False)
  return runner.plan(reg.load_registry(root / "configs" / "reproduce.yaml"), profile, root, **kw)


def status(items) -> dict:
  return {i.name: i.status for i in items}


def test_order_follows_needs_and_only_takes_what_an_entry_needs(tmp_path):
  path = write_registry(tmp_path, entry("c", needs=("a", "b")), entry("a"),
                        entry("b", needs=("a",)), entry("d"))
  r = reg.load_registry(path)
  assert [e.name for e in reg.order(r)] == ["a", "b", "c", "d"]
  assert [e.name for e in reg.order(r, ["b"])] == ["a", "b"]
  assert [e.name for e in reg.order(r, ["c"])] == ["a", "b", "c"]
  assert [e.name for e in reg.order(r, ["d", "a"])] == ["a", "d"]
  with pytest.raises(SpaceError, match=r"no entry 'bb'.*did you mean 'b'") as info:
    reg.order(r, ["bb"])
  assert info.value.where == "--only bb"


BAD = [
    # (entries, expected line of the error, words of the message)
    (entry("a", needs=("b",)) + entry("b", needs=("c",)) + entry("c", needs=("a",)), 2,
     "cycle: a -> b -> c -> a"),
    (entry("a") + entry("b", needs=("a", "nope")), 10, "needs 'nope', which is not an entry"),
    (entry("a") + "    neds: [a]\n", 6, "unknown key 'neds'.*did you mean 'needs'"),
    (entry("a") + "    data: yes\n", 6, "data must be true or false"),
    (entry("a") + entry("a"), 6, "duplicate entry name 'a' \\(first at .*:2\\)"),
    ("  - name: a\n    kind: scrip\n    script: x.py\n", 3, "unknown kind 'scrip'.*'script'"),
    ("  - name: a\n    kind: script\n", 2, "a script entry needs 'script'"),
    ("  - name: a\n    kind: command\n    args: [demo]\n    quick: {set: {seeds: 2}}\n", 5,
     "only an evaluate entry takes quick.set"),
    ("  - name: a\n    kind: command\n    args: [demo]\n    quick: skip\n", 5,
     "write quick: \\{skip: REASON\\}"),
    ("  - name: a\n    kind: command\n    args: [demo]\n    outputs: [paper/tables/t.md]\n", 5,
     "paper/tables/t.md in the quick profile, outside paper/quick"),
    ("  - name: a\n    kind: command\n    args: [demo, --out, \"{papr}/x\"]\n", 4,
     "unknown placeholder \\{papr\\}.*'paper'"),
    ("  - name: a b\n    kind: command\n    args: [demo]\n", 2, "entry name 'a b'"),
]


@pytest.mark.parametrize("text,line,words", BAD)
def test_registry_errors_name_the_file_and_line(tmp_path, text, line, words):
  path = write_registry(tmp_path, text)
  with pytest.raises(SpaceError) as info:
    reg.load_registry(path)
  assert info.value.where == f"{path}:{line}", str(info.value)
  assert re.search(words, info.value.problem), info.value.problem


def test_an_evaluate_entry_passes_its_settings_and_they_are_checked_first(tmp_path):
  (tmp_path / "configs" / "experiments").mkdir(parents=True)
  (tmp_path / "configs" / "family.yaml").write_text("name: f\n")
  (tmp_path / "configs" / "experiments" / "e.yaml").write_text(
      "family: ../family.yaml\nseeds: 10\ntuners:\n  random: {}\n  prior: {options: {path: p}}\n")
  text = ("  - name: e\n    kind: evaluate\n    config: configs/experiments/e.yaml\n"
          "    quick:\n      set: {seeds: 2, tuners.prior.options.path: \"{cache}/p\"}\n")
  write_registry(tmp_path, text)
  step = plan(tmp_path)[0].step
  assert step.command == ("metatune evaluate configs/experiments/e.yaml --out "
                          "paper/quick/evaluate/e --set seeds=2 --set "
                          "tuners.prior.options.path=.cache_data/quick/p")
  assert step.outputs == ("paper/quick/evaluate/e/table.md",)
  assert plan(tmp_path, "full")[0].step.command == (
      "metatune evaluate configs/experiments/e.yaml --out paper/evaluate/e")
  path = write_registry(tmp_path, text.replace("seeds: 2", "seedz: 2"))
  with pytest.raises(SpaceError) as info:
    plan(tmp_path)
  assert info.value.where == f"{path}:6"  # the line of quick's settings
  assert "entry 'e' (quick profile): --set seedz=2: unknown field 'seedz'" in info.value.problem


def test_a_stamped_entry_is_skipped_and_reruns_when_its_definition_changes(tmp_path):
  write_registry(tmp_path, entry("a"), entry("b", needs=("a",)), entry("c"))
  items = plan(tmp_path)
  assert [i.status for i in items] == ["run"] * 3
  assert runner.run(items, tmp_path)
  assert runs(tmp_path) == ["a", "b", "c"]
  stamp = json.loads((tmp_path / "paper/quick/logs/a.stamp.json").read_text())
  assert stamp["profile"] == "quick" and stamp["exit_code"] == 0
  assert stamp["command"].startswith("python -c ") and stamp["hash"] == items[0].hash
  assert {"platform", "cpus", "jax", "load_average"} <= set(stamp["machine"])
  assert (tmp_path / "paper/quick/a.txt").read_text() == "a"

  again = plan(tmp_path)
  assert status(again) == {"a": "done", "b": "done", "c": "done"}
  assert runner.run(again, tmp_path) and runs(tmp_path) == ["a", "b", "c"]

  # A changed definition of a reruns it and b, which needs it; c stays done.
  write_registry(tmp_path, entry("a", text="v2"), entry("b", needs=("a",)), entry("c"))
  changed = plan(tmp_path)
  assert status(changed) == {"a": "run", "b": "run", "c": "done"}
  assert "changed" in changed[0].reason and changed[1].reason == "needs 'a', which runs"
  assert runner.run(changed, tmp_path)
  assert runs(tmp_path) == ["a", "b", "c", "a", "b"]
  assert (tmp_path / "paper/quick/a.txt").read_text() == "a v2"

  # A deleted output reruns its entry too; another profile has its own stamps.
  (tmp_path / "paper/quick/c.txt").unlink()
  assert status(plan(tmp_path))["c"] == "run"
  assert set(status(plan(tmp_path, "full")).values()) == {"run"}


def test_an_input_file_is_part_of_the_stamp(tmp_path):
  (tmp_path / "configs" / "families").mkdir(parents=True)
  family = tmp_path / "configs" / "families" / "f.yaml"
  family.write_text("name: one\n")
  write_registry(tmp_path, entry("a", extra="quick: {args: [configs/families/f.yaml]}\n"))
  items = plan(tmp_path)
  assert list(items[0].inputs) == ["configs/families/f.yaml"]
  assert runner.run(items, tmp_path)
  assert status(plan(tmp_path)) == {"a": "done"}
  family.write_text("name: two\n")
  assert status(plan(tmp_path)) == {"a": "run"}


def test_an_experiments_family_and_beliefs_files_are_its_inputs(tmp_path):
  exp = tmp_path / "configs" / "experiments" / "e.yaml"
  exp.parent.mkdir(parents=True)
  exp.write_text("family: ../f.yaml\ntuners:\n  gp_bo: {}\n"
                 "  prior: {options: {path: p, beliefs: ../b.yaml}}\n")
  assert runner._files_of(exp) == [(tmp_path / "configs" / "f.yaml").resolve(),
                                   (tmp_path / "configs" / "b.yaml").resolve()]
  exp.write_text("family: [unclosed\n")
  assert runner._files_of(exp) == []


def test_a_failing_entry_stops_the_run_and_names_its_log(tmp_path, monkeypatch, capsys):
  fail = ("  - name: bad\n    kind: argv\n"
          "    argv: [python, -c, \"import sys; print('boom'); sys.exit(3)\"]\n")
  write_registry(tmp_path, entry("a"), fail, entry("b", needs=("bad",)), entry("c"),
                 entry("d", needs=("b",)))
  items = plan(tmp_path)
  assert not runner.run(items, tmp_path)
  by = {i.name: i for i in items}
  assert by["a"].status == "ran" and by["bad"].status == "failed"
  assert by["bad"].reason == "exit code 3"
  assert by["b"].status == "not run" and by["b"].reason == "needs 'bad', which failed"
  assert by["d"].reason == "needs 'b', which did not run"
  assert by["c"].status == "not run" and "stopped when 'bad' failed" in by["c"].reason
  assert runs(tmp_path) == ["a"]
  assert "boom" in (tmp_path / "paper/quick/logs/bad.log").read_text()
  assert not (tmp_path / "paper/quick/logs/bad.stamp.json").exists()

  # The command line: exit code 1, the entry and its log named, the report written.
  monkeypatch.chdir(tmp_path)
  assert cli.main(["reproduce", "--profile", "quick"]) == 1
  err = capsys.readouterr().err
  assert "error: entry 'bad' failed (exit code 3); its log: paper/quick/logs/bad.log" in err
  assert "boom" in err
  report = (tmp_path / "paper/quick/REPRODUCE.md").read_text()
  assert "| bad | `python -c" in report and "FAILED: exit code 3" in report
  assert re.search(r"This run: 1 entry in \d+ s of wall time .* with --jobs 1", report)
  assert re.search(r"\| a \| .* \| up to date \(stamp of .*\) \| \d+ \|", report)


def test_an_entry_that_does_not_write_its_outputs_fails(tmp_path):
  write_registry(tmp_path, "  - name: lazy\n    kind: argv\n    argv: [python, -c, pass]\n"
                 "    outputs: [\"{paper}/never.md\"]\n    compare: exact\n")
  items = plan(tmp_path)
  assert not runner.run(items, tmp_path)
  assert items[0].reason == "exit code 0 but its output paper/quick/never.md was not written"


def test_data_gpu_and_profile_skips_say_why(tmp_path):
  write_registry(tmp_path, entry("d", extra="data: true\n"), entry("g", extra="gpu: true\n"),
                 entry("after_d", needs=("d",)),
                 entry("q", extra="quick: {skip: too slow for a laptop}\n"), entry("plain"))
  items = {i.name: i for i in plan(tmp_path, data_dir=None, gpu=False)}
  assert items["d"].reason == runner.NO_DATA and "METATUNE_DATA_DIR" in items["d"].reason
  assert items["g"].status == "skip" and "needs a GPU" in items["g"].reason
  assert items["after_d"].reason == "needs 'd', which is skipped"
  assert items["q"].reason == "too slow for a laptop"
  assert items["plain"].status == "run"
  with_all = plan(tmp_path, data_dir=str(tmp_path), gpu=True)
  assert status(with_all) == {"d": "run", "g": "run", "after_d": "run", "q": "skip",
                              "plain": "run"}
  assert set(status(plan(tmp_path, "full", data_dir=str(tmp_path), gpu=True)).values()) == {"run"}
  assert runner.run(plan(tmp_path, gpu=False), tmp_path)
  assert runs(tmp_path) == ["plain"]


def test_list_and_dry_run_print_the_plan_and_run_nothing(tmp_path, monkeypatch, capsys):
  write_registry(tmp_path, entry("b", needs=("a",)), entry("a"),
                 entry("d", extra="data: true\n"))
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("METATUNE_DATA_DIR", raising=False)
  assert cli.main(["reproduce", "--list"]) == 0
  out = capsys.readouterr().out
  assert "3 entries: 2 to run, 0 up to date, 1 skipped" in out
  assert re.search(r"1\. a .*runs: no stamp yet\n\s+2\. b .*\[needs a\]\n\s+3\. d .*skipped: "
                   r"needs the data folder", out)
  assert cli.main(["reproduce", "--dry-run", "--only", "b"]) == 0
  out = capsys.readouterr().out
  assert "# 1. a (log paper/quick/logs/a.log)\npython -c " in out
  assert "# 3. d: not selected (--only)" in out
  assert not (tmp_path / "paper").exists() and runs(tmp_path) == []
  assert cli.main(["reproduce", "--only", "x"]) == 2
  assert "error: --only x: no entry 'x'" in capsys.readouterr().err
  assert cli.main(["reproduce", "--data-dir", str(tmp_path / "none"), "--list"]) == 2


def test_only_runs_an_entry_and_what_it_needs(tmp_path):
  write_registry(tmp_path, entry("a"), entry("b", needs=("a",)), entry("c"))
  items = plan(tmp_path, only=["b"])
  assert status(items) == {"a": "run", "b": "run", "c": "unselected"}
  assert runner.run(items, tmp_path) and runs(tmp_path) == ["a", "b"]
  md = text.report(items, "quick", None, False)
  assert "| 3 | c | " in md and "not selected (--only)" in md
  assert "wall time" not in md
  md = text.report(items, "quick", None, False, wall=(125.0, 2))
  assert "This run: 2 entries in 125 s of wall time (2.1 min) with --jobs 2" in md


# ------------------------------------------------------------------ the real registry
def _outputs_of_needs(r, name, profile) -> list[str]:
  seen, todo, out = set(), list(r.entries[name].needs), []
  while todo:
    n = todo.pop()
    if n not in seen:
      seen.add(n)
      todo += r.entries[n].needs
      out += reg.resolve(r.entries[n], profile).outputs
  return out


def test_the_real_registry_loads_and_covers_the_paper():
  r = reg.load_registry(ROOT / "configs" / "reproduce.yaml")
  entries = r.entries.values()
  for profile in reg.PROFILES:
    # Every config and script exists, and the evaluate settings load (plan checks both).
    items = runner.plan(r, profile, ROOT, data_dir="data", gpu=True)
    assert all(i.status in ("run", "done", "skip") for i in items)
  for e in entries:
    for path in (e.config, e.script):
      assert path is None or (ROOT / path).is_file(), (e.name, path)
  configs = {e.config for e in entries if e.kind == "evaluate"}
  uncovered = {f"configs/experiments/{p.name}"
               for p in (ROOT / "configs/experiments").glob("*.yaml")} - configs
  assert not uncovered, f"experiment configs with no evaluate entry in the registry: {uncovered}"
  for e in entries:
    if e.kind == "evaluate":
      assert e.name == pathlib.Path(e.config).stem  # paper/evaluate/NAME: the existing folders
  scripts = {e.script for e in entries if e.kind == "script"}
  listed = set(re.findall(r"python (experiments/\w+\.py)", (ROOT / "paper/README.md").read_text()))
  assert listed and listed <= scripts
  full_outputs = {o for e in entries for o in reg.resolve(e, "full").outputs}
  tables = {f"paper/tables/{p.name}" for p in (ROOT / "paper/tables").glob("*.md")}
  assert tables - full_outputs == {"paper/tables/demo_gpu.md"}  # quoted output, see its note
  assert {f"paper/figures/{p.name}" for p in (ROOT / "paper/figures").glob("*.png")} <= full_outputs
  for e in entries:
    quick = reg.resolve(e, "quick")
    for out in quick.outputs:
      assert out.startswith(("paper/quick/", ".cache_data/quick/")), (e.name, out)
      if e.kind != "evaluate" and not quick.skip:
        # The command is told where to write: an argument is the output or a folder above it.
        assert any(out == a or out.startswith(a.rstrip("/") + "/") for a in quick.argv), out
    # Nothing of the quick profile names a folder of the full results.
    values = quick.argv[1:] + tuple(s.split("=", 1)[1] for s in quick.settings)
    full = re.compile(r"(\.\./)*(paper/(tables|evaluate|figures)|\.cache_data/(?!quick/))")
    assert not any(full.match(v) for v in values), (e.name, values)
  parser = cli.build_parser()
  for e in entries:
    for profile in reg.PROFILES:
      step = reg.resolve(e, profile)
      if e.kind in ("command", "evaluate"):
        # metatune's own parser reads the arguments (parsing runs nothing).
        assert parser.parse_args(list(step.argv[3:])).fn is not None
      elif e.kind == "script":
        # Every option given to a script is one its argparse defines.
        known = set(re.findall(r"[\"'](--[\w-]+)[\"']", (ROOT / e.script).read_text()))
        given = {a for a in step.argv[2:] if a.startswith("--")}
        assert given <= known, (e.name, profile, given - known)
  for e in entries:
    if e.kind != "evaluate":
      continue
    for profile in reg.PROFILES:
      step = reg.resolve(e, profile)
      exp = load_experiment(ROOT / e.config, step.settings)
      if step.skip:        # not run in this profile: what it would read is not made there
        continue
      made = _outputs_of_needs(r, e.name, profile)
      for t in exp.tuners:
        for path in (t.options.get("path"), (t.build or {}).get("dataset")):
          if path:
            # The prior or meta-dataset a tuner reads is written by an entry it needs.
            rel = pathlib.Path(path).resolve().relative_to(ROOT).as_posix()
            assert any(o.startswith(rel + "/") for o in made), (e.name, profile, t.label, rel)
      if profile == "quick":
        assert set(exp.overrides) == set(step.settings) and exp.seeds <= 2


# ------------------------------------------------------------------ --jobs
# A timed entry: sleeps argv[2] seconds, writes its start and end times (time.time()) to its
# output argv[1], then exits with argv[3]. No braces: the registry reads them as placeholders.
TIMED = ("import pathlib, sys, time; t = time.time(); time.sleep(float(sys.argv[2])); "
         "pathlib.Path(sys.argv[1]).write_text('%r %r' % (t, time.time())); "
         "sys.exit(int(sys.argv[3]))")


def timed(name, seconds, needs=(), code=0):
  """A registry entry (YAML) that sleeps, then writes {paper}/NAME.txt: its start and end."""
  lines = [f"  - name: {name}", "    kind: argv",
           (f"    argv: [python, -c, {json.dumps(TIMED)}, \"{{paper}}/{name}.txt\", "
            f"\"{seconds}\", \"{code}\"]"),
           f"    outputs: [\"{{paper}}/{name}.txt\"]"]
  if needs:
    lines.append(f"    needs: [{', '.join(needs)}]")
  return "\n".join(lines) + "\n"


def times(root, name) -> tuple[float, float]:
  start, end = (root / f"paper/quick/{name}.txt").read_text().split()
  return float(start), float(end)


def test_jobs_runs_independent_entries_at_once_and_waits_for_needs(tmp_path):
  write_registry(tmp_path, timed("a", 0.5), timed("b", 0.5), timed("c", 0.1, needs=("a",)))
  items = plan(tmp_path)
  out = io.StringIO()
  assert runner.run(items, tmp_path, out=out, jobs=2)
  a, b, c = (times(tmp_path, n) for n in "abc")
  assert a[0] < b[1] and b[0] < a[1]  # a and b overlap
  assert c[0] >= a[1]  # c needs a
  assert status(items) == {"a": "ran", "b": "ran", "c": "ran"}
  # Each entry's seconds are its own wall time, not the run's; its stamp is a sequential one's.
  by = {i.name: i for i in items}
  assert 0.5 <= by["a"].seconds < 0.5 + 1.0 and 0.1 <= by["c"].seconds < by["a"].seconds
  stamp = json.loads((tmp_path / "paper/quick/logs/b.stamp.json").read_text())
  assert stamp["hash"] == by["b"].hash and stamp["exit_code"] == 0
  assert status(plan(tmp_path)) == {"a": "done", "b": "done", "c": "done"}
  lines = out.getvalue().splitlines()
  assert [line.split(":")[0] for line in lines if "running" in line] == [
      "[1/3] a", "[2/3] b", "[3/3] c"]
  assert re.search(r"^\[1/3\] a: ok, in 0:0[01]$", out.getvalue(), re.MULTILINE)
  assert lines.index("[3/3] c: running (log paper/quick/logs/c.log)") > next(
      k for k, line in enumerate(lines) if line.startswith("[1/3] a: ok"))


def test_a_failure_with_jobs_lets_the_running_entries_finish_and_blocks_dependents(
    tmp_path, monkeypatch, capsys):
  write_registry(tmp_path, timed("bad", 0.05, code=3), timed("slow", 0.5),
                 timed("dep", 0, needs=("bad",)), entry("later"), timed("after", 0, needs=("dep",)))
  items = plan(tmp_path)
  assert not runner.run(items, tmp_path, out=io.StringIO(), jobs=2)
  by = {i.name: i for i in items}
  assert by["bad"].status == "failed" and by["bad"].reason == "exit code 3"
  assert by["slow"].status == "ran"  # it was running when bad failed
  assert (tmp_path / "paper/quick/logs/slow.stamp.json").exists()
  assert by["dep"].status == "not run" and by["dep"].reason == "needs 'bad', which failed"
  assert by["after"].reason == "needs 'dep', which did not run"
  assert by["later"].status == "not run"
  assert by["later"].reason == "the run stopped when 'bad' failed"
  assert runs(tmp_path) == [] and not (tmp_path / "paper/quick/logs/bad.stamp.json").exists()

  # The command line passes --jobs: slow is up to date, bad and later start together.
  monkeypatch.chdir(tmp_path)
  assert cli.main(["reproduce", "--jobs", "2"]) == 1
  assert "error: entry 'bad' failed (exit code 3)" in capsys.readouterr().err
  assert runs(tmp_path) == ["later"]
  report = (tmp_path / "paper/quick/REPRODUCE.md").read_text()
  assert re.search(r"\| later \| `python -c .*` \| ran \| \d+ \|", report)
  assert re.search(r"\| dep \| .* \| not run: needs 'bad', which failed \|", report)


def test_jobs_one_runs_in_order_and_jobs_must_be_positive(tmp_path, monkeypatch, capsys):
  write_registry(tmp_path, timed("c", 0.1), timed("a", 0.1), timed("b", 0.1, needs=("c",)))
  items = plan(tmp_path)
  out = io.StringIO()
  assert runner.run(items, tmp_path, out=out)
  spans = [times(tmp_path, n) for n in "cab"]
  assert all(first[1] <= then[0] for first, then in itertools.pairwise(spans))
  assert re.sub(r"in 0:0\d", "in 0:0x", out.getvalue()).splitlines() == [
      "[1/3] c: running (log paper/quick/logs/c.log)", "[1/3] c: ok, in 0:0x",
      "[2/3] a: running (log paper/quick/logs/a.log)", "[2/3] a: ok, in 0:0x",
      "[3/3] b: running (log paper/quick/logs/b.log)", "[3/3] b: ok, in 0:0x"]
  with pytest.raises(ValueError, match="jobs must be at least 1, got 0"):
    runner.run(items, tmp_path, jobs=0)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit) as info:
    cli.main(["reproduce", "--jobs", "0"])
  assert info.value.code == 2
  assert "--jobs: expected a positive whole number, got 0" in capsys.readouterr().err


def test_ctrl_c_with_jobs_stops_the_running_entries(tmp_path, monkeypatch):
  write_registry(tmp_path, timed("a", 30), timed("b", 30), timed("c", 0, needs=("a",)),
                 entry("d"))
  seen = []

  def interrupt(running, tick):
    seen.extend(r.proc for r in running)
    raise KeyboardInterrupt

  monkeypatch.setattr(runner, "_wait", interrupt)
  items = plan(tmp_path)
  with pytest.raises(KeyboardInterrupt):
    runner.run(items, tmp_path, out=io.StringIO(), jobs=2)
  assert len(seen) == 2 and all(proc.returncode is not None for proc in seen)
  by = {i.name: i for i in items}
  assert [(by[n].status, by[n].reason) for n in "ab"] == [("failed", "interrupted")] * 2
  assert by["c"].reason == "needs 'a', which failed"
  assert by["d"].status == "not run" and by["d"].reason == "the run stopped when 'a' failed"


def test_family_configs_name_files_that_are_committed():
  """A family config's space, table and surrogate paths inside the repository are committed files
  (a space file left out of a commit passed here and failed on a clean clone)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  from metatune.tasks import registry as families  # pylint: disable=import-outside-toplevel
  tracked = None
  if shutil.which("git") and (ROOT / ".git").exists():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    tracked = set(out.stdout.splitlines()) if out.returncode == 0 else None
  for path in sorted((ROOT / "configs/families").glob("*.yaml")):
    config = families.load_family_config(path)
    for key in families.PATH_OPTIONS:
      value = config.options.get(key)
      if not isinstance(value, str) or value == "default":
        continue
      target = (config.folder / value).resolve()
      try:
        rel = target.relative_to(ROOT).as_posix()
      except ValueError:
        continue
      if rel.startswith(".cache_data/"):
        continue  # made by a command (a surrogate folder), not committed
      assert target.exists(), f"{path.name}: options.{key} {value} does not exist"
      if tracked is not None and target.is_file():
        assert rel in tracked, f"{path.name}: options.{key} {rel} is not committed"
