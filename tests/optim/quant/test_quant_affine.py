"""Laws of qparams / quantize / dequantize / fake_quantize, and each library's zero-point rule."""
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.quant import dequantize, fake_quantize, int_range, qparams, quant_dtype, quantize
from optim.quant.affine import ZERO_POINT_CONVENTIONS, affine_zero_point

from quant_helpers import (
    FLOAT_DTYPES,
    affine_cases,
    float_arrays,
    per_channel_cases,
    qranges,
    representable_interval,
)


def _slack(dtype, *magnitudes):
    """Floating-point slack for bounds stated in exact arithmetic."""
    return 8 * np.finfo(dtype).eps * max(1.0, *map(abs, magnitudes))


@given(case=affine_cases())
def test_fake_quantize_idempotent(case):
    x, scale, zero_point, qmin, qmax = case
    once = fake_quantize(x, scale, zero_point, qmin, qmax)
    np.testing.assert_array_equal(fake_quantize(once, scale, zero_point, qmin, qmax), once)


@given(case=affine_cases())
def test_fake_quantize_error_at_most_half_step_inside_range(case):
    x, scale, zero_point, qmin, qmax = case
    lo, hi = representable_interval(scale, zero_point, qmin, qmax)
    out = fake_quantize(x, scale, zero_point, qmin, qmax).astype(np.float64)
    inside = (x >= lo) & (x <= hi)
    err = np.abs(out - x)[inside]
    assert np.all(err <= float(scale) / 2 + _slack(x.dtype, lo, hi))
    # outside the range the value saturates to the nearest end
    np.testing.assert_allclose(out[x > hi], hi, rtol=1e-6)
    np.testing.assert_allclose(out[x < lo], lo, rtol=1e-6)


@given(case=affine_cases())
def test_zero_is_exactly_representable(case):
    _, scale, zero_point, qmin, qmax = case
    for dtype in (np.float32, np.float64):
        zero = np.zeros(3, dtype=dtype)
        assert np.all(fake_quantize(zero, scale, zero_point, qmin, qmax) == 0)
        assert np.all(quantize(zero, scale, zero_point, qmin, qmax) == zero_point)


@given(case=affine_cases())
def test_quantize_in_range_and_fits_dtype(case):
    x, scale, zero_point, qmin, qmax = case
    q = quantize(x, scale, zero_point, qmin, qmax)
    assert q.dtype == quant_dtype(qmin, qmax) and q.shape == x.shape
    assert np.all(q >= qmin) and np.all(q <= qmax)
    assert np.iinfo(q.dtype).min <= qmin and qmax <= np.iinfo(q.dtype).max


@given(case=affine_cases(), mode=st.sampled_from(["half_even", "half_away", "floor"]))
def test_dequantize_quantize_is_fake_quantize(case, mode):
    x, scale, zero_point, qmin, qmax = case
    q = quantize(x, scale, zero_point, qmin, qmax, rounding=mode)
    restored = dequantize(q, scale, zero_point, dtype=x.dtype)
    np.testing.assert_array_equal(restored, fake_quantize(x, scale, zero_point, qmin, qmax, rounding=mode))
    assert restored.dtype == x.dtype


@given(case=affine_cases(), seed=st.integers(0, 2**32 - 1))
def test_stochastic_quantize_matches_fake_quantize_and_brackets_x(case, seed):
    x, scale, zero_point, qmin, qmax = case
    q = quantize(x, scale, zero_point, qmin, qmax, rounding="stochastic", rng=seed)
    fq = fake_quantize(x, scale, zero_point, qmin, qmax, rounding="stochastic", rng=seed)
    np.testing.assert_array_equal(dequantize(q, scale, zero_point, dtype=x.dtype), fq)
    lo, hi = representable_interval(scale, zero_point, qmin, qmax)
    inside = (x >= lo) & (x <= hi)
    assert np.all(np.abs(fq - x)[inside] < float(scale) + _slack(x.dtype, lo, hi))


