"""Pareto dominance, fronts, crowding distance, hypervolume and IGD against their definitions."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from optim.nas import crowding_distance, dominates, hypervolume_2d, igd, non_dominated_sort, pareto_front


def point_sets(min_points=0, max_points=12, objectives=st.integers(1, 3)):
    """Small integer coordinates, so that ties and duplicated rows are frequent."""
    return st.tuples(st.integers(min_points, max_points), objectives).flatmap(
        lambda shape: arrays(np.float64, shape, elements=st.integers(0, 4).map(float)))


def brute_dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


@given(arrays(np.float64, (3, 2), elements=st.integers(0, 3).map(float)))
def test_dominance_is_a_strict_partial_order(p):
    a, b, c = p
    assert not dominates(a, a)
    assert not (dominates(a, b) and dominates(b, a))
    if dominates(a, b) and dominates(b, c):
        assert dominates(a, c)
    assert bool(dominates(a, b)) == brute_dominates(a, b)


@given(point_sets())
def test_pareto_front_equals_brute_force(points):
    expected = [i for i, p in enumerate(points)
                if not any(brute_dominates(q, p) for j, q in enumerate(points) if j != i)]
    assert pareto_front(points).tolist() == expected


def test_pareto_front_keeps_duplicates_of_non_dominated_rows():
    points = [[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0]]
    assert pareto_front(points).tolist() == [0, 1, 2]


@given(point_sets())
def test_non_dominated_sort_ranks(points):
    fronts = non_dominated_sort(points)
    flat = np.concatenate(fronts) if fronts else np.zeros(0, dtype=int)
    assert sorted(flat.tolist()) == list(range(len(points)))  # a partition
    for rank, front in enumerate(fronts):
        for i, j in itertools.product(front, front):
            assert not brute_dominates(points[i], points[j])
        if rank:
            for j in front:
                assert any(brute_dominates(points[i], points[j]) for i in fronts[rank - 1])
    if len(points):
        assert fronts[0].tolist() == pareto_front(points).tolist()


@given(point_sets(min_points=1), st.data())
def test_crowding_distance_extremes_and_scaling(points, data):
    distance = crowding_distance(points)
    assert distance.shape == (len(points),) and np.all(distance >= 0)
    for k in range(points.shape[1]):
        column = points[:, k]
        if column.max() > column.min():
            assert np.any(np.isinf(distance[column == column.min()]))
            assert np.any(np.isinf(distance[column == column.max()]))
    k = data.draw(st.integers(0, points.shape[1] - 1))
    factor = data.draw(st.sampled_from([0.5, 2.0, 8.0, 1000.0]))
    shift = data.draw(st.sampled_from([0.0, -3.0, 7.5]))
    moved = points.copy()
    moved[:, k] = moved[:, k] * factor + shift
    np.testing.assert_allclose(crowding_distance(moved), distance, rtol=1e-12)


def test_crowding_distance_of_an_evenly_spaced_front():
    # Deb et al. (2002), III-B: an interior point's distance is the sum over objectives of
    # its neighbours' normalised gap; on a front with equal spacing every gap is 2/(n-1).
    f1 = np.linspace(0.0, 1.0, 5)
    distance = crowding_distance(np.column_stack([f1, 1.0 - f1]))
    assert np.isinf(distance[[0, -1]]).all()
    np.testing.assert_allclose(distance[1:-1], 2 * (2 / 4))


def test_constant_objective_adds_nothing():
    points = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    np.testing.assert_allclose(crowding_distance(points), [np.inf, 1.0, np.inf])


@given(arrays(np.float64, st.tuples(st.integers(0, 8), st.just(2)), elements=st.integers(0, 6).map(float)),
       st.tuples(st.integers(0, 7), st.integers(0, 7)).map(np.array))
def test_hypervolume_2d_equals_grid_count(points, reference):
    # On integer points the dominated region is a union of unit cells: count them.
    cells = sum(1 for x in range(int(reference[0])) for y in range(int(reference[1]))
                if any(p[0] <= x and p[1] <= y for p in points))
    assert hypervolume_2d(points, reference) == pytest.approx(cells)


@given(point_sets(min_points=1, objectives=st.just(2)), point_sets(min_points=1, objectives=st.just(2)))
def test_igd_equals_brute_force(front, reference):
    expected = np.mean([min(np.linalg.norm(r - a) for a in front) for r in reference])
    assert igd(front, reference) == pytest.approx(expected)
    assert igd(reference, reference) == 0.0
    assert igd(np.vstack([front, reference]), reference) == 0.0


@pytest.mark.parametrize("points, error", [
    (np.zeros(3), ValueError), (np.zeros((3, 0)), ValueError), ([[0.0, np.nan]], ValueError),
    ([[True, False]], TypeError), ([["a", "b"]], TypeError)])
def test_bad_points_are_rejected(points, error):
    for function in (pareto_front, non_dominated_sort, crowding_distance):
        with pytest.raises(error, match="points"):
            function(points)


def test_bad_reference_and_fronts_are_rejected():
    with pytest.raises(ValueError, match="reference"):
        hypervolume_2d([[0.0, 0.0]], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="2 objectives"):
        hypervolume_2d([[0.0, 0.0, 0.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        igd(np.zeros((0, 2)), [[0.0, 0.0]])
    with pytest.raises(ValueError, match="objectives"):
        igd([[0.0, 0.0]], [[0.0, 0.0, 0.0]])
