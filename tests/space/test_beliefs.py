import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import SpaceError, beliefs, io, sampling

SPACE = """
name: b
parameters:
  optimizer: {type: categorical, choices: [sgd, adam, rmsprop]}
  lr: {type: float, low: 1.0e-5, high: 1.0, log: true}
  momentum: {type: float, low: 0.0, high: 0.99, when: "optimizer == 'sgd'"}
  layers: {type: int, low: 1, high: 8}
"""


def _space(tmp_path, extra="", name="space.yaml"):
  path = tmp_path / name
  path.write_text(SPACE + extra)
  return path, io.load(str(path))


def _encode(space, configs):
  enc = [space.encode(c) for c in configs]
  return (jnp.asarray(np.stack([e[0] for e in enc])), jnp.asarray(np.stack([e[1] for e in enc])))


def test_beliefs_leave_the_space_alone_and_score_configurations(tmp_path):
  plain_path, plain = _space(tmp_path, name="plain.yaml")
  path, space = _space(tmp_path, "beliefs:\n  lr: {prefer: [1.0e-4, 1.0e-2]}\n"
                       "  optimizer: {avoid: [rmsprop]}\n  layers: {prefer: [2, 3]}\n"
                       "  momentum: {avoid: [0.95, 0.99]}\n  strength: 4\n")
  assert space.signature == plain.signature
  b = beliefs.load(path, space)
  assert b.strength == 4.0 and set(b.names) == {"lr", "optimizer", "layers", "momentum"}
  assert beliefs.load(plain_path, plain).names == ()
  configs = [({"optimizer": "adam", "lr": 1e-3, "layers": 2}, 0),
             ({"optimizer": "adam", "lr": 1e-3, "layers": 3}, 0),
             ({"optimizer": "rmsprop", "lr": 1e-3, "layers": 2}, 1),
             ({"optimizer": "adam", "lr": 0.5, "layers": 5}, 2),
             ({"optimizer": "sgd", "lr": 1e-3, "layers": 2, "momentum": 0.97}, 1),
             ({"optimizer": "sgd", "lr": 1e-3, "layers": 2, "momentum": 0.5}, 0)]
  u, a = _encode(space, [c for c, _ in configs])
  got = np.asarray(beliefs.log_density(b, space, u, a))
  np.testing.assert_allclose(got, [m * np.log(beliefs.EPSILON) for _, m in configs], rtol=1e-6)
  # No beliefs: zero everywhere.
  u2, a2 = sampling.sample(jax.random.key(0), space, 64)
  assert np.all(np.asarray(beliefs.log_density(beliefs.none(space), space, u2, a2)) == 0)


@pytest.mark.parametrize("text, message", [
    ("  lrs: {prefer: [1.0e-4, 1.0e-2]}\n", r"space.yaml:\d+.*no parameter .lrs..*did you mean .lr."),
    ("  lr: {prefers: [1.0e-4, 1.0e-2]}\n", r"space.yaml:\d+.*unknown key 'prefers'"),
    ("  lr: {prefer: [1.0e-2, 1.0e-4]}\n", r"space.yaml:\d+.*low .* is above high"),
    ("  lr: {prefer: [1.0e-4, 5.0]}\n", r"space.yaml:\d+.*beliefs.lr.prefer"),
    ("  lr: {prefer: [1.0e-4]}\n", r"space.yaml:\d+.*must be \[low, high\]"),
    ("  optimizer: {prefer: [adamw]}\n", r"space.yaml:\d+.*'adamw' is not one of"),
    ("  strength: -1\n", r"space.yaml:\d+.*strength must be a positive number"),
])
def test_bad_beliefs_name_the_file_and_line(tmp_path, text, message):
  path, space = _space(tmp_path, "beliefs:\n" + text)
  with pytest.raises(SpaceError, match=message):
    beliefs.load(path, space)


@pytest.mark.slow
def test_the_hybrid_screening_follows_a_belief(tmp_path):
  from metatune.meta.hybrid import hybrid_tuner  # pylint: disable=import-outside-toplevel
  from metatune.tuners.base import Evaluation  # pylint: disable=import-outside-toplevel
  path, space = _space(tmp_path, "beliefs:\n  lr: {prefer: [1.0e-5, 1.0e-4]}\n  strength: 20\n")
  b = beliefs.load(path, space)
  lr = space.index["lr"]
  inside = {}
  for label, belief in (("with", b), ("without", None)):
    tuner = hybrid_tuner(space, None, None, budget=12, num_initial=2, num_candidates=64,
                         fit_steps=5, refit_steps=2, beliefs=belief, belief_free_every=0)
    state = tuner.init(jax.random.key(0))
    hits = []
    for t in range(12):
      points, state = tuner.ask(jax.random.key(t), state)
      u = float(points.values[0, lr]) * (space.t_high[lr] - space.t_low[lr]) + space.t_low[lr]
      hits.append(np.exp(u) <= 1e-4 * 1.0001)
      ev = Evaluation(jnp.ones((1,), jnp.float32), jnp.zeros((1,), bool))   # a flat objective
      state, _ = tuner.tell(jax.random.key(100 + t), state, points, ev)
    inside[label] = np.mean(hits[2:])
  # A tenth of the lr range is preferred: the screening follows the belief, random does not
  # (no belief-free proposals here: with every third one free, at most two thirds could follow).
  assert inside["with"] >= 0.8 and inside["without"] <= 0.5, inside


