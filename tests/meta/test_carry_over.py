"""Carrying a prior's design, profile and portfolio into a space that shares parameters with it."""

import warnings

import numpy as np
import pytest
from flax import nnx

from metatune.meta import compat, transfer
from metatune.meta import prior as prior_io
from metatune.networks import policy as pol
from metatune.space import io

SOURCE = io.loads("""
name: source
parameters:
  optimizer: {type: categorical, choices: [sgd, adam], default: adam}
  lr: {type: float, low: 1e-4, high: 1.0, log: true, default: 1e-2}
  momentum: {type: float, low: 0.0, high: 0.99, default: 0.9, when: "optimizer == 'sgd'"}
  width: {type: int, low: 8, high: 256, log: true, default: 64}
""")
# Shares optimizer, lr (narrower range), momentum and width; adds depth; has a constraint.
TARGET = io.loads("""
name: target
parameters:
  optimizer: {type: categorical, choices: [sgd, adam, rmsprop], default: sgd}
  lr: {type: float, low: 1e-3, high: 0.1, log: true, default: 1e-2}
  momentum: {type: float, low: 0.0, high: 0.99, default: 0.5, when: "optimizer == 'sgd'"}
  width: {type: int, low: 8, high: 256, log: true, default: 64}
  depth: {type: int, low: 1, high: 4, default: 2}
constraints:
  - "width <= 200"
""")


def _data(configs, profile, portfolio):
  values, active = zip(*(SOURCE.encode(c) for c in configs))
  return transfer.TransferData(np.stack(values), np.stack(active),
                               np.asarray(profile, np.float32), np.asarray(portfolio, np.int32),
                               np.zeros(len(configs), np.float32))


CONFIGS = [
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.8, "width": 32},
    {"optimizer": "adam", "lr": 0.5, "width": 100},      # lr above the target's range
    {"optimizer": "adam", "lr": 0.1, "width": 100},      # the same once lr is clipped
    {"optimizer": "adam", "lr": 0.003, "width": 250},    # breaks width <= 200
]


def test_shared_values_are_kept_and_new_parameters_take_their_defaults():
  data = _data(CONFIGS, [0.1, 0.2, 0.4, 0.0], [3, 0, 1, 2])
  out = transfer.project(data, compat.describe_space(SOURCE), TARGET)
  configs = TARGET.decode_batch(out.values, out.active)
  assert len(configs) == 2  # the last breaks the constraint, the 2nd and 3rd merge
  assert configs[0]["optimizer"] == "sgd" and configs[0]["depth"] == 2
  assert configs[0]["momentum"] == pytest.approx(0.8, abs=1e-4)
  assert configs[0]["lr"] == pytest.approx(0.05, rel=1e-4)
  assert configs[1]["lr"] == pytest.approx(0.1, rel=1e-4) and "momentum" not in configs[1]
  # Merged rows average their profile; the portfolio keeps its order without the dropped one.
  np.testing.assert_allclose(out.profile, [0.1, 0.3], rtol=1e-6)
  assert out.portfolio.tolist() == [0, 1]


def test_too_little_shared_is_none():
  other = io.loads("parameters:\n  lr: {type: float, low: 1e-4, high: 1.0, log: true}\n"
                   "  a: {type: float, low: 0, high: 1}\n  b: {type: float, low: 0, high: 1}\n")
  data = _data(CONFIGS, [0.1, 0.2, 0.4, 0.0], [0, 1])
  assert transfer.shared_parameters(compat.describe_space(SOURCE), other) == ["lr"]
  assert transfer.project(data, compat.describe_space(SOURCE), other) is None
  assert transfer.project(data, compat.describe_space(SOURCE), other, min_shared=0.3) is not None


def test_fill_clips_defaults_and_follows_conditions():
  assert TARGET.fill({"optimizer": "adam", "lr": 5.0, "momentum": 0.3, "width": 7.6,
                      "unknown": 1}) == {"optimizer": "adam", "lr": 0.1, "width": 8, "depth": 2}
  assert TARGET.fill({"optimizer": "nadam", "momentum": "x"}) == {
      "optimizer": "sgd", "lr": 0.01, "momentum": 0.5, "width": 64, "depth": 2}
  assert TARGET.fill({}) == TARGET.default_config()


@pytest.fixture(scope="module")
def prior_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("prior") / "p"
  config = pol.PolicyConfig()
  _, params = nnx.split(pol.Policy(config, rngs=nnx.Rngs(0)))
  prior_io.save_prior(folder, params, config, {
      "num_trials": 10, "space": SOURCE.name, "space_signature": SOURCE.signature,
      compat.DESCRIPTION: compat.describe_space(SOURCE)})
  transfer.save(folder, _data(CONFIGS, [0.1, 0.2, 0.4, 0.0], [3, 0, 1, 2]))
  return folder


