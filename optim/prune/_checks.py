"""Argument validation shared by the pruning functions (errors name the argument and value)."""
from __future__ import annotations

import numbers

import numpy as np


def check_amount(amount: object, name: str = "amount") -> int | float:
    """An int count (>= 0) or a float fraction in [0, 1], as ``torch.nn.utils.prune``."""
    if isinstance(amount, (bool, np.bool_)) or not isinstance(amount, numbers.Real):
        raise TypeError(f"{name} must be an int count or a float fraction, got {amount!r}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"{name} as a count must be >= 0, got {amount}")
        return int(amount)
    amount = float(amount)
    if not 0.0 <= amount <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} as a fraction must lie in [0, 1], got {amount!r}")
    return amount


def n_to_prune(amount: object, n: int, name: str = "amount") -> int:
    """How many of ``n`` entries ``amount`` prunes: the count itself, or ``round(amount * n)``
    (Python's round, half to even, as ``torch.nn.utils.prune``)."""
    amount = check_amount(amount, name)
    if isinstance(amount, int):
        if amount > n:
            raise ValueError(f"{name}={amount} is greater than the number of prunable entries {n}")
        return amount
    return round(amount * n)


def check_scores(scores: object, name: str = "scores") -> np.ndarray:
    """A real, NaN-free ndarray of scores (booleans and integers allowed)."""
    arr = np.asarray(scores)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN")
    return arr


def check_float_array(x: object, name: str) -> np.ndarray:
    """A floating ndarray (integers become float32) with only finite values."""
    arr = np.asarray(x)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf")
    return arr


def check_mask(mask: object, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A boolean array of exactly ``shape`` (0/1 integer arrays are accepted)."""
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise TypeError(f"{name} must be boolean (True = kept) or hold only 0 and 1, "
                            f"got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def check_axis(axis: object, ndim: int, name: str = "axis") -> int:
    """``axis`` normalised to ``[0, ndim)``."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_fraction(value: object, name: str) -> float:
    """A real number in [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def make_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {rng!r}")
