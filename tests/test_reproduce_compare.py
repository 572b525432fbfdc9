"""`metatune reproduce --compare`: a regeneration's tables against the committed ones."""

import json
import os
import pathlib
import re

import pytest

from metatune import cli
from metatune.reproduce import compare
from metatune.reproduce import registry as reg
from metatune.reproduce import runner
from metatune.space import SpaceError

TABLE = """# Some experiment

Produced on 2026-12-03 in 11.3 min (1-minute load average 3.4).

| tuner | regret@5 | regret@10 | rank | seconds | wall time (s) |
|---|---:|---:|---:|---:|---:|
| random | 0.500 [0.400, 0.600] | 0.300 [0.200, 0.400] | 2.0 | 12 | 3.1 |
| prior | **0.123 [0.100, 0.150]** | 0.050 [0.010, 0.090] | 1.0 | 99 | 7.7 |

Paired differences:

| other | diff@5 |
|---|---:|
| random | *0.377 [0.300, 0.450]* |
"""

REGISTRY = """entries:
  - name: ev
    kind: evaluate
    config: configs/e.yaml
  - name: bench
    kind: script
    script: bench.py
    outputs: ["{paper}/tables/bench.md"]
    compare: {none: "timings, nothing else"}
  - name: study
    kind: script
    script: study.py
    outputs: ["{paper}/tables/study.md", "{paper}/figures/study.png"]
    compare: ci
  - name: build
    kind: command
    args: [dataset, build]
    outputs: ["{cache}/built/manifest.json"]
"""


def write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def diffs(tmp_path, expected: str, actual: str, mode: str = "exact") -> list[str]:
  e = write(tmp_path / "e" / "t.md", expected)
  a = write(tmp_path / "a" / "t.md", actual)
  return compare.compare_file(e, a, mode, "paper/quick/tables/t.md")


def test_tables_are_parsed_with_escaped_pipes_and_fenced_blocks_left_out():
  text = ("```\n| not | a table |\n|---|---|\n```\n\n| a | b |\n|:--|--:|\n| x \\| y | 1 |\n"
          "| z | 2 |\nafter\n| c |\n|---|\n| w |\n")
  tables = compare.parse_tables(text)
  assert [t.header for t in tables] == [("a", "b"), ("c",)]
  assert tables[0].rows == (("x | y", "1"), ("z", "2")) and tables[1].rows == (("w",),)


def test_an_identical_regeneration_has_no_difference(tmp_path):
  assert diffs(tmp_path, TABLE, TABLE) == []
  assert diffs(tmp_path, TABLE, TABLE, "ci") == []


def test_a_changed_number_is_named_by_file_table_row_and_column(tmp_path):
  changed = TABLE.replace("0.050 [0.010, 0.090]", "0.051 [0.010, 0.090]")
  assert diffs(tmp_path, TABLE, changed) == [
      "paper/quick/tables/t.md, table 1, row 'prior', column 'regret@10': expected "
      "0.050 [0.010, 0.090], got 0.051 [0.010, 0.090]"]
  changed = TABLE.replace("| random | *0.377", "| random | *0.378")
  assert diffs(tmp_path, TABLE, changed) == [
      "paper/quick/tables/t.md, table 2, row 'random', column 'diff@5': expected "
      "*0.377 [0.300, 0.450]*, got *0.378 [0.300, 0.450]*"]


def test_timings_and_the_text_around_the_tables_are_ignored(tmp_path):
  other = (TABLE.replace("| 12 | 3.1 |", "| 40 | 9.9 |").replace("11.3 min", "31.0 min")
           .replace("load average 3.4", "load average 0.2").replace("2026-12-03", "2027-01-01"))
  assert other != TABLE and diffs(tmp_path, TABLE, other) == []
  assert [h for h in ("seconds", "wall time (s)", "PPO s", "configs/s", "overhead (ms)",
                      "compile s (iteration)", "s/trial", "throughput", "load")
          if not compare.is_timing(h)] == []
  assert [h for h in ("regret@5", "trials to gp_bo's final", "rank@50", "failed", "tuner",
                      "NLL meta", "runs") if compare.is_timing(h)] == []


