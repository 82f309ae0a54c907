"""NSGA-II: elitist multi-objective evolution by non-domination rank and crowding distance."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .evolution import offspring
from .pareto import crowding_distance, non_dominated_sort
from .space import SearchSpace
from .strategy import Strategy, Trial, check_positive_int, check_probability

__all__ = ["nsga2_survival", "crowded_tournament", "NSGA2"]


def nsga2_survival(points: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose ``n`` rows of ``points`` (all minimised): whole fronts in rank order, then the
    most spread-out rows of the first front that does not fit.

    .. math:: P_{t+1} = F_1 \\cup \\dots \\cup F_{l-1} \\cup
              \\operatorname{top}_{n - |F_1 \\cup \\dots \\cup F_{l-1}|}(F_l, \\text{crowding})

    Returns the chosen indices, their ranks (0 = first front) and their crowding distances
    (computed within their front). Ties in crowding go to the lower index.
    Source: Deb et al. (2002), NSGA-II, Section III-C. Tested by
    ``tests/optim/nas/test_nas_strategies.py::test_nsga2_survival_keeps_best_fronts``.
    """
    points = np.asarray(points)
    n = check_positive_int(n, "n", low=0, high=len(points))
    chosen, ranks, crowding = [], [], []
    for rank, front in enumerate(non_dominated_sort(points)):
        room = n - len(chosen)
        if room <= 0:
            break
        distance = crowding_distance(points[front])
        keep = np.argsort(-distance, kind="stable")[:room] if len(front) > room else np.arange(len(front))
        chosen += front[keep].tolist()
        ranks += [rank] * len(keep)
        crowding += distance[keep].tolist()
    return np.asarray(chosen, dtype=np.intp), np.asarray(ranks, dtype=np.intp), np.asarray(crowding)


def crowded_tournament(rank: ArrayLike, crowding: ArrayLike, rng: np.random.Generator) -> int:
    """Binary tournament under the crowded-comparison operator.

    Draw two indices uniformly (with replacement); :math:`i` beats :math:`j` when
    :math:`r_i < r_j`, or :math:`r_i = r_j` and :math:`d_i > d_j`; otherwise the first wins.
    Source: Deb et al. (2002), Section III-C, operator :math:`\\prec_n`. Tested by
    ``tests/optim/nas/test_nas_strategies.py::test_crowded_tournament_prefers_rank_then_spread``.
    """
    rank, crowding = np.asarray(rank), np.asarray(crowding)
    if rank.ndim != 1 or rank.size == 0 or crowding.shape != rank.shape:
        raise ValueError(f"rank and crowding must be non-empty 1-D arrays of one shape, got "
                         f"{rank.shape} and {crowding.shape}")
    i, j = (int(k) for k in rng.integers(rank.size, size=2))
    beats = rank[j] < rank[i] or (rank[j] == rank[i] and crowding[j] > crowding[i])
    return j if beats else i


class NSGA2(Strategy):
    """NSGA-II over a search space, ``n_objectives`` >= 2 minimised objectives.

    Generation 0 is ``population_size`` random architectures. Each child takes two parents by
    ``crowded_tournament``, is their uniform crossover with probability ``crossover_rate``
    (else a copy of the first) and is mutated with probability ``mutation_rate``. Once
    ``population_size`` children are told, parents and successful children are pooled
    ((mu + lambda); repeated architectures kept once, parents first) and ``nsga2_survival``
    chooses the next population. Until the first population is complete, proposals are random.

    .. math:: R_t = P_t \\cup Q_t, \\qquad P_{t+1} = \\operatorname{nsga2\\_survival}(R_t, N),
              \\qquad Q_{t+1} = \\{\\operatorname{mutate}(\\operatorname{crossover}(
              \\operatorname{tourn}_{\\prec_n}(P_{t+1}), \\operatorname{tourn}_{\\prec_n}(P_{t+1})))\\}_N

    Source: Deb et al. (2002), "A fast and elitist multiobjective genetic algorithm: NSGA-II",
    Section III. Tested by ``tests/optim/nas/test_nas_strategies.py::test_nsga2_on_zdt1_reaches_igd_bound``.
    """

    def __init__(self, space: SearchSpace, population_size: int = 20, n_objectives: int = 2,
                 crossover_rate: float = 0.9, mutation_rate: float = 1.0, seed: int | None = None):
        super().__init__(space, check_positive_int(n_objectives, "n_objectives", low=2), seed)
        self.population_size = check_positive_int(population_size, "population_size", low=2)
        self.crossover_rate = check_probability(crossover_rate, "crossover_rate")
        self.mutation_rate = check_probability(mutation_rate, "mutation_rate")
        self.batch_size = self.population_size
        self.population: list[tuple[dict, np.ndarray]] = []
        self.rank = np.zeros(0, dtype=np.intp)
        self.crowding = np.zeros(0)
        self._generation: list[tuple[dict, np.ndarray]] = []
        self._told_in_generation = 0

    def _propose(self) -> tuple[dict, None]:
        if not self.population:
            return self.space.sample(self.rng), None
        first, second = (self.population[crowded_tournament(self.rank, self.crowding, self.rng)][0]
                         for _ in range(2))
        return offspring(self.space, first, second, self.crossover_rate, self.mutation_rate,
                         self.rng), None

    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        if objectives is not None:
            self._generation.append((trial.arch, objectives))
        self._told_in_generation += 1
        if self._told_in_generation < self.population_size:
            return
        pool, seen = [], set()
        for arch, values in self.population + self._generation:
            if self.space.key(arch) not in seen:
                seen.add(self.space.key(arch))
                pool.append((arch, values))
        if pool:
            chosen, self.rank, self.crowding = nsga2_survival(
                np.array([values for _, values in pool]), min(self.population_size, len(pool)))
            self.population = [pool[i] for i in chosen]
        self._generation, self._told_in_generation = [], 0
