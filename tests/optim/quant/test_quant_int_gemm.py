"""Exact 8-bit GEMM routes (``optim.quant.int_gemm``) and the integer linear / conv routes built
on them: every route equals the int64 reference bitwise, including the extreme codes -128 / 127 /
255, every zero point, and sizes that are not multiples of the tiles (4 rows, 16 / 64 channels,
4 depths)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet.kernels import backend
from optim.quant import int_conv, int_gemm, int_linear, quantize_multiplier
from optim.quant.int_gemm import (
    BLAS_BLOCK,
    gemm_u8s8_blas,
    gemm_u8s8_numpy,
    gemm_u8s8_vnni,
    packed_weights,
)

needs_numba = pytest.mark.skipif(not backend.HAVE_NUMBA, reason="numba is not installed")
needs_vnni = pytest.mark.skipif(not int_gemm.HAVE_VNNI, reason="no AVX512-VNNI on this CPU")

GEMM_ROUTES = [pytest.param(gemm_u8s8_blas, id="blas"),
               pytest.param(gemm_u8s8_vnni, id="vnni", marks=needs_vnni)]


def codes(rng, shape, dtype, extreme):
    """Random codes of ``dtype``; with ``extreme`` only the two ends of its range."""
    info = np.iinfo(dtype)
    if extreme:
        return rng.choice(np.array([info.min, info.max], dtype=dtype), size=shape)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@st.composite
def gemm_operands(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, depth, channels = (draw(st.integers(1, 13)), draw(st.integers(1, 1100)),
                             draw(st.integers(1, 150)))
    extreme = draw(st.booleans())
    return (codes(rng, (rows, depth), np.uint8, extreme),
            codes(rng, (channels, depth), np.int8, extreme))


@pytest.mark.parametrize("route", GEMM_ROUTES)
@given(operands=gemm_operands())
def test_gemm_routes_equal_int64_reference(route, operands):
    u, w = operands
    np.testing.assert_array_equal(route(u, w), gemm_u8s8_numpy(u, w))


def test_gemm_reference_is_the_brute_force_sum():
    rng = np.random.default_rng(0)
    u, w = codes(rng, (3, 7), np.uint8, False), codes(rng, (5, 7), np.int8, False)
    brute = [[sum(int(u[m, k]) * int(w[o, k]) for k in range(7)) for o in range(5)]
             for m in range(3)]
    np.testing.assert_array_equal(gemm_u8s8_numpy(u, w), brute)


@pytest.mark.parametrize("route", GEMM_ROUTES)
def test_gemm_worst_case_sums_stay_exact(route):
    """All products at 255 * (-128) over more than two float32 blocks: the BLAS route's block
    sums reach -(2**24 - 2**15) and stay exact; the int32 result is -255 * 128 * depth."""
    depth = 2 * BLAS_BLOCK + 3
    u, w = np.full((5, depth), 255, np.uint8), np.full((3, depth), -128, np.int8)
    np.testing.assert_array_equal(route(u, w), np.full((5, 3), -255 * 128 * depth))


def test_blas_block_is_the_longest_exact_block():
    assert BLAS_BLOCK * 255 * 128 < 2**24 <= (BLAS_BLOCK + 1) * 255 * 128


@needs_vnni
def test_packed_weights_cached_only_for_frozen_arrays():
    rng = np.random.default_rng(1)
    w = codes(rng, (20, 9), np.int8, False)
    u = codes(rng, (4, 9), np.uint8, False)
    assert packed_weights(w) is not packed_weights(w)  # writeable: packed afresh every call
    before = gemm_u8s8_vnni(u, w)
    w[0, 0] ^= 1
    np.testing.assert_array_equal(gemm_u8s8_vnni(u, w), gemm_u8s8_numpy(u, w))
    assert not np.array_equal(before, gemm_u8s8_vnni(u, w))
    w.flags.writeable = False
    assert packed_weights(w) is packed_weights(w)
    np.testing.assert_array_equal(gemm_u8s8_vnni(u, w), gemm_u8s8_numpy(u, w))


@st.composite
def layer(draw, conv):
    """Codes and per-channel requantization of one integer layer, extremes included."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    signed_in, signed_out, extreme = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    channels = draw(st.integers(1, 70))
    if conv:
        kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        geometry = tuple((draw(st.integers(1, 2)), draw(st.integers(1, 2))) for _ in range(3))
        stride, dilation = geometry[0], geometry[2]
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        size = [draw(st.integers(max(1, dilation[a] * (kernel[a] - 1) + 1 - 2 * padding[a]), 11))
                for a in (0, 1)]
        x_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), *size)
        w_shape = (channels, x_shape[1], *kernel)
        geometry = (stride, padding, dilation)
    else:
        depth = draw(st.integers(1, 800))
        x_shape, w_shape, geometry = (draw(st.integers(1, 11)), depth), (channels, depth), ()
    x_dtype, out_range = (np.int8 if signed_in else np.uint8), ((-128, 127) if signed_out
                                                                 else (0, 255))
    info = np.iinfo(x_dtype)
    x_zero_point = int(draw(st.sampled_from([info.min, info.max, int(rng.integers(
        info.min, info.max, endpoint=True))])))
    multiplier = np.exp(rng.uniform(np.log(1e-6), np.log(0.5), size=channels))
    args = (codes(rng, x_shape, x_dtype, extreme), x_zero_point,
            codes(rng, w_shape, np.int8, extreme),
            rng.integers(-2**20, 2**20, size=channels).astype(np.int32),
            *quantize_multiplier(multiplier),
            int(rng.integers(*out_range, endpoint=True)), *out_range, draw(st.booleans()))
    return args + geometry


LINEAR_ROUTES = [pytest.param(int_linear.linear_rows_int16, id="int16"),
                 pytest.param(int_linear.linear_rows_vnni, id="vnni", marks=needs_vnni)]
CONV_ROUTES = [pytest.param(int_conv.conv2d_int16, id="int16"),
               pytest.param(int_conv.conv2d_vnni, id="vnni", marks=needs_vnni)]


@needs_numba
@pytest.mark.parametrize("route", LINEAR_ROUTES)
@given(args=layer(conv=False))
def test_linear_routes_equal_reference(route, args):
    reference = int_linear.quantized_linear_numpy(*args)
    fast = route(*args)
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)


@needs_numba
@pytest.mark.parametrize("route", CONV_ROUTES)
@given(args=layer(conv=True))
def test_conv_routes_equal_reference(route, args):
    reference = int_conv.quantized_conv2d_numpy(*args)
    fast = route(*args)
    assert fast.dtype == reference.dtype and fast.shape == reference.shape
    np.testing.assert_array_equal(fast, reference)


def test_fast_path_chosen_at_import():
    expected = "vnni" if int_gemm.HAVE_VNNI else "int16"
    assert int_linear.quantized_linear_numba.__name__.endswith(expected)
    assert int_conv.quantized_conv2d_numba.__name__.endswith(expected)
    assert (int_gemm.gemm_u8s8 is gemm_u8s8_vnni) == int_gemm.HAVE_VNNI
