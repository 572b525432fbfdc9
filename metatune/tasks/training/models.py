"""Networks whose depth, widths and activation are data, padded to the maxima and masked.

Every array has the shape of the largest architecture of the space, and an
`Arch` (numbers, not Python values) says which part is live: units past a
layer's width are multiplied by zero, layers past ``num_layers`` pass their
input through unchanged (``jnp.where``), and the activation is selected by
index. So one compiled function initializes and applies every architecture of
the space, and a batch of different architectures is one ``vmap``.

Written as plain functions on explicit parameter pytrees rather than flax NNX
modules: initialization scales by the *live* fan-in, which is a traced value
per configuration, and the masks thread through every layer; with NNX both
would be extra call arguments of every module and the vmapped initialization
would need ``nnx.vmap``/``nnx.split`` per configuration, for no gain.

Models:
  mlp: dense layers of ``widths[k]`` units.
  cnn: convolutions (3x3 on images, width 5 on 1-D signals) of
    ``ceil(widths[k] / 16)`` channels, the first with stride 2 on inputs of 16
    or more positions, then a dense head on the flattened features.
  resmlp: a residual MLP (pre-norm blocks ``h + B act(A norm(h))``) of model
    width ``widths[0]`` and block hidden widths ``widths[k]``; the family keeps
    it for held-out-model evaluation. Two parameters of its own, which no other
    model reads (`Arch.branch_scale`, `Arch.norm`), make it a model with
    parameters that priors of the other models never saw.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import flax.struct
import jax
import jax.numpy as jnp

MODELS = ("mlp", "cnn", "resmlp")
ACTIVATIONS = ("relu", "gelu", "tanh")
CHANNEL_DIVISOR = 16  # widths per cnn channel (16..128 units -> 1..8 channels)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The static shape of a model (hashable; one compiled function per spec).

  Attributes:
    kind: one of ``MODELS``.
    num_features: length of a flat input example.
    num_outputs: classes, or 1 for regression.
    max_layers: the deepest architecture.
    max_width: the widest layer (units; the cnn divides it by 16 for channels).
    shape: the example's shape for the cnn, ``(H, W, 1)`` or ``(T, 1)``.
  """
  kind: str
  num_features: int
  num_outputs: int
  max_layers: int = 4
  max_width: int = 128
  shape: tuple[int, ...] | None = None

  def __post_init__(self):
    if self.kind not in MODELS:
      raise ValueError(f"unknown model {self.kind!r}; expected one of {', '.join(MODELS)}")
    if self.kind == "cnn" and (self.shape is None or len(self.shape) not in (2, 3)):
      raise ValueError("the cnn needs an image (H, W, 1) or signal (T, 1) shape")

  @property
  def max_units(self) -> int:
    return -(-self.max_width // CHANNEL_DIVISOR) if self.kind == "cnn" else self.max_width

  @property
  def conv_stride(self) -> int:
    return 2 if self.kind == "cnn" and self.shape[0] >= 16 else 1

  @property
  def conv_positions(self) -> int:
    """Positions per channel after the first (possibly strided) convolution."""
    return math.prod(-(-s // self.conv_stride) for s in self.shape[:-1])


@flax.struct.dataclass
class Arch:
  """One architecture, as numbers (vmappable).

  Attributes:
    num_layers: i32[] live layers (1..max_layers).
    widths: i32[max_layers] units per layer; entries past ``num_layers`` are ignored.
    activation: i32[] index into ``ACTIVATIONS``.
    dropout: f32[] drop probability after each hidden activation.
    branch_scale: f32[] resmlp only: the initial scale of each block's output projection
      ``B`` (0.5 unless the space has ``resmlp.branch_scale``).
    norm: f32[] resmlp only: 1 normalizes each block's input, 0 feeds it as it is (1 unless
      the space has ``resmlp.norm``); the head's normalization stays.
  """
  num_layers: jax.Array
  widths: jax.Array
  activation: jax.Array
  dropout: jax.Array
  branch_scale: jax.Array | float = 0.5
  norm: jax.Array | float = 1.0


def units(spec: ModelSpec, arch: Arch) -> jax.Array:
  """f32[L]: live units (channels for the cnn) per layer, clipped to ``[1, max_units]``."""
  w = jnp.asarray(arch.widths, jnp.float32)
  if spec.kind == "cnn":
    w = jnp.ceil(w / CHANNEL_DIVISOR)
  return jnp.clip(w, 1.0, spec.max_units)


def _layer_on(spec: ModelSpec, arch: Arch) -> jax.Array:
  return jnp.arange(spec.max_layers) < arch.num_layers


def _last(spec: ModelSpec, arch: Arch, per_layer: jax.Array) -> jax.Array:
  return per_layer[jnp.clip(arch.num_layers, 1, spec.max_layers) - 1]


_GELU_C = math.sqrt(2.0 / math.pi)


def _activate(arch: Arch, z: jax.Array) -> jax.Array:
  """relu, gelu (tanh approximation) or tanh by index, with one tanh for both of the latter.

  A ``lax.switch`` would run all three under ``vmap`` (two transcendentals per
  unit); this computes one and selects.
  """
  is_relu = arch.activation == ACTIVATIONS.index("relu")
  is_tanh = arch.activation == ACTIVATIONS.index("tanh")
  t = jnp.tanh(jnp.where(is_tanh, z, _GELU_C * (z + 0.044715 * z * z * z)))
  return jnp.where(is_relu, jnp.maximum(z, 0.0), jnp.where(is_tanh, t, 0.5 * z * (1.0 + t)))


def _gain(arch: Arch) -> jax.Array:
  return jnp.where(arch.activation == ACTIVATIONS.index("tanh"), 1.0, math.sqrt(2.0))


def _hash(x: jax.Array) -> jax.Array:
  """A 32-bit integer mixer (lowbias32, C. Wellons): counter -> uniform bits."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _dropout(seed: jax.Array | None, layer: int, arch: Arch, h: jax.Array) -> jax.Array:
  """Drops units with probability ``arch.dropout`` (no-op when ``seed`` is None).

  The masks hash a counter with a per-step seed: threefry bits for every unit
  cost more than the layer's matmul at these sizes (measured 50x slower than
  the hash under vmap on CPU), and dropout needs no cryptographic quality.
  """
  if seed is None:
    return h
  counter = jax.lax.iota(jnp.uint32, h.size).reshape(h.shape) + jnp.uint32(layer * h.size)
  bits = _hash(counter * jnp.uint32(0x9E3779B9) + seed)
  threshold = (jnp.clip(arch.dropout, 0.0, 0.99) * 4294967296.0).astype(jnp.uint32)
  keep = 1.0 - threshold.astype(jnp.float32) / 4294967296.0
  return jnp.where(bits >= threshold, h / keep, 0.0)


def _masked_norm(h: jax.Array, mask: jax.Array, count: jax.Array) -> jax.Array:
  """Layer normalization (no scale) over the live units only."""
  mean = jnp.sum(h * mask, -1, keepdims=True) / count
  var = jnp.sum(((h - mean) * mask) ** 2, -1, keepdims=True) / count
  return (h - mean) * jax.lax.rsqrt(var + 1e-5) * mask


def init(key: jax.Array, spec: ModelSpec, arch: Arch) -> dict:
  """Parameters at the maximal shapes, scaled by each layer's live fan-in.

  Args:
    key: PRNG key.
    spec: the static shape.
    arch: the live architecture.

  Returns:
    A pytree of f32 arrays (same structure and shapes for every ``arch``).

  Example:
    >>> spec = ModelSpec("mlp", num_features=64, num_outputs=10)
    >>> arch = Arch(jnp.int32(2), jnp.array([32, 16, 16, 16]), jnp.int32(0), jnp.float32(0))
    >>> params = init(jax.random.key(0), spec, arch)
    >>> apply(params, spec, arch, jnp.zeros((5, 64))).shape
    (5, 10)
  """
  u = units(spec, arch)
  num_l, m, n_out = spec.max_layers, spec.max_units, spec.num_outputs
  gain = _gain(arch)
  k_in, k_a, k_b, k_out = jax.random.split(key, 4)
  normal = jax.random.normal
  if spec.kind == "mlp":
    fan_hidden = u[:-1, None, None]
    return {
        "inp": {"w": normal(k_in, (spec.num_features, m)) * gain / math.sqrt(spec.num_features),
                "b": jnp.zeros((m,))},
        "hidden": {"w": normal(k_a, (num_l - 1, m, m)) * gain / jnp.sqrt(fan_hidden),
                   "b": jnp.zeros((num_l - 1, m))},
        "out": {"w": normal(k_out, (m, n_out)) / jnp.sqrt(_last(spec, arch, u)),
                "b": jnp.zeros((n_out,))},
    }
  if spec.kind == "resmlp":
    d = u[0]
    return {
        "inp": {"w": normal(k_in, (spec.num_features, m)) / math.sqrt(spec.num_features),
                "b": jnp.zeros((m,))},
        "a": {"w": normal(k_a, (num_l, m, m)) * gain / jnp.sqrt(d), "b": jnp.zeros((num_l, m))},
        "b": {"w": normal(k_b, (num_l, m, m)) * arch.branch_scale / jnp.sqrt(u[:, None, None]),
              "b": jnp.zeros((num_l, m))},
        "out": {"w": normal(k_out, (m, n_out)) / jnp.sqrt(d), "b": jnp.zeros((n_out,))},
    }
  ksize = (3, 3) if len(spec.shape) == 3 else (5,)
  taps = math.prod(ksize)
  return {
      "inp": {"w": normal(k_in, ksize + (1, m)) * gain / math.sqrt(taps), "b": jnp.zeros((m,))},
      "hidden": {"w": normal(k_a, (num_l - 1,) + ksize + (m, m)) * gain /
                      jnp.sqrt(taps * u[:-1].reshape((-1,) + (1,) * (len(ksize) + 2))),
                 "b": jnp.zeros((num_l - 1, m))},
      "out": {"w": normal(k_out, (spec.conv_positions * m, n_out)) /
                   jnp.sqrt(spec.conv_positions * _last(spec, arch, u)),
              "b": jnp.zeros((n_out,))},
  }


def apply(params: dict, spec: ModelSpec, arch: Arch, x: jax.Array,
          key: jax.Array | None = None) -> jax.Array:
  """Outputs ``f32[N, num_outputs]`` for flat inputs ``x f32[N, num_features]``.

  Args:
    params: from `init`.
    spec: the static shape.
    arch: the live architecture.
    x: a batch of flat examples.
    key: dropout key while training; None (no dropout) for evaluation.
  """
  u = units(spec, arch)
  on = _layer_on(spec, arch)
  mask = (jnp.arange(spec.max_units)[None, :] < u[:, None]).astype(x.dtype)  # [L, M]
  seed = None if key is None else jax.random.bits(key, (), jnp.uint32)
  if spec.kind == "mlp":
    h = _activate(arch, x @ params["inp"]["w"] + params["inp"]["b"]) * mask[0]
    h = _dropout(seed, 0, arch, h)
    for k in range(1, spec.max_layers):
      z = h @ params["hidden"]["w"][k - 1] + params["hidden"]["b"][k - 1]
      new = _dropout(seed, k, arch, _activate(arch, z) * mask[k])
      h = jnp.where(on[k], new, h)
    return h @ params["out"]["w"] + params["out"]["b"]
  if spec.kind == "resmlp":
    d_mask, d = mask[0], u[0]
    h = (x @ params["inp"]["w"] + params["inp"]["b"]) * d_mask
    for k in range(spec.max_layers):
      inp = jnp.where(arch.norm > 0.5, _masked_norm(h, d_mask, d), h)
      z = inp @ params["a"]["w"][k] + params["a"]["b"][k]
      z = _dropout(seed, k, arch, _activate(arch, z) * mask[k])
      new = h + (z @ params["b"]["w"][k] + params["b"]["b"][k]) * d_mask
      h = jnp.where(on[k], new, h)
    return _masked_norm(h, d_mask, d) @ params["out"]["w"] + params["out"]["b"]
  h = x.reshape((x.shape[0],) + spec.shape)
  h = _conv(h, params["inp"]["w"], spec.conv_stride) + params["inp"]["b"]
  h = _dropout(seed, 0, arch, _activate(arch, h) * mask[0])
  for k in range(1, spec.max_layers):
    z = _conv(h, params["hidden"]["w"][k - 1], 1) + params["hidden"]["b"][k - 1]
    new = _dropout(seed, k, arch, _activate(arch, z) * mask[k])
    h = jnp.where(on[k], new, h)
  return h.reshape(h.shape[0], -1) @ params["out"]["w"] + params["out"]["b"]


def _conv(h: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """A 'SAME' convolution as shifted slices and one matmul (im2col).

  Under ``vmap`` over configurations ``lax.conv_general_dilated`` with a batched
  kernel becomes a grouped convolution, which XLA's CPU backend runs about 100x
  slower than the batched matmul this lowers to.

  Args:
    h: f32[N, *S, C] inputs (one or two spatial axes).
    w: f32[*K, C, O] kernel.
    stride: the same along every spatial axis.
  """
  spatial, ksize = h.shape[1:-1], w.shape[:-2]
  out = [-(-s // stride) for s in spatial]
  pads = []
  for s, k, o in zip(spatial, ksize, out):
    total = max((o - 1) * stride + k - s, 0)
    pads.append((total // 2, total - total // 2))
  hp = jnp.pad(h, [(0, 0)] + pads + [(0, 0)])
  cols = []
  for offset in itertools.product(*(range(k) for k in ksize)):
    index = tuple(slice(o, o + (n - 1) * stride + 1, stride) for o, n in zip(offset, out))
    cols.append(hp[(slice(None),) + index])
  patches = jnp.concatenate(cols, axis=-1)
  return patches @ w.reshape(-1, w.shape[-1])


def weight_mask(params: dict) -> dict:
  """True for weight matrices and kernels (L2-penalized), False for biases."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "w", params)


def size(spec: ModelSpec, arch: Arch) -> tuple[jax.Array, jax.Array, jax.Array]:
  """What the live architecture costs per example.

  Returns:
    ``(num_params, macs, activations)``: f32[] parameter count, multiply-adds of
    a forward pass, and hidden activations kept for the backward pass.
  """
  u = units(spec, arch)
  on = _layer_on(spec, arch).astype(jnp.float32)
  n_in, n_out = float(spec.num_features), float(spec.num_outputs)
  last = _last(spec, arch, u)
  if spec.kind == "mlp":
    prev = jnp.concatenate([jnp.array([n_in]), u[:-1]])
    weights = jnp.sum(on * prev * u) + last * n_out
    params = weights + jnp.sum(on * u) + n_out
    return params, weights, jnp.sum(on * u)
  if spec.kind == "resmlp":
    d = u[0]
    weights = n_in * d + jnp.sum(on * 2 * d * u) + d * n_out
    params = weights + d + jnp.sum(on * (u + d)) + n_out
    return params, weights, d + jnp.sum(on * (u + d))
  taps = 9.0 if len(spec.shape) == 3 else 5.0
  pos = float(spec.conv_positions)
  prev = jnp.concatenate([jnp.array([1.0]), u[:-1]])
  kernels = jnp.sum(on * taps * prev * u)
  head = pos * last * n_out
  params = kernels + jnp.sum(on * u) + head + n_out
  return params, pos * kernels + head, pos * jnp.sum(on * u)
