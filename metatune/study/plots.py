"""Study figures as PNG files: optimization history, parallel coordinates, Pareto front.

matplotlib is imported when a plot is drawn, and figures are drawn on the Agg
canvas directly (no pyplot, so no global state and no display needed).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np


def _figure(width: float, height: float):
  try:
    # pylint: disable=import-outside-toplevel
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as e:  # pragma: no cover - matplotlib is a dependency
    raise ImportError("metatune.study.plots needs matplotlib (pip install matplotlib)") from e
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path) -> str:
  path = os.fspath(path)
  folder = os.path.dirname(path)
  if folder and not os.path.isdir(folder):
    raise ValueError(f"path: the folder {folder!r} does not exist")
  fig.savefig(path, format="png")
  return path


def _numbers(name: str, values, ndim: int = 1) -> np.ndarray:
  try:
    arr = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be numbers: {e}") from None
  if arr.ndim != ndim:
    raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
  return arr


def _bools(name: str, values, n: int) -> np.ndarray:
  arr = np.asarray(values)
  if arr.shape != (n,):
    raise ValueError(f"{name} must have shape ({n},) (one per trial), got {arr.shape}")
  if arr.dtype != bool:
    if not np.issubdtype(arr.dtype, np.integer) or not np.all((arr == 0) | (arr == 1)):
      raise ValueError(f"{name} must be booleans, got dtype {arr.dtype}")
    arr = arr.astype(bool)
  return arr


def plot_history(path, numbers, values, failed) -> str:
  """Objective of every trial and the best so far (minimized), failed trials marked.

  Args:
    path: the PNG file to write (its folder must exist).
    numbers: i[N] trial numbers (x axis).
    values: f[N] objectives; NaN allowed for failed trials.
    failed: bool[N]; failed trials are drawn as red crosses along the bottom edge
      and never count for the best.

  Returns:
    ``path`` as a string.

  Raises:
    ValueError: naming the argument with a wrong shape or type, or no trial.

  Example:
    >>> plot_history("/tmp/history.png", [0, 1, 2], [0.5, float("nan"), 0.3],
    ...              [False, True, False])  # doctest: +SKIP
  """
  x = _numbers("numbers", numbers)
  y = _numbers("values", values)
  if x.size == 0:
    raise ValueError("numbers: no trials to plot")
  if y.shape != x.shape:
    raise ValueError(f"values must have shape {x.shape} (one per trial number), got {y.shape}")
  bad = _bools("failed", failed, x.size)
  if not np.all(np.isfinite(x)):
    raise ValueError("numbers must be finite")
  order = np.argsort(x, kind="stable")
  x, y, bad = x[order], y[order], bad[order]
  ok = ~bad & np.isfinite(y)
  best = np.minimum.accumulate(np.where(ok, y, np.inf))
  fig = _figure(7, 4)
  ax = fig.add_subplot()
  ax.scatter(x[ok], y[ok], s=14, color="tab:blue", alpha=0.7, label="objective")
  shown = np.isfinite(best)
  if shown.any():
    ax.step(x[shown], best[shown], where="post", color="tab:orange", lw=2, label="best so far")
  if bad.any() or (~ok).any():
    lo = np.min(y[ok]) if ok.any() else 0.0
    hi = np.max(y[ok]) if ok.any() else 1.0
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    marks = ~ok
    ax.scatter(x[marks], np.full(int(marks.sum()), lo - pad), marker="x", color="tab:red",
               s=30, label=f"failed ({int(marks.sum())})")
  ax.set_xlabel("trial")
  ax.set_ylabel("objective (minimized)")
  ax.set_title(f"Optimization history ({x.size} trials)")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right")
  fig.tight_layout()
  return _save(fig, path)


def _is_number(v: Any) -> bool:
  return (isinstance(v, (int, float, np.integer, np.floating)) and
          not isinstance(v, (bool, np.bool_)))


def _axis(name: str, column: list, space) -> tuple[np.ndarray, list[float], list[str]]:
  """A parameter's positions in [0, 1] (NaN where missing), tick positions and labels."""
  present = [v for v in column if v is not None]
  param = None
  if space is not None and name in getattr(space, "index", {}):
    param = space.params[space.index[name]]
  categorical = (param is not None and param.kind in ("categorical", "bool", "ordinal")) or any(
      not _is_number(v) for v in present)
  pos = np.full(len(column), np.nan)
  if categorical:
    if param is not None and param.kind in ("categorical", "bool", "ordinal"):
      choices = list(param.choices)
    else:
      choices = sorted({v for v in present}, key=lambda v: (str(type(v)), str(v)))
    for v in present:
      if v not in choices:
        choices.append(v)
    denom = max(len(choices) - 1, 1)
    for i, v in enumerate(column):
      if v is not None:
        pos[i] = choices.index(v) / denom if len(choices) > 1 else 0.5
    ticks = [k / denom if len(choices) > 1 else 0.5 for k in range(len(choices))]
    return pos, ticks, [str(c) for c in choices]
  nums = np.array([np.nan if v is None else float(v) for v in column])
  finite = nums[np.isfinite(nums)]
  if finite.size == 0:
    return pos, [], []
  log = param.log if param is not None else False
  lo, hi = (param.low, param.high) if param is not None else (finite.min(), finite.max())
  lo, hi = min(lo, finite.min()), max(hi, finite.max())
  if log and lo > 0:
    t = np.log(nums)
    tlo, thi = math.log(lo), math.log(hi)
  else:
    t, tlo, thi = nums, lo, hi
  span = thi - tlo
  pos = (t - tlo) / span if span > 0 else np.where(np.isfinite(nums), 0.5, np.nan)
  ticks = [0.0, 1.0] if span > 0 else [0.5]
  labels = [f"{lo:.3g}", f"{hi:.3g}"] if span > 0 else [f"{lo:.3g}"]
  return pos, ticks, labels


