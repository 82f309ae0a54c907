"""NSGA-II's survival, crowded tournament and generation bookkeeping on examples worked by hand
(Deb et al. 2002, Section III)."""
import numpy as np
import pytest

from nas_problems import zdt1, zdt1_space
from optim.nas import NSGA2
from optim.nas.nsga2 import crowded_tournament, nsga2_survival

# A(0, 4), B(1, 3.5), C(2, 1), D(4, 0): one front (no point dominates another), and E(5, 5).
# Crowding (each objective's neighbour gap over its range, extremes infinite):
# B = (2 - 0)/4 + (4 - 1)/4 = 1.25, C = (4 - 1)/4 + (3.5 - 0)/4 = 1.625.
POINTS = np.array([[0, 4], [1, 3.5], [2, 1], [4, 0], [5, 5]], dtype=float)


def test_a_front_larger_than_the_room_keeps_its_most_spread_points():
    """n = 3 of the 4-point front: the two extremes (infinite crowding), then C (1.625) over
    B (1.25), in order of decreasing crowding."""
    chosen, ranks, crowding = nsga2_survival(POINTS, 3)
    assert chosen.tolist() == [0, 3, 2] and ranks.tolist() == [0, 0, 0]
    np.testing.assert_allclose(crowding, [np.inf, np.inf, 1.625])


def test_a_front_that_fits_exactly_keeps_its_own_order():
    """n = 4: the whole first front fits, in front order (not re-sorted by crowding); n = 5
    adds E, rank 1, alone in its front (infinite crowding)."""
    assert nsga2_survival(POINTS, 4)[0].tolist() == [0, 1, 2, 3]
    chosen, ranks, _ = nsga2_survival(POINTS, 5)
    assert chosen.tolist() == [0, 1, 2, 3, 4] and ranks.tolist() == [0, 0, 0, 0, 1]


class _Draws:
    """A generator whose two tournament draws are fixed."""

    def __init__(self, i, j):
        self.pair = np.array([i, j])

    def integers(self, high, size):
        return self.pair


def test_crowded_tournament_ties_go_to_the_first_draw():
    """Equal rank and equal crowding: neither is better under the crowded comparison, so the
    first draw wins; a strictly larger crowding at equal rank wins; a lower rank always wins."""
    rank, crowding = np.array([0, 0, 1]), np.array([1.0, 1.0, 9.0])
    assert crowded_tournament(rank, crowding, _Draws(0, 1)) == 0
    assert crowded_tournament(rank, np.array([1.0, 2.0, 9.0]), _Draws(0, 1)) == 1
    assert crowded_tournament(rank, crowding, _Draws(2, 0)) == 0
    assert crowded_tournament(np.array([0]), np.array([0.0]), np.random.default_rng(0)) == 0


@pytest.mark.parametrize("rank, crowding", [
    (np.zeros((2, 2)), np.zeros((2, 2))),   # not 1-D
    (np.zeros(0), np.zeros(0)),             # empty
    (np.zeros(3), np.zeros(2)),             # shapes differ
])
def test_crowded_tournament_refuses_each_bad_input_alone(rank, crowding):
    with pytest.raises(ValueError, match="rank and crowding"):
        crowded_tournament(rank, crowding, np.random.default_rng(0))


def test_generations_close_after_exactly_population_size_tells():
    """Population 4 (the smallest, 2, is also accepted; the default is 20): nothing is chosen
    after 3 results, the first population after the 4th; the next one after 4 more."""
    space = zdt1_space(3)
    assert NSGA2(space).population_size == 20 and NSGA2(space, population_size=2)
    strategy = NSGA2(space, population_size=4, seed=0)

    def tell(count):
        for _ in range(count):
            trial = strategy.ask()
            strategy.tell(trial, zdt1(trial))

    tell(3)
    assert strategy.population == []
    tell(1)
    first = strategy.population
    assert len(first) == 4
    tell(3)
    assert strategy.population is first
    tell(1)
    assert strategy.population is not first and len(strategy.population) == 4
