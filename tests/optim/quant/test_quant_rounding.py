"""Rounding modes: ties at .5 for each mode, nearest-ness, stochastic rounding unbiased."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.quant import fake_quantize, round_values

from quant_helpers import FLOAT_DTYPES

# (tie value, half_even, half_away, floor)
TIES = [
    (0.5, 0, 1, 0),
    (1.5, 2, 2, 1),
    (2.5, 2, 3, 2),
    (-0.5, 0, -1, -1),
    (-1.5, -2, -2, -2),
    (-2.5, -2, -3, -3),
    (127.5, 128, 128, 127),
    (-128.5, -128, -129, -129),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tie, even, away, down", TIES)
def test_ties_at_exact_half(dtype, tie, even, away, down):
    v = np.array([tie], dtype=dtype)
    assert round_values(v, "half_even")[0] == even
    assert round_values(v, "half_away")[0] == away
    assert round_values(v, "floor")[0] == down


@given(k=st.integers(-1000, 1000), exponent=st.integers(-8, 0), dtype=FLOAT_DTYPES)
def test_fake_quantize_ties_follow_rounding_mode(k, exponent, dtype):
    """x = (k + 1/2) s with s a power of two lies exactly on a tie of the grid."""
    scale = 2.0**exponent
    x = np.array([(k + 0.5) * scale], dtype=dtype)
    expected = {
        "half_even": k + (k % 2 != 0),
        "half_away": k + 1 if k >= 0 else k,
        "floor": k,
    }
    for mode, code in expected.items():
        out = fake_quantize(x, scale, 0, -(2**15), 2**15 - 1, rounding=mode)
        assert out[0] == code * scale, mode


@given(v=st.floats(-1e6, 1e6), dtype=FLOAT_DTYPES)
def test_nearest_modes_are_within_half_and_agree_off_ties(v, dtype):
    x = np.array([v], dtype=dtype)
    even, away = round_values(x, "half_even")[0], round_values(x, "half_away")[0]
    assert abs(float(even) - float(x[0])) <= 0.5 and abs(float(away) - float(x[0])) <= 0.5
    if abs(float(x[0]) - math.floor(float(x[0]))) != 0.5:
        assert even == away
    assert round_values(x, "floor")[0] == math.floor(float(x[0]))


def test_half_away_does_not_round_just_below_half_up():
    v = np.nextafter(0.5, 0.0)  # 0.49999999999999994: floor(v + 0.5) would give 1
    assert round_values(np.array([v, -v]), "half_away").tolist() == [0.0, -0.0]


@given(v=st.floats(-100, 100), seed=st.integers(0, 2**32 - 1), dtype=FLOAT_DTYPES)
def test_stochastic_rounding_is_floor_or_ceil_and_seeded(v, seed, dtype):
    x = np.full(64, v, dtype=dtype)
    out = round_values(x, "stochastic", rng=seed)
    assert out.dtype == dtype
    assert np.all((out == np.floor(x)) | (out == np.ceil(x)))
    np.testing.assert_array_equal(out, round_values(x, "stochastic", rng=seed))


@given(v=st.floats(-50, 50).filter(lambda t: t != math.floor(t)), seed=st.integers(0, 2**32 - 1))
def test_stochastic_rounding_unbiased(v, seed):
    """Mean of n draws of floor(v + u) is v within 5 standard errors (CLT); one draw is a
    Bernoulli(p = v - floor v) step, variance p (1 - p)."""
    n = 20_000
    draws = round_values(np.full(n, v), "stochastic", rng=np.random.default_rng(seed))
    p = v - math.floor(v)
    assert abs(draws.mean() - v) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="rounding"):
        round_values(np.array([0.5]), "nearest")
