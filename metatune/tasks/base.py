"""The task interface: a family yields tasks; a task evaluates a batch of encoded configurations."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from metatune.space import Space
from metatune.tuners.base import Evaluation, Points

# Failure reasons, by code (``Metrics.reason``). Code 0 is success.
REASONS = ("ok", "diverged", "nan", "exception", "timeout", "invalid", "out_of_memory")
REASON_CODE = {r: i for i, r in enumerate(REASONS)}

# Splits every family declares (a split may be empty).
SPLITS = ("meta_train", "meta_valid", "heldout_dataset", "heldout_model")


@flax.struct.dataclass
class Metrics:
  """What a task returns for a batch of ``B`` configurations (all arrays, jittable).

  Attributes:
    objective: f32[B] primary objective on the *inner validation* split (what a
      tuner sees), minimized (an accuracy is negated at the task boundary).
    test_objective: f32[B] the same metric on the test split (what reports show);
      NaN where the family has no test split.
    curve: f32[B, F] objective after each fidelity step (F = 1 without a fidelity).
    cost: f32[B] cost of the evaluation (family-defined unit, see ``cost_unit``).
    num_params: f32[B] model size (0 where not applicable).
    memory: f32[B] estimated memory in bytes (0 where not applicable).
    failed: bool[B].
    reason: i32[B] index into ``REASONS`` (0 when not failed).
  """
  objective: jax.Array
  test_objective: jax.Array
  curve: jax.Array
  cost: jax.Array
  num_params: jax.Array
  memory: jax.Array
  failed: jax.Array
  reason: jax.Array

  def evaluation(self) -> Evaluation:
    """The part a tuner sees."""
    return Evaluation.of(self.objective, self.failed)

  @classmethod
  def simple(cls, objective: jax.Array, failed: jax.Array | None = None,
             reason: jax.Array | None = None, **fields: jax.Array) -> "Metrics":
    """Fills the optional fields: no test split, a one-step curve, zero cost and size.

    A non-finite objective is a failure with reason ``nan`` unless a reason is given.
    """
    objective = jnp.asarray(objective, jnp.float32)
    bad = ~jnp.isfinite(objective)
    failed = bad if failed is None else (jnp.asarray(failed, bool) | bad)
    if reason is None:
      reason = jnp.where(bad, REASON_CODE["nan"], REASON_CODE["diverged"])
    reason = jnp.where(failed, jnp.asarray(reason, jnp.int32), 0)
    b = objective.shape[0]
    zeros = jnp.zeros((b,), jnp.float32)
    out = dict(objective=objective, test_objective=jnp.full((b,), jnp.nan, jnp.float32),
               curve=objective[:, None], cost=zeros, num_params=zeros, memory=zeros,
               failed=failed, reason=reason)
    out.update({k: jnp.asarray(v) for k, v in fields.items()})
    return cls(**out)


@dataclasses.dataclass(frozen=True)
class Fidelity:
  """A fidelity axis such as epochs: ``values`` are the points of ``Metrics.curve``."""
  name: str
  values: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a family.

  Attributes:
    id: unique within the family (e.g. ``digits/mlp``).
    evaluate: ``(key, Points) -> Metrics``, jittable, for a batch of configurations.
    info: descriptive fields (dataset, model, ...), JSON-serializable.
    pool: for pool-based tasks (recorded evaluations), the configurations that
      can be answered exactly; None otherwise.
  """
  id: str
  evaluate: Callable[[jax.Array, Points], Metrics]
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  pool: Points | None = None


class TaskFamily:
  """Base class of task families.

  Subclasses set ``name``, ``space``, ``fidelity`` (or None), ``cost_unit`` and
  implement `splits` and `task`. ``noise_free`` is true where a live environment's
  ``evaluate`` gives its ``clean`` objective (so the harness reads what a study saw).
  """
  name: str = "family"
  space: Space
  fidelity: Fidelity | None = None
  cost_unit: str = "none"
  noise_free: bool = False

  def splits(self) -> dict[str, list[str]]:
    """Task ids per split (keys: ``SPLITS``)."""
    raise NotImplementedError

  def task(self, task_id: str) -> Task:
    """Builds one task (may load data; not jittable itself)."""
    raise NotImplementedError

  def task_ids(self, split: str | None = None) -> list[str]:
    s = self.splits()
    if split is None:
      return [t for name in SPLITS for t in s.get(name, [])]
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return list(s.get(split, []))


