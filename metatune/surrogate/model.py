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

Learning curves: with ``SurrogateConfig.fidelity``, every token also carries
a fidelity, the fraction of the family's largest fidelity (``epoch / epochs``;
1.0 is the final value), so a context can mix observations at several
fidelities (other configurations' full or partial curves, the query
configuration's own first epochs) and a query asks for the value at any
fidelity, as in freeze-thaw / in-context curve extrapolation (ifBO, Rakotoarison
et al., 2024). Tokens of the same configuration (identical features) get a
learned attention bias per block and head, so a query finds its own curve's
points among the others' without the model having to learn an identity test.
Models without the flag (older checkpoints) are unchanged.

Units: objectives are normalized per task by the mean and standard deviation
(fidelity models: median and interquartile range, ``robust_units``)
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


Z_CLIP = 10.0  # normalized context values beyond this are clipped at the input
FIDELITY_FEATURES = 2  # inputs that `fidelity_features` adds to a fidelity model's tokens


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
    fidelity: tokens carry a fidelity feature and same-configuration attention
      biases (see the module docstring); False in checkpoints written before
      the flag existed.
    robust_units: contexts are normalized by median and IQR instead of mean
      and sd (`data.normalizer`; what curve training uses).
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
  fidelity: bool = False
  robust_units: bool = False

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
  ``x f32[K, F]``: the context's features, kept by fidelity models to find a
  query's own curve (None otherwise).
  """
  keys: jax.Array
  values: jax.Array
  mask: jax.Array
  x: jax.Array | None = None


def fidelity_features(fidelity: jax.Array) -> jax.Array:
  """``f32[..., 2]``: a fidelity fraction in (0, 1] and its log, both scaled to [0, 1]."""
  f = jnp.clip(jnp.asarray(fidelity, jnp.float32), 1e-3, 1.0)
  return jnp.stack([f, 1.0 + jnp.log(f) / math.log(1e3)], axis=-1)


def same_config(xa: jax.Array, xb: jax.Array) -> jax.Array:
  """``bool[A, B]``: which rows of ``xa f32[A, F]`` and ``xb f32[B, F]`` are one configuration."""
  return jnp.all(xa[:, None, :] == xb[None, :, :], axis=-1)


class Block(nnx.Module):
  """Pre-norm attention plus MLP; context and queries share the weights."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int, *, rngs: nnx.Rngs,
               same_bias: bool = False):
    if width % num_heads:
      raise ValueError(f"width {width} is not a multiple of num_heads {num_heads}")
    self.num_heads = num_heads
    # Attention bias between tokens of one configuration (fidelity models only), starting
    # positive: a curve's own points are the most telling ones for its later values.
    self.same_bias = nnx.Param(jnp.ones((num_heads,))) if same_bias else None
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

  def _bias(self, same: jax.Array | None) -> jax.Array | None:
    """``f32[H, ...]``: the learned bias per head where ``same`` (None without one)."""
    if same is None or self.same_bias is None:
      return None
    return jnp.where(same[None], self.same_bias[...].reshape((-1,) + (1,) * same.ndim), 0.0)

  def context(self, h: jax.Array, mask: jax.Array, same: jax.Array | None = None):
    """Self-attention over ``h f32[N, W]`` (masked keys); returns ``(h, keys, values)``.

    ``same bool[N, N]``: token pairs of one configuration (fidelity models).
    """
    q, k, v = self._qkv(h)
    logits = jnp.einsum("nhd,mhd->hnm", q, k) / math.sqrt(q.shape[-1])
    bias = self._bias(same)
    if bias is not None:
      logits = logits + bias
    allowed = mask[None, None, :] | jnp.eye(h.shape[0], dtype=bool)[None]
    attn = jax.nn.softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1)
    return self._finish(h, jnp.einsum("hnm,mhd->nhd", attn, v)), k, v

  def query(self, h: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array,
            same: jax.Array | None = None):
    """Queries ``h f32[Q, W]`` attend to the context's keys (masked) and to themselves.

    ``same bool[Q, R + K]``: context slots of the query's configuration (fidelity models).
    """
    q, k_self, v_self = self._qkv(h)
    scale = 1.0 / math.sqrt(q.shape[-1])
    lc = jnp.einsum("qhd,mhd->qhm", q, keys) * scale
    bias = self._bias(same)
    if bias is not None:
      lc = lc + jnp.moveaxis(bias, 0, 1)
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
    extra = FIDELITY_FEATURES if config.fidelity else 0
    self.x1 = nnx.Linear(config.num_features + extra, w, rngs=rngs)
    self.x2 = nnx.Linear(w, w, rngs=rngs)
    self.y_embed = nnx.Linear(2, w, rngs=rngs)
    self.count_embed = nnx.Linear(2, w, rngs=rngs)
    self.registers = nnx.Param(0.02 * jax.random.normal(rngs.params(),
                                                        (config.num_registers, w)))
    self.query_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (w,)))
    self.blocks = nnx.List([Block(w, config.num_heads, config.mlp_ratio, rngs=rngs,
                                  same_bias=config.fidelity) for _ in range(config.depth)])
    self.ln_f = nnx.LayerNorm(w, rngs=rngs)
    self.head = nnx.Linear(w, config.num_bins, rngs=rngs)
    self.fail_head = nnx.Linear(w, 1, rngs=rngs)

  def _embed_x(self, x, fidelity):
    if self.config.fidelity:
      f = jnp.ones(x.shape[:-1], jnp.float32) if fidelity is None else fidelity
      x = jnp.concatenate([x, fidelity_features(f)], axis=-1)
    elif fidelity is not None:
      raise ValueError("this surrogate was trained without fidelities (SurrogateConfig.fidelity "
                       "is False): predict final values without passing fidelities")
    return self.x2(jax.nn.gelu(self.x1(x)))

  def encode(self, x: jax.Array, z: jax.Array, failed: jax.Array, mask: jax.Array,
             fidelity: jax.Array | None = None) -> ContextCache:
    """Runs the context through every block.

    Args:
      x: f32[K, F] features of the context configurations.
      z: f32[K] their normalized objectives (ignored where failed or masked).
      failed: bool[K] the evaluation failed.
      mask: bool[K] the slot holds an observation.
      fidelity: f32[K] each observation's fidelity fraction (fidelity models
        only; default 1.0, final values).

    Returns:
      The `ContextCache` for `query`.

    Raises:
      ValueError: fidelities given to a model without the fidelity feature.
    """
    ok = mask & ~failed
    n_ok = jnp.sum(ok).astype(jnp.float32)
    count = jnp.stack([jnp.log1p(n_ok) / math.log1p(self.config.max_context),
                       (n_ok < 2).astype(jnp.float32)])
    zin = jnp.where(ok, jnp.clip(z, -Z_CLIP, Z_CLIP) / 3.0, 0.0)
    tok = self._embed_x(x, fidelity) + self.y_embed(jnp.stack([zin, failed.astype(jnp.float32)],
                                                              -1))
    regs = self.registers[...] + self.count_embed(count)
    h = jnp.concatenate([regs, tok])
    full = jnp.concatenate([jnp.ones(regs.shape[0], bool), mask])
    same = None
    if self.config.fidelity:
      same = jnp.pad(same_config(x, x), ((regs.shape[0], 0), (regs.shape[0], 0)))
    keys, values = [], []
    for block in self.blocks:
      h, k, v = block.context(h, full, same)
      keys.append(k)
      values.append(v)
    return ContextCache(jnp.stack(keys), jnp.stack(values), full,
                        x if self.config.fidelity else None)

  def query(self, cache: ContextCache, x: jax.Array, fidelity: jax.Array | None = None
            ) -> tuple[jax.Array, jax.Array]:
    """Predicts ``x f32[Q, F]`` -> ``(logits f32[Q, num_bins], fail_logit f32[Q])``.

    ``fidelity f32[Q]``: the fidelity fraction asked for (fidelity models only;
    default 1.0, the final value).
    """
    h = self._embed_x(x, fidelity) + self.query_token[...]
    same = None
    if self.config.fidelity:
      num_registers = cache.mask.shape[0] - cache.x.shape[0]
      same = jnp.pad(same_config(x, cache.x), ((0, 0), (num_registers, 0)))
    for i, block in enumerate(self.blocks):
      h = block.query(h, cache.keys[i], cache.values[i], cache.mask, same)
    h = self.ln_f(h)
    return self.head(h) / self.config.temperature, self.fail_head(h)[..., 0]
