"""Save/load: npz + JSON (no pickle), identical predictions after a round trip, named errors."""

import dataclasses
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import SpaceError
from metatune.surrogate import (load_contexts, load_surrogate, predict, predict_curve,
                                save_surrogate)
from metatune.tuners.base import Points


def test_round_trip_keeps_predictions_space_and_contexts(tmp_path, space, surrogate, table):
  folder = save_surrogate(tmp_path / "s", surrogate, contexts=table)
  names = sorted(p.name for p in folder.iterdir())
  assert names == ["contexts.json", "contexts.npz", "params.npz", "space.json", "surrogate.json"]
  with zipfile.ZipFile(folder / "params.npz") as z:  # plain .npy members, never pickled objects
    assert all(n.endswith(".npy") for n in z.namelist())
  meta = json.loads((folder / "surrogate.json").read_text())
  assert meta["space_signature"] == space.signature and meta["info"]["family"] == "tiny"
  loaded = load_surrogate(folder)
  assert loaded.space.signature == space.signature and loaded.config == surrogate.config
  u, a = np.asarray(table.values[0]), np.asarray(table.active[0])

  @jax.jit
  def logits(params):
    s = dataclasses.replace(surrogate, params=params)
    return predict(s, Points(u[:4], a[:4]), jnp.arange(4.0), jnp.zeros(4, bool),
                   Points(u[4:], a[4:])).logits

  np.testing.assert_array_equal(np.asarray(logits(loaded.params)),
                                np.asarray(logits(surrogate.params)))
  ctx = load_contexts(folder)
  assert ctx.task_ids == table.task_ids
  np.testing.assert_array_equal(np.asarray(ctx.objective), np.asarray(table.objective))


def test_missing_folder_and_wrong_shapes_are_named(tmp_path, surrogate):
  with pytest.raises(SpaceError, match="not a surrogate folder"):
    load_surrogate(tmp_path / "nothing")
  folder = save_surrogate(tmp_path / "s", surrogate)
  with np.load(folder / "params.npz") as z:
    arrays = {k: z[k] for k in z.files}
  key = next(k for k in arrays if k.endswith("head/kernel") and not k.startswith("fail"))
  arrays[key] = np.zeros((3, 3), np.float32)
  np.savez(folder / "params.npz", **arrays)
  with pytest.raises(SpaceError, match=r"params\.npz.*head/kernel.*shape"):
    load_surrogate(folder)
  with pytest.raises(SpaceError, match="without contexts"):
    load_contexts(folder)


def test_a_changed_space_is_refused(tmp_path, surrogate):
  folder = save_surrogate(tmp_path / "s", surrogate)
  doc = json.loads((folder / "space.json").read_text())
  doc["parameters"]["lr"]["high"] = 2.0
  (folder / "space.json").write_text(json.dumps(doc))
  with pytest.raises(SpaceError, match="signature"):
    load_surrogate(folder)


def test_checkpoints_without_the_fidelity_flag_load_as_before(tmp_path, surrogate, table):
  folder = save_surrogate(tmp_path / "old", surrogate)
  meta = json.loads((folder / "surrogate.json").read_text())
  for key in ("fidelity", "robust_units"):  # as written before the flags existed
    del meta["config"][key]
  (folder / "surrogate.json").write_text(json.dumps(meta))
  loaded = load_surrogate(folder)
  assert not loaded.config.fidelity and not loaded.config.robust_units
  u, a, y = table.values[0], table.active[0], table.objective[0]
  ctx, queries = Points(u[:8], a[:8]), Points(u[8:], a[8:])

  @jax.jit
  def logits(params):
    s = dataclasses.replace(surrogate, params=params)
    return predict(s, ctx, y[:8], jnp.zeros(8, bool), queries).logits

  np.testing.assert_array_equal(np.asarray(logits(loaded.params)),
                                np.asarray(logits(surrogate.params)))
  with pytest.raises(ValueError, match="trained on learning curves"):
    predict_curve(loaded, ctx, jnp.ones(8), y[:8], jnp.zeros(8, bool), queries, jnp.ones(1))
  with pytest.raises(ValueError, match="without fidelities"):
    jax.jit(lambda: predict(loaded, ctx, y[:8], jnp.zeros(8, bool), queries,
                            query_fidelity=jnp.ones(16)))()
