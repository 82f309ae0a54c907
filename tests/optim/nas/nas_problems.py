"""Synthetic search problems with known optima, shared by the architecture-search tests.

Module-level functions so that process pools and subprocesses can import them.
"""
from __future__ import annotations

import time

import numpy as np

from optim.nas import Choice, FloatRange, SearchSpace, Trial

#: The unique optimum of ``distance_to_target`` on ``discrete_space``.
TARGET = (3, 1, 4, 1, 2)
#: The unique optimum of ``sphere`` on ``float_space``.
CENTER = (0.5, -0.7, 1.2)


def discrete_space() -> SearchSpace:
    """5 genes of 5 values: 3125 architectures."""
    return SearchSpace([Choice(f"g{i}", (0, 1, 2, 3, 4)) for i in range(len(TARGET))])


def distance_to_target(trial: Trial) -> float:
    """L1 distance of the genes to ``TARGET``; 0 only at the optimum."""
    return float(sum(abs(trial.arch[f"g{i}"] - t) for i, t in enumerate(TARGET)))


def slow_distance(trial: Trial) -> float:
    """``distance_to_target`` after a short sleep (to kill a search mid-way)."""
    time.sleep(0.05)
    return distance_to_target(trial)


def flaky_distance(trial: Trial) -> float:
    """``distance_to_target``, but raises when g0 == 0 and returns NaN when g0 == 4."""
    if trial.arch["g0"] == 0:
        raise RuntimeError("diverged")
    return float("nan") if trial.arch["g0"] == 4 else distance_to_target(trial)


def float_space() -> SearchSpace:
    return SearchSpace([FloatRange(f"x{i}", -2.0, 2.0) for i in range(len(CENTER))])


def sphere(trial: Trial) -> float:
    """Squared distance to ``CENTER``: smooth, minimum 0."""
    return float(sum((trial.arch[f"x{i}"] - c) ** 2 for i, c in enumerate(CENTER)))


def zdt1_space(n_variables: int = 10) -> SearchSpace:
    return SearchSpace([FloatRange(f"x{i}", 0.0, 1.0) for i in range(n_variables)])


def zdt1(trial: Trial) -> list[float]:
    """ZDT1 (Zitzler, Deb & Thiele 2000): f1 = x0, g = 1 + 9 mean(x1..), f2 = g (1 - sqrt(f1/g))."""
    x = np.array(list(trial.arch.values()))
    g = 1.0 + 9.0 * np.mean(x[1:])
    return [float(x[0]), float(g * (1.0 - np.sqrt(x[0] / g)))]


def zdt1_front(n_points: int = 500) -> np.ndarray:
    """Points of ZDT1's Pareto front, f2 = 1 - sqrt(f1) for f1 in [0, 1] (g = 1)."""
    f1 = np.linspace(0.0, 1.0, n_points)
    return np.column_stack([f1, 1.0 - np.sqrt(f1)])
