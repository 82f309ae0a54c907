"""Compiled-executor kernels: every convolution algorithm and pooling kernel equals minnet's op;
each Numba twin (direct and im2col convolution, max pooling, linear) equals its NumPy
reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import functional as F
from minnet.kernels.backend import HAVE_NUMBA, use_backend
from optim.graph import kernels as K


@st.composite
def conv_geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 2, 3]))
    stride, padding, dilation = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    h = dilation * (k - 1) + 1 + draw(st.integers(0, 5))
    w = dilation * (k - 1) + 1 + draw(st.integers(0, 5))
    return (draw(st.integers(1, 2)), c_in, h, w), (c_out, c_in // groups, k, k), dict(
        stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation),
        groups=groups)


def _case(seed, x_shape, w_shape, dtype, bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


@given(conv_geometries(), st.sampled_from([np.float32, np.float64]), st.booleans(), st.booleans(),
       st.integers(0, 2**16))
def test_every_conv_algorithm_equals_minnet_conv(geometry, dtype, bias, relu, seed):
    x_shape, w_shape, g = geometry
    x, w, b = _case(seed, x_shape, w_shape, dtype, bias)
    want = F.conv2d(x, w, b, **g).data
    want = np.maximum(want, 0) if relu else want
    tol = 1e-4 if dtype == np.float32 else 1e-10
    algorithms = K.conv_algorithms(w_shape, g["stride"], g["padding"], g["dilation"], g["groups"])
    for name in algorithms:
        out = np.full(want.shape, np.nan, dtype=dtype)
        K.CONV_ALGORITHMS[name](x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"],
                                relu, out)
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
@given(conv_geometries(), st.integers(0, 2**16))
def test_direct_conv_numba_equals_numpy(geometry, seed):
    x_shape, w_shape, g = geometry
    x, w, b = _case(seed, x_shape, w_shape, np.float64, True)
    args = (x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"], True)
    outs = []
    for backend in ("numpy", "numba"):
        out = np.empty_like(F.conv2d(x, w, b, **g).data)
        with use_backend(backend):
            K.conv2d_direct(*args, out)
        outs.append(out)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-12, atol=1e-12)


def _both_backends(kernel, args, out_like):
    outs = []
    for backend in ("numpy", "numba"):
        out = np.full_like(out_like, np.nan)
        with use_backend(backend):
            kernel(*args, out)
        outs.append(out)
    return outs


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
@given(conv_geometries(), st.sampled_from([np.float32, np.float64]), st.booleans(), st.booleans(),
       st.integers(0, 2**16))
def test_im2col_conv_numba_equals_numpy(geometry, dtype, bias, relu, seed):
    """Same columns, same GEMM shape (its BLAS may round differently), same epilogue."""
    x_shape, w_shape, g = geometry
    x, w, b = _case(seed, x_shape, w_shape, dtype, bias)
    args = (x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"], relu)
    numpy_out, numba_out = _both_backends(K.conv2d_im2col, args, F.conv2d(x, w, b, **g).data)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(numba_out, numpy_out, rtol=tol, atol=tol)
    if relu:
        assert (numba_out >= 0).all()


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.integers(3, 7),
       st.integers(0, 2**16))
def test_max_pool_numba_equals_numpy(k, stride, padding, size, seed):
    """Same taps, same rule: equal values, NaN windows and -inf included (the sign of a zero
    maximum among +0 and -0 is NumPy's SIMD choice); k = stride = 2 without padding is the
    unrolled path."""
    rng = np.random.default_rng(seed)
    padding = min(padding, k // 2)
    x = rng.choice(np.array([-1.0, -0.0, 0.0, 2.0, np.nan, -np.inf], np.float32),
                   size=(2, 2, size, size + 1), p=[0.3, 0.2, 0.2, 0.2, 0.05, 0.05])
    want = F.max_pool2d(np.zeros_like(x), k, stride, padding).data
    numpy_out, numba_out = _both_backends(
        K.max_pool2d_into, (x, (k, k), (stride, stride), (padding, padding)), want)
    np.testing.assert_array_equal(numba_out, numpy_out)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
@given(st.sampled_from([np.float32, np.float64]), st.booleans(), st.booleans(), st.booleans(),
       st.integers(1, 3), st.integers(0, 2**16))
def test_linear_into_numba_equals_numpy(dtype, bias, relu, packed, batch_axes, seed):
    """x (..., in) W^T + b, ReLU: equal to the reference with a packed W^T or a transposed view
    (which the Numba twin hands to NumPy), for 1 to 3 leading axes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2,) * batch_axes + (5,)).astype(dtype)
    w = rng.standard_normal((4, 5)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if bias else None
    w_t = np.ascontiguousarray(w.T) if packed else w.T
    want = x @ w.T + (0 if b is None else b)
    want = np.maximum(want, 0) if relu else want
    numpy_out, numba_out = _both_backends(K.linear_into, (x, w_t, b, relu), want)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(numpy_out, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(numba_out, numpy_out, rtol=tol, atol=tol)


def test_algorithm_applicability():
    assert K.conv_algorithms((4, 3, 1, 1), (1, 1), (0, 0), (1, 1), 1) == ["im2col", "direct",
                                                                           "pointwise", "fft"]
    assert "pointwise" not in K.conv_algorithms((4, 3, 1, 1), (2, 2), (0, 0), (1, 1), 1)
    assert K.conv_algorithms((4, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3) == ["im2col", "direct"]
    assert "fft" not in K.conv_algorithms((4, 3, 3, 3), (1, 1), (1, 1), (2, 2), 1)


@given(st.integers(1, 3), st.integers(0, 1), st.integers(1, 3), st.integers(3, 8),
       st.sampled_from(["max", "avg"]), st.booleans(), st.integers(0, 2**16))
def test_pooling_kernels_equal_minnet_pooling(k, padding, stride, size, kind, ties, seed):
    rng = np.random.default_rng(seed)
    padding = min(padding, k // 2)
    x = rng.standard_normal((2, 3, size, size + 1)).astype(np.float32)
    if ties:  # few distinct values: many tied maxima
        x = np.round(x)
    op = F.max_pool2d if kind == "max" else F.avg_pool2d
    kernel = K.max_pool2d_into if kind == "max" else K.avg_pool2d_into
    want = op(x, k, stride, padding).data
    out = np.full_like(want, np.nan)
    kernel(x, (k, k), (stride, stride), (padding, padding), out)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_max_pool_propagates_nan_like_minnet():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out = np.empty((1, 1, 2, 2), np.float32)
    K.max_pool2d_into(x, (2, 2), (2, 2), (0, 0), out)
    np.testing.assert_array_equal(out, F.max_pool2d(x, 2).data)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1, 1])