def plot_parallel_coordinates(path, configs: Sequence[Mapping[str, Any]], values,
                              space=None, max_params: int = 30) -> str:
  """One line per configuration across parameter axes, coloured by objective.

  A parameter missing from a configuration (inactive in it) is shown as missing:
  the line breaks at that axis. Categorical, bool and ordinal axes are labelled by
  choice; numeric axes span their range (log-scaled when ``space`` says so). The
  last axis is the objective; failed configurations (non-finite values) are grey.

  Args:
    path: the PNG file to write.
    configs: N configurations (parameter name -> value, active parameters only).
    values: f[N] objectives (minimized).
    space: an optional `metatune.space.Space` giving parameter order, log scales
      and choice order; without it, the order of first appearance is used.
    max_params: most parameter axes drawn (the rest are left out, said in the title).

  Returns:
    ``path`` as a string.

  Raises:
    ValueError: naming ``configs`` or ``values`` when they are empty, not
      mappings, or of different lengths.

  Example:
    >>> plot_parallel_coordinates("/tmp/pc.png", [{"opt": "sgd", "lr": 0.1},
    ...                           {"opt": "adam", "lr": 0.01}], [0.3, 0.2])  # doctest: +SKIP
  """
  if isinstance(configs, Mapping) or not isinstance(configs, Sequence):
    raise ValueError(f"configs must be a list of configurations (dicts), got "
                     f"{type(configs).__name__}")
  if not configs:
    raise ValueError("configs: no configurations to plot")
  for i, c in enumerate(configs):
    if not isinstance(c, Mapping):
      raise ValueError(f"configs[{i}] must be a mapping of parameter name -> value, got "
                       f"{type(c).__name__}")
  y = _numbers("values", values)
  if y.shape != (len(configs),):
    raise ValueError(f"values must have shape ({len(configs)},) (one per configuration), got "
                     f"{y.shape}")
  names: list[str] = []
  if space is not None:
    seen = {k for c in configs for k in c}
    names = [n for n in space.names if n in seen]
  for c in configs:
    for k in c:
      if k not in names:
        names.append(k)
  if not names:
    raise ValueError("configs: the configurations have no parameters")
  dropped = max(0, len(names) - max_params)
  names = names[:max_params]
  axes = [_axis(n, [c.get(n) for c in configs], space) for n in names]
  ok = np.isfinite(y)
  if ok.any():
    lo, hi = float(y[ok].min()), float(y[ok].max())
  else:
    lo, hi = 0.0, 1.0
  ypos = np.where(ok, (y - lo) / (hi - lo) if hi > lo else 0.5, np.nan)
  axes.append((ypos, [0.0, 1.0] if hi > lo else [0.5],
               [f"{lo:.3g}", f"{hi:.3g}"] if hi > lo else [f"{lo:.3g}"]))
  labels = names + ["objective"]
  data = np.stack([a[0] for a in axes], axis=1)  # [N, P + 1]

  fig = _figure(min(16.0, max(6.0, 0.8 * len(labels) + 2.0)), 4.8)
  ax = fig.add_subplot()
  import matplotlib  # pylint: disable=import-outside-toplevel
  from matplotlib import colors  # pylint: disable=import-outside-toplevel
  norm = colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
  cmap = matplotlib.colormaps["viridis_r"]
  xs = np.arange(len(labels))
  # Worst first, so the best lines are drawn on top.
  for i in np.argsort(np.where(ok, -y, np.inf)):
    color = cmap(norm(y[i])) if ok[i] else (0.6, 0.6, 0.6, 0.5)
    ax.plot(xs, data[i], color=color, lw=1.0, alpha=0.8 if ok[i] else 0.4)
    ax.scatter(xs, data[i], color=[color], s=6)
  for j, (_, ticks, tick_labels) in enumerate(axes):
    ax.axvline(j, color="black", lw=0.8)
    for t, text in zip(ticks, tick_labels):
      ax.text(j + 0.04, t, text, fontsize=7, va="center", ha="left")
  ax.set_xticks(xs)
  ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
  ax.set_yticks([])
  ax.set_ylim(-0.08, 1.08)
  ax.set_xlim(-0.3, len(labels) - 0.4)
  title = f"Parallel coordinates ({len(configs)} configurations; gaps: inactive parameters)"
  if dropped:
    title += f"; {dropped} parameters not shown"
  ax.set_title(title, fontsize=9)
  from matplotlib.cm import ScalarMappable  # pylint: disable=import-outside-toplevel
  fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="objective")
  fig.tight_layout()
  return _save(fig, path)


