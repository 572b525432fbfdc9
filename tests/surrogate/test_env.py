"""The surrogate environment: SyntheticFamily's interface, consistent in an episode, jittable."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import sampling
from metatune.surrogate import EnvConfig, SurrogateFamily, SurrogateTask, bars
from metatune.tuners import random_search, run_tuning
from metatune.tuners.base import Evaluation, Points


@pytest.fixture(scope="module")
def env(space, surrogate, table):
  return SurrogateFamily(space, surrogate, table, EnvConfig(num_context=10, noise=0.05,
                                                            num_tasks=5))


@pytest.fixture(scope="module")
def points(space):
  u, a = sampling.sample(jax.random.key(7), space, 12)
  return Points(u, a)


def test_same_method_names_and_signatures_as_the_synthetic_family(env, family):
  for name in ("sample", "clean", "evaluate", "reference", "splits", "task"):
    assert callable(getattr(env, name)) and callable(getattr(family, name))
  for name in ("sample", "clean", "evaluate"):
    assert (list(inspect.signature(getattr(env, name)).parameters) ==
            list(inspect.signature(getattr(family, name)).parameters))


def test_vmapped_episodes_are_consistent_and_noisy(env, points):
  @jax.jit
  def run(seed, pts):
    task_key, eval_key = jax.random.split(jax.random.key(seed))
    tasks = jax.vmap(env.sample)(jax.random.split(task_key, 4))
    clean = jax.vmap(env.clean, in_axes=(0, None))(tasks, pts)
    ev = jax.vmap(env.evaluate, in_axes=(0, 0, None))(jax.random.split(eval_key, 4), tasks, pts)
    return tasks, clean, ev

  tasks, whole, ev = run(0, points)
  assert isinstance(tasks, SurrogateTask) and tasks.loc.shape == (4,)
  whole = np.asarray(whole)
  assert whole.shape == (4, 12)
  finite = np.isfinite(whole)
  assert finite.any(axis=1).all()  # an untrained failure head fails about half
  both = finite[0] & finite[1]
  assert both.any() and not np.allclose(whole[0, both], whole[1, both])  # episodes differ
  # Same configuration, same value, whatever else is in the batch.
  other = Points(points.values.at[1:].set(points.values[5]),
                 points.active.at[1:].set(points.active[5]))
  _, again, _ = run(0, other)
  again = np.asarray(again)
  np.testing.assert_allclose(again[:, 0], whole[:, 0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(again[:, 1:], whole[:, 5:6].repeat(11, 1), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.isnan(again[:, 0]), np.isnan(whole[:, 0]))
  assert isinstance(ev, Evaluation) and ev.objective.shape == (4, 12)
  ok = ~np.asarray(ev.failed)
  np.testing.assert_array_equal(ok, np.isfinite(whole))
  diff = (np.asarray(ev.objective) - whole)[ok]
  assert 0 < np.abs(diff).max() < 10 * float(np.max(tasks.noise))
  # Same key, same result.
  np.testing.assert_array_equal(np.asarray(run(0, points)[2].objective), np.asarray(ev.objective))


def test_draw_scale_zero_is_the_predictive_median(space, surrogate, table, points):
  env0 = SurrogateFamily(space, surrogate, table, EnvConfig(num_context=10, draw_scale=0.0,
                                                            failures=False))

  @jax.jit
  def both(key):
    task = env0.sample(key)
    logits, _ = surrogate.query(task.cache, sampling.featurize(space, points.values,
                                                               points.active))
    median = task.loc + task.scale * bars.quantile(surrogate.borders, logits, 0.5)
    return env0.clean(task, points), median

  got, want = both(jax.random.key(3))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_failures_come_back_flagged(space, surrogate, table, points):
  # A failure head biased to always fail: every configuration fails.
  params = jax.tree.map(lambda x: x, surrogate.params)
  params["fail_head"]["bias"] = params["fail_head"]["bias"].replace(jnp.full((1,), 30.0))
  env = SurrogateFamily(space, dataclasses.replace(surrogate, params=params), table,
                        EnvConfig(num_context=10))

  @jax.jit
  def run(key):
    task_key, eval_key = jax.random.split(key)
    task = env.sample(task_key)
    return env.evaluate(eval_key, task, points)

  ev = run(jax.random.key(0))
  assert np.all(np.asarray(ev.failed)) and np.all(np.isnan(np.asarray(ev.objective)))


@pytest.mark.slow
def test_fixed_tasks_as_a_task_family(env, points):
  ids = env.splits()["meta_train"]
  assert len(ids) == 5
  task = env.task(ids[0])
  assert task.info["source"] in env.contexts.task_ids
  evaluate = jax.jit(task.evaluate)
  m1 = evaluate(jax.random.key(0), points)
  np.testing.assert_array_equal(np.asarray(evaluate(jax.random.key(0), points).objective),
                                np.asarray(m1.objective))
  with pytest.raises(ValueError, match="unknown task"):
    env.task("surrogate-0099")


def test_bad_settings_are_named(space, surrogate, table):
  with pytest.raises(ValueError, match="num_context"):
    SurrogateFamily(space, surrogate, table, EnvConfig(num_context=1000))
  from metatune.tasks import default_space
  with pytest.raises(ValueError, match="space"):
    SurrogateFamily(default_space(), surrogate, table)


@pytest.mark.slow
def test_runs_inside_run_tuning_under_vmap(env, space):
  tuner = random_search(space)
  tasks = jax.vmap(env.sample)(jax.random.split(jax.random.key(0), 2))

  def run(key, task):
    _, trace = run_tuning(key, tuner, lambda k, p: env.evaluate(k, task, p), 3)
    return trace.best

  best = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), 2), tasks)
  assert best.shape == (2, 3) and np.all(np.diff(np.asarray(best), axis=1) <= 0)


@pytest.mark.slow
def test_reference_bounds_random_values(env, points):
  task = env.sample(jax.random.key(4))
  opt, med, worst = jax.jit(lambda k: env.reference(k, task, num=256, refine=3))(
      jax.random.key(5))
  vals = np.asarray(jax.jit(env.clean)(task, points))
  vals = vals[np.isfinite(vals)]
  assert float(opt) <= float(med) <= float(worst)
  assert float(opt) <= vals.min() + 1e-5


@pytest.mark.slow  # compiles a PPO iteration (about a minute on 2 cores)
def test_meta_training_runs_in_the_surrogate_environment(env):
  from metatune.meta.ppo import MetaTrainConfig, MetaTrainer  # pylint: disable=import-outside-toplevel
  trainer = MetaTrainer(env, MetaTrainConfig(
      num_envs=4, num_trials=3, num_updates=2, num_minibatches=2, update_epochs=1,
      reference_samples=128, reference_refine=1))
  state, metrics = trainer.step(trainer.init())
  assert int(state.update) == 1
  assert 0.0 <= float(metrics["final_regret"]) <= 1.0
  assert np.isfinite(float(metrics["pg_loss"]))


def test_episodes_by_index_are_fixed(env):
  a = env.task_params(jnp.asarray(3))
  b = env.task_params(jnp.asarray(3))
  assert all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert len(env.task_indices("meta_train")) == env.config.num_tasks
