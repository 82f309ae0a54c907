"""Random subsets for smoke runs: the bundled split is sorted by digit, so its first n rows
hold one or two classes only."""
from __future__ import annotations

import numpy as np


def random_subset(*arrays: np.ndarray, n: int | None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """The same ``n`` randomly chosen rows (in their original order) of each array; all rows
    when ``n`` is None or at least the length."""
    length = len(arrays[0])
    if any(len(a) != length for a in arrays):
        raise ValueError(f"arrays must have equal lengths, got {[len(a) for a in arrays]}")
    if n is None or n >= length:
        return arrays
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    rows = np.sort(np.random.default_rng(seed).permutation(length)[:n])
    return tuple(a[rows] for a in arrays)
