"""Fixed-point Qm.n ranges, power-of-two and ternary quantization, Huffman code lengths, bit
widths, rounding and the integer requantization multiplier at their boundaries, with the
expected values worked by hand in the comments."""
import warnings

import numpy as np
import pytest

from optim.quant import (binary_connect_mask, huffman_code_lengths, pow2_quantize,
                         qformat_range, ternarize)
from optim.quant.ranges import check_bits
from optim.quant.rounding import make_rng, round_values
from optim.quant.requant import (INT32_MAX, INT32_MIN, quantize_multiplier, requantize,
                                 rounding_right_shift)


@pytest.mark.parametrize("m, n, signed, expected", [
    (7, 0, True, (-128, 127, 1.0)),        # Q7.0: 8-bit signed integers, no fraction bits
    (0, 1, True, (-2, 1, 0.5)),            # Q0.1: the smallest signed format, 2 bits
    (15, 16, True, (-2**31, 2**31 - 1, 2.0**-16)),   # Q15.16: 32 bits, the widest
    (2, 0, False, (0, 3, 1.0)),            # UQ2.0: the smallest unsigned format, 2 bits
    (16, 15, False, (0, 2**31 - 1, 2.0**-15)),       # UQ16.15: m + n = 31, the widest
])
def test_qformat_range_at_its_smallest_and_widest_formats(m, n, signed, expected):
    """Signed Qm.n holds m + n + 1 bits, unsigned m + n; both 2..32 bits with m + n <= 31:
    codes [-2^(m+n), 2^(m+n) - 1] (signed) or [0, 2^(m+n) - 1], step 2^-n."""
    assert qformat_range(m, n, signed) == expected


@pytest.mark.parametrize("m, n, signed", [
    (0, 0, True),     # 1 bit: a sign and nothing else
    (1, 0, False),    # UQ1.0: 1 bit (the bit-count check alone fails; m + n = 1)
    (16, 16, True),   # 33 bits
    (16, 16, False),  # 32 bits, but m + n = 32 > 31 (the m + n check alone fails)
    (-1, 4, True),
    (4, -1, True),
])
def test_qformat_range_rejects_formats_outside_two_to_32_bits(m, n, signed):
    """Each limit alone refuses the format: total bits in 2..32 and m + n <= 31, m, n >= 0."""
    with pytest.raises(ValueError):
        qformat_range(m, n, signed)


def test_pow2_levels_from_the_largest_value_and_the_bit_width():
    """bits = 3: 2^2 - 1 = 3 exponents e_max, e_max - 1, e_max - 2. Max |x| = 1 gives e_max = 0,
    so 1, 0.5, 0.25 are kept (0.25 sits exactly on e_min = -2) and 0.125 flushes to 0."""
    x = np.array([1.0, -0.5, 0.25, 0.125])
    np.testing.assert_array_equal(pow2_quantize(x, bits=3), [1.0, -0.5, 0.25, 0.0])


def test_pow2_with_all_values_below_one_takes_its_level_from_them():
    """bits = 2 keeps one exponent; max |x| = 0.25 sets it to -2 (not 0): 0.25 stays, 0.125
    flushes; a level taken at 2^0 would flush both."""
    np.testing.assert_array_equal(pow2_quantize(np.array([0.25, 0.125]), bits=2), [0.25, 0.0])


def test_multiplier_boundaries_and_the_rounding_carry():
    """M = f 2^e, M0 = round(f 2^31), n = -e. At M = 1 - 2^-33, f 2^31 = 2^31 - 1/4 rounds up to
    2^31: the carry makes M0 = 2^30 and n = -1 (M0 2^-31 2^1 = 1). M = 0 gives (0, 0). The
    shifts run from -31 (M = 2^30, f = 1/2, e = 31) to 62 (M = 2^-63)."""
    assert [int(v) for v in quantize_multiplier(1 - 2.0**-33)] == [2**30, -1]
    assert [int(v) for v in quantize_multiplier(0.0)] == [0, 0]
    assert [int(v) for v in quantize_multiplier(2.0**30)] == [2**30, -31]
    assert [int(v) for v in quantize_multiplier(2.0**-63)] == [2**30, 62]
    for outside in (2.0**31, 2.0**-64):
        with pytest.raises(ValueError, match="multiplier"):
            quantize_multiplier(outside)


def test_rounding_right_shift_rounds_ties_away_from_zero():
    """x / 2^n, ties away from zero: 5/2 = 2.5 -> 3, -5/2 -> -3, 3/4 = 0.75 -> 1, -6/4 -> -2."""
    x = np.array([5, -5, 3, -6, 0], dtype=np.int64)
    n = np.array([1, 1, 2, 2, 3], dtype=np.int64)
    np.testing.assert_array_equal(rounding_right_shift(x, n), [3, -3, 1, -2, 0])


