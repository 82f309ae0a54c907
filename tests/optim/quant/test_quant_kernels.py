"""Integer-only linear and conv kernels: Numba equals the NumPy reference bitwise; both are
within one output step of the exact real-valued computation."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import functional as F
from minnet.kernels import backend
from optim.quant import quantize_multiplier, quantized_conv2d, quantized_linear
from optim.quant.int_conv import conv2d_kernel
from optim.quant.int_linear import linear_kernel

needs_numba = pytest.mark.skipif(not backend.HAVE_NUMBA, reason="numba is not installed")


@st.composite
def operands(draw, conv=False):
    """Random codes, weights, int32 biases and per-channel multipliers for one layer."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    signed_in, signed_out = draw(st.booleans()), draw(st.booleans())
    channels = draw(st.integers(1, 40))
    if conv:
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        c_in = draw(st.integers(1, 4))
        h = draw(st.integers(dilation[0] * (kh - 1) + 1, 9))
        w = draw(st.integers(dilation[1] * (kw - 1) + 1, 9))
        x_shape, w_shape = (draw(st.integers(1, 3)), c_in, h, w), (channels, c_in, kh, kw)
        geometry = {"stride": stride, "padding": padding, "dilation": dilation}
    else:
        depth = draw(st.integers(1, 300))
        x_shape, w_shape = (draw(st.integers(1, 9)), depth), (channels, depth)
        geometry = {}
    x_range = (-128, 127) if signed_in else (0, 255)
    out_range = (-128, 127) if signed_out else (0, 255)
    x_q = rng.integers(*x_range, size=x_shape, endpoint=True).astype(
        np.int8 if signed_in else np.uint8)
    w_q = rng.integers(-128, 127, size=w_shape, endpoint=True).astype(np.int8)
    bias_q = rng.integers(-2**20, 2**20, size=channels).astype(np.int32)
    multiplier = np.exp(rng.uniform(np.log(1e-6), np.log(0.5), size=channels))
    M0, shift = quantize_multiplier(multiplier)
    args = dict(x_q=x_q, x_zero_point=int(rng.integers(*x_range, endpoint=True)), w_q=w_q,
                bias_q=bias_q, M0=M0, shift=shift,
                out_zero_point=int(rng.integers(*out_range, endpoint=True)),
                qmin=out_range[0], qmax=out_range[1], relu=draw(st.booleans()))
    return args, geometry, multiplier


def _kernel_args(args, geometry):
    keys = ("x_q", "x_zero_point", "w_q", "bias_q", "M0", "shift", "out_zero_point", "qmin",
            "qmax", "relu")
    conv = () if not geometry else tuple(
        (v, v) if isinstance(v, int) else v for v in geometry.values())
    return tuple(args[k] for k in keys) + conv


@needs_numba
@given(case=operands())
def test_linear_numba_equals_numpy(case):
    args, _, _ = case
    reference = linear_kernel.numpy(*_kernel_args(args, {}))
    fast = linear_kernel.numba(*_kernel_args(args, {}))
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)


@needs_numba
@given(case=operands(conv=True))
def test_conv_numba_equals_numpy(case):
    args, geometry, _ = case
    reference = conv2d_kernel.numpy(*_kernel_args(args, geometry))
    fast = conv2d_kernel.numba(*_kernel_args(args, geometry))
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)


def _within_one_step_of_exact(y, accumulators, args, multiplier, channel_axis):
    """|y - clamp(round(acc M) + z)| <= 1 (the requantization law), with the exact int64
    accumulator computed independently in float64."""
    shape = [1] * accumulators.ndim
    shape[channel_axis] = -1
    exact = np.rint(accumulators * multiplier.reshape(shape)) + args["out_zero_point"]
    low = max(args["qmin"], args["out_zero_point"]) if args["relu"] else args["qmin"]
    exact = np.clip(exact, low, args["qmax"])
    assert np.all(np.abs(y.astype(np.int64) - exact) <= 1)
    assert y.min() >= low and y.max() <= args["qmax"]


