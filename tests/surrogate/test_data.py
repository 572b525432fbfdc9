"""Task tables, per-task normalization and training batches."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import SpaceError
from metatune.surrogate import data


def test_normalizer_uses_the_context_or_the_prior_below_two():
  y = jnp.asarray([1.0, 3.0, 100.0])
  loc, scale = data.normalizer(y, jnp.asarray([True, True, False]), 0.0, 1.0)
  assert float(loc) == pytest.approx(2.0) and float(scale) == pytest.approx(np.sqrt(2.0))
  loc, scale = data.normalizer(y, jnp.asarray([True, False, False]), 5.0, 7.0)
  assert (float(loc), float(scale)) == (5.0, 7.0)


def test_robust_units_ignore_a_far_outlier():
  y = jnp.asarray([1.0, 2.0, 3.0, 4.0, 1e9, 7.0])
  ok = jnp.asarray([True] * 5 + [False])
  loc, scale = data.normalizer(y, ok, 0.0, 1.0, robust=True)
  assert float(loc) == pytest.approx(3.0) and float(scale) == pytest.approx(2.0 / 1.349)
  loc, scale = data.normalizer(y, ok, 0.0, 1.0)
  assert float(scale) > 1e8  # mean and sd: every other value would normalize to about 0
  loc, scale = data.normalizer(y, jnp.asarray([True] + [False] * 5), 5.0, 7.0, robust=True)
  assert (float(loc), float(scale)) == (5.0, 7.0)


def test_make_table_keeps_curves_and_cleans_their_failures():
  v = np.zeros((1, 3, 1), np.float32)
  curve = [[[3.0, 2.0], [np.inf, 1.5], [9.0, 8.0]]]
  t = data.make_table(v, v > 0, [[2.0, 1.5, 8.0]], [[False, False, True]], ["a"], curve)
  np.testing.assert_allclose(np.asarray(t.fidelity), [0.5, 1.0])
  # A failed row and a non-finite point hold the task's worst finished final value.
  np.testing.assert_allclose(np.asarray(t.curve), [[[3.0, 2.0], [2.0, 1.5], [2.0, 2.0]]])
  assert t.has_curves and t.select(["a"]).curve.shape == (1, 3, 2)


def test_make_table_cleans_failures_and_refuses_empty_tasks():
  v = np.zeros((2, 3, 1), np.float32)
  t = data.make_table(v, v > 0, [[1.0, np.nan, 3.0], [2.0, 2.0, 5.0]],
                      [[False, False, True], [False, False, False]], ["a", "b"])
  np.testing.assert_array_equal(np.asarray(t.failed), [[False, True, True], [False] * 3])
  assert float(t.objective[0, 1]) == 1.0  # a failure is stored as the worst finished value
  assert float(t.loc[1]) == pytest.approx(3.0)
  with pytest.raises(ValueError, match="without a single finished"):
    data.make_table(v, v > 0, [[np.nan] * 3, [1.0] * 3], np.zeros((2, 3), bool), ["a", "b"])


def test_table_batches_shapes_and_context_sizes(space, table):
  fn = jax.jit(data.table_batches(space, table, batch_tasks=64, max_context=8, num_queries=10))
  b = fn(jax.random.key(0))
  assert b.x_ctx.shape[:2] == (64, 8) and b.x_q.shape[:2] == (64, 10)
  sizes = np.asarray(b.mask_ctx).sum(1)
  assert sizes.min() == 0 and sizes.max() == 8
  # Enough context: the context is standardized by its own statistics.
  big = sizes >= 2
  z = np.where(np.asarray(b.mask_ctx), np.asarray(b.z_ctx), np.nan)[big]
  np.testing.assert_allclose(np.nanmean(z, 1), 0.0, atol=1e-4)
  with pytest.raises(ValueError, match="max_context"):
    data.table_batches(space, table, 4, 20, 10)


def test_load_table_reads_a_builder_folder_and_checks_the_space(tmp_path, space, table):
  folder = tmp_path / "ds"
  (folder / "tasks").mkdir(parents=True)
  tasks = {}
  for i, t in enumerate(table.task_ids[:3]):
    np.savez(folder / "tasks" / f"{t}.npz", values=np.asarray(table.values[i]),
             active=np.asarray(table.active[i]), objective=np.asarray(table.objective[i]),
             failed=np.asarray(table.failed[i]))
    tasks[t] = {"split": "meta_train" if i < 2 else "heldout_dataset", "file": f"tasks/{t}.npz",
                "status": "done"}
  (folder / "manifest.json").write_text(json.dumps({"space_signature": space.signature,
                                                    "tasks": tasks}))
  got, split_of = data.load_table(folder, space)
  assert got.task_ids == table.task_ids[:3] and split_of["t2"] == "heldout_dataset"
  held, _ = data.load_table(folder, space, ["heldout_dataset"])
  assert held.task_ids == ("t2",)
  from metatune.tasks import default_space
  with pytest.raises(SpaceError, match="signature"):
    data.load_table(folder, default_space())
  with pytest.raises(SpaceError, match="no finished task of split"):
    data.load_table(folder, space, ["meta_valid"])
  with pytest.raises(SpaceError, match="not a dataset folder"):
    data.load_table(tmp_path / "missing", space)


def test_mixed_batches_concatenate_examples(space, table):
  a = data.table_batches(space, table, 3, 4, 5)
  b = data.table_batches(space, table.select(["t0"]), 2, 4, 5)
  batch = jax.jit(data.mixed_batches(a, b))(jax.random.key(0))
  assert batch.x_ctx.shape[0] == 5 and batch.z_q.shape == (5, 5)
