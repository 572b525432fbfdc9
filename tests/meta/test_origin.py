"""metatune.meta.origin: what proposed a told configuration, whatever the order of results."""

import jax.numpy as jnp
import numpy as np

from metatune.meta import origin
from metatune.tuners.base import Points


def _points(rows):
  values = jnp.asarray(rows, jnp.float32)
  return Points(values, values > 0.5)


def test_a_logged_proposal_is_found_with_its_code_and_a_stranger_is_not():
  log = origin.init(3, size=4)
  log = origin.record(log, jnp.asarray(0), _points([[0.1, 0.2, 0.9], [0.4, 0.6, 0.7]]),
                      jnp.asarray(0))
  log = origin.record(log, jnp.asarray(2), _points([[0.3, 0.3, 0.3]]), jnp.asarray(1))
  p = _points([[0.4, 0.6, 0.7], [0.3, 0.3, 0.3], [0.3, 0.3, 0.31]])
  codes = [int(origin.lookup(log, p.values[i], p.active[i])) for i in range(3)]
  assert codes == [0, 1, -1]
  # The same values with other active flags are another configuration.
  assert int(origin.lookup(log, p.values[1], ~p.active[1])) == -1
  # An empty log knows nothing, not even the all-zero configuration of its empty slots.
  empty = origin.init(3, size=4)
  assert int(origin.lookup(empty, jnp.zeros(3), jnp.zeros(3, bool))) == -1


def test_the_log_is_a_ring_the_oldest_proposals_are_forgotten():
  log = origin.init(2, size=3)
  for i in range(5):
    log = origin.record(log, jnp.asarray(i), _points([[0.1 * (i + 1), 0.0]]), jnp.asarray(i % 3))
  found = [int(origin.lookup(log, jnp.asarray([0.1 * (i + 1), 0.0], jnp.float32),
                             jnp.asarray([False, False]))) for i in range(5)]
  assert found == [-1, -1, 2, 0, 1]
  np.testing.assert_array_equal(np.asarray(log.code), [0, 1, 2])
