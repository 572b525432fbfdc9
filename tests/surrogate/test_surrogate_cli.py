"""The surrogate subcommands, called through their parser and handlers."""

import argparse
import json
import pathlib
import subprocess
import sys

import pytest

from metatune.surrogate import cli, load_surrogate

from conftest import TINY_SPACE


def _parser():
  parser = argparse.ArgumentParser(prog="metatune")
  cli.add_commands(parser.add_subparsers(dest="command"))
  return parser


def _run(argv):
  args = _parser().parse_args(argv)
  return args.fn(args)


def test_parser_registers_train_and_eval():
  args = _parser().parse_args(["surrogate", "train", "f.yaml", "--out", "o", "--steps", "5"])
  assert args.fn is cli.cmd_train and args.steps == 5 and args.dataset is None
  args = _parser().parse_args(["surrogate", "eval", "d", "--k", "0,3", "--no-gp"])
  assert args.fn is cli.cmd_eval and args.k == (0, 3) and args.no_gp


def test_bad_arguments_exit_2_with_the_place(tmp_path, capsys):
  with pytest.raises(SystemExit):
    _parser().parse_args(["surrogate", "eval", "d", "--k", "a,b"])
  assert _run(["surrogate", "eval", str(tmp_path / "none")]) == 2
  assert "not a surrogate folder" in capsys.readouterr().err
  assert _run(["surrogate", "train", str(tmp_path / "missing.yaml"), "--out",
               str(tmp_path / "o")]) == 2
  assert "missing.yaml" in capsys.readouterr().err
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("x")
  assert _run(["surrogate", "train", "configs/families/synthetic.yaml", "--out",
               str(tmp_path / "full")]) == 2
  assert "does not hold a surrogate" in capsys.readouterr().err


@pytest.mark.slow
def test_train_then_eval_on_a_tiny_synthetic_family(tmp_path, capsys):
  (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
  (tmp_path / "fam.yaml").write_text("family: synthetic\nname: tiny-synthetic\n"
                                     "options: {space: tiny.yaml, num_tasks: 20}\n")
  out = tmp_path / "sur"
  assert _run(["surrogate", "train", str(tmp_path / "fam.yaml"), "--out", str(out), "--steps",
               "40", "--eval-every", "20", "--width", "16", "--depth", "1", "--max-context", "8",
               "--num-queries", "8", "--quiet"]) == 0
  assert (out / "surrogate.json").exists() and (out / "contexts.npz").exists()
  capsys.readouterr()
  assert _run(["surrogate", "eval", str(out), "--k", "0,4", "--reps", "2",
               "--configs-per-task", "16"]) == 0
  text = capsys.readouterr().out
  assert "| k | Spearman meta | Spearman GP" in text and "| 4 |" in text
  assert pathlib.Path(out / "eval.png").stat().st_size > 1000


@pytest.mark.slow  # real training of a few tiny networks, then a short surrogate training
def test_train_on_a_meta_dataset_with_learning_curves(tmp_path, capsys):
  from metatune import cli as main_cli  # pylint: disable=import-outside-toplevel
  fam = tmp_path / "curves.yaml"
  fam.write_text("name: tiny-training\nfamily: training\n"
                 "options: {datasets: [iris, wine, breast_cancer, diabetes], models: [mlp], "
                 "epochs: 3}\n"
                 "dataset: {configs_per_task: 12, design: quasi_random, seed: 0, "
                 "batch_size: 12}\n")
  ds, out = tmp_path / "ds", tmp_path / "sur"
  assert main_cli.main(["dataset", "build", str(fam), "--out", str(ds), "--no-progress"]) == 0
  capsys.readouterr()
  assert _run(["surrogate", "train", str(fam), "--dataset", str(ds), "--out", str(out),
               "--steps", "30", "--eval-every", "15", "--width", "16", "--depth", "1",
               "--quiet"]) == 0
  meta = json.loads((out / "surrogate.json").read_text())
  assert meta["info"]["curve_steps"] == 3, meta["info"]
  surrogate = load_surrogate(out)
  assert surrogate.config.fidelity  # a fidelity-aware model, not an objective-only one
  # --no-curves trains on final values only.
  assert _run(["surrogate", "train", str(fam), "--dataset", str(ds), "--out",
               str(tmp_path / "finals"), "--steps", "30", "--eval-every", "15", "--width", "16",
               "--depth", "1", "--quiet", "--no-curves"]) == 0
  assert not load_surrogate(tmp_path / "finals").config.fidelity


def test_importing_the_subcommands_does_not_import_jax():
  code = ("import sys, metatune.surrogate.cli as c, argparse; "
          "c.add_commands(argparse.ArgumentParser().add_subparsers()); "
          "assert 'jax' not in sys.modules, 'jax was imported'")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