def numbered_task(family: str, prefix: str, task_id: str, num_tasks: int) -> int:
  """The index of a task named ``{prefix}-{index:04d}`` (families of numbered tasks).

  Raises:
    ValueError: naming the task, the family and the valid names.
  """
  try:
    index = int(task_id.rsplit("-", 1)[1])
    assert task_id == f"{prefix}-{index:04d}" and 0 <= index < num_tasks
  except (IndexError, ValueError, AssertionError):
    raise ValueError(f"unknown task {task_id!r} of family {family!r} (expected "
                     f"{prefix}-0000 ... {prefix}-{num_tasks - 1:04d})") from None
  return index


def check_metrics(metrics: Metrics, batch: int, curve_len: int | None = None) -> None:
  """Raises AssertionError when a family's metrics break the contract (used by tests)."""
  for name in ("objective", "test_objective", "cost", "num_params", "memory"):
    arr = getattr(metrics, name)
    assert arr.shape == (batch,), f"{name} has shape {arr.shape}, expected ({batch},)"
  assert metrics.failed.shape == (batch,) and metrics.failed.dtype == jnp.bool_
  assert metrics.reason.shape == (batch,)
  assert metrics.curve.ndim == 2 and metrics.curve.shape[0] == batch
  if curve_len is not None:
    assert metrics.curve.shape[1] == curve_len


def split_lists(ids: Sequence[str], fractions: Sequence[float], seed: int = 0) -> list[list[str]]:
  """Deterministically splits ids into consecutive groups of the given fractions."""
  import random  # pylint: disable=import-outside-toplevel
  order = sorted(ids)
  random.Random(seed).shuffle(order)
  out, start = [], 0
  for i, f in enumerate(fractions):
    end = len(order) if i == len(fractions) - 1 else start + int(round(f * len(order)))
    out.append(order[start:end])
    start = end
  return out


SPLIT_HELP = ("option 'split' must be {fractions: [meta_train, meta_valid, heldout_dataset"
              "(, heldout_model)], seed: N} or explicit lists {meta_train: [task, ...], ...}")


def configured_splits(ids: Sequence[str], option: Any = None,
                      default: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
                      ) -> dict[str, list[str]]:
  """A family's splits from its ``split`` option (see `SPLIT_HELP`), every split key present.

  Args:
    ids: every task id of the family.
    option: None (``default`` fractions with ``seed``), ``{"fractions": [...],
      "seed": N}`` (3 or 4 fractions summing to 1: meta_train, meta_valid,
      heldout_dataset and optionally heldout_model), or explicit lists per split
      (tasks may appear in one split at most; unlisted tasks are in none).

  Raises:
    ValueError: naming the bad entry (an unknown task, a task in two splits, bad fractions).
  """
  if option is None:
    option = {"fractions": list(default), "seed": seed}
  if not isinstance(option, Mapping):
    raise ValueError(f"{SPLIT_HELP}; got {option!r}")
  out = {name: [] for name in SPLITS}
  if "fractions" in option:
    extra = set(option) - {"fractions", "seed"}
    if extra:
      raise ValueError(f"{SPLIT_HELP}; unknown key(s) {sorted(extra)}")
    fr = option["fractions"]
    split_seed = option.get("seed", seed)
    if (not isinstance(fr, Sequence) or len(fr) not in (3, 4) or not all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and f >= 0 for f in fr)
        or abs(sum(fr) - 1.0) > 1e-6):
      raise ValueError(f"option 'split': fractions must be 3 or 4 non-negative numbers summing "
                       f"to 1, got {fr!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
      raise ValueError(f"option 'split': seed must be an integer, got {split_seed!r}")
    for name, group in zip(SPLITS, split_lists(ids, fr, split_seed)):
      out[name] = group
    return out
  known, seen = set(ids), {}
  for name, tasks in option.items():
    if name not in SPLITS:
      raise ValueError(f"option 'split': unknown split {name!r}; splits are {', '.join(SPLITS)}")
    if not isinstance(tasks, Sequence) or isinstance(tasks, str):
      raise ValueError(f"option 'split': {name} must be a list of task ids, got {tasks!r}")
    for t in tasks:
      t = str(t)
      if t not in known:
        close = sorted(known, key=lambda k: (len(set(k) ^ set(t)), k))[:3]
        raise ValueError(f"option 'split': {name} names task {t!r}, which the family does not "
                         f"have (e.g. {', '.join(close)})")
      if t in seen:
        raise ValueError(f"option 'split': task {t!r} is in both {seen[t]} and {name}")
      seen[t] = name
      out[name].append(t)
  return out
