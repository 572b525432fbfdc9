"""The in-context meta-surrogate: a set transformer from a task's observations to predictions.

Like a prior-fitted network (Müller et al., 2022; PFNs4BO, Müller et al., 2023),
the model reads a *context* of observations of one task, tokens made of a
configuration's features (`sampling.featurize`: unit numbers, one-hot choices,
inactive parameters zeroed, plus the active mask, so conditional parameters
are modelled) and its normalized objective, and answers *queries*
(configurations alone). Context tokens attend to each other and to a few
learned register tokens (so an empty context still works); a query attends to
the registers, the context and itself only, never to other queries, so a
configuration's prediction does not depend on what else is in the batch and the
context's keys and values can be computed once (`ContextCache`) and reused for
any number of queries.

Output: why a binned ("Riemann", `bars`) distribution and not a Gaussian.
Hyperparameter objectives are bounded and skewed (accuracies pile up below a
ceiling with a long tail of broken configurations), and a context often mixes
regimes (branches of a conditional space), so a predictive distribution over a
task's normalized objective is often asymmetric or bimodal. A softmax over
bins trained with the log score fits such shapes and stays calibrated, its
half-normal tails keep every value possible, and its closed-form CDF and
quantiles give exact predictive intervals and let the environment
(`env.py`) draw a consistent function from the predictive distribution by an
inverse CDF. A second head predicts the probability that a configuration fails.

Units: objectives are normalized per task by the mean and standard deviation
of the context's finished observations (at least 2); with fewer, the caller's
``prior_loc`` and ``prior_scale`` are used (a task's mean and standard
deviation over the space when known; the model then predicts in those units).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from metatune.surrogate import bars

Z_CLIP = 10.0  # normalized context values beyond this are clipped at the input


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
  """Architecture of the meta-surrogate (static; saved as JSON).

  Attributes:
    num_features: input features per configuration (`sampling.feature_size`).
    borders: the ``num_bins + 1`` bin borders of the predictive distribution,
      in normalized units (`bars.make_borders`).
    width: token width.
    depth: transformer blocks.
    num_heads: attention heads.
    mlp_ratio: hidden width of each block's MLP, relative to ``width``.
    num_registers: learned tokens always present in the context.
    max_context: context size at which the count feature saturates.
    scale_floor: the smallest normalization scale, in objective units
      (`data.normalizer`; the value the training batches used).
    temperature: the output logits are divided by it (fitted on validation
      tasks after training, `training.calibrate_temperature`; above 1 widens).
  """
  num_features: int
  borders: tuple[float, ...]
  width: int = 64
  depth: int = 3
  num_heads: int = 4
  mlp_ratio: int = 2
  num_registers: int = 2
  max_context: int = 64
  scale_floor: float = 0.0
  temperature: float = 1.0

  @property
  def num_bins(self) -> int:
    return len(self.borders) - 1

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "SurrogateConfig":
    d = dict(d)
    d["borders"] = tuple(float(b) for b in d["borders"])
    return cls(**d)


@flax.struct.dataclass
class ContextCache:
  """A context's keys and values at every block, ``f32[L, R + K, H, W / H]``, and its mask.

  ``mask bool[R + K]``: the registers and the context slots that hold observations.
  """
  keys: jax.Array
  values: jax.Array
  mask: jax.Array


class Block(nnx.Module):
  """Pre-norm attention plus MLP; context and queries share the weights."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not a multiple of num_heads {num_heads}")
    self.num_heads = num_heads
    self.ln1 = nnx.LayerNorm(width, rngs=rngs)
    self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
    self.out = nnx.Linear(width, width, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, rngs=rngs)
    self.fc1 = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

  def _qkv(self, h):
    q, k, v = jnp.split(self.qkv(self.ln1(h)), 3, axis=-1)
    shape = h.shape[:-1] + (self.num_heads, h.shape[-1] // self.num_heads)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)

  def _finish(self, h, o):
    h = h + self.out(o.reshape(h.shape))
    return h + self.fc2(jax.nn.gelu(self.fc1(self.ln2(h))))

  def context(self, h: jax.Array, mask: jax.Array):
    """Self-attention over ``h f32[N, W]`` (masked keys); returns ``(h, keys, values)``."""
    q, k, v = self._qkv(h)
    logits = jnp.einsum("nhd,mhd->hnm", q, k) / math.sqrt(q.shape[-1])
    allowed = mask[None, None, :] | jnp.eye(h.shape[0], dtype=bool)[None]
    attn = jax.nn.softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1)
    return self._finish(h, jnp.einsum("hnm,mhd->nhd", attn, v)), k, v

  def query(self, h: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array):
    """Queries ``h f32[Q, W]`` attend to the context's keys (masked) and to themselves."""
    q, k_self, v_self = self._qkv(h)
    scale = 1.0 / math.sqrt(q.shape[-1])
    lc = jnp.einsum("qhd,mhd->qhm", q, keys) * scale
    lc = jnp.where(mask, lc, -jnp.inf)
    ls = jnp.sum(q * k_self, axis=-1, keepdims=True) * scale
    attn = jax.nn.softmax(jnp.concatenate([lc, ls], axis=-1), axis=-1)
    o = jnp.einsum("qhm,mhd->qhd", attn[..., :-1], values) + attn[..., -1:] * v_self
    return self._finish(h, o)


