"""Study figures: each writes a real PNG, and bad input raises an error naming the argument."""

import pathlib
import struct
import sys

import numpy as np
import pytest

from metatune.space import io
from metatune.study import plots
from metatune.study.pareto import pareto_mask

SPACE_FILE = pathlib.Path(__file__).resolve().parents[2] / "configs" / "spaces" / "nn_tuning.yaml"


def png_size(path: pathlib.Path) -> tuple[int, int]:
  """Width and height from a PNG's IHDR chunk; fails unless the file is a PNG."""
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
  assert data[12:16] == b"IHDR"
  assert data[-8:-4] == b"IEND", "truncated PNG"
  return struct.unpack(">II", data[16:24])


def pixels(path: pathlib.Path) -> np.ndarray:
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  return matplotlib.image.imread(str(path))


def test_history_png(tmp_path):
  out = tmp_path / "history.png"
  values = np.array([0.9, 0.5, np.nan, 0.7, 0.3, 0.35])
  got = plots.plot_history(out, range(6), values, [False, False, True, False, False, False])
  assert got == str(out)
  w, h = png_size(out)
  assert (w, h) == (700, 400) and out.stat().st_size > 10_000
  img = pixels(out)
  # Something is drawn: many distinct colours, not a blank canvas.
  assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50


def test_parallel_coordinates_png_with_inactive_parameters(tmp_path):
  space = io.load(SPACE_FILE)
  configs = [
      {"optimizer": "sgd", "lr": 0.1, "sgd.momentum": 0.9, "sgd.nesterov": True,
       "schedule": "constant", "num_layers": 1, "width.l1": 64, "activation": "relu",
       "dropout": 0.1, "batch_size": 32},
      {"optimizer": "adam", "lr": 1e-3, "adam.b1": 0.9, "adam.b2": 0.99, "adam.eps": 1e-8,
       "schedule": "cosine", "schedule.warmup": 100, "num_layers": 2, "width.l1": 128,
       "width.l2": 64, "activation": "gelu", "dropout": 0.0, "batch_size": 128},
      {"optimizer": "rmsprop", "lr": 1e-4, "rmsprop.decay": 0.9, "schedule": "exponential",
       "schedule.warmup": 0, "schedule.decay_rate": 0.9, "num_layers": 1, "width.l1": 16,
       "activation": "tanh", "dropout": 0.5, "batch_size": 16},
  ]
  for cfg in configs:
    space.validate(cfg)
  out = tmp_path / "pc.png"
  plots.plot_parallel_coordinates(out, configs, [0.2, 0.1, np.nan], space=space)
  w, h = png_size(out)
  assert w >= 600 and h == 480 and out.stat().st_size > 20_000
  out2 = tmp_path / "pc_nospace.png"
  plots.plot_parallel_coordinates(out2, configs, [0.2, 0.1, 0.4])
  assert png_size(out2)[1] == 480 and out2.stat().st_size > 20_000


def test_pareto_png(tmp_path):
  rng = np.random.default_rng(0)
  v = rng.uniform(size=(40, 2))
  v[5] = np.nan
  out = tmp_path / "front.png"
  plots.plot_pareto(out, v, pareto_mask(v), names=("error", "cost"))
  assert png_size(out) == (550, 450) and out.stat().st_size > 10_000


def test_history_bad_input(tmp_path):
  out = tmp_path / "h.png"
  with pytest.raises(ValueError, match=r"values must have shape \(3,\)"):
    plots.plot_history(out, [0, 1, 2], [0.1, 0.2], [False] * 3)
  with pytest.raises(ValueError, match=r"failed must have shape \(2,\)"):
    plots.plot_history(out, [0, 1], [0.1, 0.2], [False])
  with pytest.raises(ValueError, match="failed must be booleans"):
    plots.plot_history(out, [0, 1], [0.1, 0.2], [0.5, 0.1])
  with pytest.raises(ValueError, match="numbers: no trials"):
    plots.plot_history(out, [], [], [])
  with pytest.raises(ValueError, match="values must be numbers"):
    plots.plot_history(out, [0], ["x"], [False])
  with pytest.raises(ValueError, match="path: the folder .* does not exist"):
    plots.plot_history(tmp_path / "missing" / "h.png", [0], [0.1], [False])
  assert not out.exists()


def test_parallel_coordinates_bad_input(tmp_path):
  out = tmp_path / "pc.png"
  with pytest.raises(ValueError, match="configs: no configurations"):
    plots.plot_parallel_coordinates(out, [], [])
  with pytest.raises(ValueError, match=r"configs\[1\] must be a mapping"):
    plots.plot_parallel_coordinates(out, [{"a": 1}, 3], [0.1, 0.2])
  with pytest.raises(ValueError, match="configs must be a list"):
    plots.plot_parallel_coordinates(out, {"a": 1}, [0.1])
  with pytest.raises(ValueError, match=r"values must have shape \(2,\)"):
    plots.plot_parallel_coordinates(out, [{"a": 1}, {"a": 2}], [0.1])


def test_pareto_bad_input(tmp_path):
  out = tmp_path / "p.png"
  with pytest.raises(ValueError, match=r"values must have shape \[N, 2\]"):
    plots.plot_pareto(out, np.zeros((3, 3)), np.ones(3, bool))
  with pytest.raises(ValueError, match=r"mask must have shape \(3,\)"):
    plots.plot_pareto(out, np.zeros((3, 2)), np.ones(2, bool))
  with pytest.raises(ValueError, match="names must be two strings"):
    plots.plot_pareto(out, np.zeros((3, 2)), np.ones(3, bool), names=("a",))


def test_importing_the_study_helpers_does_not_import_matplotlib():
  import subprocess  # pylint: disable=import-outside-toplevel
  code = ("import sys; import metatune.study.plots, metatune.study.pareto, "
          "metatune.study.plateau, metatune.study.pruners; "
          "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
  subprocess.run([sys.executable, "-c", code], check=True)