@given(case=operands())
def test_linear_matches_float_within_one_step(case):
    args, _, multiplier = case
    y = quantized_linear(**args)
    x = args["x_q"].astype(np.float64) - args["x_zero_point"]
    accumulators = x @ args["w_q"].astype(np.float64).T + args["bias_q"]
    _within_one_step_of_exact(y, accumulators, args, multiplier, channel_axis=1)


@given(case=operands(conv=True))
def test_conv_matches_float_within_one_step(case):
    args, geometry, multiplier = case
    y = quantized_conv2d(**args, **geometry)
    x = args["x_q"].astype(np.float64) - args["x_zero_point"]
    real = F.conv2d(x, args["w_q"].astype(np.float64), args["bias_q"].astype(np.float64),
                    **geometry).data
    assert y.shape == real.shape
    _within_one_step_of_exact(y, real, args, multiplier, channel_axis=1)


@given(case=operands())
def test_fused_relu_is_a_clamp_at_the_zero_point(case):
    args, _, _ = case
    plain = quantized_linear(**{**args, "relu": False})
    fused = quantized_linear(**{**args, "relu": True})
    z = args["out_zero_point"]
    np.testing.assert_array_equal(fused, np.maximum(plain, np.asarray(z, plain.dtype)))


def _valid():
    return dict(x_q=np.zeros((2, 3), np.uint8), x_zero_point=0, w_q=np.zeros((4, 3), np.int8),
                bias_q=np.zeros(4, np.int32), M0=np.full(4, 2**30, np.int32),
                shift=np.ones(4, np.int32), out_zero_point=0, qmin=0, qmax=255)


@pytest.mark.parametrize("error, message, change", [
    (TypeError, "x_q", {"x_q": np.zeros((2, 3), np.int16)}),
    (TypeError, "w_q", {"w_q": np.zeros((4, 3), np.int16)}),
    (ValueError, "bias_q", {"bias_q": np.zeros(3, np.int32)}),
    (ValueError, "M0", {"M0": np.ones(5, np.int32)}),
    (TypeError, "shift", {"shift": np.ones(4)}),
    (ValueError, "x_zero_point", {"x_zero_point": 256}),
    (ValueError, "out_zero_point", {"out_zero_point": -1}),
    (ValueError, "qmin", {"qmin": 255}),
    (ValueError, "uint8 or int8", {"qmin": -200, "qmax": 100}),
    (ValueError, "agree in K", {"w_q": np.zeros((4, 5), np.int8)}),
    (ValueError, "overflow", {"x_q": np.zeros((1, 70000), np.uint8),
                              "w_q": np.zeros((4, 70000), np.int8)}),
])
def test_linear_errors_name_the_argument(error, message, change):
    with pytest.raises(error, match=message):
        quantized_linear(**{**_valid(), **change})


def test_conv_errors_name_the_argument():
    args = {**_valid(), "x_q": np.zeros((1, 3, 4, 4), np.uint8),
            "w_q": np.zeros((4, 3, 5, 5), np.int8)}
    with pytest.raises(ValueError, match="does not fit"):
        quantized_conv2d(**args)
    with pytest.raises(ValueError, match="stride"):
        quantized_conv2d(**args, padding=1, stride=0)
    with pytest.raises(ValueError, match="C_in"):
        quantized_conv2d(**{**args, "w_q": np.zeros((4, 2, 3, 3), np.int8)})


@pytest.mark.parametrize("kernel", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_relu_with_the_zero_point_at_qmax_saturates(kernel):
    # real 0 is the largest code: after the fused ReLU every output is qmax
    args = {**_valid(), "x_q": np.full((2, 3), 9, np.uint8), "w_q": np.ones((4, 3), np.int8),
            "out_zero_point": 255}
    out = getattr(linear_kernel, kernel)(*_kernel_args({**args, "relu": True}, {}))
    np.testing.assert_array_equal(out, np.full((2, 4), 255, np.uint8))
