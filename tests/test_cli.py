"""The command line: --help everywhere, space check/sample, clear errors without tracebacks."""

import json
import pathlib
import subprocess
import sys

import pytest

from metatune import cli
from metatune.space import io

SPACE = """
parameters:
  opt: {type: categorical, choices: [sgd, adam]}
  lr: {type: float, low: 1e-4, high: 1.0, log: true}
  opt.sgd:
    when: "opt == 'sgd'"
    parameters:
      momentum: {type: float, low: 0.0, high: 0.99}
  layers: {type: int, low: 1, high: 3}
  w2: {type: int, low: 8, high: 256, log: true, when: "layers >= 2"}
constraints: ["active_or(w2, 8) * layers <= 512"]
"""


@pytest.fixture
def space_file(tmp_path):
  p = tmp_path / "s.yaml"
  p.write_text(SPACE)
  return p


@pytest.mark.parametrize("argv", [[], ["demo"], ["space"], ["space", "check"],
                                  ["space", "sample"], ["meta-train"], ["tune"],
                                  ["surrogate", "train"], ["surrogate", "eval"],
                                  ["study", "show"]])
def test_help_on_every_command(argv, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(argv + ["--help"])
  assert info.value.code == 0
  assert "usage: metatune" in capsys.readouterr().out


def test_space_check_reports_tree_invalid_and_activity(space_file, capsys):
  assert cli.main(["space", "check", str(space_file), "--samples", "500"]) == 0
  out = capsys.readouterr().out
  assert "0 invalid" in out
  assert "    opt.sgd.momentum" in out  # indented under its parent
  assert "when opt == 'sgd'" in out
  assert "require  active_or(w2, 8) * layers <= 512" in out


def test_space_check_json(space_file, capsys):
  assert cli.main(["space", "check", str(space_file), "--samples", "2000", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["invalid"] == 0 and report["samples"] == 2000
  assert report["active_fraction"]["opt"] == 1.0
  assert 0.4 < report["active_fraction"]["opt.sgd.momentum"] < 0.6


def test_space_sample_writes_valid_jsonl(space_file, tmp_path):
  out = tmp_path / "c.jsonl"
  assert cli.main(["space", "sample", str(space_file), "--num", "300", "--seed", "3",
                   "--out", str(out)]) == 0
  lines = out.read_text().splitlines()
  assert len(lines) == 300
  s = io.load(space_file)
  for line in lines:
    cfg = json.loads(line)
    assert s.validate(cfg) == cfg  # active parameters only, in their own types
  # Same seed, same file.
  again = tmp_path / "d.jsonl"
  cli.main(["space", "sample", str(space_file), "--num", "300", "--seed", "3", "--out",
            str(again)])
  assert again.read_text() == out.read_text()


def test_space_sample_keeps_configspace_names_and_types(data_dir, tmp_path):
  out = tmp_path / "x.jsonl"
  path = data_dir / "yahpo" / "rbv2_xgboost" / "config_space.json"
  assert cli.main(["space", "sample", str(path), "--num", "50", "--out", str(out)]) == 0
  rows = [json.loads(l) for l in out.read_text().splitlines()]
  assert all(isinstance(r["nrounds"], int) and isinstance(r["task_id"], str) for r in rows)
  assert any("num.impute.selected.cpo" in r for r in rows)


@pytest.mark.parametrize("argv, phrase", [
    (["space", "check", "missing.yaml"], "cannot read the space file"),
    (["space", "sample", "{bad}", "--num", "3", "--out", "/nonexistent/dir/x.jsonl"],
     "does not exist"),
])
def test_errors_are_one_line_without_traceback(argv, phrase, space_file, capsys):
  argv = [str(space_file) if a == "{bad}" else a for a in argv]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and phrase in err and "Traceback" not in err


def test_bad_space_error_names_file_and_line(tmp_path, capsys):
  p = tmp_path / "bad.yaml"
  p.write_text("parameters:\n  x: {type: float, low: 1, high: 0}\n")
  assert cli.main(["space", "check", str(p)]) == 2
  assert f"{p}:2" in capsys.readouterr().err


def test_bad_numbers_are_rejected_by_argparse(space_file, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["space", "sample", str(space_file), "--num", "0", "--out", "-"])
  assert info.value.code == 2
  assert "positive whole number" in capsys.readouterr().err


def test_console_entry_point_runs():
  out = subprocess.run([sys.executable, "-m", "metatune", "--version"], capture_output=True,
                       text=True, check=True)
  assert out.stdout.startswith("metatune ")


def test_demo_small_run(capsys):
  assert cli.main(["demo", "--updates", "2", "--trials", "6", "--json"]) == 0
  captured = capsys.readouterr()
  report = json.loads(captured.out)  # stdout holds the results only
  # stderr says what the long silent stretches are: the first iteration compiling, then the
  # held-out evaluation tuner by tuner, with elapsed times.
  err = captured.err
  assert "compiling the PPO iteration (first iteration)" in err
  assert "first iteration" in err and "incl. compile" in err
  assert "task optima estimated (" in err
  for i, name in enumerate(["metatune prior", "random", "quasi_random", "grid"], 1):
    assert f"[{i}/4] {name}: done in " in err
  assert "evaluated in " in err
  names = {r["tuner"] for r in report["rows"]}
  assert names == {"metatune prior", "random", "quasi_random", "grid"}
  for r in report["rows"]:
    mean, se = r["regret@6"]
    assert 0.0 <= mean < 5.0 and se >= 0.0
  assert report["num_tasks"] == 15 and report["updates"] == 2



_NO_JAX = """
import sys
from metatune import cli
for argv in [a.split() for a in sys.argv[1:]]:
  try:
    code = cli.main(argv)
  except SystemExit as e:
    code = e.code
  heavy = sorted(m for m in ("jax", "flax", "optax", "orbax", "numpy") if m in sys.modules)
  print("RUN", argv, "CODE", code, "HEAVY", heavy, file=sys.stderr)
"""


def _no_jax_runs(*argvs):
  """Runs the command lines in one fresh interpreter; one line per run: its argv, code, imports."""
  run = subprocess.run([sys.executable, "-c", _NO_JAX, *argvs], capture_output=True, text=True,
                       timeout=300, check=False)
  return run.stdout, [l for l in run.stderr.splitlines() if l.startswith("RUN")]


def test_help_and_argument_errors_do_not_import_jax():
  # A behaviour test, not a timing: importing jax (seconds on 2 cores) is what made --help slow.
  # One interpreter for all: each line reports what the runs so far have imported.
  helps = ["--help", "study list --help", "study show --help", "study export --help",
           "meta-train --help", "dataset build --help", "surrogate eval --help", "tune --help",
           "space check --help", "demo --help"]
  errors = ["demo --updates 0", "space check", "meta-train f.yaml --envs -1"]
  _, lines = _no_jax_runs(*helps, *errors)
  assert len(lines) == len(helps) + len(errors), lines
  for line, argv in zip(lines, helps + errors):
    assert line.endswith("HEAVY []"), line
    assert (" CODE 0 " in line) == (argv in helps), line


def test_study_list_does_not_import_jax(tmp_path):
  from metatune.study import Study  # pylint: disable=import-outside-toplevel
  p = tmp_path / "s.yaml"
  p.write_text(SPACE)
  Study.create(str(p), storage=str(tmp_path / "s.db"), name="a").close()
  out, lines = _no_jax_runs(f"study list {tmp_path / 's.db'}")
  assert "a: 0 complete, 0 failed, 0 pruned, 0 running, 0 stale" in out
  assert "jax" not in lines[0] and " CODE 0 " in lines[0], lines


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _one_line_error(capsys, *phrases):
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in err, err
  for phrase in phrases:
    assert phrase in lines[0], (phrase, lines[0])
  return lines[0]


def test_dataset_build_without_the_data_files_is_one_line(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("METATUNE_DATA_DIR", raising=False)
  family = str(ROOT / "configs" / "families" / "yahpo_rbv2_xgboost.yaml")
  empty = tmp_path / "data"
  empty.mkdir()
  assert cli.main(["dataset", "build", family, "--out", str(tmp_path / "o"), "--data-dir",
                   str(empty), "--no-progress"]) == 2
  _one_line_error(capsys, "yahpo_rbv2_xgboost.yaml", "model.onnx", "--data-dir")
  assert cli.main(["dataset", "build", family, "--out", str(tmp_path / "o"), "--data-dir",
                   str(tmp_path / "missing")]) == 2
  _one_line_error(capsys, "--data-dir", "no such folder")
  monkeypatch.setenv("METATUNE_DATA_DIR", str(tmp_path / "missing"))
  assert cli.main(["dataset", "build", family, "--out", str(tmp_path / "o")]) == 2
  _one_line_error(capsys, "METATUNE_DATA_DIR", "no such folder")
  assert not (tmp_path / "o").exists()


def test_meta_train_on_a_folder_with_broken_settings_is_one_line(tmp_path, capsys):
  out = tmp_path / "p"
  out.mkdir()
  (out / "meta_train.json").write_text('{"config": {"num_envs": 8,\n')  # a write cut short
  family = str(ROOT / "configs" / "families" / "synthetic.yaml")
  assert cli.main(["meta-train", family, "--out", str(out), "--no-progress"]) == 2
  _one_line_error(capsys, f"{out / 'meta_train.json'}:2", "not valid JSON")


@pytest.mark.parametrize("how, where, phrase", [
    ("card_not_json", "card.json", "not valid JSON"),
    ("policy_deleted", "policy", "no policy here"),
    ("shapes_differ", "policy", "does not match the card's policy_config"),
])
def test_tune_with_a_broken_prior_is_one_line_and_writes_nothing(tmp_path, capsys, how, where,
                                                                 phrase):
  import shutil  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from metatune.meta.prior import save_prior  # pylint: disable=import-outside-toplevel
  from metatune.networks import policy as pol  # pylint: disable=import-outside-toplevel
  config = pol.PolicyConfig()
  _, params = nnx.split(pol.Policy(config, rngs=nnx.Rngs(0)))
  folder = tmp_path / "prior"
  save_prior(folder, params, config, {"num_trials": 10})
  if how == "card_not_json":
    (folder / "card.json").write_text("{not json")
  elif how == "policy_deleted":
    shutil.rmtree(folder / "policy")
  else:
    card = json.loads((folder / "card.json").read_text())
    card["policy_config"]["hidden"] = 16
    (folder / "card.json").write_text(json.dumps(card))
  space = tmp_path / "s.yaml"
  space.write_text(SPACE)
  objective = ROOT / "tests" / "study" / "objectives.py"
  assert cli.main(["tune", str(space), "--objective", f"{objective}:quadratic", "--storage",
                   str(tmp_path / "s.db"), "--trials", "2", "--tuner", "prior",
                   "--tuner-option", f"path={folder}", "--no-progress"]) == 2
  _one_line_error(capsys, str(folder / where), phrase)
  assert not (tmp_path / "s.db").exists()
