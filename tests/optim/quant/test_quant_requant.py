"""Fixed-point multipliers and integer-only requantization (Jacob et al. 2018, section 2.2)."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import (
    int_range,
    quantize_bias,
    quantize_multiplier,
    requantize,
    rounding_right_shift,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
MULTIPLIERS = st.floats(2.0**-40, 2.0**20, allow_subnormal=False)


def _gemmlowp_high_mul(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul, literally, on Python ints."""
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    quotient = abs(total) // (1 << 31)
    return quotient if total >= 0 else -quotient  # C++ integer division truncates toward zero


def _round_half_away(value: Fraction) -> int:
    magnitude = abs(value)
    rounded = int(magnitude) + (magnitude - int(magnitude) >= Fraction(1, 2))
    return rounded if value >= 0 else -rounded


def _reference_requantize(acc: int, m0: int, shift: int, zero_point: int, qmin: int, qmax: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier with saturating left shift, then offset and clamp."""
    left, right = max(-shift, 0), max(shift, 0)
    shifted = min(max(acc << left, -(2**31)), 2**31 - 1)
    high = _gemmlowp_high_mul(shifted, m0)
    return min(max(_round_half_away(Fraction(high, 1 << right)) + zero_point, qmin), qmax)


@given(m=MULTIPLIERS)
def test_multiplier_relative_error(m):
    m0, shift = quantize_multiplier(m)
    assert m0.dtype == np.int32 and 2**30 <= int(m0) <= 2**31 - 1
    represented = Fraction(int(m0), 2**31) * Fraction(2) ** (-int(shift))
    assert abs(represented - Fraction(m)) <= Fraction(m) * Fraction(1, 2**31)


def test_multiplier_zero_and_powers_of_two():
    assert tuple(map(int, quantize_multiplier(0.0))) == (0, 0)
    for exponent in range(-10, 10):
        m0, shift = quantize_multiplier(2.0**exponent)
        assert int(m0) == 2**30 and int(shift) == -exponent - 1


@given(m=hnp.arrays(np.float64, 5, elements=MULTIPLIERS))
def test_multiplier_vectorised_equals_scalar(m):
    m0, shift = quantize_multiplier(m)
    for i in range(5):
        assert (m0[i], shift[i]) == tuple(quantize_multiplier(m[i]))


@given(x=st.integers(-(2**62), 2**62 - 1), n=st.integers(0, 62))
def test_rounding_right_shift_is_half_away(x, n):
    out = rounding_right_shift(np.array([x], dtype=np.int64), np.array([n]))[0]
    assert out == _round_half_away(Fraction(x, 2**n))


@given(k=st.integers(-(2**20), 2**20), n=st.integers(1, 40))
def test_rounding_right_shift_ties_go_away_from_zero(k, n):
    x = (2 * k + 1) * 2 ** (n - 1)  # exactly (k + 1/2) 2^n
    out = rounding_right_shift(np.array([x], dtype=np.int64), np.array([n]))[0]
    assert out == (k + 1 if k >= 0 else k)


@st.composite
def accumulators_for(draw, m, size=20):
    """int32 accumulators whose real product acc * m mostly stays within a few thousand."""
    bound = int(min(2**31 - 1, max(1, 5000 / m)))
    return draw(st.lists(st.integers(-bound, bound) | INT32, min_size=1, max_size=size))


@given(m=MULTIPLIERS, zero_point=st.integers(-1000, 1000), data=st.data())
def test_requantize_matches_gemmlowp_reference(m, zero_point, data):
    acc = data.draw(accumulators_for(m))
    qmin, qmax = -(2**31), 2**31 - 1
    m0, shift = quantize_multiplier(m)
    out = requantize(np.array(acc, dtype=np.int32), m0, shift, zero_point, qmin, qmax)
    expected = [_reference_requantize(a, int(m0), int(shift), zero_point, qmin, qmax) for a in acc]
    assert out.dtype == np.int32 and out.tolist() == expected


@given(m=MULTIPLIERS, data=st.data())
def test_requantize_int8_output(m, data):
    acc = data.draw(accumulators_for(m))
    qmin, qmax = int_range(8)
    m0, shift = quantize_multiplier(m)
    out = requantize(np.array(acc, dtype=np.int32), m0, shift, -3, qmin, qmax)
    assert out.dtype == np.int8
    assert out.tolist() == [_reference_requantize(a, int(m0), int(shift), -3, qmin, qmax) for a in acc]


@given(
    acc=st.lists(st.integers(-(2**24), 2**24), min_size=1, max_size=20),
    m=st.floats(2.0**-20, 4.0),
    zero_point=st.integers(0, 255),
)
def test_requantize_within_one_of_float(acc, m, zero_point):
    """|requantize(acc) - clamp(round(acc M) + z)| <= 1: M0 2^(-31-n) differs from M by at most
    a relative 2^-31, and the two integer roundings add at most one step."""
    qmin, qmax = int_range(8, signed=False)
    m0, shift = quantize_multiplier(m)
    out = requantize(np.array(acc, dtype=np.int32), m0, shift, zero_point, qmin, qmax).astype(np.int64)
    expected = np.clip(np.rint(np.array(acc, dtype=np.float64) * m) + zero_point, qmin, qmax)
    assert np.all(np.abs(out - expected) <= 1)


@given(acc=hnp.arrays(np.int32, (3, 4), elements=st.integers(-(2**20), 2**20)),
       ms=st.lists(MULTIPLIERS, min_size=4, max_size=4))
def test_requantize_per_channel_equals_per_slice(acc, ms):
    m0, shift = quantize_multiplier(np.array(ms))
    zps = np.array([-3, 0, 5, 127])
    out = requantize(acc, m0, shift, zps, -128, 127, axis=1)
    for c in range(4):
        np.testing.assert_array_equal(out[:, c], requantize(acc[:, c], m0[c], shift[c], zps[c], -128, 127))


def test_fused_relu_is_a_clamp_at_the_zero_point():
    m0, shift = quantize_multiplier(0.05)
    out = requantize(np.array([-400, -1, 0, 400], dtype=np.int32), m0, shift, 10, 10, 255)
    assert out.tolist() == [10, 10, 10, 30]


@given(bias=hnp.arrays(np.float64, 4, elements=st.floats(-100, 100)),
       s_in=st.floats(1e-3, 1.0), s_w=hnp.arrays(np.float64, 4, elements=st.floats(1e-3, 1.0)))
def test_quantize_bias_rounds_to_accumulator_scale(bias, s_in, s_w):
    q = quantize_bias(bias, s_in, s_w, axis=0)
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, np.rint(bias / (s_in * s_w)))
    assert np.all(np.abs(q * (s_in * s_w) - bias) <= s_in * s_w / 2 * (1 + 1e-12))


@pytest.mark.parametrize("m", [-1.0, np.inf, np.nan, 2.0**40, 2.0**-80])
def test_quantize_multiplier_rejects(m):
    with pytest.raises(ValueError, match="multiplier"):
        quantize_multiplier(m)
