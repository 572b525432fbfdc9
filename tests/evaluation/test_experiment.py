"""`metatune evaluate --set`: settings over an experiment config, checked as the file is."""

import pytest

from metatune import cli
from metatune.evaluation import report
from metatune.evaluation.experiment import load_experiment
from metatune.space import SpaceError

CONFIG = """\
name: t
family: family.yaml
tasks: heldout_dataset
budget: 20
seeds: 5
tuners:
  random:
  gp_bo: {options: {num_candidates: 64}}
  prior: {options: {path: priors/a}}
"""


@pytest.fixture
def config(tmp_path):
  (tmp_path / "family.yaml").write_text("name: f\n")  # only its existence is checked here
  path = tmp_path / "exp.yaml"
  path.write_text(CONFIG)
  return path


def test_settings_override_fields_and_tuners(config, tmp_path):
  exp = load_experiment(config, ["seeds=2", "max_tasks=3", "budget=7",
                                 "tuners.prior.options.path=priors/b",
                                 "tuners.gp_bo.options.num_candidates=8",
                                 "tuners.random.batch_size=2", "checkpoints=[1, 5]"])
  assert (exp.seeds, exp.max_tasks, exp.budget, exp.checkpoints) == (2, 3, 7, (1, 5))
  by = {t.label: t for t in exp.tuners}
  # Relative paths are read as in the file: relative to the config.
  assert by["prior"].options["path"] == str((tmp_path / "priors" / "b").resolve())
  assert by["gp_bo"].options == {"num_candidates": 8}
  assert by["random"].batch_size == 2
  assert exp.overrides == ("seeds=2", "max_tasks=3", "budget=7",
                           "tuners.prior.options.path=priors/b",
                           "tuners.gp_bo.options.num_candidates=8",
                           "tuners.random.batch_size=2", "checkpoints=[1, 5]")
  plain = load_experiment(config)
  assert (plain.seeds, plain.max_tasks, plain.overrides) == (5, None, ())


@pytest.mark.parametrize("setting,words", [
    ("budgett=3", "unknown field 'budgett' (did you mean 'budget'?)"),
    ("seeds=0", "seeds must be a positive whole number, got 0"),
    ("seeds=three", "seeds must be a positive whole number"),
    ("max_tasks", "expected KEY=VALUE"),
    ("budget=", "no value after '='"),
    ("tuners.gp_boo.options.x=1", "(did you mean 'gp_bo'?); its tuners: random, gp_bo, prior"),
    ("tuners.gp_bo.optionz.x=1", "tuner 'gp_bo': unknown key 'optionz' (did you mean 'options'?)"),
    ("budget.x=1", "budget is not a mapping"),
    ("checkpoints=[1, 0]", "a checkpoint must be a positive whole number"),
])
def test_a_bad_setting_is_an_error_naming_the_setting(config, setting, words):
  with pytest.raises(SpaceError) as info:
    load_experiment(config, ["seeds=2", setting])
  assert info.value.where == f"--set {setting}"
  assert words in info.value.problem, info.value.problem


def test_errors_of_the_file_still_name_its_line(config):
  config.write_text(CONFIG.replace("seeds: 5", "seeds: -1"))
  with pytest.raises(SpaceError) as info:
    load_experiment(config, ["budget=3"])
  assert info.value.where == f"{config}:5"


def test_the_table_heading_names_the_overrides():
  result = {"experiment": "t", "tasks": ["a", "b"], "family": "f", "seeds": 2, "budget": 7,
            "pooled": True, "overrides": ["seeds=2", "budget=7"]}
  text = report.heading(result)
  assert "Settings overridden on the command line, over the config's: `seeds=2`, `budget=7`." \
      in text
  assert "overridden" not in report.heading({**result, "overrides": []})
  assert "overridden" not in report.heading({k: v for k, v in result.items() if k != "overrides"})


def test_the_command_line_refuses_a_bad_setting_before_running(config, tmp_path, capsys):
  out = tmp_path / "out"
  assert cli.main(["evaluate", str(config), "--out", str(out), "--set", "seedz=2"]) == 2
  assert "error: --set seedz=2: unknown field 'seedz'" in capsys.readouterr().err
  assert not out.exists()
  args = cli.build_parser().parse_args(["evaluate", str(config), "--out", "o", "--set",
                                        "seeds=2", "--set", "budget=3"])
  assert args.overrides == ["seeds=2", "budget=3"]


def test_a_beliefs_file_is_relative_to_the_config(tmp_path):
  (tmp_path / "family.yaml").write_text("name: f\n")
  path = tmp_path / "sub" / "exp.yaml"
  path.parent.mkdir()
  path.write_text(CONFIG.replace("family: family.yaml", "family: ../family.yaml").replace(
      "{options: {path: priors/a}}", "{options: {path: priors/a, beliefs: ../beliefs.yaml}}"))
  by = {t.label: t for t in load_experiment(path).tuners}
  assert by["prior"].options["beliefs"] == str((tmp_path / "beliefs.yaml").resolve())


@pytest.mark.parametrize("text,line,words", [
    ("pairs: [[prior, gp_bo], [prior, gp_boo]]\n", 10, "'gp_boo' is not one of this "
     "experiment's tuners (random, gp_bo, prior) (did you mean 'gp_bo'?)"),
    ("pairs: [[prior]]\n", 10, "each of pairs must be [tuner, tuner]"),
    ("pairs: [[prior, prior]]\n", 10, "'prior' is compared with itself"),
    ("pairs: prior\n", 10, "pairs must be a list"),
])
def test_bad_pairs_name_the_line(config, text, line, words):
  config.write_text(CONFIG + text)
  with pytest.raises(SpaceError) as info:
    load_experiment(config)
  assert info.value.where == f"{config}:{line}"
  assert words in info.value.problem, info.value.problem


def test_pairs_are_read(config):
  config.write_text(CONFIG + "pairs: [[prior, gp_bo], [gp_bo, random]]\n")
  assert load_experiment(config).pairs == (("prior", "gp_bo"), ("gp_bo", "random"))
