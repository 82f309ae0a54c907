"""Bayesian optimisation over a search space: a GP on the encoding, expected improvement."""
from __future__ import annotations

import numpy as np

from .gp import expected_improvement, fit_gp, gp_posterior
from .space import SearchSpace
from .strategy import Strategy, Trial, check_positive_int

__all__ = ["BayesianOptimization"]


class BayesianOptimization(Strategy):
    """Sequential model-based optimisation of one minimised objective.

    The first ``n_initial`` proposals are random. Afterwards: standardise the observed
    objectives, fit a GP with a Matérn-5/2 ARD kernel on ``space.encode`` by maximising the log
    marginal likelihood (``gp.fit_gp``, warm-started from the previous fit), and propose the
    candidate maximising ``expected_improvement`` below the best observation. Candidates are ``n_candidates``
    random architectures plus ``n_candidates`` single-gene mutations of the five best observed,
    excluding architectures already observed or pending. Pending trials (asked, not told) enter
    the GP with the best observed value as a fake observation (the "constant liar"), so a
    batch of proposals spreads out. Failed trials are not modelled but never proposed again.

    .. math:: a_{t+1} = \\arg\\max_{a \\in C} EI(a \\mid \\mathcal{D}_t), \\qquad
              f \\sim GP(0, k_{5/2}(\\operatorname{enc}(a), \\operatorname{enc}(a')))

    Source: Jones, Schonlau & Welch (1998), EGO; Snoek, Larochelle & Adams (2012) for the
    Matérn-5/2 kernel and marginal-likelihood fitting; Ginsbourger, Le Riche & Carraro (2010)
    for the constant liar. Tested by
    ``tests/optim/nas/test_nas_strategies.py::test_bayesian_optimization_beats_random_on_smooth_objective``.
    """

    def __init__(self, space: SearchSpace, n_initial: int = 5, n_candidates: int = 256,
                 xi: float = 0.0, restarts: int = 2, seed: int | None = None):
        super().__init__(space, 1, seed)
        self.n_initial = check_positive_int(n_initial, "n_initial")
        self.n_candidates = check_positive_int(n_candidates, "n_candidates")
        self.restarts = check_positive_int(restarts, "restarts", low=0)
        if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not xi >= 0:
            raise ValueError(f"xi must be a non-negative number, got {xi!r}")
        self.xi = float(xi)
        self.observed: list[tuple[dict, float]] = []
        self._failed: set[tuple] = set()
        self._params = None  # the last fit, the next fit's first start

    def _propose(self) -> tuple[dict, None]:
        if self.n_asked < self.n_initial or not self.observed:
            return self.space.sample(self.rng), None
        y = np.array([f for _, f in self.observed])
        y = (y - y.mean()) / (y.std() or 1.0)
        x = np.array([self.space.encode(arch) for arch, _ in self.observed])
        params = self._params = fit_gp(x, y, self.rng, self.restarts, self._params)
        pending = [trial.arch for trial in self.pending]
        if pending:
            x = np.vstack([x, [self.space.encode(arch) for arch in pending]])
            y = np.concatenate([y, np.full(len(pending), y.min())])
        candidates = self._candidates(pending)
        if not candidates:
            return self.space.sample(self.rng), None
        mean, variance = gp_posterior(x, y, np.array([self.space.encode(a) for a in candidates]), params)
        ei = expected_improvement(mean, np.sqrt(variance), y.min(), self.xi)
        return candidates[int(np.argmax(ei))], None

    def _candidates(self, pending: list[dict]) -> list[dict]:
        best = [arch for arch, _ in sorted(self.observed, key=lambda pair: pair[1])[:5]]
        drawn = [self.space.sample(self.rng) for _ in range(self.n_candidates)]
        if any(gene.n_values > 1 for gene in self.space.genes):
            drawn += [self.space.mutate(best[i % len(best)], self.rng) for i in range(self.n_candidates)]
        seen = self._failed | {self.space.key(a) for a, _ in self.observed} | {
            self.space.key(a) for a in pending}
        unique = []
        for arch in drawn:
            key = self.space.key(arch)
            if key not in seen:
                seen.add(key)
                unique.append(arch)
        return unique

    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        if objectives is None:
            self._failed.add(self.space.key(trial.arch))
        else:
            self.observed.append((trial.arch, float(objectives[0])))
