"""Where a told trial came from: a short log of recent proposals and what made each.

A study may tell results out of the order it asked for them (parallel workers), so a tuner
cannot read a result's origin from how many results came before it. The log keeps the last
``size`` proposals with a code for the regime that made them; ``tell`` looks the told
configuration up. Pure functions over a small pytree, jittable and vmappable.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from metatune.tuners.base import Points, same_config

SIZE = 256  # proposals remembered: more than a study keeps pending at once


@flax.struct.dataclass
class Origins:
  """Attributes:
    values, active: f32[S, D], bool[S, D] the last ``S`` proposals (ring buffer by position).
    code: i32[S] what made each (-1: an empty slot).
  """
  values: jax.Array
  active: jax.Array
  code: jax.Array


def init(num_params: int, size: int = SIZE) -> Origins:
  """An empty log of ``size`` proposals of ``num_params`` parameters."""
  return Origins(jnp.zeros((size, num_params), jnp.float32),
                 jnp.zeros((size, num_params), bool), jnp.full((size,), -1, jnp.int32))


def record(log: Origins, position: jax.Array, points: Points, code: jax.Array) -> Origins:
  """The log with ``points`` (a batch asked from ``position`` on) made by ``code``."""
  slots = (position + jnp.arange(points.values.shape[0])) % log.code.shape[0]
  return log.replace(values=log.values.at[slots].set(points.values),
                     active=log.active.at[slots].set(points.active),
                     code=log.code.at[slots].set(code))


def lookup(log: Origins, values: jax.Array, active: jax.Array) -> jax.Array:
  """i32[]: the code of a logged proposal equal to the configuration ``(values f32[D],
  active bool[D])`` (any one where it was proposed twice); -1 if none is."""
  match = same_config(values, active, log.values, log.active) & (log.code >= 0)
  return jnp.where(jnp.any(match), log.code[jnp.argmax(match)], -1)
