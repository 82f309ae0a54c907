"""Random search: every trial is an independent uniform sample of the valid space."""
from __future__ import annotations

import numpy as np

from .space import SearchSpace
from .strategy import Strategy, Trial

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Propose :math:`a_t \\sim U(\\mathcal{A}_{valid})` i.i.d., ignoring the objectives.

    Source: Bergstra & Bengio (2012), "Random search for hyper-parameter optimization".
    Its proposals do not depend on what is told, so any batch size gives the same trials.
    Tested by ``tests/optim/nas/test_nas_strategies.py::test_evolution_needs_fewer_evaluations_than_random``.
    """

    batch_size = 8

    def __init__(self, space: SearchSpace, n_objectives: int = 1, seed: int | None = None):
        super().__init__(space, n_objectives, seed)

    def _propose(self) -> tuple[dict, None]:
        return self.space.sample(self.rng), None

    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        pass
