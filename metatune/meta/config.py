"""The ``meta_train`` section of a family config, read strictly into a `MetaTrainConfig`."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from metatune.networks.policy import PolicyConfig
from metatune.meta.ppo import MetaTrainConfig
from metatune.space import SpaceError
from metatune.space.model import did_you_mean


def _convert(node, name: str, want: Any, value: Any):
  args = typing.get_args(want)
  if type(None) in args:  # an optional setting
    if value is None:
      return None
    want = next(a for a in args if a is not type(None))
  if want is bool:
    ok = isinstance(value, bool)
  elif want is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif want is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  else:
    ok = isinstance(value, want)
  if not ok:
    raise node.error(f"meta_train.{name} must be {getattr(want, '__name__', want)}, got "
                     f"{value!r}")
  return value


def _fields(cls) -> dict[str, Any]:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def meta_config(node, **overrides: Any) -> MetaTrainConfig:
  """Builds the settings from a ``meta_train`` node (or None for the defaults) and overrides.

  Raises:
    SpaceError: an unknown key or a mistyped value, with the config's file and line.
  """
  values: dict[str, Any] = {}
  policy: dict[str, Any] = {}
  fields = _fields(MetaTrainConfig)
  pfields = _fields(PolicyConfig)
  if node is not None:
    for key, child in node.items():
      if key == "policy":
        for pkey, pchild in child.items():
          if pkey not in pfields:
            raise pchild.error(f"unknown key {pkey!r} in meta_train.policy"
                               f"{did_you_mean(pkey, pfields)}; allowed: {', '.join(pfields)}")
          policy[pkey] = _convert(pchild, f"policy.{pkey}", pfields[pkey], pchild.scalar())
        continue
      if key not in fields:
        raise child.error(f"unknown key {key!r} in meta_train{did_you_mean(key, fields)}; "
                          f"allowed: {', '.join(fields)}")
      values[key] = _convert(child, key, fields[key], child.scalar())
  values.update({k: v for k, v in overrides.items() if v is not None})
  try:
    return MetaTrainConfig(**values, policy=PolicyConfig(**policy))
  except ValueError as e:
    where = node.where if node is not None else "meta_train"
    raise SpaceError(f"meta_train: {e}", where) from None