def test_the_prior_tuner_starts_from_the_carried_portfolio(prior_folder):
  import jax  # pylint: disable=import-outside-toplevel
  from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
  with pytest.warns(compat.SpaceMismatchWarning, match="never saw: depth"):
    tuner = prior_tuner(TARGET, path=str(prior_folder), carry_over=True)
  points, _ = tuner.ask(jax.random.key(0), tuner.init(jax.random.key(1)))
  first = TARGET.decode(points.values[0], points.active[0])
  assert first["optimizer"] == "sgd" and first["lr"] == pytest.approx(0.05, rel=1e-4)
  with pytest.raises(ValueError, match="carry_over must be true or false"), pytest.warns(
      compat.SpaceMismatchWarning):
    prior_tuner(TARGET, path=str(prior_folder), carry_over="yes")


def test_carry_over_on_a_space_that_shares_too_little_warns_why(prior_folder):
  from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
  other = io.loads("parameters:\n  lr: {type: float, low: 1e-4, high: 1.0, log: true}\n"
                   "  a: {type: float, low: 0, high: 1}\n  b: {type: float, low: 0, high: 1}\n")
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    prior_tuner(other, path=str(prior_folder), carry_over=True)
  messages = [str(w.message) for w in record]
  assert any("carry_over" in m and "only 1 of the 3 parameters" in m for m in messages), messages


def test_a_transferred_kernel_says_which_parameters_matter():
  """The profile varies with lr only: lr's lengthscale comes out shorter than width's, and a
  parameter the design leaves constant (the target's depth) keeps GP-BO's prior location."""
  rng = np.random.default_rng(0)
  configs = [{"optimizer": "adam", "lr": float(10 ** rng.uniform(-4, 0)),
              "width": int(rng.integers(8, 201))} for _ in range(64)]
  lr = np.log10([c["lr"] for c in configs])
  profile = np.clip(np.abs(lr + 2.0) / 2.0, 0.0, 1.0)  # best at lr = 1e-2, width irrelevant
  data = _data(configs, profile, [int(np.argmin(profile))])
  locs = np.asarray(transfer.kernel_locs(SOURCE, data))
  names = ["optimizer=sgd", "optimizer=adam", "lr", "momentum", "width"]
  at = {n: i for i, n in enumerate(names)}
  assert locs[at["lr"]] < locs[at["width"]] - 1.0, locs
  out = transfer.project(data, compat.describe_space(SOURCE), TARGET)
  target_locs = np.asarray(transfer.kernel_locs(TARGET, out))
  depth = 6  # optimizer (3 choices), lr, momentum, width, then depth
  assert target_locs[depth] == pytest.approx(0.0, abs=1e-3)   # log of GP-BO's median, 1
  assert target_locs[3] < target_locs[5] - 1.0, target_locs      # lr against width


def test_the_prior_tuner_can_take_only_the_kernel(prior_folder):
  import jax  # pylint: disable=import-outside-toplevel
  from metatune.meta import hybrid  # pylint: disable=import-outside-toplevel
  from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
  with pytest.warns(compat.SpaceMismatchWarning, match="never saw: depth"):
    tuner = prior_tuner(TARGET, path=str(prior_folder), transfer_kernel=True)
  state = tuner.init(jax.random.key(1))
  raw = transfer.read(prior_folder)
  locs = transfer.kernel_locs(TARGET, transfer.project(raw, compat.describe_space(SOURCE),
                                                       TARGET))
  np.testing.assert_allclose(state.params.log_lengthscale, locs, rtol=1e-6)
  assert not bool(state.used.any()) and state.used.shape == (1,)  # no portfolio carried
  with pytest.raises(ValueError, match="kernel_locs has 2 entries; the space 'target' has"):
    hybrid.hybrid_tuner(TARGET, kernel_locs=(0.0, 0.0))
  with pytest.raises(ValueError, match="transfer_kernel must be true or false"), pytest.warns(
      compat.SpaceMismatchWarning):
    prior_tuner(TARGET, path=str(prior_folder), transfer_kernel=1)
  other = io.loads("parameters:\n  lr: {type: float, low: 1e-4, high: 1.0, log: true}\n"
                   "  a: {type: float, low: 0, high: 1}\n  b: {type: float, low: 0, high: 1}\n")
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    prior_tuner(other, path=str(prior_folder), transfer_kernel=True)
  assert any("transfer_kernel" in str(w.message) and "transfers no kernel" in str(w.message)
             for w in record), [str(w.message) for w in record]


