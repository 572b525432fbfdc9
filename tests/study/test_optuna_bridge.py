"""MetatuneSampler: an Optuna study proposes through a metatune tuner, its objective unchanged."""

import math
import pathlib
import warnings

import pytest

optuna = pytest.importorskip("optuna")

from metatune.space import SpaceError, io  # noqa: E402
from metatune.study.optuna_bridge import CONFIG_ATTR, MetatuneSampler  # noqa: E402
from metatune.tuners import gp_bo, random_search  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPACE_FILE = ROOT / "configs" / "spaces" / "nn_tuning.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def conditional_objective(trial):
  """An ordinary Optuna objective over nn_tuning.yaml that asks only for active parameters."""
  opt = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
  lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
  score = (math.log10(lr) + 2.5) ** 2
  if opt == "sgd":
    m = trial.suggest_float("sgd.momentum", 0.0, 0.99)
    if m > 0.5:
      trial.suggest_categorical("sgd.nesterov", [True, False])
    score += (m - 0.9) ** 2
  if opt in ("adam", "adamw"):
    score += (trial.suggest_float("adam.b1", 0.8, 0.999) - 0.9) ** 2
    trial.suggest_float("adam.b2", 0.9, 0.9999)
    trial.suggest_float("adam.eps", 1e-10, 1e-6, log=True)
  if opt == "adamw":
    trial.suggest_float("adamw.weight_decay", 1e-6, 0.1, log=True)
  if opt == "rmsprop":
    trial.suggest_float("rmsprop.decay", 0.8, 0.999)
  schedule = trial.suggest_categorical("schedule", ["constant", "cosine", "exponential"])
  if schedule != "constant":
    trial.suggest_int("schedule.warmup", 0, 2000)
  if schedule == "exponential":
    trial.suggest_float("schedule.decay_rate", 0.5, 0.999)
  layers = trial.suggest_int("num_layers", 1, 4)
  for k in range(1, layers + 1):
    score += 1e-3 * math.log(trial.suggest_int(f"width.l{k}", 16, 1024, log=True))
  trial.suggest_categorical("activation", ["relu", "gelu", "silu", "tanh"])
  score += trial.suggest_float("dropout", 0.0, 0.5)
  trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256, 512, 1024])
  return score


def test_conditional_objective_runs_and_every_trial_is_a_valid_configuration():
  space = io.load(SPACE_FILE)
  sampler = MetatuneSampler(SPACE_FILE, "quasi_random", seed=1)
  study = optuna.create_study(sampler=sampler)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no fallback: every parameter comes from metatune
    study.optimize(conditional_objective, n_trials=30)
  trials = study.get_trials()
  assert len(trials) == 30 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
  for t in trials:
    cfg = space.validate(t.params)  # raises on a missing, inactive or out-of-range value
    assert cfg == space.validate(t.system_attrs[CONFIG_ATTR])
    assert cfg["batch_size"] * cfg["width.l1"] <= 262144  # a constraint Optuna cannot express
  # The proposals come from the quasi-random sequence: no two trials share a configuration,
  # and conditional branches are explored (several optimizers).
  assert len({tuple(sorted(t.params.items())) for t in trials}) == 30
  assert len({t.params["optimizer"] for t in trials}) >= 3
  assert sampler.num_told == 29  # every finished trial told once, before trial 30 started


def quadratic_space():
  return io.loads("""
name: quad
parameters:
  x: {type: float, low: -3.0, high: 3.0}
  y: {type: float, low: -3.0, high: 3.0}
""")


@pytest.fixture(scope="module")
def gp_tuner():
  """One GP-BO tuner for the module, so its jitted ask and tell compile once."""
  return gp_bo(quadratic_space(), history_size=16, num_candidates=256, fit_steps=60,
               num_initial=5)


def test_gp_backed_sampler_improves_on_its_random_initial_design(gp_tuner):
  space = gp_tuner.space
  tuner = gp_tuner
  study = optuna.create_study(sampler=MetatuneSampler(space, tuner, seed=0))

  def objective(trial):
    x = trial.suggest_float("x", -3.0, 3.0)
    y = trial.suggest_float("y", -3.0, 3.0)
    return (x - 0.7) ** 2 + (y + 1.1) ** 2

  study.optimize(objective, n_trials=14)
  values = [t.value for t in study.get_trials()]
  first5 = min(values[:5])
  later = min(values[5:])
  assert later < first5
  assert later < 0.1, f"GP-BO best after 9 model-based trials: {later:.3g}"