def test_the_evidence_for_a_belief_has_the_sign_of_the_study(tmp_path):
  path, space = _space(tmp_path, "beliefs:\n  lr: {prefer: [1.0e-4, 1.0e-2]}\n"
                       "  momentum: {avoid: [0.9, 0.99]}\n")
  b = beliefs.load(path, space)
  lrs = [1e-3, 2e-3, 5e-3, 1e-5, 3e-5, 0.5, 0.9, 4e-3]       # in, in, in, out, out, out, out, in
  u, a = _encode(space, [{"optimizer": "adam", "lr": v, "layers": 2} for v in lrs])
  missed = np.asarray([not 1e-4 <= v <= 1e-2 for v in lrs])
  # The best quarter (2 of 8) meets the belief (right) or misses it (wrong).
  everyone = jnp.ones(len(lrs), bool)
  none_failed = jnp.zeros(len(lrs), bool)
  lr, momentum = space.index["lr"], space.index["momentum"]

  def z(objective, failed=none_failed, counted=everyone):
    return np.asarray(beliefs.evidence(b, space, u, a, jnp.asarray(objective, jnp.float32),
                                       failed, counted))

  right = np.where(missed, 2.0, 1.0) + 0.01 * np.arange(8)    # missing the belief is worse
  wrong = np.where(missed, 1.0, 2.0) + 0.01 * np.arange(8)    # missing it is better
  assert z(right)[lr] > 1 and z(wrong)[lr] < -1
  assert z(right)[lr] == pytest.approx(-z(wrong)[lr], rel=1e-5)
  # momentum is never active here, optimizer and layers carry no belief: no evidence.
  assert z(right)[momentum] == 0 and z(right)[space.index["layers"]] == 0
  # Fewer than 4 observations: no evidence.
  assert z(right, counted=jnp.arange(8) < 3)[lr] == 0
  # Failures are never among the best: failing where the belief is missed supports it.
  flat = np.ones(8)
  assert z(flat)[lr] == 0
  assert z(flat, failed=jnp.asarray(missed))[lr] > 1.5
  # Every configuration meets the belief: no spread, no evidence.
  u_in, a_in = _encode(space, [{"optimizer": "adam", "lr": 1e-3 * (1 + i), "layers": 2}
                               for i in range(8)])
  assert np.asarray(beliefs.evidence(b, space, u_in, a_in, jnp.arange(8.0), none_failed,
                                     everyone))[lr] == 0


def test_the_hybrid_drops_a_belief_the_study_contradicts(tmp_path):
  from metatune.meta.hybrid import hybrid_tuner  # pylint: disable=import-outside-toplevel
  from metatune.study.tuning import tuner_report  # pylint: disable=import-outside-toplevel
  from metatune.tuners.base import Evaluation  # pylint: disable=import-outside-toplevel
  path, space = _space(tmp_path, "beliefs:\n  lr: {prefer: [1.0e-5, 1.0e-3]}\n")
  b = beliefs.load(path, space)
  lr = space.index["lr"]
  weights = {}
  for sign in (1.0, -1.0):   # +1: low lr is worse (the belief is wrong); -1: it is right
    tuner = hybrid_tuner(space, None, None, budget=24, num_initial=2, num_candidates=32,
                         fit_steps=3, refit_steps=1, beliefs=b)
    state = tuner.init(jax.random.key(0))
    ask, tell = jax.jit(tuner.ask), jax.jit(tuner.tell)
    for t in range(24):
      points, state = ask(jax.random.key(t), state)
      ev = Evaluation(-sign * points.values[:, lr], jnp.zeros((1,), bool))
      state, metrics = tell(jax.random.key(100 + t), state, points, ev)
    weights[sign] = tuner_report(metrics)["tuner.belief_weight"]
    assert float(state.belief_weight[lr]) == pytest.approx(weights[sign], rel=1e-6)
  # Starts at Phi(0) = 0.5; the study moves it down for the wrong belief, up for the right one.
  assert weights[1.0] < 0.4 < 0.6 < weights[-1.0], weights
  # Without the check the weight stays 1 (πBO's fade only).
  tuner = hybrid_tuner(space, None, None, budget=4, num_initial=2, num_candidates=8,
                       fit_steps=1, refit_steps=1, beliefs=b, belief_confidence=None)
  assert np.all(np.asarray(tuner.init(jax.random.key(0)).belief_weight) == 1)
