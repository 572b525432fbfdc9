"""The real-training task family: datasets x models, held out by dataset and by model.

A task is ``dataset/model`` (``digits/mlp``); evaluating it trains a batch of
configurations of the training space in one ``vmap`` (`train`) and returns
the inner-validation objective (classification error or regression MSE), the
test objective, the validation curve over epochs (the fidelity), FLOPs, the
live parameter count, a memory estimate and divergence failures.

Splits: each dataset belongs to one split (``DATASET_SPLIT``); the residual MLP
is seen only in ``heldout_model``, on the datasets of the meta-training and
meta-validation splits, so each held-out split changes one thing. The cnn runs
on datasets with an image or signal shape. Without a data folder the family
holds the scikit-learn datasets only (the embedded default).

For the evaluation harness (``metatune evaluate``, live) the family is an
environment whose tasks are data (`TrainingTask`: a task's arrays, its static
training setup riding along as auxiliary data, so each task compiles once).
It is noise-free, as the tables of recorded runs are: a configuration's
objective is its training with one fixed key (`CLEAN_SEED`), so what a tuner
sees is what regret measures, and the harness need not train the proposals a
second time (``noise_free``). It does not meta-train directly (no
``task_indices``: tasks of different datasets do not stack); meta-training uses
the surrogate environment or the tables of recorded runs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from metatune.space import Space
from metatune.tasks.base import Fidelity, Task, TaskFamily
from metatune.tasks.reference import task_reference
from metatune.tasks.training import data as data_lib
from metatune.tasks.training import hparams as hp
from metatune.tasks.training import models
from metatune.tasks.training import train as train_lib
from metatune.tuners.base import Evaluation, Points

DATASET_SPLIT = {
    "digits": "meta_train", "breast_cancer": "meta_train", "diabetes": "meta_train",
    "mnist1d": "meta_train", "mnist": "meta_train",
    "iris": "meta_valid", "california_housing": "meta_valid",
    "wine": "heldout_dataset", "fashion_mnist": "heldout_dataset",
}
HELDOUT_MODELS = ("resmlp",)
CLEAN_SEED = 0  # the key of `TrainingFamily.clean`'s training: one yardstick for every tuner


@flax.struct.dataclass
class TrainingTask:
  """A task as data (`TrainingFamily.task_params`): its arrays, its static setup as aux data."""
  data: data_lib.Data
  setup: train_lib.TrainSetup = flax.struct.field(pytree_node=False)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """Settings of the family (static).

  Attributes:
    datasets: ``data.DATASETS`` names (folder datasets need a data folder).
    models: ``models.MODELS`` names.
    epochs: fidelity steps (points of the curve).
    steps_per_epoch: optimizer steps per epoch; None for
      `train.default_steps_per_epoch` of each dataset.
    cache_dir: where prepared datasets are cached (see `data.cache_dir`).
    heldout_model_split: the split of the held-out architecture's tasks (``HELDOUT_MODELS``):
      ``heldout_model``, on the datasets of the other splits only (so each held-out split
      changes one thing), or ``meta_valid``, on every listed dataset: validation tasks of that
      architecture, where choices for it are made.
  """
  datasets: tuple[str, ...] = data_lib.SKLEARN
  models: tuple[str, ...] = models.MODELS
  epochs: int = 20
  steps_per_epoch: int | None = None
  cache_dir: str | None = None
  heldout_model_split: str = "heldout_model"


class TrainingFamily(TaskFamily):
  """Small networks trained with optax on real data.

  Example:
    >>> family = TrainingFamily()
    >>> family.splits()["heldout_model"][:2]
    ['breast_cancer/resmlp', 'diabetes/resmlp']
    >>> task = family.task("digits/mlp")                       # doctest: +SKIP
    >>> metrics = jax.jit(task.evaluate)(key, points)          # doctest: +SKIP
  """

  name = "training"
  cost_unit = "flops"
  noise_free = True  # `evaluate` is `clean` (the harness reads a study's objectives as they are)

  def __init__(self, config: TrainingConfig = TrainingConfig(),
               data_dir: str | os.PathLike | None = None, space: Space | None = None):
    for d in config.datasets:
      if d not in data_lib.DATASETS:
        raise ValueError(f"unknown dataset {d!r}; known: {', '.join(data_lib.DATASETS)}")
      if data_lib.DATASETS[d].source == "folder" and data_dir is None:
        raise ValueError(f"dataset {d!r} needs a data folder (data_dir or METATUNE_DATA_DIR)")
    for m in config.models:
      if m not in models.MODELS:
        raise ValueError(f"unknown model {m!r}; known: {', '.join(models.MODELS)}")
    self.config = config
    self.data_dir = None if data_dir is None else pathlib.Path(data_dir)
    self.space = space if space is not None else hp.default_space()
    self.max_layers, self.max_width, _ = hp.check_space(self.space)
    self.fidelity = Fidelity("epoch", tuple(float(e) for e in range(1, config.epochs + 1)))
    self._task_data: dict[str, TrainingTask] = {}  # `task_params`, loaded once per task

  def _pairs(self) -> list[tuple[str, str]]:
    out = []
    for d in self.config.datasets:
      for m in self.config.models:
        if m == "cnn" and data_lib.DATASETS[d].shape is None:
          continue  # tables have no spatial structure to convolve
        if (m in HELDOUT_MODELS and DATASET_SPLIT[d] == "heldout_dataset"
            and self.config.heldout_model_split == "heldout_model"):
          continue  # would change the dataset and the model at once
        out.append((d, m))
    return out

  def splits(self) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in
                                 ("meta_train", "meta_valid", "heldout_dataset", "heldout_model")}
    for d, m in sorted(self._pairs()):
      split = self.config.heldout_model_split if m in HELDOUT_MODELS else DATASET_SPLIT[d]
      out[split].append(f"{d}/{m}")
    return out

  def setup(self, task_id: str) -> tuple[train_lib.TrainSetup, data_lib.Data]:
    """The static training setup and the loaded data of a task (loads and caches data)."""
    dataset, model = self._parse(task_id)
    info = data_lib.DATASETS[dataset]
    data = data_lib.load(dataset, self.config.cache_dir, self.data_dir)
    spec = models.ModelSpec(model, info.num_features, info.num_outputs, self.max_layers,
                            self.max_width, info.shape if model == "cnn" else None)
    steps = self.config.steps_per_epoch or train_lib.default_steps_per_epoch(
        data.x_train.shape[0])
    return train_lib.TrainSetup(self.space, spec, info.kind, self.config.epochs, steps), data

  def task(self, task_id: str) -> Task:
    setup, data = self.setup(task_id)
    batch_train = train_lib.make_batch_train(setup)

    def evaluate(key: jax.Array, points: Points):
      return batch_train(key, points.values, points.active, data)

    dataset, model = self._parse(task_id)
    info: dict[str, Any] = {
        "dataset": dataset, "model": model, "kind": setup.kind,
        "objective": "error" if setup.kind == "classification" else "mse",
        "num_train": int(data.x_train.shape[0]), "num_valid": int(data.x_valid.shape[0]),
        "num_test": int(data.x_test.shape[0]), "epochs": setup.num_epochs,
        "steps_per_epoch": setup.steps_per_epoch}
    return Task(task_id, evaluate, info)

  # ------------------------------------------- as an environment of the harness
  def all_task_ids(self) -> list[str]:
    """Every task, in the order `task_params` indexes them."""
    return [f"{d}/{m}" for d, m in sorted(self._pairs())]

  def task_params(self, index) -> TrainingTask:
    """The task at ``index`` (a position in `all_task_ids`; concrete, not traced) as data."""
    task_id = self.all_task_ids()[int(index)]
    if task_id not in self._task_data:
      setup, data = self.setup(task_id)
      self._task_data[task_id] = TrainingTask(data, setup)
    return self._task_data[task_id]

  def evaluate(self, key: jax.Array, task: TrainingTask, points: Points) -> Evaluation:
    """What a tuner sees of a batch: its training with the fixed key (``key`` is not used)."""
    del key
    m = self._train(task, points)
    return Evaluation.of(m.objective, m.failed)

  def clean(self, task: TrainingTask, points: Points) -> jax.Array:
    """f32[B]: the objective (training with the fixed key `CLEAN_SEED`), NaN where it failed."""
    m = self._train(task, points)
    return jnp.where(m.failed, jnp.nan, m.objective)

  def _train(self, task: TrainingTask, points: Points):
    # One key for every configuration (not split per position): a configuration's objective
    # is then the same in a batch of one, as a study asks, and in any other batch.
    train = jax.vmap(train_lib.make_train(task.setup), in_axes=(None, 0, 0, None))
    return train(jax.random.key(CLEAN_SEED), points.values, points.active, task.data)

  def reference(self, key: jax.Array, task: TrainingTask, num: int = 4096, refine: int = 20
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(optimum, median, worst)`` of `clean` from ``num`` random configurations (see
    `metatune.tasks.reference`); each one is a training run, so keep ``num`` small."""
    return task_reference(key, self, task, num, refine)

  def _parse(self, task_id: str) -> tuple[str, str]:
    dataset, _, model = task_id.partition("/")
    if (dataset, model) not in self._pairs():
      raise ValueError(f"unknown task {task_id!r} of family {self.name!r}; known: "
                       f"{', '.join(sorted(f'{d}/{m}' for d, m in self._pairs()))}")
    return dataset, model


