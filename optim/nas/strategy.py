"""Trials and the ask/tell protocol shared by every search strategy.

A strategy is a seeded, stateful object: ``ask()`` proposes a ``Trial`` (an id, an
architecture and, for multi-fidelity strategies, a resource such as a number of epochs);
``tell(trial, objectives)`` reports its objectives, all minimised, or ``None`` when the trial
failed. Several trials may be asked before any is told. Given its constructor arguments, a
strategy's proposals depend only on the sequence of ask and tell calls, so replaying that
sequence rebuilds its state (this is how ``search(..., resume=True)`` continues a run).
Tested by ``tests/optim/nas/test_nas_strategies.py::test_tell_checks_its_arguments``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .space import SearchSpace

__all__ = ["Trial", "Strategy", "check_positive_int", "check_probability"]


@dataclass(frozen=True)
class Trial:
    """One proposed evaluation: ``id`` (0, 1, 2, ... in ask order), ``arch``, ``resource``."""

    id: int
    arch: dict
    resource: Any = None


def check_positive_int(value: Any, name: str, low: int = 1, high: float = np.inf) -> int:
    """``value`` as an int if it is an integer in [low, high], else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        bound = f"in [{low}, {high}]" if high < np.inf else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_probability(value: Any, name: str) -> float:
    """``value`` as a float if it is a number in [0, 1], else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class Strategy(ABC):
    """Base class: trial ids, pending trials, validation of ``tell``; subclasses implement
    ``_propose() -> (arch, resource)`` and ``_observe(trial, objectives or None)``.

    Attributes: ``space``, ``seed``, ``n_objectives``, ``rng`` (``np.random.default_rng(seed)``)
    and ``batch_size``, the number of trials ``search`` asks before telling when not told
    otherwise (trials of one batch can be evaluated in parallel).
    """

    batch_size: int = 1

    def __init__(self, space: SearchSpace, n_objectives: int = 1, seed: int | None = None):
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        if seed is not None:
            check_positive_int(seed, "seed", low=0)
        self.space = space
        self.n_objectives = check_positive_int(n_objectives, "n_objectives")
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._next_id = 0
        self._pending: dict[int, Trial] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"

    @property
    def n_asked(self) -> int:
        return self._next_id

    @property
    def pending(self) -> list[Trial]:
        """Trials asked and not yet told, in id order."""
        return sorted(self._pending.values(), key=lambda t: t.id)

    def ask(self) -> Trial:
        """The next trial to evaluate."""
        arch, resource = self._propose()
        trial = Trial(self._next_id, arch, resource)
        self._next_id += 1
        self._pending[trial.id] = trial
        return trial

    def tell(self, trial: Trial, objectives: Sequence[float] | float | None) -> None:
        """Report a pending trial's objectives (minimised), or ``None`` if it failed."""
        if not isinstance(trial, Trial):
            raise TypeError(f"trial must be a Trial, got {type(trial).__name__}")
        if self._pending.get(trial.id) != trial:
            raise ValueError(f"trial {trial.id} is not pending: it was not asked from this "
                             f"strategy or was already told")
        values = None
        if objectives is not None:
            values = np.atleast_1d(np.asarray(objectives, dtype=np.float64))
            if values.shape != (self.n_objectives,):
                raise ValueError(f"objectives must hold {self.n_objectives} value(s), got shape "
                                 f"{values.shape}: {objectives!r}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"objectives must be finite (tell None for a failed trial), "
                                 f"got {objectives!r}")
        del self._pending[trial.id]
        self._observe(trial, values)

    @abstractmethod
    def _propose(self) -> tuple[dict, Any]:
        """The next architecture and its resource (None for single-fidelity strategies)."""

    @abstractmethod
    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        """Update the state with a told trial (``objectives`` None: the trial failed)."""