def _requantize(acc=(1,), m0=2**30, shift=1):
    return requantize(np.asarray(acc), m0, shift, 0, -128, 127)


def test_requantize_accepts_the_ends_of_its_ranges():
    """acc at the int32 ends, M0 = 0 and 2^31 - 1, shifts -31 and 62 are all valid inputs."""
    _requantize(acc=np.array([INT32_MIN, INT32_MAX], dtype=np.int64))
    _requantize(m0=np.int64(0))
    _requantize(m0=np.int64(INT32_MAX))
    _requantize(shift=np.int64(-31))
    _requantize(shift=np.int64(62))


@pytest.mark.parametrize("kwargs, error", [
    ({"acc": np.array([INT32_MAX + 1])}, ValueError),
    ({"acc": np.array([INT32_MIN - 1])}, ValueError),
    ({"acc": np.array([1.0])}, TypeError),
    ({"m0": np.float64(2**30)}, ValueError),
    ({"m0": np.int64(-1)}, ValueError),
    ({"m0": np.int64(2**31)}, ValueError),
    ({"shift": np.float64(1)}, ValueError),
    ({"shift": np.int64(-32)}, ValueError),
    ({"shift": np.int64(63)}, ValueError),
])
def test_requantize_refuses_each_bad_input_alone(kwargs, error):
    """Each condition of the accumulator, M0 and shift checks refuses the input on its own."""
    with pytest.raises(error):
        _requantize(**kwargs)


def test_make_rng_without_a_seed_gives_a_fresh_generator():
    """None is a fresh unseeded Generator (NumPy's default_rng(None)), as documented."""
    assert isinstance(make_rng(None), np.random.Generator)
    assert round_values(np.array([0.5]), "stochastic", None)[0] in (0.0, 1.0)


def test_bit_widths_run_from_2_to_16():
    """check_bits: 2 and 16 are the ends of the range, 1 and 17 are refused."""
    assert check_bits(2) == 2 and check_bits(16) == 16
    for bits in (1, 17):
        with pytest.raises(ValueError, match="bits"):
            check_bits(bits)


def test_ternarize_threshold_zero_and_bad_factors():
    """delta_factor = 0 is allowed (Δ = 0: every non-zero weight keeps its sign, zeros stay 0);
    negative or infinite factors are refused each on its own; no floating-point warning."""
    w = np.array([[0.5, -0.25, 0.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes, alpha, delta = ternarize(w, delta_factor=0.0)
        np.testing.assert_array_equal(codes, [[1, -1, 0, 1]])
        np.testing.assert_allclose(alpha, [(0.5 + 0.25 + 1.0) / 3])  # mean |w| over the support
        ternarize(np.array([[0.1, -1.0, 0.8, 0.05]]))  # weights below Δ: no 0/0 anywhere
    for factor in (-0.1, np.inf):
        with pytest.raises(ValueError, match="delta_factor"):
            ternarize(w, delta_factor=factor)


def test_binary_connect_mask_bound_must_be_finite_and_positive():
    """The clipped STE's bound: 0, negative and infinite bounds are each refused."""
    np.testing.assert_array_equal(binary_connect_mask(np.array([-2.0, 0.5, 1.0]), 1.0),
                                  [False, True, True])
    for bound in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="bound"):
            binary_connect_mask(np.array([0.5]), bound)


def test_huffman_ties_pop_in_creation_order():
    """Five symbols of count 1: originals pop by index, merged nodes after them as made:
    {0,1} -> A(2), {2,3} -> B(2), {4, A} -> C(3), {B, C}; lengths 3, 3, 2, 2, 2."""
    np.testing.assert_array_equal(huffman_code_lengths([1, 1, 1, 1, 1]), [3, 3, 2, 2, 2])


def test_huffman_counts_must_be_one_dimensional_and_numeric():
    """A 2-D numeric array and a 1-D string array are each refused."""
    for counts in (np.ones((2, 2)), np.array(["a", "b"])):
        with pytest.raises(ValueError, match="symbol_counts"):
            huffman_code_lengths(counts)


def test_huffman_merged_nodes_tie_in_the_order_they_were_made():
    """Counts (1, 1, 1, 1, 2, 2, 3): {0,1} -> A(2), {2,3} -> B(2), then the originals of
    count 2 before A and B: {4,5} -> C(4); {A, B} -> D(4); {6, C} -> E(7); {D, E}. Lengths
    3, 3, 3, 3, 3, 3, 2 (merged nodes in creation order, not by their symbols)."""
    np.testing.assert_array_equal(huffman_code_lengths([1, 1, 1, 1, 2, 2, 3]),
                                  [3, 3, 3, 3, 3, 3, 2])
