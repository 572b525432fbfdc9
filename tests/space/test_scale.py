"""Large and deep spaces within the stated limits: long condition chains, many expressions.

Beyond 64 conditions (or constraints), or conditions nested deeper than 8, a
space evaluates them as one interpreted program (`metatune.space.program`);
these tests check that it computes what the per-expression lowering computes.
"""

import jax
import numpy as np
import pytest

from metatune.space import (Bool, Categorical, Float, Int, Ordinal, Space, SpaceError, sample)
from metatune.space import space as space_module


def _chain(n: int) -> Space:
  params = [Float("p0", 0.0, 1.0)]
  params += [Float(f"p{i}", 0.0, 1.0, when=f"p{i - 1} > 0.05") for i in range(1, n)]
  return Space(params)


def test_a_chain_of_2000_conditions_builds():
  """The recursive dependency sort once hit Python's recursion limit past ~1000 (children first)."""
  space = Space(_chain(2000).params[::-1])
  assert space.depth()["p1999"] == 1999 and space.names[-1] == "p1999"


def test_a_chain_of_500_conditions_samples_valid_configurations():
  """`space check` on this chain did not finish in 4 minutes (XLA compile of the unrolled chain)."""
  space = _chain(500)
  values, active = jax.jit(lambda k: sample(k, space, 64))(jax.random.key(0))
  active = np.asarray(active)
  for cfg, act in zip(space.decode_batch(values, active), active):
    space.validate(cfg)
    # Active up to the first value <= 0.05, inactive after it.
    assert act[:len(cfg)].all() and not act[len(cfg):].any()
  assert 0 < active.sum(axis=1).min() < 500


def _mixed(extra_constraints: int = 0) -> Space:
  return Space([
      Categorical("opt", ["sgd", "adam", "rms"]),
      Float("m", 0.0, 1.0, when="opt == 'sgd'"),
      Bool("nest", when="m > 0.5"),
      Int("layers", 1, 4),
      Int("w2", 8, 256, log=True, when="layers >= 2"),
      Float("lr", 1e-4, 1.0, log=True),
      Ordinal("bs", [16, 32, 64]),
      Float("z", -1.0, 1.0, when="not (opt in ['adam', 'rms']) or layers > 3 and bs != 32"),
      Float("q", 0.0, 1.0, when="nest or active_or(w2, 8) * layers < 64"),
  ], constraints=["active_or(w2, 8) * layers <= 512", "lr * layers < 2", "log(lr) + exp(z) > -8",
                  "max(m, 0.2) + min(abs(z), 1) < 1.8", "(m > 0.3) + (z > 0) + (layers > 2) <= 2",
                  "sqrt(layers) ** 2 >= 1", "bs not in [64] or lr < 0.5",
                  "not nest or active(w2)"] + [f"lr < {1 + i}" for i in range(extra_constraints)],
     forbidden=["opt == 'rms' and lr > 0.9", "layers / w2 > 0.2", "-z > 0.9"])


def _both(monkeypatch) -> tuple[Space, Space]:
  """The same space evaluated by per-expression graphs and by one interpreted program."""
  lowered = _mixed()
  # Decided (and cached) on first use, so before the threshold changes.
  assert lowered._activity_program is None and lowered._constraint_program is None
  monkeypatch.setattr(space_module, "_LOWERED_MAX", -1)
  interpreted = _mixed()
  assert interpreted._activity_program is not None
  assert interpreted._constraint_program is not None
  return lowered, interpreted


_U = jax.random.uniform(jax.random.key(1), (4096, 9))


def test_program_computes_the_activity_the_lowering_computes(monkeypatch):
  lowered, interpreted = _both(monkeypatch)
  want, got = map(np.asarray, jax.jit(lambda u: (lowered.activity(u),
                                                 interpreted.activity(u)))(_U))
  np.testing.assert_array_equal(got, want)
  assert 0.1 < got.mean() < 1.0  # the check is not vacuous


def test_program_computes_the_constraints_the_lowering_computes(monkeypatch):
  lowered, interpreted = _both(monkeypatch)
  act = np.asarray(jax.jit(lowered.activity)(_U))
  want, got = map(np.asarray, jax.jit(lambda u, a: (lowered.constraint_ok(u, a),
                                                    interpreted.constraint_ok(u, a)))(_U, act))
  np.testing.assert_array_equal(got, want)
  assert 0.8 < got.mean() < 1.0 and (~got.all(axis=0)).sum() >= 9  # most fail somewhere


@pytest.mark.slow
def test_many_constraints_sample_valid_configurations():
  space = _mixed(extra_constraints=100)
  assert space._constraint_program is not None
  values, active = jax.jit(lambda k: sample(k, space, 256))(jax.random.key(2))
  for cfg in space.decode_batch(values, active):
    space.validate(cfg)


def test_sum_of_two_comparisons_counts_both():
  """jnp adds bools as a logical or; the reference (and now the lowering) adds 1 + 1 = 2."""
  space = Space([Float("x", 0.0, 1.0), Float("y", 0.0, 1.0)],
                constraints=["(x > 0.5) + (y > 0.5) <= 1"])
  u = np.array([[0.9, 0.9], [0.9, 0.1]], np.float32)
  act = np.ones((2, 2), bool)
  np.testing.assert_array_equal(np.asarray(space.feasible(u, act)), [False, True])


@pytest.mark.parametrize("make, phrase", [
    (lambda: Space([Float(f"p{i}", 0.0, 1.0) for i in range(10_001)]),
     "10001 parameters, more than the limit of 10000"),
    (lambda: Space([Float("x", 0.0, 1.0)], constraints=[f"x < {i + 2}" for i in range(1001)]),
     "1001 constraints and forbidden clauses, more than the limit of 1000"),
    (lambda: Space([Categorical("c", list(range(10_001)))]), "10001 choices, more than the limit"),
    (lambda: Space([Float("x" * 300, 0.0, 1.0)]), "more than the limit of 256"),
    (lambda: Space([Float("a\nb", 0.0, 1.0)]), "control character"),
], ids=["parameters", "constraints", "choices", "name-length", "name-newline"])
def test_sizes_beyond_the_limits_are_refused(make, phrase):
  with pytest.raises(SpaceError, match=phrase):
    make()
