"""A prior on disk: the policy (orbax), a card (JSON) and the training report.

Layout of a prior folder::

  card.json          family, space signature, tasks seen, settings, metrics, versions, hashes
  policy/            the policy's parameters (orbax)
  metrics.jsonl      one line per meta-training iteration
  report.png         learning curves; report.md the held-out table
  checkpoints/       the training state for an exact resume (orbax)
  surrogate/         the surrogate the policy was trained in, when it was
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np
from flax import nnx

from metatune.networks import policy as pol

CARD = "card.json"


def params_hash(params: Any) -> str:
  """sha256 (16 hex digits) of the parameters' bytes in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    h.update(np.asarray(leaf).tobytes())
  return h.hexdigest()[:16]


def _checkpointer():
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  return ocp.StandardCheckpointer()


def save_tree(path: str | os.PathLike, tree: Any) -> None:
  """Writes a pytree of arrays with orbax (replacing what is there)."""
  with _checkpointer() as ck:
    ck.save(os.path.abspath(path), tree, force=True)
    ck.wait_until_finished()


def restore_tree(path: str | os.PathLike, template: Any) -> Any:
  with _checkpointer() as ck:
    return ck.restore(os.path.abspath(path), template)


def save_prior(folder: str | os.PathLike, params: Any, policy_config: pol.PolicyConfig,
               card: dict) -> dict:
  """Writes the policy and its card; returns the card with the parameters' hash."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  save_tree(folder / "policy", params)
  card = dict(card, policy_config=dataclasses.asdict(policy_config),
              policy_hash=params_hash(params))
  tmp = folder / (CARD + ".tmp")
  tmp.write_text(json.dumps(card, indent=2, default=str) + "\n")
  os.replace(tmp, folder / CARD)
  return card


def load_prior(folder: str | os.PathLike):
  """Reads a prior: ``(graphdef, params, policy_config, card)``.

  Raises:
    FileNotFoundError: naming the missing file.
    ValueError: the parameters do not match the card's hash.
  """
  folder = pathlib.Path(folder)
  card_path = folder / CARD
  if not card_path.is_file():
    raise FileNotFoundError(f"{card_path}: no prior card here (is {folder} a folder written "
                            "by 'metatune meta-train'?)")
  card = json.loads(card_path.read_text())
  config = pol.PolicyConfig(**card["policy_config"])
  graphdef, template = nnx.split(pol.Policy(config, rngs=nnx.Rngs(0)))
  params = restore_tree(folder / "policy", template)
  if params_hash(params) != card.get("policy_hash"):
    raise ValueError(f"{folder / 'policy'}: parameters do not match the card's policy_hash")
  return graphdef, params, config, card