def test_carry_design_leads_with_the_first_portfolio_entries_and_carries_nothing_else(
    prior_folder):
  """carry_design=1: the first ask is the portfolio's first entry carried into the target
  (the source's 4th configuration breaks a constraint there, so the carried portfolio starts
  with the sgd one); the second is random; no profile or guard comes with it."""
  import jax  # pylint: disable=import-outside-toplevel
  from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
  with pytest.warns(compat.SpaceMismatchWarning, match="never saw: depth"):
    tuner = prior_tuner(TARGET, path=str(prior_folder), carry_design=1)
  state = tuner.init(jax.random.key(1))
  asked = []
  for i in range(2):
    points, state = tuner.ask(jax.random.key(10 + i), state)
    asked.append(TARGET.decode(points.values[0], points.active[0]))
  assert asked[0]["optimizer"] == "sgd" and asked[0]["lr"] == pytest.approx(0.05, rel=1e-4)
  assert asked[0]["depth"] == 2                                        # the target's default
  assert asked[1] != asked[0]
  assert float(state.weight) == 0.5 and state.used.shape == (1,)       # no transfer data
  for bad in (-1, True, 1.5):
    with pytest.raises(ValueError, match="carry_design must be a whole number"), pytest.warns(
        compat.SpaceMismatchWarning):
      prior_tuner(TARGET, path=str(prior_folder), carry_design=bad)
  with pytest.raises(ValueError, match="carry_design and carry_over are alternatives"), \
      pytest.warns(compat.SpaceMismatchWarning):
    prior_tuner(TARGET, path=str(prior_folder), carry_design=2, carry_over=True)
  other = io.loads("parameters:\n  lr: {type: float, low: 1e-4, high: 1.0, log: true}\n"
                   "  a: {type: float, low: 0, high: 1}\n  b: {type: float, low: 0, high: 1}\n")
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    prior_tuner(other, path=str(prior_folder), carry_design=1, transfer_kernel=True)
  assert any("carry_design, transfer_kernel: the prior" in str(w.message) and
             "carries no design and transfers no kernel" in str(w.message) for w in record), \
      [str(w.message) for w in record]


def test_a_kernel_fitted_to_each_task_sees_what_the_mean_blurs(tmp_path):
  """Each task's regret depends on lr with its own optimum (1e-3 on one task, 1e-1 on the
  other), width on none: in the mean lr looks far flatter than in either task. Fitted to the
  tasks at once, lr's lengthscale is shorter than width's by more; the regrets survive a save
  and a projection, and a folder without them says so."""
  rng = np.random.default_rng(1)
  configs = [{"optimizer": "adam", "lr": float(10 ** rng.uniform(-4, 0)),
              "width": int(rng.integers(8, 201))} for _ in range(128)]
  lr = np.log10([c["lr"] for c in configs])
  regrets = np.stack([np.clip(np.abs(lr - c) / 1.5, 0, 1) for c in (-3.0, -1.0)])
  data = _data(configs, regrets.mean(0), [0])
  data = data.replace(regrets=regrets.astype(np.float32))
  at = {"lr": 2, "width": 4}   # optimizer (2 choices), lr, momentum, width
  tasks = np.asarray(transfer.kernel_locs(SOURCE, data, source="tasks"))
  profile = np.asarray(transfer.kernel_locs(SOURCE, data, source="profile"))
  assert tasks[at["lr"]] < tasks[at["width"]] - 1.0, tasks
  assert tasks[at["lr"]] < profile[at["lr"]], (tasks, profile)
  transfer.save(tmp_path, data)
  back = transfer.read(tmp_path)
  np.testing.assert_array_equal(back.regrets, data.regrets)
  out = transfer.project(back, compat.describe_space(SOURCE), TARGET)
  assert out.regrets.shape == (2, out.values.shape[0])
  with pytest.raises(ValueError, match="needs their regrets"):
    transfer.kernel_locs(SOURCE, data.replace(regrets=None), source="tasks")
  with pytest.raises(ValueError, match="must be one of"):
    transfer.kernel_locs(SOURCE, data, source="mean")


def test_kernel_fit_tasks_needs_the_kernel_and_the_regrets(prior_folder):
  from metatune.meta.prior import PriorError  # pylint: disable=import-outside-toplevel
  from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="needs transfer_kernel: true"), pytest.warns(
      compat.SpaceMismatchWarning):
    prior_tuner(TARGET, path=str(prior_folder), kernel_fit="tasks")
  with pytest.raises(ValueError, match="kernel_fit must be one of"), pytest.warns(
      compat.SpaceMismatchWarning):
    prior_tuner(TARGET, path=str(prior_folder), transfer_kernel=True, kernel_fit="mean")
  # The fixture's folder was written without regrets (as folders before they were stored).
  with pytest.raises(PriorError, match="transfer.npz: kernel_fit: a kernel fitted to the "
                     "training tasks needs their regrets"), \
      pytest.warns(compat.SpaceMismatchWarning):
    prior_tuner(TARGET, path=str(prior_folder), transfer_kernel=True, kernel_fit="tasks")
