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
import re
from typing import Any

import jax
import numpy as np
from flax import nnx

from metatune.meta.errors import PriorError  # re-exported: callers catch it from here
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


# A card's policy width is bounded: 32 by default (18k parameters); 1024 is 14M parameters.
MAX_HIDDEN = 1024


def read_card(folder: str | os.PathLike) -> dict:
  """The card of the prior folder ``folder``, as a dict (nothing else is read).

  Raises:
    PriorError: no card, or one that is not a JSON object; naming the file.
  """
  path = pathlib.Path(folder) / CARD
  if not path.is_file():
    raise PriorError(f"no prior card here (is {folder} a folder written by 'metatune "
                     "meta-train'?)", str(path))
  try:
    card = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError) as e:
    raise PriorError(f"cannot read it: {e}", str(path)) from None
  except json.JSONDecodeError as e:
    raise PriorError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                     str(path)) from None
  if not isinstance(card, dict):
    raise PriorError(f"expected a JSON object, got {type(card).__name__}", str(path))
  return card


def policy_config_of(card: dict, where: str = CARD) -> pol.PolicyConfig:
  """The card's ``policy_config``, checked field by field and bounded before anything is built.

  A card is a text file that anyone can edit; its settings decide the size of the network
  built to read the policy, so they are checked here, before any allocation.

  Raises:
    PriorError: a missing, unknown or mistyped setting, or a width above `MAX_HIDDEN`.
  """
  doc = card.get("policy_config")
  if not isinstance(doc, dict):
    raise PriorError("no policy_config object on the card", where)
  fields = {f.name: f for f in dataclasses.fields(pol.PolicyConfig)}
  unknown = sorted(set(doc) - set(fields))
  if unknown:
    raise PriorError(f"policy_config: unknown setting(s) {unknown}; known: {sorted(fields)}",
                     where)
  hidden = doc.get("hidden", fields["hidden"].default)
  if not isinstance(hidden, int) or isinstance(hidden, bool) or not 1 <= hidden <= MAX_HIDDEN:
    raise PriorError(f"policy_config.hidden must be a whole number from 1 to {MAX_HIDDEN}, got "
                     f"{hidden!r}", where)
  for key in ("edit", "structure"):
    if key in doc and not isinstance(doc[key], bool):
      raise PriorError(f"policy_config.{key} must be true or false, got {doc[key]!r}", where)
  return pol.PolicyConfig(**doc)


def _brief(e: Exception, limit: int = 160) -> str:
  """An exception in one short line (tensorstore's messages run to pages)."""
  text = (str(e).splitlines() or [""])[0].split(" See full TensorStore details")[0]
  return f"{type(e).__name__}: {text[:limit]}" + ("..." if len(text) > limit else "")


def _leaf_names(tree: Any) -> dict[str, tuple]:
  def name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)
  return {name(path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_shapes(policy_dir: pathlib.Path, template: Any, config: pol.PolicyConfig) -> None:
  """The stored arrays' shapes (orbax metadata; no array is read) against the card's settings."""
  try:
    with _checkpointer() as ck:
      stored = _leaf_names(ck.metadata(os.path.abspath(policy_dir)).item_metadata)
  except Exception as e:  # pylint: disable=broad-except
    raise PriorError(f"cannot read the policy's metadata ({_brief(e)})",
                     str(policy_dir)) from None
  wanted = _leaf_names(template)
  diff = [f"{n}: stored {stored[n][0]}, the card's settings make {w[0]}"
          for n, w in wanted.items() if n in stored and stored[n][0] != w[0]]
  missing = sorted(set(wanted) - set(stored))
  extra = sorted(set(stored) - set(wanted))
  if diff or missing or extra:
    what = "; ".join(diff[:3] + ([f"missing {missing[:3]}"] if missing else []) +
                     ([f"unexpected {extra[:3]}"] if extra else []))
    raise PriorError(f"the stored policy does not match the card's policy_config {config} "
                     f"({what})", str(policy_dir))


def _checked(folder: pathlib.Path):
  card_path = str(folder / CARD)
  card = read_card(folder)
  config = policy_config_of(card, card_path)
  expected = card.get("policy_hash")
  if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{16}", expected):
    raise PriorError(f"policy_hash must be 16 hex digits, got {expected!r}", card_path)
  policy_dir = folder / "policy"
  if not policy_dir.is_dir():
    raise PriorError("no policy here (a prior folder needs the policy/ written with its card)",
                     str(policy_dir))
  graphdef, template = nnx.split(nnx.eval_shape(lambda: pol.Policy(config, rngs=nnx.Rngs(0))))
  _check_shapes(policy_dir, template, config)
  return card, config, graphdef, template


def check_prior(folder: str | os.PathLike) -> dict:
  """Checks a prior folder without reading its parameters; returns the card.

  The card (JSON, settings within bounds, a policy hash), the policy folder, and the stored
  shapes against the card's settings (from orbax's metadata; only shapes are built from the
  card, with ``nnx.eval_shape``). A command calls this before it writes anything.

  Raises:
    PriorError: see `load_prior`.
  """
  return _checked(pathlib.Path(folder))[0]


def load_prior(folder: str | os.PathLike):
  """Reads a prior: ``(graphdef, params, policy_config, card)``.

  Everything `check_prior` checks comes first; then the parameters are read and their hash
  compared with the card's. No network is built from the card's settings until then.

  Raises:
    PriorError: naming the file at fault: no card, a card that is not JSON or whose settings
      are unknown, mistyped or out of bounds, no policy folder, stored shapes that do not
      match the card, unreadable policy files, or parameters that do not match the card's
      ``policy_hash``.
  """
  folder = pathlib.Path(folder)
  card, config, graphdef, template = _checked(folder)
  policy_dir = folder / "policy"
  try:
    params = restore_tree(policy_dir, template)
  except Exception as e:  # pylint: disable=broad-except
    raise PriorError(f"cannot read the policy: its files are damaged or incomplete "
                     f"({_brief(e)})", str(policy_dir)) from None
  got = params_hash(params)
  if got != card["policy_hash"]:
    raise PriorError(f"the parameters (hash {got}) do not match the card's policy_hash "
                     f"{card['policy_hash']}: the policy or the card was changed",
                     str(policy_dir))
  return graphdef, params, config, card
