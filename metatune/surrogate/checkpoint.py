"""Saving and loading a meta-surrogate: ``.npz`` arrays plus JSON metadata, never pickle.

A surrogate folder::

  surrogate.json   format, space signature, architecture, provenance and training record
  space.json       the space as a metatune document
  params.npz       the network's parameters, one array per parameter path (``blocks/0/qkv/kernel``)
  contexts.npz     optional: observations of the source tasks (for `SurrogateFamily`),
                   with their learning curves when the table has them
  contexts.json    their task ids
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import metatune
from metatune.data.builder import save_npz as _write_npz
from metatune.data.builder import save_text as _write_text
from metatune.space import SpaceError, io
from metatune.surrogate.data import TaskTable
from metatune.surrogate.model import MetaSurrogate, SurrogateConfig
from metatune.surrogate.predictive import Surrogate

FORMAT = "metatune-surrogate/1"
_TABLE_FIELDS = ("values", "active", "objective", "failed", "loc", "scale")
_CURVE_FIELDS = ("curve", "fidelity")  # optional


def _path_key(path) -> str:
  return "/".join(str(p) for p in path)


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if isinstance(x, (np.ndarray, jax.Array)):
    return np.asarray(x).tolist()
  return x


def save_surrogate(folder: str | os.PathLike, surrogate: Surrogate,
                   contexts: TaskTable | None = None) -> pathlib.Path:
  """Writes ``surrogate`` (and optionally its source contexts) to ``folder`` (created if needed).

  Args:
    folder: the output folder.
    surrogate: the surrogate.
    contexts: observations of the source tasks, for building a `SurrogateFamily`
      from the folder alone.

  Returns:
    The folder.

  Example:
    >>> save_surrogate("/tmp/sur", surrogate, contexts)  # doctest: +SKIP
  """
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  flat = nnx.to_flat_state(surrogate.params)
  arrays = {_path_key(p): np.asarray(v.get_value()) for p, v in flat}
  _write_npz(folder / "params.npz", arrays)
  _write_text(folder / "space.json", io.dumps(surrogate.space))
  meta = {
      "format": FORMAT,
      "space_name": surrogate.space.name,
      "space_signature": surrogate.space.signature,
      "config": surrogate.config.to_dict(),
      "info": _jsonable(surrogate.info),
      "versions": {"metatune": metatune.__version__, "jax": jax.__version__,
                   "flax": flax.__version__},
      "contexts": contexts is not None,
  }
  _write_text(folder / "surrogate.json", json.dumps(meta, indent=2))
  if contexts is not None:
    _write_npz(folder / "contexts.npz", {f: np.asarray(getattr(contexts, f))
                                         for f in _TABLE_FIELDS + _CURVE_FIELDS
                                         if getattr(contexts, f) is not None})
    _write_text(folder / "contexts.json", json.dumps({"task_ids": list(contexts.task_ids)}))
  return folder


def load_surrogate(folder: str | os.PathLike) -> Surrogate:
  """Reads a surrogate written by `save_surrogate`.

  Checkpoints written before fidelity-aware models existed (no ``fidelity``
  in the architecture) load as models without fidelity.

  Raises:
    SpaceError: a missing or malformed file, another format, a space whose
      signature changed, or parameters that do not fit the architecture; the
      message names the file.

  Example:
    >>> surrogate = load_surrogate("/tmp/sur")  # doctest: +SKIP
  """
  folder = pathlib.Path(folder)
  meta_path = folder / "surrogate.json"
  try:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
  except OSError as e:
    raise SpaceError(f"not a surrogate folder: {e.strerror}", str(meta_path)) from None
  except json.JSONDecodeError as e:
    raise SpaceError(f"malformed JSON: {e}", str(meta_path)) from None
  if meta.get("format") != FORMAT:
    raise SpaceError(f"format {meta.get('format')!r} is not {FORMAT!r}", str(meta_path))
  space = io.load(folder / "space.json")
  if space.signature != meta.get("space_signature"):
    raise SpaceError(f"the space's signature {space.signature} differs from the recorded "
                     f"{meta.get('space_signature')}", str(folder / "space.json"))
  try:
    config = SurrogateConfig.from_dict(meta["config"])
  except (KeyError, TypeError) as e:
    raise SpaceError(f"bad 'config': {e}", str(meta_path)) from None
  graphdef, state = nnx.split(nnx.eval_shape(lambda: MetaSurrogate(config, rngs=nnx.Rngs(0))))
  params_path = folder / "params.npz"
  try:
    with np.load(params_path) as npz:
      stored = {k: npz[k] for k in npz.files}
  except OSError as e:
    raise SpaceError(f"cannot read the parameters: {e}", str(params_path)) from None
  restored = []
  for path, var in nnx.to_flat_state(state):
    key = _path_key(path)
    want = tuple(var.get_value().shape)
    if key not in stored or stored[key].shape != want:
      got = "missing" if key not in stored else f"shape {stored[key].shape}"
      raise SpaceError(f"parameter {key!r} is {got}, the architecture needs shape {want}",
                       str(params_path))
    restored.append((path, var.replace(jnp.asarray(stored[key]))))
  return Surrogate(space, config, graphdef, nnx.from_flat_state(restored), meta.get("info", {}))


def load_contexts(folder: str | os.PathLike) -> TaskTable:
  """The source contexts saved with a surrogate.

  Raises:
    SpaceError: when the folder holds none.
  """
  folder = pathlib.Path(folder)
  path = folder / "contexts.npz"
  if not path.is_file():
    raise SpaceError("this surrogate was saved without contexts (save_surrogate(..., "
                     "contexts=...))", str(folder))
  ids = json.loads((folder / "contexts.json").read_text(encoding="utf-8"))["task_ids"]
  with np.load(path) as npz:
    arrays = {f: npz[f] for f in _TABLE_FIELDS + _CURVE_FIELDS if f in npz.files}
  return TaskTable(**arrays, task_ids=tuple(ids))
