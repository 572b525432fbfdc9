"""Pareto front, exact hypervolume, feasibility and scalarizations (minimization)."""

import itertools

import numpy as np
import pytest

from metatune.study.pareto import chebyshev, feasible, hypervolume, pareto_mask, weighted_sum


def naive_front(v):
  n = len(v)
  out = np.zeros(n, bool)
  for i in range(n):
    if not np.all(np.isfinite(v[i])):
      continue
    out[i] = not any(np.all(np.isfinite(v[j])) and np.all(v[j] <= v[i]) and np.any(v[j] < v[i])
                     for j in range(n) if j != i)
  return out


def inclusion_exclusion_hv(v, ref):
  """Exact hypervolume as the volume of a union of boxes, by inclusion-exclusion."""
  v = [p for p in v if np.all(np.isfinite(p)) and np.all(p < ref)]
  total = 0.0
  for k in range(1, len(v) + 1):
    for subset in itertools.combinations(v, k):
      corner = np.max(np.stack(subset), axis=0)
      total += (-1) ** (k + 1) * np.prod(ref - corner)
  return total


@pytest.mark.parametrize("m", [2, 3, 4])
def test_pareto_mask_matches_the_definition_with_ties_and_failures(m):
  rng = np.random.default_rng(m)
  v = rng.integers(0, 5, size=(60, m)).astype(float)  # many ties and duplicates
  v[rng.integers(0, 60, 5), rng.integers(0, m, 5)] = np.nan
  v[3] = np.inf
  np.testing.assert_array_equal(pareto_mask(v), naive_front(v))


def test_pareto_mask_small_cases():
  assert pareto_mask(np.zeros((0, 2))).shape == (0,)
  assert pareto_mask([[1.0, 1.0], [1.0, 1.0]]).tolist() == [True, True]
  assert pareto_mask([[0.0, np.nan], [1.0, 1.0]]).tolist() == [False, True]
  assert pareto_mask([[3.0], [1.0], [1.0]]).tolist() == [False, True, True]


def test_hypervolume_known_values():
  assert hypervolume([[1, 2], [2, 1]], [3, 3]) == pytest.approx(3.0)
  assert hypervolume([[1, 1, 1]], [2, 3, 4]) == pytest.approx(6.0)
  assert hypervolume([[0.5]], [2.0]) == pytest.approx(1.5)
  # Points not strictly better than the reference, and failed rows, add nothing.
  assert hypervolume([[3, 0], [np.nan, 0], [5, 5]], [3, 3]) == 0.0
  assert hypervolume(np.zeros((0, 3)), [1, 1, 1]) == 0.0


@pytest.mark.parametrize("m, n", [(2, 8), (3, 8), (4, 7), (5, 6)])
def test_hypervolume_is_exact_against_inclusion_exclusion(m, n):
  rng = np.random.default_rng(10 * m + n)
  for _ in range(5):
    v = rng.uniform(size=(n, m))
    v[rng.integers(0, n)] = v[rng.integers(0, n)]  # a duplicate now and then
    ref = np.full(m, 1.1)
    assert hypervolume(v, ref) == pytest.approx(inclusion_exclusion_hv(v, ref), rel=1e-10)


def test_hypervolume_of_a_large_3d_front_is_consistent():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(200, 2))
  v = np.column_stack([x, 1.0 - x.sum(axis=1) / 2])  # many mutually non-dominated points
  ref = np.full(3, 1.5)
  hv = hypervolume(v, ref)
  assert 0 < hv < 1.5 ** 3
  # Adding a dominated point changes nothing; removing a front point does not increase it.
  assert hypervolume(np.vstack([v, v[0] + 0.01]), ref) == pytest.approx(hv, rel=1e-12)
  assert hypervolume(v[1:], ref) <= hv


def test_bad_shapes_name_the_argument():
  with pytest.raises(ValueError, match=r"values must have shape \[N, M\]"):
    pareto_mask([1.0, 2.0])
  with pytest.raises(ValueError, match=r"reference must have shape \(2,\)"):
    hypervolume([[1, 2]], [3, 3, 3])
  with pytest.raises(ValueError, match="reference must be finite"):
    hypervolume([[1, 2]], [3, np.nan])
  with pytest.raises(ValueError, match="values must be numbers"):
    hypervolume([["a", "b"]], [3, 3])
  with pytest.raises(ValueError, match=r"constraint_values must have shape \[N, M\]"):
    feasible([0.1, -0.2])


def test_feasible_needs_every_constraint_at_most_zero():
  c = np.array([[0.0, -1.0], [0.5, -1.0], [np.nan, -1.0], [-np.inf, -2.0]])
  assert feasible(c).tolist() == [True, False, False, True]
  assert feasible(np.zeros((3, 0))).tolist() == [True, True, True]


def test_scalarizations():
  v = np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [np.nan, 0.0]])
  ws = weighted_sum(v, [1.0, 1.0])
  np.testing.assert_allclose(ws[:3], [5.0, 4.0, 5.0])
  assert np.isnan(ws[3])
  ch = chebyshev(v, [1.0, 1.0], [0.0, 0.0])
  np.testing.assert_allclose(ch[:3], [4.0, 2.0, 4.0])
  assert np.isnan(ch[3])
  # Chebyshev reaches a point of a non-convex front that no weighted sum selects.
  front = np.array([[0.0, 1.0], [0.6, 0.6], [1.0, 0.0]])
  assert all(np.argmin(weighted_sum(front, [w, 1 - w])) != 1 for w in np.linspace(0, 1, 21))
  assert np.argmin(chebyshev(front, [0.5, 0.5], [0.0, 0.0])) == 1
  # Augmentation breaks a tie in favour of the non-dominated point.
  tie = np.array([[1.0, 1.0], [1.0, 0.5]])
  assert np.argmin(chebyshev(tie, [1.0, 1.0], [0.0, 0.0], augment=1e-3)) == 1


@pytest.mark.parametrize("weights, match", [
    ([1.0], r"weights must have shape \(2,\)"),
    ([-1.0, 1.0], "non-negative"),
    ([0.0, 0.0], "not all zero"),
])
def test_bad_weights(weights, match):
  with pytest.raises(ValueError, match=match):
    weighted_sum([[1.0, 2.0]], weights)
  with pytest.raises(ValueError, match=match):
    chebyshev([[1.0, 2.0]], weights, [0.0, 0.0])


def test_bad_ideal_and_augment():
  with pytest.raises(ValueError, match=r"ideal must have shape \(2,\)"):
    chebyshev([[1.0, 2.0]], [1, 1], [0.0])
  with pytest.raises(ValueError, match="augment must be"):
    chebyshev([[1.0, 2.0]], [1, 1], [0.0, 0.0], augment=-1)