class MetaSurrogate(nnx.Module):
  """The network. Use it through `encode` and `query`, or `predict` in `predictive.py`.

  Example:
    >>> cfg = SurrogateConfig(num_features=6, borders=(-2., -1., 0., 1., 2.))
    >>> model = MetaSurrogate(cfg, rngs=nnx.Rngs(0))
    >>> cache = model.encode(jnp.zeros((3, 6)), jnp.zeros(3), jnp.zeros(3, bool),
    ...                      jnp.ones(3, bool))
    >>> logits, fail_logit = model.query(cache, jnp.zeros((5, 6)))
    >>> logits.shape
    (5, 4)
  """

  def __init__(self, config: SurrogateConfig, *, rngs: nnx.Rngs):
    w = config.width
    self.config = config
    self.x1 = nnx.Linear(config.num_features, w, rngs=rngs)
    self.x2 = nnx.Linear(w, w, rngs=rngs)
    self.y_embed = nnx.Linear(2, w, rngs=rngs)
    self.count_embed = nnx.Linear(2, w, rngs=rngs)
    self.registers = nnx.Param(0.02 * jax.random.normal(rngs.params(),
                                                        (config.num_registers, w)))
    self.query_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (w,)))
    self.blocks = nnx.List([Block(w, config.num_heads, config.mlp_ratio, rngs=rngs)
                            for _ in range(config.depth)])
    self.ln_f = nnx.LayerNorm(w, rngs=rngs)
    self.head = nnx.Linear(w, config.num_bins, rngs=rngs)
    self.fail_head = nnx.Linear(w, 1, rngs=rngs)

  def _embed_x(self, x):
    return self.x2(jax.nn.gelu(self.x1(x)))

  def encode(self, x: jax.Array, z: jax.Array, failed: jax.Array, mask: jax.Array
             ) -> ContextCache:
    """Runs the context through every block.

    Args:
      x: f32[K, F] features of the context configurations.
      z: f32[K] their normalized objectives (ignored where failed or masked).
      failed: bool[K] the evaluation failed.
      mask: bool[K] the slot holds an observation.

    Returns:
      The `ContextCache` for `query`.
    """
    ok = mask & ~failed
    n_ok = jnp.sum(ok).astype(jnp.float32)
    count = jnp.stack([jnp.log1p(n_ok) / math.log1p(self.config.max_context),
                       (n_ok < 2).astype(jnp.float32)])
    zin = jnp.where(ok, jnp.clip(z, -Z_CLIP, Z_CLIP) / 3.0, 0.0)
    tok = self._embed_x(x) + self.y_embed(jnp.stack([zin, failed.astype(jnp.float32)], -1))
    regs = self.registers[...] + self.count_embed(count)
    h = jnp.concatenate([regs, tok])
    full = jnp.concatenate([jnp.ones(regs.shape[0], bool), mask])
    keys, values = [], []
    for block in self.blocks:
      h, k, v = block.context(h, full)
      keys.append(k)
      values.append(v)
    return ContextCache(jnp.stack(keys), jnp.stack(values), full)

  def query(self, cache: ContextCache, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Predicts ``x f32[Q, F]`` -> ``(logits f32[Q, num_bins], fail_logit f32[Q])``."""
    h = self._embed_x(x) + self.query_token[...]
    for i, block in enumerate(self.blocks):
      h = block.query(h, cache.keys[i], cache.values[i], cache.mask)
    h = self.ln_f(h)
    return self.head(h) / self.config.temperature, self.fail_head(h)[..., 0]
