"""``metatune tune`` and ``metatune study show/list/export``: runs, resumes, clear errors."""

import argparse
import csv
import json
import os
import re
import subprocess
import sys

import pytest

import objectives
from metatune.study import Study, cli

HERE = os.path.dirname(os.path.abspath(objectives.__file__))
OBJ = os.path.join(HERE, "objectives.py")


@pytest.fixture
def space_file(tmp_path):
  return objectives.toy_space_file(tmp_path)


def tune(space, db, *more):
  return cli.main(["tune", space, "--storage", str(db), "--no-progress", *more])


@pytest.mark.parametrize("argv", [["tune"], ["study"], ["study", "show"], ["study", "list"],
                                  ["study", "export"]])
def test_help_on_every_command(argv, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(argv + ["--help"])
  assert info.value.code == 0
  assert "usage: metatune" in capsys.readouterr().out


def test_add_commands_registers_handlers_returning_exit_codes():
  parser = argparse.ArgumentParser(prog="metatune")
  cli.add_commands(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["tune", "s.yaml", "--objective", "m:f", "--storage", "x.db"])
  assert args.fn is cli.cmd_tune and args.workers == 1 and args.tuner == "quasi_random"
  assert parser.parse_args(["study", "show", "x.db", "--plots", "d"]).fn is cli.cmd_show


def test_tune_show_plots_export_and_resume(space_file, tmp_path, capsys):
  db = tmp_path / "s.db"
  rc = tune(space_file, db, "--objective", f"{OBJ}:fails_on_b", "--trials", "12",
            "--workers", "2", "--verbose")
  out = capsys.readouterr().out
  assert rc == 0
  assert sum(line.startswith("trial ") for line in out.splitlines()) == 12
  assert "stopped (trials) after 12 new trials" in out and "best: trial" in out

  assert cli.main(["study", "show", str(db), "--plots", str(tmp_path / "plots")]) == 0
  shown = capsys.readouterr().out
  assert "study s in" in shown and "failures:" in shown and "exception" in shown
  assert "ValueError: branch b is broken" in shown
  assert "where failures cluster" in shown and "opt = 'b'" in shown
  assert sorted(os.listdir(tmp_path / "plots")) == ["history.png", "parallel_coordinates.png"]

  assert cli.main(["study", "show", str(db), "--json"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["failures"]["by_reason"] == {"exception": summary["counts"]["failed"]}
  assert summary["counts"]["complete"] + summary["counts"]["failed"] == 12

  assert cli.main(["study", "export", str(db), "--out", str(tmp_path / "t.csv")]) == 0
  with open(tmp_path / "t.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 12 and {r["state"] for r in rows} == {"complete", "failed"}
  assert all("branch b is broken" in r["error"] for r in rows if r["state"] == "failed")
  assert cli.main(["study", "list", str(db)]) == 0
  assert capsys.readouterr().out.startswith("s: ")

  # The same command with a larger total resumes; other settings are refused.
  assert tune(space_file, db, "--objective", f"{OBJ}:fails_on_b", "--trials", "14") == 0
  assert "resuming study 's': 12 finished" in capsys.readouterr().err
  assert tune(space_file, db, "--objective", f"{OBJ}:fails_on_b", "--trials", "16",
              "--seed", "4") == 2
  assert "other settings: seed" in capsys.readouterr().err


def test_show_says_where_trial_output_is_and_prints_one_trial(space_file, tmp_path, capsys):
  db = tmp_path / "o.db"
  assert tune(space_file, db, "--objective", f"{OBJ}:chatty", "--trials", "2",
              "--log-limit", "2") == 0
  capsys.readouterr()
  assert cli.main(["study", "show", str(db)]) == 0
  shown = capsys.readouterr().out
  assert "output: 2 trials printed 2.0 MiB in all" in shown and "--trial N" in shown
  assert cli.main(["study", "show", str(db), "--trial", "1"]) == 0
  shown = capsys.readouterr().out
  assert shown.startswith("trial 1: failed (crashed); source tuner")
  assert "exited with code 5" in shown and "executor process" in shown
  assert re.search(r"\noutput \(the last 2\.0 KiB of 10\d\d\.\d KiB\):\n", shown)
  assert shown.rstrip().endswith("done 1")
  assert cli.main(["study", "show", str(db), "--trial", "7"]) == 2
  assert "no trial 7" in capsys.readouterr().err


def test_a_closed_stdout_ends_show_and_list_quietly(space_file, tmp_path):
  db = tmp_path / "p.db"
  Study.create(space_file, db, "p").close()  # an empty study: show still prints a summary
  procs = []
  for argv in (["study", "show", str(db)], ["study", "list", str(db)]):
    proc = subprocess.Popen([sys.executable, "-m", "metatune.study.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as `| head` does once it has its lines (here: before any)
    procs.append((argv, proc))
  for argv, proc in procs:
    err = proc.stderr.read()
    assert (proc.wait(), err) == (141, ""), argv


def test_multi_objective_show_prints_front_and_hypervolume(space_file, tmp_path, capsys):
  db = tmp_path / "m.db"
  assert tune(space_file, db, "--objective", f"{OBJ}:multi", "--trials", "10", "--directions",
              "loss:min", "score:max", "--constraint", "limit", "--executor", "inline") == 0
  assert cli.main(["study", "show", str(db), "--plots", str(tmp_path / "p")]) == 0
  shown = capsys.readouterr().out
  assert "Pareto front:" in shown and "hypervolume" in shown
  assert "pareto.png" in os.listdir(tmp_path / "p")


def test_enqueued_configs_run_first_and_bad_lines_are_named(space_file, tmp_path, capsys):
  good = tmp_path / "good.jsonl"
  good.write_text('{"x": 1.0, "y": -0.5, "opt": "a"}\n\n{"x": 0.0, "y": 0.0, "opt": "b", '
                  '"z": 2}\n')
  db = tmp_path / "q.db"
  assert tune(space_file, db, "--objective", f"{OBJ}:quadratic", "--trials", "3", "--enqueue",
              str(good), "--executor", "inline") == 0
  assert "best: trial 0: objective=0 " in capsys.readouterr().out
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"x": 1.0, "y": -0.5, "opt": "a"}\n{"x": 1.0, "y": 0.5, "opt": "a", "z": 1}\n')
  assert tune(space_file, tmp_path / "b.db", "--objective", f"{OBJ}:quadratic", "--trials",
              "3", "--enqueue", str(bad)) == 2
  err = capsys.readouterr().err
  assert f"{bad}:2" in err and "inactive" in err
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"x": 1.0,\n')
  assert tune(space_file, tmp_path / "c.db", "--objective", f"{OBJ}:quadratic", "--trials",
              "3", "--enqueue", str(broken)) == 2
  assert f"{broken}:1: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["study", "show", "{tmp}/none.db"], "no such study file"),
    (["study", "export", "{tmp}/none.db", "--out", "{tmp}/x.csv"], "no such study file"),
    (["tune", "{tmp}/missing.yaml", "--objective", f"{OBJ}:quadratic", "--storage",
      "{tmp}/s.db", "--trials", "2"], "missing.yaml"),
    (["tune", "{space}", "--objective", "no_module_here:f", "--storage", "{tmp}/s.db",
      "--trials", "2"], "cannot import no_module_here"),
    (["tune", "{space}", "--objective", "m:f", "--storage", "{tmp}/s.db", "--trials", "2",
      "--pruner", "asha"], "--max-resource"),
    (["tune", "{space}", "--objective", f"{OBJ}:curve", "--storage", "{tmp}/s.db", "--trials",
      "2", "--pruner", "curve", "--max-resource", "9"], "--surrogate"),
    (["tune", "{space}", "--objective", f"{OBJ}:curve", "--storage", "{tmp}/s.db", "--trials",
      "2", "--pruner", "curve", "--max-resource", "9", "--surrogate", "{tmp}/no_sur"],
     "no surrogate checkpoint at {tmp}/no_sur"),
    (["tune", "{space}", "--objective", f"{OBJ}:quadratic", "--storage", "{tmp}/nodir/s.db",
      "--trials", "2"], "does not exist"),
    (["tune", "{space}", "--objective", f"{OBJ}:quadratic", "--storage", "{tmp}/s.db"],
     "never ends"),
])
def test_errors_are_one_clear_line(argv, message, space_file, tmp_path, capsys):
  argv = [a.format(tmp=tmp_path, space=space_file) for a in argv]
  message = message.format(tmp=tmp_path)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and "Traceback" not in err
  assert not (tmp_path / "s.db").exists()  # refused before any file was written


def test_bad_numbers_are_refused_by_the_parser(space_file, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["tune", space_file, "--objective", "m:f", "--storage", "s.db", "--workers", "0"])
  assert info.value.code == 2
  assert "expected a positive whole number, got 0" in capsys.readouterr().err
