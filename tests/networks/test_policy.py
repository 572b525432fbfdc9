"""The structured policy: valid proposals by construction, fresh and edit modes, any space."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metatune.networks import policy as pol
from metatune.networks.tokens import candidate_mask, hash_words, space_info
from metatune.space import Space, SpaceError, io, sampling
from metatune.space.model import Categorical, Float, Int
from metatune.tasks.synthetic import default_space
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

MOST_CONSTRAINED = ROOT / "configs" / "spaces" / "nn_tuning.yaml"


def _propose(space, config, num, seed, with_incumbent):
  info = space_info(space)
  graphdef, params = nnx.split(pol.Policy(config, rngs=nnx.Rngs(seed)))
  state = pol.init_state(config, info)
  if with_incumbent:
    u, a = sampling.sample(jax.random.key(seed + 1), space, 1)
    state = state.replace(inc_values=u[0], inc_active=a[0], has_inc=jnp.array(True))

  @jax.jit
  def run(key):
    policy = nnx.merge(graphdef, params)
    return jax.vmap(lambda k: pol.autoregress(policy, info, state, k))(jax.random.split(key, num))

  return run(jax.random.key(seed)), (graphdef, params, state, info)


def count_invalid(space: Space, values, active) -> int:
  """Invalid rows by the jitted checks, and by the reference validator on a subset."""
  values, active = np.asarray(values), np.asarray(active)
  act = np.asarray(space.activity(values))
  canon = np.asarray(space.canonical(values, active))
  feasible = np.asarray(space.feasible(values, active))
  bad = (act != active).any(-1) | (np.abs(canon - values) > 1e-6).any(-1) | ~feasible
  for cfg in space.decode_batch(values[:500], active[:500]):
    try:
      space.validate(cfg)
    except SpaceError:
      bad[0] = True
  return int(bad.sum())


# Fresh mode's 2,048-sample check is slow-marked (the 1e5 test below covers both modes); edit
# mode, which samples fresh values and keeps, runs by default.
@pytest.mark.parametrize("edit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_proposals_valid_on_most_constrained_space(edit):
  space = io.load(MOST_CONSTRAINED)
  (action, logp, ent), _ = _propose(space, pol.PolicyConfig(edit=edit), 2048, 0, True)
  assert count_invalid(space, action.values, action.active) == 0
  assert np.all(np.isfinite(np.asarray(logp))) and np.all(np.asarray(ent) > 0)
  # Dead ends are rare and still produce valid configurations.
  assert float(action.dead_end.mean()) < 0.05
  if edit:
    assert np.any(np.asarray(action.first) == 0), "edit mode never kept a value"
  else:
    assert not np.any((np.asarray(action.first) == 0) & np.asarray(action.active))


@pytest.mark.slow
@pytest.mark.parametrize("edit", [False, True])
def test_1e5_proposals_valid(edit):
  space = io.load(MOST_CONSTRAINED)
  invalid = total = 0
  for seed in range(4):
    (action, _, _), _ = _propose(space, pol.PolicyConfig(edit=edit), 25_000, seed, seed % 2 == 0)
    invalid += count_invalid(space, action.values, action.active)
    total += action.values.shape[0]
  assert total >= 100_000 and invalid == 0


def test_rescoring_matches_sampling():
  space = default_space()
  (action, logp, _), (graphdef, params, state, info) = _propose(
      space, pol.PolicyConfig(), 64, 3, True)
  policy = nnx.merge(graphdef, params)
  again = jax.vmap(lambda a: pol.autoregress(policy, info, state, None, a)[1])(action)
  np.testing.assert_allclose(np.asarray(again), np.asarray(logp), rtol=1e-5, atol=1e-5)


def test_masks_forbid_what_constraints_forbid():
  space = Space([Categorical("opt", ["sgd", "adam"]), Float("lr", 1e-5, 1.0, log=True)],
                forbidden=["opt == 'sgd' and lr > 0.01"])
  info = space_info(space)
  u = jnp.asarray([space.mids[0, 0], 0.0])   # sgd
  cand = jnp.linspace(0.0, 1.0, 11)
  mask = np.asarray(candidate_mask(info, jnp.asarray(1), u, cand))
  lr = np.exp(np.log(1e-5) + np.asarray(cand) * (np.log(1.0) - np.log(1e-5)))
  np.testing.assert_array_equal(mask, lr <= 0.01 + 1e-9)
  u_adam = jnp.asarray([space.mids[0, 1], 0.0])
  assert np.all(np.asarray(candidate_mask(info, jnp.asarray(1), u_adam, cand)))


def test_one_policy_acts_on_spaces_of_different_shapes():
  config = pol.PolicyConfig()
  small = Space([Categorical("optimizer", ["sgd", "adam"]), Int("num_layers", 1, 3)])
  graphdef, params = nnx.split(pol.Policy(config, rngs=nnx.Rngs(0)))
  policy = nnx.merge(graphdef, params)
  for space in (small, default_space()):
    info = space_info(space)
    action, _, _ = pol.autoregress(policy, info, pol.init_state(config, info), jax.random.key(1))
    assert action.values.shape == (space.num_params,)
    assert count_invalid(space, action.values[None], action.active[None]) == 0


def test_structure_off_blanks_only_the_structure_features():
  space = default_space()
  info = space_info(space)
  conditional = np.asarray(info.tokens.desc)[:, 6] > 0
  assert conditional.any() and not conditional.all()
  on = pol.Policy(pol.PolicyConfig(), rngs=nnx.Rngs(0))
  off = pol.Policy(pol.PolicyConfig(structure=False), rngs=nnx.Rngs(0))
  (p_on, c_on), (p_off, c_off) = on.embed(info), off.embed(info)
  np.testing.assert_array_equal(c_on, c_off)           # choices are not structure
  # Blank structure: a parameter's embedding no longer depends on whether it is conditional.
  flat = info.tokens.desc.at[:, 6:8].set(0.0)
  np.testing.assert_allclose(p_off, jnp.tanh(on.param_in(flat)), atol=1e-6)
  assert np.abs(np.asarray(p_on - p_off))[conditional].max() > 1e-3


def test_name_hash_is_stable_and_shares_words():
  a, b = hash_words("optimizer.sgd.momentum"), hash_words("sgd_momentum")
  np.testing.assert_allclose(a, hash_words("optimizer.sgd.momentum"))
  assert float(a @ b) > 0.5


def test_comparable_column_matches_the_space():
  from metatune.networks.tokens import comparable_column  # pylint: disable=import-outside-toplevel
  space = io.load(MOST_CONSTRAINED)
  u = jax.random.uniform(jax.random.key(0), (257, space.num_params))
  u = u.at[0].set(0.0).at[1].set(1.0)
  want = np.asarray(jax.jit(space.comparable)(u))
  column = jax.jit(lambda dd, c: comparable_column(space, dd, c))
  for d in range(space.num_params):
    # Equal up to an ulp of exp (XLA may fuse differently); integer and choice columns exactly.
    np.testing.assert_allclose(np.asarray(column(d, u[:, d])), want[:, d], rtol=2e-6)


def test_step_specialized_masks_match_the_general_mask():
  """The per-step branches (static ``d``) decide exactly what the traced-``d`` mask decides."""
  space = io.load(MOST_CONSTRAINED)
  info = space_info(space)
  u, _ = sampling.sample(jax.random.key(0), space, 64)
  cand = jnp.concatenate([jnp.linspace(0.0, 1.0, 33), jax.random.uniform(jax.random.key(1), (31,))])
  _, mask_fns = pol._step_branches(info)  # pylint: disable=protected-access
  _, mask_idx = pol._switch_tables(info)  # pylint: disable=protected-access
  special = jax.jit(jax.vmap(lambda uu: jnp.stack([mask_fns[i](uu, cand) for i in mask_idx])))(u)
  general = jax.jit(jax.vmap(lambda uu: jax.vmap(lambda d: candidate_mask(info, d, uu, cand))(
      jnp.arange(space.num_params))))(u)
  for d in range(space.num_params):
    np.testing.assert_array_equal(np.asarray(special[:, d]), np.asarray(general[:, d]),
                                  err_msg=f"step {d} ({space.names[d]})")
  act_fns, _ = pol._step_branches(info)  # pylint: disable=protected-access
  act_idx, _ = pol._switch_tables(info)  # pylint: disable=protected-access
  stepwise = jax.jit(jax.vmap(lambda uu: jnp.stack([act_fns[i](uu) for i in act_idx])))(u)
  np.testing.assert_array_equal(np.asarray(stepwise), np.asarray(space.activity(u)))
