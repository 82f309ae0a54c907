"""Successive halving and Hyperband: many cheap evaluations, the best ones continued.

A *resource* is what makes an evaluation more expensive and more faithful (epochs, training
images). Trials carry it as ``Trial.resource``; ``evaluate`` must honour it. Resources are
ints when whole, floats otherwise.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

from .space import SearchSpace
from .strategy import Strategy, Trial, check_positive_int

__all__ = ["successive_halving_rungs", "hyperband_brackets", "SuccessiveHalving", "Hyperband"]


def _whole(value: float) -> float:
    return int(value) if float(value).is_integer() else value


def _check_resources(min_resource: Real, max_resource: Real, eta: int) -> int:
    """``s_max``, the largest s with eta^s <= max_resource / min_resource."""
    eta = check_positive_int(eta, "eta", low=2)
    for name, value in (("min_resource", min_resource), ("max_resource", max_resource)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if min_resource > max_resource:
        raise ValueError(f"min_resource ({min_resource!r}) must not exceed max_resource ({max_resource!r})")
    s = 0
    while eta ** (s + 1) * min_resource <= max_resource * (1 + 1e-12):
        s += 1
    return s


def successive_halving_rungs(n: int, max_resource: Real, eta: int, s: int) -> list[tuple[int, Real]]:
    """The ``s + 1`` rungs ``(n_i, r_i)`` of one successive-halving bracket.

    .. math:: n_0 = n, \\quad n_{i+1} = \\lfloor n_i / \\eta \\rfloor, \\qquad
              r_i = R\\,\\eta^{i - s}, \\quad i = 0..s

    so the last rung runs at the full resource :math:`R`; rungs with :math:`n_i = 0` are
    dropped. Source: Li et al. (2018), "Hyperband", Algorithm 1 (inner loop), after Jamieson
    & Talwalkar (2016). Tested by
    ``tests/optim/nas/test_nas_hyperband.py::test_hyperband_brackets_match_li_et_al_table_1``.
    """
    n = check_positive_int(n, "n")
    s = check_positive_int(s, "s", low=0)
    eta = check_positive_int(eta, "eta", low=2)
    rungs = []
    for i in range(s + 1):
        if n == 0:
            break
        rungs.append((n, _whole(max_resource / eta ** (s - i))))
        n //= eta
    return rungs


def hyperband_brackets(max_resource: Real, eta: int = 3,
                       min_resource: Real = 1) -> list[list[tuple[int, Real]]]:
    """The brackets of one Hyperband iteration, most exploratory first.

    With :math:`s_{max} = \\lfloor \\log_\\eta(R / r_{min}) \\rfloor` and
    :math:`B = (s_{max} + 1) R`, bracket :math:`s = s_{max}..0` is successive halving from

    .. math:: n = \\left\\lceil \\frac{B}{R} \\frac{\\eta^s}{s + 1} \\right\\rceil
              = \\left\\lceil \\frac{(s_{max} + 1)\\,\\eta^s}{s + 1} \\right\\rceil,
              \\qquad r_0 = R\\,\\eta^{-s}

    Source: Li et al. (2018), "Hyperband: a novel bandit-based approach to hyperparameter
    optimization", JMLR 18, Algorithm 1 and Table 1. Tested by
    ``tests/optim/nas/test_nas_hyperband.py::test_hyperband_brackets_match_li_et_al_table_1``.
    """
    s_max = _check_resources(min_resource, max_resource, eta)
    return [successive_halving_rungs(math.ceil((s_max + 1) * eta ** s / (s + 1)), max_resource, eta, s)
            for s in range(s_max, -1, -1)]


class _Bracket:
    """One running successive-halving bracket: rung by rung, promoting the best 1/eta."""

    def __init__(self, rungs: list[tuple[int, Real]], eta: int):
        self.rungs, self.eta = rungs, eta
        self.level = 0
        self.queue: list[dict] | None = None  # architectures of the current rung (None: sample)
        self.asked = 0
        self.losses: dict[int, tuple[dict, float]] = {}

    @property
    def size(self) -> int:
        return self.rungs[0][0] if self.queue is None else len(self.queue)

    @property
    def done(self) -> bool:
        return self.level == len(self.rungs) or self.size == 0

    def propose(self, space: SearchSpace, rng: np.random.Generator) -> tuple[dict, Real] | None:
        if self.done or self.asked == self.size:
            return None
        arch = space.sample(rng) if self.queue is None else self.queue[self.asked]
        self.asked += 1
        return arch, self.rungs[self.level][1]

    def record(self, trial: Trial, loss: float) -> None:
        self.losses[trial.id] = (trial.arch, loss)
        if len(self.losses) < self.size:
            return
        told = sorted(self.losses.items(), key=lambda item: (item[1][1], item[0]))
        keep = min(self.size // self.eta, sum(math.isfinite(loss) for _, (_, loss) in told))
        self.queue = [arch for _, (arch, _) in told[:keep]]
        self.level, self.asked, self.losses = self.level + 1, 0, {}


class _Brackets(Strategy):
    """Runs successive-halving brackets from ``schedule`` in turn, the cycle repeated; a
    rung is promoted once all its trials are told (failed trials are never promoted); a trial
    asked while every running bracket waits for tells starts the next bracket alongside."""

    def __init__(self, space: SearchSpace, schedule: list[list[tuple[int, Real]]], eta: int,
                 seed: int | None):
        super().__init__(space, 1, seed)
        self.eta, self._schedule = eta, schedule
        self._next_bracket = 0
        self.brackets: list[_Bracket] = []
        self._bracket_of: dict[int, _Bracket] = {}

    def _propose(self) -> tuple[dict, Real]:
        for bracket in self.brackets:
            proposal = bracket.propose(self.space, self.rng)
            if proposal is not None:
                break
        else:
            bracket = _Bracket(self._schedule[self._next_bracket % len(self._schedule)], self.eta)
            self._next_bracket += 1
            self.brackets.append(bracket)
            proposal = bracket.propose(self.space, self.rng)
        self._bracket_of[self.n_asked] = bracket
        return proposal

    def _observe(self, trial: Trial, objectives: np.ndarray | None) -> None:
        bracket = self._bracket_of.pop(trial.id)
        bracket.record(trial, math.inf if objectives is None else float(objectives[0]))
        if bracket.done:
            self.brackets.remove(bracket)


class SuccessiveHalving(_Brackets):
    """Successive halving, repeated: ``n_configs`` random architectures at the smallest
    resource :math:`R\\eta^{-s}`, :math:`s = \\lfloor \\log_\\eta(R / r_{min}) \\rfloor`, the best
    ``1/eta`` of each rung continued at ``eta`` times the resource up to ``max_resource``
    :math:`R` (``successive_halving_rungs``); then a new bracket of fresh architectures.
    Source: Jamieson & Talwalkar (2016); Li et al. (2018), Algorithm 1. Tested by
    ``tests/optim/nas/test_nas_hyperband.py::test_successive_halving_promotes_the_best``.
    """

    def __init__(self, space: SearchSpace, n_configs: int = 27, min_resource: Real = 1,
                 max_resource: Real = 27, eta: int = 3, seed: int | None = None):
        s = _check_resources(min_resource, max_resource, eta)
        super().__init__(space, [successive_halving_rungs(n_configs, max_resource, eta, s)], eta, seed)


class Hyperband(_Brackets):
    """Hyperband: the brackets of ``hyperband_brackets(max_resource, eta, min_resource)`` in
    turn, most exploratory first, the cycle repeated. Told one trial at a time, brackets run
    one after another. Source: Li et al. (2018), Algorithm 1. Tested by
    ``tests/optim/nas/test_nas_hyperband.py::test_hyperband_runs_its_brackets_in_order``.
    """

    def __init__(self, space: SearchSpace, min_resource: Real = 1, max_resource: Real = 81,
                 eta: int = 3, seed: int | None = None):
        super().__init__(space, hyperband_brackets(max_resource, eta, min_resource), eta, seed)
