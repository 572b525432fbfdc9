"""The training family's datasets: TFDS builders (array_record, no TensorFlow), loaded as jnp.

Each dataset is a configuration of one `tfds.core.GeneratorBasedBuilder`
that writes three deterministic splits, ``train``, ``validation`` (the inner
validation a tuner sees) and ``test`` (what reports show), as array_record
files under a cache folder; `load` reads them back with
``builder.as_data_source()`` and standardizes with training statistics.

Sources:
  scikit-learn's bundled datasets (the embedded default, no data folder):
    digits, breast_cancer, wine, iris (classification) and diabetes (regression).
  a data folder (``data_dir``, read through TFDS's ``manual_dir``): mnist1d,
    mnist and fashion_mnist subsets, california_housing; see
    ``DATASETS[name].files`` for the npz each needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import pathlib
import warnings

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

CACHE_ENV = "METATUNE_CACHE_DIR"
VERSION = "1.0.0"
SPLITS = ("train", "validation", "test")
SEED = 0  # fixes the split of every dataset; changing it needs a new VERSION


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a dataset is (static).

  Attributes:
    name: the dataset's name (``DATASETS`` key).
    kind: ``classification`` or ``regression``.
    num_features: length of a flat example.
    num_classes: classes (1 for regression).
    shape: example shape for convolutions (``(H, W, 1)`` or ``(T, 1)``), None for tables.
    source: ``sklearn`` or ``folder``.
    files: for folder datasets, the npz path inside the data folder.
  """
  name: str
  kind: str
  num_features: int
  num_classes: int
  shape: tuple[int, ...] | None
  source: str
  files: str | None = None

  @property
  def num_outputs(self) -> int:
    return self.num_classes if self.kind == "classification" else 1


DATASETS = {d.name: d for d in (
    DatasetInfo("digits", "classification", 64, 10, (8, 8, 1), "sklearn"),
    DatasetInfo("breast_cancer", "classification", 30, 2, None, "sklearn"),
    DatasetInfo("wine", "classification", 13, 3, None, "sklearn"),
    DatasetInfo("iris", "classification", 4, 3, None, "sklearn"),
    DatasetInfo("diabetes", "regression", 10, 1, None, "sklearn"),
    DatasetInfo("mnist1d", "classification", 40, 10, (40, 1), "folder", "mnist1d/mnist1d.npz"),
    DatasetInfo("mnist", "classification", 784, 10, (28, 28, 1), "folder", "mnist/mnist.npz"),
    DatasetInfo("fashion_mnist", "classification", 784, 10, (28, 28, 1), "folder",
                "fashion_mnist/fashion_mnist.npz"),
    DatasetInfo("california_housing", "regression", 8, 1, None, "folder",
                "california_housing/california_housing.npz"),
)}
SKLEARN = tuple(n for n, d in DATASETS.items() if d.source == "sklearn")
FOLDER = tuple(n for n, d in DATASETS.items() if d.source == "folder")


@flax.struct.dataclass
class Data:
  """Standardized splits as arrays: ``x_* f32[N, F]``, ``y_*`` i32[N] (classes) or f32[N]."""
  x_train: jax.Array
  y_train: jax.Array
  x_valid: jax.Array
  y_valid: jax.Array
  x_test: jax.Array
  y_test: jax.Array


