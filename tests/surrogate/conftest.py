"""Small fixtures for the surrogate tests: a tiny conditional space and an untrained tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import io, sampling
from metatune.surrogate import SurrogateConfig, init_surrogate, make_table
from metatune.tasks import SyntheticFamily
from metatune.tuners.base import Points

TINY_SPACE = """
name: tiny
parameters:
  opt: {type: categorical, choices: [a, b]}
  lr: {type: float, low: 1e-3, high: 1.0, log: true}
  mom: {type: float, low: 0.0, high: 0.9, when: "opt == 'a'"}
  depth: {type: int, low: 1, high: 3}
"""


@pytest.fixture(scope="session")
def space():
  return io.loads(TINY_SPACE, "tiny.yaml")


@pytest.fixture(scope="session")
def family(space):
  return SyntheticFamily(space)


@pytest.fixture(scope="session")
def model_config(space):
  return SurrogateConfig(num_features=sampling.feature_size(space),
                         borders=tuple(np.linspace(-3, 3, 9)), width=16, depth=1, num_heads=2,
                         num_registers=1, max_context=16)


@pytest.fixture(scope="session")
def surrogate(space, model_config):
  return init_surrogate(jax.random.key(0), space, model_config, {"family": "tiny"})


def synthetic_table(space, family, num_tasks, num, seed):
  """``num`` random configurations on each of ``num_tasks`` tasks of ``family`` (clean values)."""

  @jax.jit
  def make(key):
    sample_key, task_key = jax.random.split(key)
    u, a = sampling.sample(sample_key, space, num_tasks * num)
    u, a = u.reshape(num_tasks, num, -1), a.reshape(num_tasks, num, -1)
    keys = jax.random.split(task_key, num_tasks)
    ys = [family.clean(family.sample(keys[i]), Points(u[i], a[i])) for i in range(num_tasks)]
    return u, a, jnp.stack(ys)

  u, a, y = make(jax.random.key(seed))
  return make_table(u, a, y, np.zeros((num_tasks, num), bool),
                    [f"t{i}" for i in range(num_tasks)])


@pytest.fixture(scope="session")
def table(space):
  """8 tasks, 24 random configurations each: a random quadratic bowl per task (numpy)."""
  num_tasks, num = 8, 24
  u, a = jax.jit(lambda k: sampling.sample(k, space, num_tasks * num))(jax.random.key(1))
  u = np.asarray(u).reshape(num_tasks, num, -1)
  a = np.asarray(a).reshape(num_tasks, num, -1)
  rng = np.random.default_rng(0)
  centre = rng.uniform(0.2, 0.8, (num_tasks, 1, u.shape[-1]))
  y = np.sum(np.where(a, (u - centre) ** 2, 0.0), axis=-1) * rng.uniform(0.5, 3, (num_tasks, 1))
  return make_table(u, a, y, np.zeros((num_tasks, num), bool),
                    [f"t{i}" for i in range(num_tasks)])
