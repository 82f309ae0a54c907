"""Hyperband's bracket arithmetic and the evolutionary strategies' bookkeeping, worked by hand
(Li et al. 2018, Algorithm 1; Goldberg 1989; Real et al. 2019)."""
import numpy as np
import pytest

from optim.nas import (GeneticAlgorithm, RegularizedEvolution, SuccessiveHalving, Choice,
                       SearchSpace)
from optim.nas.evolution import offspring
from optim.nas.hyperband import hyperband_brackets


def _space():
    return SearchSpace([Choice(f"g{i}", tuple(range(6))) for i in range(3)])


def test_hyperband_with_eta_2():
    """R = 8, eta = 2 (the smallest eta): s_max = log2 8 = 3; bracket s starts with
    n = ceil(4 * 2^s / (s + 1)) at r = 8 / 2^s: (8, 1), (6, 2), (4, 4), (4, 8)."""
    assert hyperband_brackets(8, eta=2) == [
        [(8, 1), (4, 2), (2, 4), (1, 8)],
        [(6, 2), (3, 4), (1, 8)],
        [(4, 4), (2, 8)],
        [(4, 8)],
    ]


def test_hyperband_default_eta_is_3():
    """Li et al.'s Table 1 setting, R = 81 and eta = 3 by default: 5 brackets, the first
    starting with 81 configurations at r = 1."""
    brackets = hyperband_brackets(81)
    assert brackets == hyperband_brackets(81, eta=3) and len(brackets) == 5
    assert brackets[0][0] == (81, 1)


@pytest.mark.parametrize("max_resource, eta, min_resource, s_max", [
    (5, 5, 5, 0),       # r_min = R: one bracket, at R
    (18, 3, 2, 2),      # R / r_min = 9 = 3^2 (not 3^3: 27 > 18 * 2)
    (5, 2, 1, 2),       # 2^2 <= 5 < 2^3
])
def test_hyperband_s_max_is_the_floor_of_log_eta_of_r_over_r_min(max_resource, eta,
                                                                   min_resource, s_max):
    brackets = hyperband_brackets(max_resource, eta=eta, min_resource=min_resource)
    assert len(brackets) == s_max + 1
    assert brackets[0][0][1] == max_resource / eta ** s_max


def test_successive_halving_defaults_and_a_full_bracket_starts_the_next():
    """Defaults n = 27 from r = 1 to R = 27 (eta 3). With n = 3, R = 3: three asks fill the
    first rung; a fourth, before any tell, starts a second bracket."""
    default = SuccessiveHalving(_space())
    assert default._schedule == [[(27, 1), (9, 3), (3, 9), (1, 27)]]
    strategy = SuccessiveHalving(_space(), n_configs=3, max_resource=3, seed=0)
    trials = [strategy.ask() for _ in range(3)]
    assert len(strategy.brackets) == 1 and [t.resource for t in trials] == [1, 1, 1]
    strategy.ask()
    assert len(strategy.brackets) == 2


class _Coin:
    """A generator whose every random() returns ``value``."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def test_offspring_probabilities_are_strict():
    """u < p: with p = 0.5 a draw of exactly 0.5 neither crosses over nor mutates; with
    p = 0 nothing ever happens (u >= 0), with p = 1 always (u < 1)."""
    space = SearchSpace([Choice("a", (0, 1))])
    first, second = {"a": 0}, {"a": 1}
    calls = []
    space.crossover = lambda x, y, rng: calls.append("crossover") or dict(y)
    space.mutate = lambda x, rng: calls.append("mutate") or dict(x)
    assert offspring(space, first, second, 0.5, 0.5, _Coin(0.5)) == first and calls == []
    assert offspring(space, first, second, 0.0, 0.0, _Coin(0.0)) == first and calls == []
    offspring(space, first, second, 1.0, 1.0, _Coin(0.999))
    assert calls == ["crossover", "mutate"]


def test_genetic_algorithm_defaults_and_generation_boundaries():
    """Defaults: population 20, tournament 3, elitism 1. Population 2 (the smallest) with
    elitism 0 is valid; the first generation closes after exactly 2 tells, the next after 2
    more, keeping the best 2 - 0 children."""
    default = GeneticAlgorithm(_space())
    assert (default.population_size, default.tournament_size, default.elitism) == (20, 3, 1)
    strategy = GeneticAlgorithm(_space(), population_size=2, tournament_size=1, elitism=0,
                                seed=0)
    values = iter([5.0, 4.0, 3.0, 2.0, 9.0])
    trial = strategy.ask()
    strategy.tell(trial, next(values))
    assert strategy.population == []
    trial = strategy.ask()
    strategy.tell(trial, next(values))
    assert [f for _, f in strategy.population] == [5.0, 4.0]
    for _ in range(2):
        trial = strategy.ask()
        strategy.tell(trial, next(values))
    assert sorted(f for _, f in strategy.population) == [2.0, 3.0]


def test_regularized_evolution_defaults_and_random_start():
    """Defaults: population 20, samples 5; the first population_size proposals are random
    even when results are already in (no mutation before then)."""
    default = RegularizedEvolution(_space())
    assert (default.population_size, default.sample_size) == (20, 5)
    space = _space()
    strategy = RegularizedEvolution(space, population_size=3, sample_size=1, seed=0)
    mutated = []
    real_mutate = space.mutate
    space.mutate = lambda arch, rng: mutated.append(arch) or real_mutate(arch, rng)
    for k in range(3):
        trial = strategy.ask()
        strategy.tell(trial, float(k))
    assert mutated == []
    strategy.ask()
    assert len(mutated) == 1


def test_hyperband_defaults_are_r_81_and_eta_3():
    """Li et al.'s Table 1 setting: max_resource 81, eta 3, min_resource 1."""
    from optim.nas import Hyperband
    strategy = Hyperband(_space())
    assert strategy._schedule == hyperband_brackets(81, eta=3) and strategy.eta == 3


def test_hyperband_keeps_a_rung_exactly_at_the_relative_tolerance():
    """eta r_min = R (1 + 1e-12) exactly (r_min = (1 + 1e-12) / 2, R = 1, eta = 2): the rung
    is kept (<=), so s_max = 1."""
    min_resource = (1 + 1e-12) / 2
    assert 2 * min_resource == 1 * (1 + 1e-12)
    assert len(hyperband_brackets(1, eta=2, min_resource=min_resource)) == 2