_OPTIONS = {"datasets", "models", "epochs", "steps_per_epoch", "cache_dir", "space",
            "heldout_model_split"}
_HELDOUT_MODEL_SPLITS = ("heldout_model", "meta_valid")


def _names(key: str, value: Any, known) -> tuple[str, ...]:
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, (list, tuple)) or not value or not all(
      isinstance(v, str) for v in value):
    raise ValueError(f"option {key!r} must be a non-empty list of names, got {value!r}")
  for v in value:
    if v not in known:
      raise ValueError(f"option {key!r}: unknown name {v!r}; known: {', '.join(known)}")
  return tuple(value)


def _count(key: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"option {key!r} must be a positive whole number, got {value!r}")
  return value


def make_family(options: dict, data_dir=None) -> TrainingFamily:
  """Builds the family from config options.

  Options: ``datasets`` (names; default: the scikit-learn datasets, plus the
  folder datasets present in ``data_dir`` when one is given), ``models``
  (default all), ``epochs`` (default 20), ``steps_per_epoch`` (a number or
  ``auto``), ``cache_dir`` (default ``$METATUNE_CACHE_DIR`` or
  ``~/.cache/metatune/tfds``), ``space`` (``default`` or the path of a space file with the
  training parameters, e.g. plus the residual MLP's own, `hparams.check_space`),
  ``heldout_model_split`` (``heldout_model`` or ``meta_valid``, `TrainingConfig`).

  Raises:
    ValueError: naming the unknown or mistyped option.
  """
  options = dict(options or {})
  for k in options:
    if k not in _OPTIONS:
      raise ValueError(f"unknown option {k!r} of the training family; allowed: "
                       f"{', '.join(sorted(_OPTIONS))}")
  kwargs: dict[str, Any] = {}
  if "datasets" in options:
    kwargs["datasets"] = _names("datasets", options["datasets"], tuple(data_lib.DATASETS))
    missing = [d for d in kwargs["datasets"] if data_lib.DATASETS[d].source == "folder" and (
        data_dir is None or not data_lib.source_path(d, data_dir).is_file())]
    if missing:
      where = "no data folder is set" if data_dir is None else f"not found under {data_dir}"
      raise ValueError(f"option 'datasets': {', '.join(missing)} need files from the data "
                       f"folder ({', '.join(data_lib.DATASETS[d].files for d in missing)}): "
                       f"{where}")
  elif data_dir is not None:
    kwargs["datasets"] = data_lib.SKLEARN + tuple(
        d for d in data_lib.FOLDER if data_lib.source_path(d, data_dir).is_file())
  if "models" in options:
    kwargs["models"] = _names("models", options["models"], models.MODELS)
  if "epochs" in options:
    kwargs["epochs"] = _count("epochs", options["epochs"])
  if "steps_per_epoch" in options and options["steps_per_epoch"] != "auto":
    kwargs["steps_per_epoch"] = _count("steps_per_epoch", options["steps_per_epoch"])
  if "cache_dir" in options:
    if not isinstance(options["cache_dir"], str):
      raise ValueError(f"option 'cache_dir' must be a path, got {options['cache_dir']!r}")
    kwargs["cache_dir"] = options["cache_dir"]
  if "heldout_model_split" in options:
    split = options["heldout_model_split"]
    if split not in _HELDOUT_MODEL_SPLITS:
      raise ValueError(f"option 'heldout_model_split' must be one of "
                       f"{', '.join(_HELDOUT_MODEL_SPLITS)}, got {split!r}")
    kwargs["heldout_model_split"] = split
  space = None
  if options.get("space", "default") != "default":
    if not isinstance(options["space"], str):
      raise ValueError(f"option 'space' must be a path or 'default', got {options['space']!r}")
    from metatune.space import io  # pylint: disable=import-outside-toplevel
    space = io.load(options["space"])
    try:
      hp.check_space(space)
    except ValueError as e:
      raise ValueError(f"option 'space' ({options['space']}): {e}") from None
  return TrainingFamily(TrainingConfig(**kwargs), data_dir, space)
