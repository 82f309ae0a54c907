"""Pareto dominance, non-dominated sorting, crowding distance and front-quality indicators.

All objectives are minimised. Row ``a`` *dominates* row ``b`` when
:math:`a_k \\le b_k` for every objective :math:`k` and :math:`a_k < b_k` for at least one.
Identical rows never dominate each other, so duplicates of a non-dominated point all belong
to the front (and to the same rank of a non-dominated sort).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["dominates", "pareto_front", "non_dominated_sort", "crowding_distance",
           "hypervolume_2d", "igd"]


def _as_points(points: ArrayLike, name: str = "points") -> np.ndarray:
    array = np.asarray(points)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n_points, n_objectives) with n_objectives >= 1, "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array[~np.all(np.isfinite(array), axis=1)][:3]}")
    return array


def dominates(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Whether ``a`` dominates ``b`` (minimisation), broadcast over leading axes.

    .. math:: a \\prec b \\iff \\forall k\\, a_k \\le b_k \\;\\wedge\\; \\exists k\\, a_k < b_k

    Source: Deb et al. (2002), NSGA-II. Tested by
    ``tests/optim/nas/test_nas_pareto.py::test_dominance_is_a_strict_partial_order``.
    """
    a, b = np.asarray(a), np.asarray(b)
    return np.all(a <= b, axis=-1) & np.any(a < b, axis=-1)


def _domination_matrix(points: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when row i dominates row j."""
    return dominates(points[:, None, :], points[None, :, :])


def pareto_front(points: ArrayLike) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` (n, m), all minimised.

    .. math:: \\mathcal{F} = \\{ i : \\nexists j,\\; p_j \\prec p_i \\}

    If :math:`p_j \\prec p_i` then :math:`p_j` precedes :math:`p_i` in lexicographic order, so
    the rows are scanned in that order and each is tested only against the front found so far
    (dominance is transitive, so a row dominated by anything is dominated by a front member).
    Duplicated non-dominated rows are all returned. Source: the definition (Deb et al. 2002,
    Section II); sorting first is the first step of Kung, Luccio & Preparata (1975). Tested by
    ``tests/optim/nas/test_nas_pareto.py::test_pareto_front_equals_brute_force``.

    Examples
    --------
    >>> pareto_front([[1, 4], [2, 2], [3, 3], [4, 1]]).tolist()
    [0, 1, 3]
    """
    points = _as_points(points)
    order = np.lexsort(points.T[::-1])
    front: list[int] = []
    for i in order:
        if not front or not np.any(dominates(points[front], points[i])):
            front.append(int(i))
    return np.sort(np.asarray(front, dtype=np.intp))


def non_dominated_sort(points: ArrayLike) -> list[np.ndarray]:
    """Partition the rows into fronts :math:`F_1, F_2, \\dots` (each an ascending index array).

    Fast non-dominated sort: with :math:`n_p` the number of rows dominating :math:`p` and
    :math:`S_p` the rows :math:`p` dominates, :math:`F_1 = \\{p : n_p = 0\\}`; removing
    :math:`F_i` decrements :math:`n_q` for every :math:`q \\in S_p, p \\in F_i`, and the rows
    reaching zero form :math:`F_{i+1}`. Cost :math:`O(m n^2)`.
    Source: Deb et al. (2002), NSGA-II, Section III-A. Tested by
    ``tests/optim/nas/test_nas_pareto.py::test_non_dominated_sort_ranks``.
    """
    points = _as_points(points)
    dominated_by = _domination_matrix(points)
    count = dominated_by.sum(axis=0)
    fronts = []
    current = np.flatnonzero(count == 0)
    while current.size:
        fronts.append(current)
        count = count - dominated_by[current].sum(axis=0)
        count[current] = -1
        current = np.flatnonzero(count == 0)
    return fronts


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance of each row (float64), larger = less crowded.

    For each objective :math:`k`, sort the rows by :math:`f_k` (stable: ties by row index); the
    first and last rows get :math:`\\infty`, and every other row :math:`i` adds

    .. math:: \\frac{f_k^{(i+1)} - f_k^{(i-1)}}{f_k^{\\max} - f_k^{\\min}}

    where :math:`(i \\pm 1)` are its neighbours in that order. An objective on which all rows
    agree (:math:`f_k^{\\max} = f_k^{\\min}`) separates nothing and contributes 0 to every row.
    Source: Deb et al. (2002), NSGA-II, Section III-B. Tested by
    ``tests/optim/nas/test_nas_pareto.py::test_crowding_distance_extremes_and_scaling``.
    """
    points = _as_points(points).astype(np.float64)
    n, m = points.shape
    distance = np.zeros(n)
    for k in range(m if n else 0):
        values = points[:, k]
        span = values.max() - values.min()
        if span == 0:
            continue
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        distance[order[1:-1]] += (ordered[2:] - ordered[:-2]) / span
        distance[order[[0, -1]]] = np.inf
    return distance


def hypervolume_2d(points: ArrayLike, reference: ArrayLike) -> float:
    """Area dominated by the rows of ``points`` (n, 2) and bounded by the ``reference`` point.

    With the non-dominated rows that strictly dominate the reference sorted by :math:`f_1`
    ascending (so :math:`f_2` descending) and :math:`f_1^{(q+1)} := r_1`,

    .. math:: HV = \\sum_{i=1}^{q} (f_1^{(i+1)} - f_1^{(i)})\\,(r_2 - f_2^{(i)})

    Rows not below the reference in both objectives add nothing.
    Source: Zitzler & Thiele (1999), the S metric; the 2-D sweep is the standard slicing.
    Tested by ``tests/optim/nas/test_nas_pareto.py::test_hypervolume_2d_equals_grid_count``.
    """
    points = _as_points(points)
    reference = np.asarray(reference, dtype=np.float64)
    if points.shape[1] != 2:
        raise ValueError(f"points must have 2 objectives, got shape {points.shape}")
    if reference.shape != (2,) or not np.all(np.isfinite(reference)):
        raise ValueError(f"reference must be a finite point of shape (2,), got {reference!r}")
    inside = points[np.all(points < reference, axis=1)].astype(np.float64)
    if inside.shape[0] == 0:
        return 0.0
    front = inside[pareto_front(inside)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    widths = np.diff(np.append(front[:, 0], reference[0]))
    return float(np.sum(widths * (reference[1] - front[:, 1])))


def igd(front: ArrayLike, reference_front: ArrayLike) -> float:
    """Inverted generational distance of ``front`` (n, m) to ``reference_front`` (r, m).

    .. math:: IGD(A, R) = \\frac{1}{|R|} \\sum_{r \\in R} \\min_{a \\in A} \\lVert r - a \\rVert_2

    The mean (not the root-mean-square) of the distances, as in pymoo's ``IGD`` and Ishibuchi
    et al. (2015). Source: Coello Coello & Reyes Sierra (2004). Tested by
    ``tests/optim/nas/test_nas_pareto.py::test_igd_equals_brute_force``.
    """
    front = _as_points(front, "front")
    reference_front = _as_points(reference_front, "reference_front")
    if front.shape[0] == 0 or reference_front.shape[0] == 0:
        raise ValueError(f"front and reference_front must be non-empty, got shapes "
                         f"{front.shape} and {reference_front.shape}")
    if front.shape[1] != reference_front.shape[1]:
        raise ValueError(f"front has {front.shape[1]} objectives but reference_front has "
                         f"{reference_front.shape[1]}")
    gaps = reference_front[:, None, :].astype(np.float64) - front[None, :, :]
    return float(np.mean(np.min(np.sqrt(np.sum(gaps * gaps, axis=-1)), axis=1)))
