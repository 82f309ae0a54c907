"""Pareto utilities at their small cases, worked by hand."""
import numpy as np

from optim.nas.pareto import crowding_distance, hypervolume_2d, igd


def test_crowding_distance_of_no_rows_is_empty():
    assert crowding_distance(np.zeros((0, 2))).shape == (0,)


def test_hypervolume_of_a_single_point_is_its_box():
    """One point (1, 2) under the reference (4, 6): the box (4 - 1)(6 - 2) = 12."""
    assert hypervolume_2d([[1.0, 2.0]], [4.0, 6.0]) == 12.0


def test_igd_against_a_single_reference_point():
    """R = {(0, 0)}, A = {(3, 4), (6, 8)}: the nearest is at distance 5."""
    assert igd([[3.0, 4.0], [6.0, 8.0]], [[0.0, 0.0]]) == 5.0
    assert igd([[3.0, 4.0]], [[0.0, 0.0], [3.0, 4.0]]) == 2.5


def test_igd_refuses_an_empty_reference_front():
    import pytest
    with pytest.raises(ValueError, match="non-empty"):
        igd([[1.0, 2.0]], np.zeros((0, 2)))