def cache_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The cache folder: ``path``, else ``$METATUNE_CACHE_DIR``, else ``~/.cache/metatune/tfds``."""
  if path is not None:
    return pathlib.Path(path).expanduser()
  env = os.environ.get(CACHE_ENV)
  return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache/metatune/tfds"


def source_path(name: str, data_dir: str | os.PathLike | None) -> pathlib.Path | None:
  """The npz a folder dataset reads (None for scikit-learn datasets)."""
  info = DATASETS[name]
  if info.source != "folder":
    return None
  if data_dir is None:
    raise ValueError(f"dataset {name!r} needs a data folder (data_dir, e.g. METATUNE_DATA_DIR) "
                     f"holding {info.files}")
  return pathlib.Path(data_dir) / info.files


# ------------------------------------------------------------ raw sources
def _sklearn_raw(name: str):
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
            "wine": datasets.load_wine, "iris": datasets.load_iris,
            "diabetes": datasets.load_diabetes}[name]
  x, y = loader(return_X_y=True)
  return x, y, None, None


def _folder_raw(name: str, path: pathlib.Path):
  if not path.is_file():
    raise FileNotFoundError(f"dataset {name!r}: {path} does not exist")
  with np.load(path) as z:
    if name == "mnist1d":
      return z["x"], z["y"], z["x_test"], z["y_test"]
    if name == "fashion_mnist":  # only a 2,000-image test set ships: split it like sklearn's
      return z["x_test"].reshape(len(z["x_test"]), -1), z["y_test"], None, None
    return (z["x_train"].reshape(len(z["x_train"]), -1), z["y_train"],
            z["x_test"].reshape(len(z["x_test"]), -1), z["y_test"])


def split_indices(num: int, has_test: bool) -> dict[str, np.ndarray]:
  """Deterministic split of ``num`` examples: 60/20/20, or 80/20 when a test split ships.

  The validation part is capped at 2,000 examples.
  """
  order = np.random.default_rng(SEED).permutation(num)
  n_test = 0 if has_test else int(round(0.2 * num))
  n_valid = min(int(round(0.2 * num)), 2000)
  return {"test": np.sort(order[:n_test]), "validation": np.sort(order[n_test:n_test + n_valid]),
          "train": np.sort(order[n_test + n_valid:])}


def raw_splits(name: str, data_dir: str | os.PathLike | None = None
               ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """``{split: (index, x, y)}`` straight from the source, as the builder stores them.

  ``x`` has the stored dtype (uint8 for 28x28 images, float32 otherwise); this
  is what the TFDS builder writes, and what `load` reads when
  tensorflow-datasets is not installed (an accelerator machine, say).
  """
  info = DATASETS[name]
  if info.source == "sklearn":
    x, y, x_test, y_test = _sklearn_raw(name)
  else:
    x, y, x_test, y_test = _folder_raw(name, source_path(name, data_dir))
  dtype = np.uint8 if info.shape is not None and info.num_features >= 784 else np.float32
  out = {s: (i.astype(np.int64), np.asarray(x[i], dtype), np.asarray(y[i]))
         for s, i in split_indices(len(x), x_test is not None).items()}
  if x_test is not None:
    out["test"] = (np.arange(len(x_test), dtype=np.int64), np.asarray(x_test, dtype),
                   np.asarray(y_test))
  return out


def _has_tfds() -> bool:
  try:
    import tensorflow_datasets  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


# ---------------------------------------------------------------- builder
def _builder_class():
  """Defines the builder on first use, so importing this module does not import TFDS."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  @dataclasses.dataclass(eq=False)
  class Config(tfds.core.BuilderConfig):
    info: DatasetInfo | None = None

  class MetatuneTraining(tfds.core.GeneratorBasedBuilder):
    """The training family's datasets, one builder config each."""
    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = [Config(name=n, description=f"{d.kind}, {d.source}", info=d)
                       for n, d in DATASETS.items()]
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Point data_dir (METATUNE_DATA_DIR) at a folder holding "
                                    + ", ".join(DATASETS[n].files for n in FOLDER) + ".")

    def _info(self):
      info = self.builder_config.info
      image = info.shape is not None and info.num_features >= 784
      label = (tfds.features.Tensor(shape=(), dtype=np.int64) if info.kind == "classification"
               else tfds.features.Tensor(shape=(), dtype=np.float32))
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "index": tfds.features.Tensor(shape=(), dtype=np.int64),
          "x": tfds.features.Tensor(shape=(info.num_features,),
                                    dtype=np.uint8 if image else np.float32),
          "y": label}))

    def _split_generators(self, dl_manager):
      info = self.builder_config.info
      manual = None if info.source == "sklearn" else dl_manager.manual_dir
      return {s: self._generate_examples(*part) for s, part in
              raw_splits(info.name, manual).items() if len(part[0])}

    def _generate_examples(self, index, x, y):
      for i in range(len(x)):
        label = int(y[i]) if self.builder_config.info.kind == "classification" else float(y[i])
        yield int(index[i]), {"index": int(index[i]), "x": x[i], "y": label}

  return MetatuneTraining


