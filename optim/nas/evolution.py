"""Single-objective evolution: tournament selection, a genetic algorithm, regularized evolution."""
from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import ArrayLike

from .space import SearchSpace
from .strategy import Strategy, Trial, check_positive_int, check_probability

__all__ = ["tournament", "offspring", "GeneticAlgorithm", "RegularizedEvolution"]


def tournament(fitness: ArrayLike, size: int, rng: np.random.Generator) -> int:
    """Index of the fittest (lowest) of ``size`` entries drawn uniformly with replacement.

    .. math:: i^* = \\arg\\min_{i \\in \\{i_1..i_S\\}} f_i, \\qquad i_j \\sim U\\{0..n-1\\}

    Ties go to the first drawn. Source: Goldberg & Deb (1991); with replacement as in Real
    et al. (2019), Algorithm 1. Tested by
    ``tests/optim/nas/test_nas_strategies.py::test_tournament_returns_best_of_its_draws``.
    """
    fitness = np.asarray(fitness, dtype=np.float64)
    if fitness.ndim != 1 or fitness.size == 0:
        raise ValueError(f"fitness must be a non-empty 1-D array, got shape {fitness.shape}")
    check_positive_int(size, "size")
    drawn = rng.integers(fitness.size, size=size)
    return int(drawn[np.argmin(fitness[drawn])])


def offspring(space: SearchSpace, first: dict, second: dict, crossover_rate: float,
              mutation_rate: float, rng: np.random.Generator) -> dict:
    """A child: ``space.crossover(first, second)`` with probability ``crossover_rate`` (else a
    copy of ``first``), then ``space.mutate`` with probability ``mutation_rate``."""
    child = space.crossover(first, second, rng) if rng.random() < crossover_rate else dict(first)
    return space.mutate(child, rng) if rng.random() < mutation_rate else child


def _fittest(pairs: list[tuple[dict, float]], k: int) -> list[tuple[dict, float]]:
    """The ``k`` pairs of lowest fitness (stable: earlier first on ties)."""
    return sorted(pairs, key=lambda pair: pair[1])[:k]


class GeneticAlgorithm(Strategy):
    """Generational genetic algorithm with tournament selection and elitism.

    Generation 0 is ``population_size`` random architectures. Each child takes two parents by
    ``tournament`` (size ``tournament_size``), is their uniform crossover with probability
    ``crossover_rate`` (else a copy of the first), and is mutated with probability
    ``mutation_rate``. Once ``population_size`` children are told, the next population is the
    ``elitism`` best parents plus the best ``population_size - elitism`` children (failed
    trials are dropped). Until the first population is complete, proposals are random.

    .. math:: P_{t+1} = \\operatorname{best}_e(P_t) \\cup \\operatorname{best}_{N - e}(Q_t),
              \\qquad Q_t = \\{\\operatorname{mutate}(\\operatorname{crossover}(
              \\operatorname{tourn}_k(P_t), \\operatorname{tourn}_k(P_t)))\\}_{N}

    Source: Goldberg (1989), *Genetic Algorithms*; elitism as De Jong (1975). Tested by
    ``tests/optim/nas/test_nas_strategies.py::test_evolution_needs_fewer_evaluations_than_random``.
    """

    def __init__(self, space: SearchSpace, population_size: int = 20, tournament_size: int = 3,
                 crossover_rate: float = 0.9, mutation_rate: float = 1.0, elitism: int = 1,
                 seed: int | None = None):
        super().__init__(space, 1, seed)
        self.population_size = check_positive_int(population_size, "population_size", low=2)
        self.tournament_size = check_positive_int(tournament_size, "tournament_size",
                                                  high=self.population_size)
        self.elitism = check_positive_int(elitism, "elitism", low=0, high=self.population_size - 1)
        self.crossover_rate = check_probability(crossover_rate, "crossover_rate")
        self.mutation_rate = check_probability(mutation_rate, "mutation_rate")
        self.batch_size = self.population_size
        self.population: list[tuple[dict, float]] = []
        self._generation: list[tuple[dict, float]] = []
        self._told_in_generation = 0

    def _propose(self) -> tuple[dict, None]:
        if not self.population:
            return self.space.sample(self.rng), None
        fitness = [f for _, f in self.population]
        first, second = (self.population[tournament(fitness, self.tournament_size, self.rng)][0]
                         for _ in range(2))
        return offspring(self.space, first, second, self.crossover_rate, self.mutation_rate,
                         self.rng), None

    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        if objectives is not None:
            self._generation.append((trial.arch, float(objectives[0])))
        self._told_in_generation += 1
        if self._told_in_generation < self.population_size:
            return
        if not self.population:
            self.population = self._generation
        else:
            self.population = (_fittest(self.population, self.elitism)
                               + _fittest(self._generation, self.population_size - self.elitism))
        self._generation, self._told_in_generation = [], 0


class RegularizedEvolution(Strategy):
    """Aging evolution: the population is a queue of the last ``population_size`` models.

    The first ``population_size`` proposals are random. Afterwards each proposal draws
    ``sample_size`` members uniformly with replacement, takes the best (``tournament``) and
    mutates exactly one gene. A told model joins the right of the queue and, when the queue
    exceeds ``population_size``, the oldest (leftmost) is removed, whatever its fitness.
    Failed trials join nothing.

    .. math:: c = \\operatorname{mutate}(\\arg\\min_{j \\le S} f_{m_j}),\\;
              m_1..m_S \\sim U(Q); \\qquad Q \\leftarrow Q + [c],\\;
              \\text{then drop } Q_0 \\text{ if } |Q| > P

    Source: Real et al. (2019), "Regularized evolution for image
    classifier architecture search", Algorithm 1. Tested by
    ``tests/optim/nas/test_nas_strategies.py::test_regularized_evolution_ages_its_population``.
    """

    def __init__(self, space: SearchSpace, population_size: int = 20, sample_size: int = 5,
                 seed: int | None = None):
        super().__init__(space, 1, seed)
        self.population_size = check_positive_int(population_size, "population_size")
        self.sample_size = check_positive_int(sample_size, "sample_size", high=self.population_size)
        self.population: deque[tuple[Trial, float]] = deque()

    def _propose(self) -> tuple[dict, None]:
        if self.n_asked < self.population_size or not self.population:
            return self.space.sample(self.rng), None
        best = tournament([f for _, f in self.population], self.sample_size, self.rng)
        return self.space.mutate(self.population[best][0].arch, self.rng), None

    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        if objectives is None:
            return
        self.population.append((trial, float(objectives[0])))
        if len(self.population) > self.population_size:
            self.population.popleft()