@given(case=per_channel_cases())
def test_per_channel_equals_per_tensor_on_each_slice(case):
    x, scale, zero_point, qmin, qmax, axis = case
    q = quantize(x, scale, zero_point, qmin, qmax, axis=axis)
    fq = fake_quantize(x, scale, zero_point, qmin, qmax, axis=axis)
    dq = dequantize(q, scale, zero_point, axis=axis)
    for c in range(x.shape[axis]):
        xs = np.take(x, c, axis=axis)
        args = (scale[c], zero_point[c], qmin, qmax)
        np.testing.assert_array_equal(np.take(q, c, axis=axis), quantize(xs, *args))
        np.testing.assert_array_equal(np.take(fq, c, axis=axis), fake_quantize(xs, *args))
        np.testing.assert_array_equal(np.take(dq, c, axis=axis), dequantize(quantize(xs, *args), scale[c], zero_point[c]))


@given(dtype=FLOAT_DTYPES, qrange=qranges(), symmetric=st.booleans(),
       bounds=st.tuples(st.floats(-1e4, 1e4, width=32), st.floats(-1e4, 1e4, width=32)))
def test_qparams_zero_exact_and_range_covered(dtype, qrange, symmetric, bounds):
    """0 is a grid point and every x in [x_min, x_max] is within s/2 of its fake-quantized value."""
    qmin, qmax = qrange
    x_min, x_max = dtype(min(bounds)), dtype(max(bounds))
    scale, zero_point = qparams(x_min, x_max, qmin, qmax, symmetric)
    assert scale.dtype == dtype and scale > 0 and zero_point.dtype == np.int64
    assert qmin <= zero_point <= qmax
    assert fake_quantize(np.zeros(1, dtype=dtype), scale, zero_point, qmin, qmax)[0] == 0
    xs = np.linspace(x_min, x_max, 33).astype(dtype)
    err = np.abs(fake_quantize(xs, scale, zero_point, qmin, qmax).astype(np.float64) - xs)
    assert np.all(err <= float(scale) / 2 + _slack(dtype, x_min, x_max))
    if symmetric:
        assert zero_point == (0 if qmin < 0 else (qmin + qmax + 1) // 2)


@given(qrange=qranges(), symmetric=st.booleans())
def test_qparams_zero_range_uses_eps(qrange, symmetric):
    qmin, qmax = qrange
    scale, zero_point = qparams(0.0, 0.0, qmin, qmax, symmetric)
    assert scale == np.float32(np.finfo(np.float32).eps)
    assert qmin <= zero_point <= qmax


@given(c=st.floats(0.015625, 1e3, width=32), qrange=qranges(), symmetric=st.booleans())
def test_qparams_equal_bounds_extend_to_zero(c, qrange, symmetric):
    """x_min == x_max == c behaves as the range [0, c] (and [-c, 0] for -c)."""
    qmin, qmax = qrange
    for value, lo, hi in ((c, 0.0, c), (-c, -c, 0.0)):
        assert qparams(value, value, qmin, qmax, symmetric) == qparams(lo, hi, qmin, qmax, symmetric)


@given(dtype=FLOAT_DTYPES, qrange=qranges(), symmetric=st.booleans(),
       data=float_arrays(np.float64, (2, 5), bound=1e3))
def test_qparams_per_channel_equals_scalar_calls(dtype, qrange, symmetric, data):
    qmin, qmax = qrange
    lows, highs = data.min(axis=0).astype(dtype), data.max(axis=0).astype(dtype)
    scales, zps = qparams(lows, highs, qmin, qmax, symmetric)
    assert scales.shape == zps.shape == (5,)
    for c in range(5):
        s, z = qparams(lows[c], highs[c], qmin, qmax, symmetric)
        assert s == scales[c] and z == zps[c]


def test_symmetric_scale_conventions():
    """PyTorch's full int8 range divides by 127.5, the restricted (ONNX Runtime) range by 127."""
    assert qparams(-2.0, 1.0, *int_range(8), symmetric=True) == (np.float32(2.0 / 127.5), 0)
    assert qparams(-2.0, 1.0, *int_range(8, restricted=True), symmetric=True) == (np.float32(2.0 / 127), 0)
    assert qparams(-2.0, 1.0, *int_range(8, signed=False), symmetric=True)[1] == 128


def test_infinities_saturate():
    x = np.array([-np.inf, np.inf], dtype=np.float32)
    assert quantize(x, 0.1, 3, -8, 7).tolist() == [-8, 7]
    assert fake_quantize(x, 0.5, 3, -8, 7).tolist() == [-5.5, 2.0]


def test_int32_range_quantizes_exactly_in_float64():
    qmin, qmax = -(2**31), 2**31 - 1
    x = np.array([2.0**31 - 1, -(2.0**31), 1e12, 12345.0])
    np.testing.assert_array_equal(quantize(x, 1.0, 0, qmin, qmax), [qmax, qmin, qmax, 12345])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtypes(dtype):
    x = np.linspace(-1, 1, 7).astype(dtype)
    assert fake_quantize(x, 0.1, 0, -128, 127).dtype == dtype
    q = quantize(x, 0.1, 0, -128, 127)
    assert dequantize(q, 0.1, 0).dtype == np.float32
    assert dequantize(q, np.float64(0.1), 0).dtype == np.float64


def test_zero_point_conventions_on_the_tie_counterexample():
    """Range -127..127, r_min = -0.5, r_max = 253.5, s = 1: PyTorch's q_min - rint(r_min/s) is
    -127, ONNX Runtime's rint(q_min - r_min/s) = rint(-126.5) is -126 (half to even does not
    commute with the odd shift), TFLite's and TF's half-away rounding give -127; each library
    itself agrees where it is installed."""
    expected = {"pytorch": -127, "onnxruntime": -126, "tflite": -127, "tf_fake_quant": -127}
    for convention, zero_point in expected.items():
        assert qparams(-0.5, 253.5, -127, 127, convention=convention) == (np.float32(1.0), zero_point)
    # r_min/s = -2.5 on 0..255: half to even gives 2 (PyTorch, ORT), half away 3 (TFLite, TF)
    expected = {"pytorch": 2, "onnxruntime": 2, "tflite": 3, "tf_fake_quant": 3}
    for convention, zero_point in expected.items():
        assert qparams(-2.5, 252.5, 0, 255, convention=convention) == (np.float32(1.0), zero_point)


def test_zero_point_counterexample_agrees_with_pytorch_and_onnxruntime():
    torch = pytest.importorskip("torch")
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    from torch.ao.quantization import MinMaxObserver

    observer = MinMaxObserver(dtype=torch.qint8, quant_min=-127, quant_max=127)
    observer(torch.tensor([-0.5, 253.5]))
    assert int(observer.calculate_qparams()[1]) == qparams(-0.5, 253.5, -127, 127)[1] == -127
    zero_point, _ = quant_utils.compute_scale_zp(np.array(-0.5, np.float32), np.array(253.5, np.float32),
                                                 np.array(-127, np.int8), np.array(127, np.int8))
    assert int(zero_point) == qparams(-0.5, 253.5, -127, 127, convention="onnxruntime")[1] == -126


def _half_away(v):
    """C's round(): ties away from zero, on the exact value of the float."""
    return int(Decimal(float(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _library_zero_point(convention, x_min, x_max, qmin, qmax):
    """Each library's rule from its description, in plain Python (round() is half to even)."""
    lo, hi = np.float32(x_min), np.float32(x_max)
    if convention != "tf_fake_quant":  # everyone else first extends the range to contain 0
        lo, hi = min(lo, np.float32(0)), max(hi, np.float32(0))
    s = np.float32(hi - lo) / np.float32(qmax - qmin)
    v = float(lo / s)
    if convention == "pytorch":
        return min(max(qmin - round(v), qmin), qmax)
    if convention == "onnxruntime":
        return round(qmin - v)
    shifted = float(np.float32(qmin) - np.float32(v))
    return qmin if shifted < qmin else qmax if shifted > qmax else _half_away(shifted)


@st.composite
def _ranges(draw):
    """(x_min, x_max, qmin, qmax): half the time a range with r_min/s a tie (an odd multiple
    of 1/2), where the rounding rules part."""
    qmin, qmax = draw(qranges(2, 8))
    if draw(st.booleans()):
        s = 2.0 ** draw(st.integers(-3, 3))
        lo = -(2 * draw(st.integers(0, qmax - qmin - 1)) + 1) / 2 * s
        return lo, lo + (qmax - qmin) * s, qmin, qmax
    a, b = sorted(draw(st.lists(st.floats(-100, 100, width=32), min_size=2, max_size=2)))
    if a == b:
        b = a + 1.0
    return a, b, qmin, qmax


@pytest.mark.parametrize("convention", ZERO_POINT_CONVENTIONS)
@given(case=_ranges())
def test_zero_point_conventions_match_each_library_rule(case, convention):
    x_min, x_max, qmin, qmax = case
    scale, zero_point = qparams(x_min, x_max, qmin, qmax, convention=convention)
    assert zero_point == _library_zero_point(convention, x_min, x_max, qmin, qmax)
    if convention == "tf_fake_quant":  # the nudged grid keeps the width and puts 0 on a code
        grid = ((qmin - zero_point) * scale, (qmax - zero_point) * scale)
        if scale > np.finfo(np.float32).eps:  # else the shared eps clamp widened it
            assert np.isclose(grid[1] - grid[0], np.float32(x_max) - np.float32(x_min), rtol=1e-5)
        assert fake_quantize(np.float32(0.0), scale, zero_point, qmin, qmax) == 0
    else:
        assert qmin <= zero_point <= qmax


def test_tf_fake_quant_shifts_a_range_without_zero_instead_of_widening_it():
    """[1, 3] on 0..255: TFLite widens to [0, 3] (s = 3/255); TF's FakeQuant keeps s = 2/255 and
    nudges the grid down to [0, 2]."""
    assert qparams(1.0, 3.0, 0, 255, convention="tflite") == (np.float32(3.0) / np.float32(255), 0)
    scale, zero_point = qparams(1.0, 3.0, 0, 255, convention="tf_fake_quant")
    assert (scale, zero_point) == (np.float32(2.0) / np.float32(255), 0)
    with pytest.raises(ValueError, match="convention must be one of"):
        qparams(1.0, 3.0, 0, 255, convention="caffe")
    with pytest.raises(ValueError, match="affine zero-point rule"):
        qparams(-1.0, 3.0, -128, 127, symmetric=True, convention="onnxruntime")
    with pytest.raises(ValueError, match="convention must be one of"):
        affine_zero_point(np.float32(-1.0), np.float32(0.1), 0, 255, "caffe")


@given(qrange=qranges(2, 8), scale=st.sampled_from([0.25, 0.5, 1.0, 3.0]), data=st.data())
def test_quantize_saturates_and_rounds_to_nearest(qrange, scale, data):
    """q = clamp(round(x/s) + z): a value beyond the range saturates at q_max or q_min (seed 003's
    ⌊xW + B⌋ mod P wraps it around), and x = (k + 0.6)s inside the range goes to k + 1, not to
    the floor k."""
    qmin, qmax = qrange
    z = data.draw(st.integers(qmin, qmax))
    k = data.draw(st.integers(qmin - z, qmax - z - 1))
    beyond = data.draw(st.integers(1, 3 * (qmax - qmin)))
    x = np.array([(k + 0.6) * scale, (qmax - z + beyond) * scale, (qmin - z - beyond) * scale])
    assert quantize(x, scale, z, qmin, qmax).tolist() == [k + 1 + z, qmax, qmin]


@given(qrange=qranges(2, 8), scale=st.floats(1e-3, 1e3), data=st.data())
def test_dequantize_is_scale_times_code_minus_zero_point(qrange, scale, data):
    """x̂ = s (q − z), by hand on integers (seed 003 adds the offset: (q + z)/W)."""
    qmin, qmax = qrange
    z = data.draw(st.integers(qmin, qmax))
    q = np.array(data.draw(st.lists(st.integers(qmin, qmax), min_size=1, max_size=8)))
    expected = [np.float64(scale) * (int(v) - z) for v in q]
    np.testing.assert_allclose(dequantize(q.astype(np.int64), np.float64(scale), z), expected, rtol=1e-15)