def test_ci_mode_takes_a_mean_inside_the_committed_ci_and_rejects_one_outside(tmp_path):
  inside = (TABLE.replace("**0.123 [0.100, 0.150]**", "0.149 [0.120, 0.180]")
            .replace("| 2.0 |", "| 3.0 |"))  # other numbers are not compared
  assert diffs(tmp_path, TABLE, inside, "ci") == []
  assert len(diffs(tmp_path, TABLE, inside)) == 2  # exact mode sees both
  outside = TABLE.replace("0.300 [0.200, 0.400]", "0.410 [0.300, 0.500]")
  assert diffs(tmp_path, TABLE, outside, "ci") == [
      "paper/quick/tables/t.md, table 1, row 'random', column 'regret@10': expected "
      "0.300 [0.200, 0.400], got 0.410 [0.300, 0.500] (the mean 0.410 lies outside the "
      "committed CI)"]
  # Rows are matched by their first cell, not their position; labels must match.
  swapped = TABLE.replace("| random | 0.500", "| tmp | 0.500").replace("| prior |", "| random |")
  swapped = swapped.replace("| tmp |", "| prior |")
  assert diffs(tmp_path, TABLE, swapped, "ci") == [
      "paper/quick/tables/t.md, table 1, row 'random', column 'regret@5': expected "
      "0.500 [0.400, 0.600], got **0.123 [0.100, 0.150]** (the mean 0.123 lies outside the "
      "committed CI)",
      "paper/quick/tables/t.md, table 1, row 'random', column 'regret@10': expected "
      "0.300 [0.200, 0.400], got 0.050 [0.010, 0.090] (the mean 0.050 lies outside the "
      "committed CI)",
      "paper/quick/tables/t.md, table 1, row 'prior', column 'regret@5': expected "
      "**0.123 [0.100, 0.150]**, got 0.500 [0.400, 0.600] (the mean 0.500 lies outside the "
      "committed CI)",
      "paper/quick/tables/t.md, table 1, row 'prior', column 'regret@10': expected "
      "0.050 [0.010, 0.090], got 0.300 [0.200, 0.400] (the mean 0.300 lies outside the "
      "committed CI)"]
  renamed = TABLE.replace("| prior |", "| prior_v2 |")
  assert diffs(tmp_path, TABLE, renamed, "ci") == [
      "paper/quick/tables/t.md, table 1, row 'prior': missing from the regeneration",
      "paper/quick/tables/t.md, table 1, row 'prior_v2': not in the committed table"]


def test_rows_columns_and_tables_that_differ_in_shape_are_reported(tmp_path):
  reordered = TABLE.replace(
      "| random | 0.500 [0.400, 0.600] | 0.300 [0.200, 0.400] | 2.0 | 12 | 3.1 |\n", "")
  reordered = reordered.replace(
      "| 99 | 7.7 |\n", "| 99 | 7.7 |\n| random | 0.500 [0.400, 0.600] | 0.300 [0.200, 0.400] "
      "| 2.0 | 12 | 3.1 |\n")
  assert diffs(tmp_path, TABLE, reordered) == [
      "paper/quick/tables/t.md, table 1: rows in another order: expected random, prior; got "
      "prior, random"]
  assert diffs(tmp_path, TABLE, reordered, "ci") == []
  renamed = TABLE.replace("| regret@10 |", "| regret@20 |")
  assert diffs(tmp_path, TABLE, renamed) == [
      "paper/quick/tables/t.md, table 1: columns differ: expected tuner | regret@5 | regret@10 "
      "| rank | seconds | wall time (s); got tuner | regret@5 | regret@20 | rank | seconds | "
      "wall time (s)"]
  one_table = TABLE.split("Paired differences")[0]
  assert diffs(tmp_path, TABLE, one_table) == ["paper/quick/tables/t.md: expected 2 tables, got 1"]


def test_a_missing_table_file_is_a_difference(tmp_path):
  write(tmp_path / "e" / "t.md", TABLE)
  out = compare.compare_file(tmp_path / "e" / "t.md", tmp_path / "a" / "t.md", "exact",
                             "paper/quick/tables/t.md")
  assert len(out) == 1 and out[0].startswith(
      "paper/quick/tables/t.md: missing from the regeneration")
  out = compare.compare_file(tmp_path / "a" / "t.md", tmp_path / "e" / "t.md", "exact",
                             "paper/quick/tables/t.md")
  assert out[0].startswith("paper/quick/tables/t.md: missing from the committed folder")


def registry(tmp_path) -> reg.Registry:
  return reg.load_registry(write(tmp_path / "configs" / "reproduce.yaml", REGISTRY))


def test_entries_are_compared_as_their_registry_entry_says(tmp_path):
  r = registry(tmp_path)
  assert {e.name: (e.compare, e.compare_why) for e in r.entries.values()} == {
      "ev": ("exact", ""), "bench": ("none", "timings, nothing else"), "study": ("ci", ""),
      "build": ("none", "it writes no table below {paper}")}
  for side in ("e", "a"):
    write(tmp_path / side / "evaluate/ev/table.md", TABLE)
    write(tmp_path / side / "tables/study.md", TABLE)
    write(tmp_path / side / "tables/bench.md", TABLE.replace("0.5", "0.7" if side == "a" else "0"))
  out = compare.compare_outputs(r, "quick", tmp_path / "e", tmp_path / "a")
  assert out.differences == [] and (out.exact, out.ci) == (1, 1)
  assert out.not_compared == [("bench", "timings, nothing else")]
  assert out.summary() == ("1 table file compared exactly, 1 within their CIs, 1 entry not "
                           "compared")
  (tmp_path / "a/tables/study.md").unlink()
  out = compare.compare_outputs(r, "quick", tmp_path / "e", tmp_path / "a")
  assert [d.split(" (")[0] for d in out.differences] == [
      "paper/quick/tables/study.md: missing from the regeneration"]
  # An entry with no table on either side (skipped on both runs) is absent, not different.
  (tmp_path / "e/tables/study.md").unlink()
  out = compare.compare_outputs(r, "quick", tmp_path / "e", tmp_path / "a")
  assert out.differences == [] and out.absent == ["study"]
  assert out.summary().endswith("1 absent from both folders (study)")


