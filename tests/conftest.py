"""Shared test settings: JAX's key-reuse checker on, and the data folder as a setting."""

import os
import pathlib

# One BLAS thread per process: on 2 shared cores, threaded LAPACK calls on small GP
# matrices wait for time slices (about 30x slower) and vmapped ones can deadlock.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # pylint: disable=wrong-import-position
import pytest

jax.config.update("jax_debug_key_reuse", True)

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The folder named by METATUNE_DATA_DIR (``../shared/data`` in CI); skips without it."""
  path = os.environ.get("METATUNE_DATA_DIR")
  if not path:
    pytest.skip("METATUNE_DATA_DIR is not set: no data folder for this test")
  p = pathlib.Path(path)
  if not p.is_dir():
    pytest.skip(f"METATUNE_DATA_DIR={path} is not a folder")
  return p
