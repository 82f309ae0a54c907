"""Rounding of real values to integers: half-to-even, half-away-from-zero, floor, stochastic."""
from __future__ import annotations

import numpy as np

ROUNDING_MODES = ("half_even", "half_away", "floor", "stochastic")


def make_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A Generator from a Generator, a seed, or ``None`` (fresh, unseeded)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def round_values(
    v: np.ndarray, rounding: str = "half_even", rng: np.random.Generator | int | None = None
) -> np.ndarray:
    r"""Round ``v`` to integers (the result keeps ``v``'s floating dtype).

    .. math::
        \text{half\_even}(v) = \operatorname{rint}(v) \quad
        \text{half\_away}(v) = \operatorname{sign}(v)\,\lfloor |v| + \tfrac12 \rfloor \quad
        \text{floor}(v) = \lfloor v \rfloor \quad
        \text{stochastic}(v) = \lfloor v + u \rfloor,\ u \sim U[0, 1)

    Half-to-even is IEEE 754's default and what ``torch.round`` / ``np.rint`` do; half-away is
    C's ``round`` (used by gemmlowp and TFLite's reference kernels). Stochastic rounding is
    unbiased, :math:`E[\lfloor v + u \rfloor] = v` (Gupta et al. 2015, "Deep Learning with
    Limited Numerical Precision", section 3); ``rng`` is a Generator or a seed.

    Half-away is computed as ``trunc(v) + sign(v)·[|v - trunc(v)| >= 1/2]`` because
    ``floor(|v| + 1/2)`` rounds 0.49999999999999994 up in floating point.

    Checked by ``tests/optim/quant/test_quant_rounding.py`` (ties at .5 for each mode,
    stochastic rounding unbiased within a CLT bound).
    """
    v = np.asarray(v)
    if rounding == "half_even":
        return np.rint(v)
    if rounding == "half_away":
        whole = np.trunc(v)
        return whole + np.sign(v) * (np.abs(v - whole) >= 0.5)
    if rounding == "floor":
        return np.floor(v)
    if rounding == "stochastic":
        u = make_rng(rng).random(v.shape)  # float64, so float32 inputs never see u round up to 1
        return np.floor(v + u).astype(v.dtype, copy=False)
    raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
