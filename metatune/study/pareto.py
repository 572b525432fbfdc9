"""Multi-objective helpers, all minimized: Pareto front, hypervolume, feasibility, scalarizations.

Rows with a NaN or infinite objective are never on the front, dominate
nothing and add no hypervolume: a failed trial is data, never an incumbent.
"""

from __future__ import annotations

import numpy as np


def _matrix(values, name: str = "values") -> np.ndarray:
  try:
    arr = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be numbers of shape [N, M]: {e}") from None
  if arr.ndim != 2:
    raise ValueError(f"{name} must have shape [N, M] (trials x objectives), got shape "
                     f"{arr.shape}")
  return arr


def _vector(values, size: int, name: str) -> np.ndarray:
  try:
    arr = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be {size} numbers: {e}") from None
  if arr.shape != (size,):
    raise ValueError(f"{name} must have shape ({size},) (one per objective), got {arr.shape}")
  return arr


def pareto_mask(values) -> np.ndarray:
  """Which rows are Pareto-optimal (not dominated by any other row), minimizing every column.

  Row ``a`` dominates row ``b`` when ``a <= b`` everywhere and ``a < b``
  somewhere; equal rows are both on the front.

  Args:
    values: f64[N, M] objectives.

  Returns:
    bool[N]; rows with a non-finite entry are False.

  Raises:
    ValueError: when ``values`` is not a numeric [N, M] array.

  Example:
    >>> pareto_mask([[1, 2], [2, 1], [2, 2], [float("nan"), 0]]).tolist()
    [True, True, False, False]
  """
  v = _matrix(values)
  finite = np.all(np.isfinite(v), axis=1)
  mask = finite.copy()
  idx = np.flatnonzero(finite)
  fv = v[idx]
  # Chunked so the [chunk, N, M] comparison stays small for large N.
  chunk = max(1, 2_000_000 // max(1, fv.shape[0] * max(1, fv.shape[1])))
  for start in range(0, fv.shape[0], chunk):
    b = fv[start:start + chunk]
    le = np.all(fv[None, :, :] <= b[:, None, :], axis=2)
    lt = np.any(fv[None, :, :] < b[:, None, :], axis=2)
    dominated = np.any(le & lt, axis=1)
    mask[idx[start:start + chunk]] = ~dominated
  return mask


def _hv2(points: np.ndarray, ref: np.ndarray) -> float:
  """Exact 2-D hypervolume of points that all strictly dominate ``ref``."""
  order = np.lexsort((points[:, 1], points[:, 0]))
  total, y_bound = 0.0, ref[1]
  for x, y in points[order]:
    if y < y_bound:
      total += (ref[0] - x) * (y_bound - y)
      y_bound = y
  return total


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
  """Exact hypervolume by slicing the last objective (HSO); 2-D sweep at the bottom."""
  if points.shape[0] == 0:
    return 0.0
  m = points.shape[1]
  if m == 1:
    return float(ref[0] - points[:, 0].min())
  if m == 2:
    return _hv2(points, ref)
  points = points[pareto_mask(points)]
  order = np.argsort(points[:, -1], kind="stable")
  points = points[order]
  total = 0.0
  for i in range(points.shape[0]):
    upper = points[i + 1, -1] if i + 1 < points.shape[0] else ref[-1]
    depth = upper - points[i, -1]
    if depth > 0:
      total += depth * _hv(points[:i + 1, :-1], ref[:-1])
  return total


def hypervolume(values, reference) -> float:
  """The volume dominated by ``values`` and bounded by ``reference`` (minimization), exactly.

  Exact for any number of objectives by slicing the last objective down to a
  2-D sweep: ``O(N log N)`` for M=2, ``O(N^2 log N)`` for M=3, growing as
  ``N^(M-1)`` beyond (fine for the fronts of a study). Points that do not
  strictly dominate the reference, and non-finite rows, add nothing.

  Args:
    values: f64[N, M] objectives.
    reference: f64[M] a finite reference point (worse than interesting points).

  Returns:
    The hypervolume (0.0 when no point dominates the reference).

  Raises:
    ValueError: naming ``values`` or ``reference`` when a shape or value is wrong.

  Example:
    >>> hypervolume([[1, 2], [2, 1]], [3, 3])
    3.0
  """
  v = _matrix(values)
  ref = _vector(reference, v.shape[1], "reference")
  if v.shape[1] == 0:
    raise ValueError("values must have at least one objective (column)")
  if not np.all(np.isfinite(ref)):
    raise ValueError(f"reference must be finite, got {ref.tolist()}")
  keep = np.all(np.isfinite(v), axis=1) & np.all(v < ref, axis=1)
  pts = v[keep]
  if pts.shape[0] == 0:
    return 0.0
  return float(_hv(pts[pareto_mask(pts)], ref))


def feasible(constraint_values) -> np.ndarray:
  """Which rows satisfy every constraint: all ``<= 0`` (NaN is infeasible).

  Args:
    constraint_values: f64[N, C], one column per constraint (C may be 0).

  Returns:
    bool[N].

  Raises:
    ValueError: when ``constraint_values`` is not a numeric [N, C] array.

  Example:
    >>> feasible([[0.0, -1.0], [0.5, -1.0], [float("nan"), 0.0]]).tolist()
    [True, False, False]
  """
  c = _matrix(constraint_values, "constraint_values")
  with np.errstate(invalid="ignore"):
    return np.all(c <= 0.0, axis=1)


def _weights(weights, m: int) -> np.ndarray:
  w = _vector(weights, m, "weights")
  if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
    raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
  return w


def weighted_sum(values, weights) -> np.ndarray:
  """Scalarizes by ``sum_j w_j f_j`` (a non-finite row stays non-finite, i.e. failed).

  Args:
    values: f64[N, M] objectives.
    weights: f64[M] non-negative, not all zero.

  Returns:
    f64[N].

  Raises:
    ValueError: naming ``values`` or ``weights``.

  Example:
    >>> weighted_sum([[1, 2], [3, 0]], [0.5, 0.5]).tolist()
    [1.5, 1.5]
  """
  v = _matrix(values)
  return v @ _weights(weights, v.shape[1])


def chebyshev(values, weights, ideal, augment: float = 0.0) -> np.ndarray:
  """Weighted Chebyshev scalarization ``max_j w_j |f_j - z_j| + augment * sum_j w_j |f_j - z_j|``.

  Unlike a weighted sum, its minimizers reach every point of a non-convex
  front as the weights vary. A small ``augment`` (e.g. 1e-3) breaks ties in
  favour of Pareto-optimal points.

  Args:
    values: f64[N, M] objectives.
    weights: f64[M] non-negative, not all zero.
    ideal: f64[M] the ideal point ``z`` (e.g. the best value of each objective).
    augment: non-negative weight of the augmentation term.

  Returns:
    f64[N] (non-finite where a row is).

  Raises:
    ValueError: naming ``values``, ``weights``, ``ideal`` or ``augment``.

  Example:
    >>> chebyshev([[1, 2], [2, 1]], [1, 1], [0, 0]).tolist()
    [2.0, 2.0]
  """
  v = _matrix(values)
  w = _weights(weights, v.shape[1])
  z = _vector(ideal, v.shape[1], "ideal")
  if not np.all(np.isfinite(z)):
    raise ValueError(f"ideal must be finite, got {z.tolist()}")
  if not (isinstance(augment, (int, float)) and np.isfinite(augment) and augment >= 0):
    raise ValueError(f"augment must be a finite number >= 0, got {augment!r}")
  d = w * np.abs(v - z)
  if d.shape[1] == 0:
    raise ValueError("values must have at least one objective (column)")
  return d.max(axis=1) + augment * d.sum(axis=1)