@functools.lru_cache(maxsize=1)
def _builder_cls():
  return _builder_class()


@contextlib.contextmanager
def _quiet():
  """No TFDS progress bars, banners or absl info while preparing (restores the settings)."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=import-outside-toplevel
  was_bar, was_level = getattr(tqdm_utils, "_active", True), absl_logging.get_verbosity()
  tqdm_utils.display_progress_bar(False)
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tqdm_utils.display_progress_bar(was_bar)
    absl_logging.set_verbosity(was_level)


def builder(name: str, cache: str | os.PathLike | None = None,
            data_dir: str | os.PathLike | None = None):
  """Prepares (once) and returns the TFDS builder of a dataset.

  Args:
    name: a ``DATASETS`` key.
    cache: the cache folder (see `cache_dir`).
    data_dir: the data folder, for folder datasets.

  Raises:
    ValueError: unknown dataset, or a folder dataset without ``data_dir``.
    FileNotFoundError: the dataset's npz is missing from the data folder.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  src = source_path(name, data_dir)
  with _quiet():
    b = _builder_cls()(config=name, data_dir=os.fspath(cache_dir(cache)),
                       file_format="array_record")
    if not b.is_prepared():
      if src is not None and not src.is_file():
        raise FileNotFoundError(f"dataset {name!r}: {src} does not exist")
      manual = None if src is None else os.fspath(data_dir)
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return b


def read_split(b, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(index, x, y)`` of a prepared split, in the order of the original examples."""
  source = b.as_data_source(split=split)
  items = source.__getitems__(list(range(len(source))))
  index = np.array([it["index"] for it in items], np.int64)
  order = np.argsort(index)
  x = np.stack([it["x"] for it in items])[order]
  y = np.array([it["y"] for it in items])[order]
  return index[order], x, y


@functools.lru_cache(maxsize=16)
def _load_numpy(name: str, cache: str, data_dir: str | None):
  if not _has_tfds():
    warnings.warn(f"tensorflow-datasets is not installed: dataset {name!r} is read from its "
                  "source without the prepared cache", stacklevel=3)
    return raw_splits(name, data_dir)
  b = builder(name, cache, data_dir)
  return {s: read_split(b, s) for s in SPLITS}


def load(name: str, cache: str | os.PathLike | None = None,
         data_dir: str | os.PathLike | None = None) -> Data:
  """A dataset's standardized splits as jnp arrays (prepared into the cache on first use).

  Features are standardized with the training split's statistics: per feature
  for tables, one mean and scale for images and signals (keeping their
  structure). Regression targets are standardized the same way, so an MSE of 1
  is the training mean's.

  Example:
    >>> data = load("iris", cache="/tmp/metatune-cache")  # doctest: +SKIP
    >>> data.x_train.shape
    (90, 4)
  """
  info = DATASETS.get(name)
  if info is None:
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
  raw = _load_numpy(name, os.fspath(cache_dir(cache)),
                    None if data_dir is None else os.fspath(data_dir))
  x_train = raw["train"][1].astype(np.float64)
  axis = None if info.shape is not None else 0
  mean, std = x_train.mean(axis=axis), x_train.std(axis=axis)
  std = np.where(std > 1e-8, std, 1.0)
  xs = {s: ((raw[s][1] - mean) / std).astype(np.float32) for s in SPLITS}
  if info.kind == "classification":
    ys = {s: raw[s][2].astype(np.int32) for s in SPLITS}
  else:
    y_mean, y_std = raw["train"][2].mean(), raw["train"][2].std()
    ys = {s: ((raw[s][2] - y_mean) / y_std).astype(np.float32) for s in SPLITS}
  return Data(x_train=jnp.asarray(xs["train"]), y_train=jnp.asarray(ys["train"]),
              x_valid=jnp.asarray(xs["validation"]), y_valid=jnp.asarray(ys["validation"]),
              x_test=jnp.asarray(xs["test"]), y_test=jnp.asarray(ys["test"]))
