"""An ONNX inference graph run as a pure, jittable and vmappable `jax.numpy` function."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper


class OnnxError(ValueError):
  """An ONNX model this interpreter cannot run (unsupported operator, bad attribute)."""


class Node(NamedTuple):
  """One graph node: operator, input and output value names, attributes."""
  op: str
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  attrs: Mapping[str, Any]
  name: str


def _np_dtype(onnx_type: int) -> np.dtype:
  return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))


def _is_const(x: Any) -> bool:
  return isinstance(x, (np.ndarray, np.generic))


def _xp(*xs):
  """numpy when every operand is a constant (folded at trace time), else jax.numpy."""
  return np if all(_is_const(x) for x in xs if x is not None) else jnp


def _const(x: Any, what: str, node: Node) -> np.ndarray:
  if not _is_const(x):
    raise OnnxError(f"node {node.name!r} ({node.op}): {what} must be a constant, not a "
                    "value computed from the inputs")
  return np.asarray(x)


def _cast(x, dtype: np.dtype):
  if _is_const(x):
    return np.asarray(x).astype(dtype)
  # Without jax_enable_x64, float64/int64 become float32/int32, as everywhere in JAX.
  return jnp.asarray(x).astype(jax.dtypes.canonicalize_dtype(dtype))


def _div(a, b):
  xp = _xp(a, b)
  if jnp.issubdtype(jnp.result_type(a, b), jnp.integer):  # ONNX integer Div truncates toward 0
    if xp is np:
      q = np.abs(a) // np.abs(b)
      return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))
    return jax.lax.div(*jnp.broadcast_arrays(jnp.asarray(a), jnp.asarray(b)))
  return xp.divide(a, b)


def _gather(node: Node, data, indices):
  axis = int(node.attrs.get("axis", 0))
  xp = _xp(data, indices)
  if _is_const(indices):
    indices = np.asarray(indices)
    indices = np.where(indices < 0, indices + np.shape(data)[axis], indices)
    if xp is np:
      return np.take(data, indices, axis=axis)
  # Out-of-range indices (an unknown category code) give NaN, never another row.
  return jnp.take(data, indices, axis=axis, mode="fill")  # NaN for floats


def _unsqueeze(node: Node, x, axes=None):
  if axes is None:
    axes = node.attrs.get("axes")
  if axes is None:
    raise OnnxError(f"node {node.name!r} (Unsqueeze) has no axes")
  axes = _const(axes, "axes", node)
  rank = np.ndim(x) + axes.size
  for a in sorted(int(a) % rank for a in axes.ravel()):
    x = _xp(x).expand_dims(x, a)
  return x


def _slice(node: Node, x, starts, ends, axes=None, steps=None):
  starts, ends = _const(starts, "starts", node), _const(ends, "ends", node)
  axes = np.arange(starts.size) if axes is None else _const(axes, "axes", node)
  steps = np.ones(starts.size, np.int64) if steps is None else _const(steps, "steps", node)
  index = [slice(None)] * np.ndim(x)
  big = np.iinfo(np.int64).max // 2  # ONNX writes "to the end" as INT64_MAX
  for s, e, a, st in zip(starts.ravel(), ends.ravel(), axes.ravel(), steps.ravel()):
    e = None if abs(int(e)) >= big else int(e)
    index[int(a) % np.ndim(x)] = slice(int(s), e, int(st))
  return x[tuple(index)]


def _gemm(node: Node, a, b, c=None):
  if node.attrs.get("transA", 0):
    a = a.T
  if node.attrs.get("transB", 0):
    b = b.T
  out = float(node.attrs.get("alpha", 1.0)) * jnp.matmul(
      a, b, precision=jax.lax.Precision.HIGHEST)  # no TF32 on GPUs: outputs match to 1e-4
  if c is not None:
    out = out + float(node.attrs.get("beta", 1.0)) * c
  return out


def _batch_norm(node: Node, x, scale, bias, mean, var):
  if node.attrs.get("training_mode", 0):
    raise OnnxError(f"node {node.name!r}: BatchNormalization in training mode is not supported")
  eps = float(node.attrs.get("epsilon", 1e-5))
  shape = (-1,) + (1,) * (np.ndim(x) - 2)  # channels are axis 1
  xp = _xp(x, scale, bias, mean, var)
  inv = xp.reshape(scale, shape) / xp.sqrt(xp.reshape(var, shape) + eps)
  return (x - xp.reshape(mean, shape)) * inv + xp.reshape(bias, shape)


def _shape(node: Node, x):
  dims = np.asarray(np.shape(x), np.int64)  # static, also while tracing
  start, end = node.attrs.get("start", 0), node.attrs.get("end")
  return dims[start:end]


def _concat(node: Node, *xs):
  return _xp(*xs).concatenate(xs, axis=int(node.attrs["axis"]))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x)) if _is_const(x) else jax.nn.sigmoid(x)


OPS: dict[str, Callable[..., Any]] = {
    "Add": lambda node, a, b: a + b,
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Div": lambda node, a, b: _div(a, b),
    "Neg": lambda node, x: -x,
    "Relu": lambda node, x: _xp(x).maximum(x, 0),
    "Log": lambda node, x: _xp(x).log(x),
    "Exp": lambda node, x: _xp(x).exp(x),
    "Sigmoid": lambda node, x: _sigmoid(x),
    "Round": lambda node, x: _xp(x).round(x),  # half to even, as ONNX
    "Cast": lambda node, x: _cast(x, _np_dtype(node.attrs["to"])),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Concat": _concat,
    "Gemm": _gemm,
    "BatchNormalization": _batch_norm,
    "Shape": _shape,
}
"""Supported operators (``Constant`` is folded when the model is loaded)."""


@dataclasses.dataclass(frozen=True, eq=False)
class OnnxFunction:
  """A loaded ONNX graph; calling it runs the graph with `jax.numpy`.

  A small interpreter over the node list: weights come from the initializers,
  and whatever depends only on constants and shapes (``Constant``, ``Shape``,
  the index arithmetic feeding ``Slice``) is folded with numpy while tracing,
  so shapes stay static under `jax.jit` and `jax.vmap`. It runs the operators
  of feed-forward networks exported by PyTorch (`OPS`, e.g. the YAHPO Gym
  surrogates); `from_model` rejects any other operator, naming it. Casts to
  64-bit types compute in 32 bits unless ``jax_enable_x64`` is set.

  Attributes:
    input_names: the graph inputs, in order (positional arguments follow it).
    input_dtypes: the dtype each input is cast to.
    input_shapes: each input's declared shape (None for a symbolic dimension).
    output_names: the graph outputs, in order.
    params: the initializers (weights), name -> array; a pytree, so `apply`
      can take other weights of the same shapes.
    constants: folded ``Constant`` nodes, name -> numpy array.
    nodes: the remaining nodes, in topological order.
    source: the file, for messages.

  Example:
    >>> net = load("yahpo/lcbench/model.onnx")  # doctest: +SKIP
    >>> (out,) = jax.jit(net)(x_cat, x_cont)    # doctest: +SKIP
  """
  input_names: tuple[str, ...]
  input_dtypes: tuple[np.dtype, ...]
  input_shapes: tuple[tuple[int | None, ...], ...]
  output_names: tuple[str, ...]
  params: dict[str, jax.Array]
  constants: dict[str, np.ndarray]
  nodes: tuple[Node, ...]
  source: str = "<onnx>"

  def __call__(self, *inputs: jax.Array) -> tuple[jax.Array, ...]:
    """Runs the graph with its own weights: ``net(*inputs) -> outputs``."""
    return self.apply(self.params, *inputs)

  def apply(self, params: Mapping[str, jax.Array], *inputs: jax.Array) -> tuple[jax.Array, ...]:
    """Runs the graph.

    Args:
      params: weights by initializer name (usually ``self.params``).
      *inputs: one array per graph input, in ``input_names`` order, batch first.

    Returns:
      One array per graph output, in ``output_names`` order.
    """
    if len(inputs) != len(self.input_names):
      raise TypeError(f"{self.source}: expected {len(self.input_names)} inputs "
                      f"({', '.join(self.input_names)}), got {len(inputs)}")
    env: dict[str, Any] = dict(self.constants)
    env.update(params)
    for name, dtype, x in zip(self.input_names, self.input_dtypes, inputs):
      env[name] = jnp.asarray(x).astype(jax.dtypes.canonicalize_dtype(dtype))
    for node in self.nodes:
      args = [env[i] if i else None for i in node.inputs]
      while args and args[-1] is None:  # trailing optional inputs left out
        args.pop()
      out = OPS[node.op](node, *args)
      env[node.outputs[0]] = out
    return tuple(jnp.asarray(env[n]) for n in self.output_names)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
  out = {}
  for a in node.attribute:
    v = helper.get_attribute_value(a)
    if isinstance(v, onnx.TensorProto):
      v = numpy_helper.to_array(v)
    elif isinstance(v, bytes):
      v = v.decode()
    elif isinstance(v, list):
      v = np.asarray(v)
    out[a.name] = v
  return out


def from_model(model: onnx.ModelProto, source: str = "<onnx>") -> OnnxFunction:
  """Converts a parsed ONNX model.

  Raises:
    OnnxError: naming every unsupported operator (with a node using it) or a
      node with several outputs.
  """
  graph = model.graph
  params = {t.name: jnp.asarray(numpy_helper.to_array(t)) for t in graph.initializer}
  unsupported: dict[str, str] = {}
  constants: dict[str, np.ndarray] = {}
  nodes = []
  for i, n in enumerate(graph.node):
    name = n.name or f"#{i}"
    attrs = _attrs(n)
    if n.domain not in ("", "ai.onnx"):
      unsupported.setdefault(f"{n.domain}.{n.op_type}", name)
      continue
    if n.op_type == "Constant":
      if "value" not in attrs:
        raise OnnxError(f"{source}: node {name!r} (Constant) uses {sorted(attrs)}; only "
                        "'value' is supported")
      constants[n.output[0]] = np.asarray(attrs["value"])
      continue
    if n.op_type not in OPS:
      unsupported.setdefault(n.op_type, name)
      continue
    if len(n.output) != 1:
      raise OnnxError(f"{source}: node {name!r} ({n.op_type}) has {len(n.output)} outputs; "
                      "only single-output nodes are supported")
    nodes.append(Node(n.op_type, tuple(n.input), tuple(n.output), attrs, name))
  if unsupported:
    listed = ", ".join(f"{op} (e.g. node {name!r})" for op, name in sorted(unsupported.items()))
    raise OnnxError(f"{source}: unsupported ONNX operator(s): {listed}; supported: Constant, "
                    f"{', '.join(sorted(OPS))}")
  feeds = [i for i in graph.input if i.name not in params]
  return OnnxFunction(
      input_names=tuple(i.name for i in feeds),
      input_dtypes=tuple(_np_dtype(i.type.tensor_type.elem_type) for i in feeds),
      input_shapes=tuple(tuple(d.dim_value if d.HasField("dim_value") else None
                               for d in i.type.tensor_type.shape.dim) for i in feeds),
      output_names=tuple(o.name for o in graph.output),
      params=params, constants=constants, nodes=tuple(nodes), source=source)


def load(path: str | os.PathLike) -> OnnxFunction:
  """Reads an ``.onnx`` file (see `from_model`)."""
  path = os.fspath(path)
  try:
    model = onnx.load(path)
  except (OSError, DecodeError) as e:
    raise OnnxError(f"{path}: cannot read the ONNX model: {e}") from None
  return from_model(model, path)