def test_maximized_study_is_negated_for_the_tuner(gp_tuner):
  study = optuna.create_study(direction="maximize",
                              sampler=MetatuneSampler(gp_tuner.space, gp_tuner, seed=1))
  study.optimize(lambda t: -((t.suggest_float("x", -3, 3) - 1) ** 2 +
                             t.suggest_float("y", -3, 3) ** 2), n_trials=12)
  values = [t.value for t in study.get_trials()]
  assert max(values[5:]) > max(values[:5])


def test_unknown_parameter_falls_back_to_random_with_one_warning():
  space = quadratic_space()
  study = optuna.create_study(sampler=MetatuneSampler(space, "random"))

  def objective(trial):
    x = trial.suggest_float("x", -3.0, 3.0)
    z = trial.suggest_float("extra", 10.0, 20.0)
    assert 10.0 <= z <= 20.0
    return x ** 2

  with pytest.warns(UserWarning, match="'extra'.*not a parameter of the metatune space") as rec:
    study.optimize(objective, n_trials=4)
  assert sum("'extra'" in str(w.message) for w in rec) == 1
  assert len({t.params["extra"] for t in study.get_trials()}) == 4


def test_value_outside_the_objectives_distribution_falls_back():
  space = quadratic_space()
  sampler = MetatuneSampler(space, "random", seed=2)
  study = optuna.create_study(sampler=sampler)
  with pytest.warns(UserWarning) as rec:
    study.optimize(lambda t: t.suggest_float("x", 100.0, 101.0) + t.suggest_float("y", -3, 3),
                   n_trials=3)
  messages = [str(w.message) for w in rec]
  assert sum("'x'" in m and "not in the objective's distribution" in m for m in messages) == 1
  # The evaluated points lie outside the space: the tuner is not told them (warned once).
  assert sum("the tuner does not learn from it" in m for m in messages) == 1
  state = sampler._state  # pylint: disable=protected-access
  assert sampler.num_told == 0 and int(state.history.count) == 0
  assert all(100.0 <= t.params["x"] <= 101.0 for t in study.get_trials())


def test_failed_trials_are_told_as_failures_and_the_study_goes_on():
  space = quadratic_space()
  sampler = MetatuneSampler(space, random_search(space))
  study = optuna.create_study(sampler=sampler)

  def objective(trial):
    x = trial.suggest_float("x", -3.0, 3.0)
    trial.suggest_float("y", -3.0, 3.0)
    if trial.number % 2:
      raise RuntimeError("boom")
    return x

  study.optimize(objective, n_trials=6, catch=(RuntimeError,))
  study.optimize(objective, n_trials=1, catch=(RuntimeError,))
  state = sampler._state  # pylint: disable=protected-access
  assert int(state.history.count) == 6
  assert int(state.history.num_failed) == 3


def test_bad_arguments_raise_clear_errors(tmp_path):
  space = quadratic_space()
  with pytest.raises(ValueError, match="tuner: unknown tuner 'nope'"):
    MetatuneSampler(space, "nope")
  other = io.loads("parameters: {a: {type: float, low: 0, high: 1}}")
  with pytest.raises(ValueError, match="tuner: its space"):
    MetatuneSampler(space, random_search(other))
  with pytest.raises(ValueError, match="space must be a metatune Space"):
    MetatuneSampler({"x": 1})
  bad = tmp_path / "bad.yaml"
  bad.write_text("parameters:\n  x: {type: flot, low: 0, high: 1}\n")
  with pytest.raises(SpaceError, match="bad.yaml"):
    MetatuneSampler(bad)
  study = optuna.create_study(directions=["minimize", "minimize"],
                              sampler=MetatuneSampler(space))
  with pytest.raises(ValueError, match="single-objective"):
    study.optimize(lambda t: (t.suggest_float("x", -3, 3), 0.0), n_trials=1)