def plot_pareto(path, values, mask, names: Sequence[str] = ("f1", "f2")) -> str:
  """Two objectives (minimized): every trial, and the Pareto front as a staircase.

  Args:
    path: the PNG file to write.
    values: f[N, 2] objectives; rows with a non-finite entry are left out.
    mask: bool[N] the Pareto-optimal rows (see `metatune.study.pareto.pareto_mask`).
    names: the two objectives' names, for the axes.

  Returns:
    ``path`` as a string.

  Raises:
    ValueError: naming ``values``, ``mask`` or ``names`` when a shape is wrong.

  Example:
    >>> v = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]])
    >>> plot_pareto("/tmp/front.png", v, pareto_mask(v))  # doctest: +SKIP
  """
  v = _numbers("values", values, ndim=2)
  if v.shape[1] != 2:
    raise ValueError(f"values must have shape [N, 2] (two objectives), got {v.shape}")
  if v.shape[0] == 0:
    raise ValueError("values: no trials to plot")
  front = _bools("mask", mask, v.shape[0])
  if isinstance(names, str) or len(names) != 2 or not all(isinstance(n, str) for n in names):
    raise ValueError(f"names must be two strings, got {names!r}")
  finite = np.all(np.isfinite(v), axis=1)
  front = front & finite
  fig = _figure(5.5, 4.5)
  ax = fig.add_subplot()
  rest = finite & ~front
  ax.scatter(v[rest, 0], v[rest, 1], s=14, color="tab:gray", alpha=0.6,
             label=f"dominated ({int(rest.sum())})")
  if front.any():
    f = v[front]
    f = f[np.argsort(f[:, 0], kind="stable")]
    ax.step(f[:, 0], f[:, 1], where="post", color="tab:red", lw=1.5)
    ax.scatter(f[:, 0], f[:, 1], s=30, color="tab:red", zorder=3,
               label=f"Pareto front ({int(front.sum())})")
  ax.set_xlabel(f"{names[0]} (minimized)")
  ax.set_ylabel(f"{names[1]} (minimized)")
  left = int((~finite).sum())
  ax.set_title("Pareto front" + (f" ({left} failed trials not shown)" if left else ""))
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right")
  fig.tight_layout()
  return _save(fig, path)
