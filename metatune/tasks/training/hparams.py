"""Training hyperparameters decoded from a space's encoding, as numbers (jittable, vmappable).

The training space (``metatune/tasks/spaces/training.yaml``) is read by
parameter name; `check_space` verifies once, in Python, that a space has every
name with the expected kind and choices, so `decode` can index it blindly.
Inactive parameters take a neutral value (momentum 0, weight decay 0, ...).
"""

from __future__ import annotations

import functools
import importlib.resources

import flax.struct
import jax
import jax.numpy as jnp

from metatune.space import Space, io
from metatune.tasks.training.models import ACTIVATIONS, Arch

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")
# Optimizer branches of the switch: sgd splits on nesterov (a static flag in optax).
BRANCHES = ("sgd", "sgd_nesterov", "adam", "adamw", "rmsprop")

# name -> (kind, choices or None, neutral value when inactive)
_REQUIRED = {
    "optimizer": ("categorical", OPTIMIZERS, 1.0),
    "lr": ("float", None, 1e-3),
    "optimizer.sgd.momentum": ("float", None, 0.0),
    "optimizer.sgd.nesterov": ("bool", None, 0.0),
    "optimizer.adam.b1": ("float", None, 0.9),
    "optimizer.adam.b2": ("float", None, 0.999),
    "optimizer.adam.eps": ("float", None, 1e-8),
    "optimizer.adamw.weight_decay": ("float", None, 0.0),
    "optimizer.rmsprop.decay": ("float", None, 0.9),
    "optimizer.rmsprop.eps": ("float", None, 1e-8),
    "schedule": ("categorical", SCHEDULES, 0.0),
    "schedule.cosine.warmup": ("float", None, 0.0),
    "schedule.exponential.decay_rate": ("float", None, 1.0),
    "num_layers": ("int", None, 1.0),
    "activation": ("categorical", ACTIVATIONS, 0.0),
    "dropout": ("float", None, 0.0),
    "weight_decay": ("float", None, 0.0),
    "batch_size": ("ordinal", None, 64.0),
}
# The residual MLP's own parameters: optional (a space without them trains the residual MLP as
# before); name -> (kind, value when absent or inactive).
_OPTIONAL = {
    "resmlp.branch_scale": ("float", 0.5),
    "resmlp.norm": ("bool", 1.0),
}


@flax.struct.dataclass
class HParams:
  """One configuration's training hyperparameters (all f32[] or i32[] unless noted)."""
  branch: jax.Array        # index into BRANCHES
  lr: jax.Array
  momentum: jax.Array
  b1: jax.Array
  b2: jax.Array
  adam_eps: jax.Array
  adamw_decay: jax.Array
  rms_decay: jax.Array
  rms_eps: jax.Array
  schedule: jax.Array      # index into SCHEDULES
  warmup: jax.Array        # fraction of all steps
  decay_rate: jax.Array    # final lr / lr of the exponential schedule
  weight_decay: jax.Array  # L2 penalty
  batch_size: jax.Array    # i32[]
  arch: Arch

  @property
  def slots(self) -> jax.Array:
    """f32[]: optimizer state arrays per parameter (for the memory estimate)."""
    return jnp.where((self.branch == 2) | (self.branch == 3), 2.0, 1.0)


@functools.lru_cache(maxsize=1)
def default_space() -> Space:
  """The training family's space (``metatune/tasks/spaces/training.yaml``)."""
  ref = importlib.resources.files("metatune.tasks") / "spaces" / "training.yaml"
  return io.loads(ref.read_text(encoding="utf-8"), "metatune/tasks/spaces/training.yaml")


def check_space(space: Space) -> tuple[int, int, tuple[int, ...]]:
  """Checks that ``space`` has the training parameters.

  Returns:
    ``(max_layers, max_width, batch_sizes)``: the padding maxima.

  Raises:
    ValueError: naming the missing or mismatched parameter.
  """
  for name, (kind, choices, _) in _REQUIRED.items():
    if name not in space.index:
      raise ValueError(f"the training space needs a parameter {name!r}")
    p = space.params[space.index[name]]
    if p.kind != kind:
      raise ValueError(f"parameter {name!r} must be {kind}, not {p.kind}")
    if choices is not None and tuple(p.choices) != choices:
      raise ValueError(f"parameter {name!r} must have the choices {list(choices)} in this order")
  layers = space.params[space.index["num_layers"]]
  max_layers = int(layers.high)
  if layers.low < 1 or max_layers > 8:
    raise ValueError("num_layers must lie within 1..8")
  widths = [f"width.l{k}" for k in range(1, max_layers + 1)]
  for name in widths:
    if name not in space.index or space.params[space.index[name]].kind != "int":
      raise ValueError(f"the training space needs an int parameter {name!r} (num_layers goes up "
                       f"to {max_layers})")
  for name, (kind, _) in _OPTIONAL.items():
    if name in space.index and space.params[space.index[name]].kind != kind:
      raise ValueError(f"parameter {name!r} must be {kind}, not "
                       f"{space.params[space.index[name]].kind}")
  batch = space.params[space.index["batch_size"]]
  if not batch.is_numeric or any(int(b) != b or b < 1 for b in batch.choices):
    raise ValueError("batch_size choices must be positive whole numbers")
  max_width = max(int(space.params[space.index[n]].high) for n in widths)
  return max_layers, max_width, tuple(int(b) for b in batch.choices)


def decode(space: Space, values: jax.Array, active: jax.Array) -> HParams:
  """One encoded configuration -> `HParams` (jittable; vmap it for a batch).

  Args:
    space: a space that passed `check_space`.
    values: f32[D] unit values.
    active: bool[D].
  """
  comp = space.comparable(values)

  def get(name):
    neutral = _REQUIRED[name][2] if name in _REQUIRED else _OPTIONAL[name][1]
    if name not in space.index:
      return jnp.float32(neutral)
    i = space.index[name]
    return jnp.where(active[i], comp[i], neutral)

  opt = get("optimizer").astype(jnp.int32)
  nesterov = (opt == 0) & (get("optimizer.sgd.nesterov") > 0.5)
  branch = jnp.array([0, 2, 3, 4], jnp.int32)[opt] + nesterov.astype(jnp.int32)
  max_layers = int(space.params[space.index["num_layers"]].high)
  # Inactive widths keep whatever they encode: the models ignore layers past num_layers.
  widths = jnp.stack([comp[space.index[f"width.l{k}"]] for k in range(1, max_layers + 1)])
  arch = Arch(num_layers=get("num_layers").astype(jnp.int32),
              widths=jnp.round(widths).astype(jnp.int32),
              activation=get("activation").astype(jnp.int32),
              dropout=get("dropout"),
              branch_scale=get("resmlp.branch_scale"),
              norm=get("resmlp.norm"))
  return HParams(
      branch=branch, lr=get("lr"), momentum=get("optimizer.sgd.momentum"),
      b1=get("optimizer.adam.b1"), b2=get("optimizer.adam.b2"),
      adam_eps=get("optimizer.adam.eps"), adamw_decay=get("optimizer.adamw.weight_decay"),
      rms_decay=get("optimizer.rmsprop.decay"), rms_eps=get("optimizer.rmsprop.eps"),
      schedule=get("schedule").astype(jnp.int32), warmup=get("schedule.cosine.warmup"),
      decay_rate=get("schedule.exponential.decay_rate"), weight_decay=get("weight_decay"),
      batch_size=jnp.round(get("batch_size")).astype(jnp.int32), arch=arch)