COMPARE_ERRORS = [
    # (what the entry says, expected line of the error, words of the message)
    ("", 2, r"entry 's' writes the table \{paper\}/t.md: say how .*compare: exact, compare: ci "
     r"or compare: \{none: REASON\}"),
    ("    compare: none\n", 6, r"write compare: \{none: REASON\}, saying why"),
    ("    compare: exakt\n", 6, r"unknown compare mode 'exakt' \(did you mean 'exact'\?\)"),
    ("    compare: {none: \"\"}\n", 6, r"compare.none must say why"),
    ("    compare: {none: timings, mostly}\n", 6, r"reason has a comma: quote it"),
    ("    compare: {skip: timings}\n", 6, r"compare takes a mode or \{none: REASON\}, not 'skip'"),
    ("    compare: [exact]\n", 6, r"compare must be a mode or a mapping; write compare: exact"),
]


@pytest.mark.parametrize("extra,line,words", COMPARE_ERRORS)
def test_compare_field_errors_name_the_file_and_line(tmp_path, extra, line, words):
  path = write(tmp_path / "reproduce.yaml", "entries:\n  - name: s\n    kind: script\n"
               "    script: s.py\n    outputs: [\"{paper}/t.md\"]\n" + extra)
  with pytest.raises(SpaceError) as info:
    reg.load_registry(path)
  assert info.value.where == f"{path}:{line}", str(info.value)
  assert re.search(words, info.value.problem), info.value.problem


def test_compare_on_an_entry_without_a_table_is_an_error(tmp_path):
  path = write(tmp_path / "reproduce.yaml", "entries:\n  - name: s\n    kind: script\n"
               "    script: s.py\n    outputs: [\"{paper}/f.png\"]\n    compare: exact\n")
  with pytest.raises(SpaceError, match=r"compare: exact, but it writes no table") as info:
    reg.load_registry(path)
  assert info.value.where == f"{path}:6"


def test_the_command_line_exits_1_on_differences_and_0_with_a_summary(tmp_path, monkeypatch,
                                                                        capsys):
  registry(tmp_path)
  for side in ("paper/quick", "clone/paper/quick"):
    write(tmp_path / side / "evaluate/ev/table.md", TABLE)
    write(tmp_path / side / "tables/study.md", TABLE)
  monkeypatch.chdir(tmp_path)
  assert cli.main(["reproduce", "--profile", "quick", "--compare", "clone/paper/quick"]) == 0
  out = capsys.readouterr().out
  assert "matches the committed paper/quick: 1 table file compared exactly, 1 within" in out
  assert cli.main(["reproduce", "--compare", "clone"]) == 0  # the clone's root works too
  capsys.readouterr()
  write(tmp_path / "clone/paper/quick/evaluate/ev/table.md", TABLE.replace("| 2.0 |", "| 2.5 |"))
  assert cli.main(["reproduce", "--compare", "clone"]) == 1
  captured = capsys.readouterr()
  assert captured.out == ("paper/quick/evaluate/ev/table.md, table 1, row 'random', column "
                          "'rank': expected 2.0, got 2.5\n")
  assert "error: 1 difference between clone/paper/quick and the committed paper/quick" in (
      captured.err)
  assert cli.main(["reproduce", "--compare", "nowhere"]) == 2
  assert "--compare nowhere: no such folder" in capsys.readouterr().err
  assert cli.main(["reproduce", "--compare", "paper/quick"]) == 2
  assert "this repository's own paper/quick" in capsys.readouterr().err
  assert cli.main(["reproduce", "--compare", "clone", "--list"]) == 2


# ------------------------------------------------ what a regeneration's entries run with
def test_entries_import_this_checkout_and_share_a_jax_cache(tmp_path, monkeypatch):
  dump = ("import json, os, sys; json.dump(dict((k, os.environ.get(k)) for k in sys.argv[2:]), "
          "open(sys.argv[1], 'w'))")
  keys = ["PYTHONPATH", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]
  write(tmp_path / "configs" / "reproduce.yaml",
        f"entries:\n  - name: env\n    kind: argv\n    argv: [python, -c, {json.dumps(dump)}, "
        f"\"{{paper}}/env.json\", {', '.join(keys)}]\n    outputs: [\"{{paper}}/env.json\"]\n")
  monkeypatch.setenv("PYTHONPATH", "elsewhere")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "5")  # the user's is kept
  r = reg.load_registry(tmp_path / "configs" / "reproduce.yaml")
  assert runner.run(runner.plan(r, "quick", tmp_path, gpu=False), tmp_path)
  env = json.loads((tmp_path / "paper/quick/env.json").read_text())
  root = os.path.abspath(tmp_path)
  assert env == {"PYTHONPATH": os.pathsep.join([root, "elsewhere"]),
                 "JAX_COMPILATION_CACHE_DIR": os.path.join(root, ".cache_data/quick/jax_cache"),
                 "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "5"}
