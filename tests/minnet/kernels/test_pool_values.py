"""Value-only max pooling (``minnet.kernels.pool_values``): the Numba loops equal the NumPy
reference on integer codes and floats, and the reference equals minnet's max-pool kernel."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.cases import needs_numba, pool_cases
from minnet.kernels.pool import max_pool2d_forward_numpy
from minnet.kernels.pool_values import max_pool2d_values_numba, max_pool2d_values_numpy

DTYPES = [np.uint8, np.int8, np.int32, np.float32]


def values(shape, dtype, seed):
    """Random values over the dtype's whole range (its extremes included) or normal floats."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=pool_cases(max_channels=3), seed=st.integers(0, 2**16))
def test_numba_equals_numpy(dtype, case, seed):
    x = values(case.x_shape, dtype, seed)
    args = (case.kernel_size, case.stride, case.padding)
    fast = max_pool2d_values_numba(x, *args)
    assert fast.dtype == dtype
    np.testing.assert_array_equal(fast, max_pool2d_values_numpy(x, *args))


@given(case=pool_cases(max_channels=3), seed=st.integers(0, 2**16))
def test_reference_equals_minnet_max_pool(case, seed):
    x = values(case.x_shape, np.float64, seed)
    args = (case.kernel_size, case.stride, case.padding)
    expected, _ = max_pool2d_forward_numpy(x, *args)
    np.testing.assert_array_equal(max_pool2d_values_numpy(x, *args), expected)


def test_padding_never_wins_for_codes():
    x = np.full((1, 1, 3, 3), -128, np.int8)
    for pool in (max_pool2d_values_numpy, max_pool2d_values_numba):
        np.testing.assert_array_equal(pool(x, (2, 2), (2, 2), (1, 1)), np.full((1, 1, 2, 2), -128))


@needs_numba
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
@given(kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)), extra=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_tiling_windows_equal_numpy(dtype, kernel, extra, seed):
    """Stride = kernel, no padding (the vector-loop path), with leftover rows and columns."""
    x = values((2, 3, 3 * kernel[0] + extra, 4 * kernel[1] + extra), dtype, seed)
    args = (kernel, kernel, (0, 0))
    np.testing.assert_array_equal(max_pool2d_values_numba(x, *args),
                                  max_pool2d_values_numpy(x, *args))


@needs_numba
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 2), (1, 2))])
def test_nan_wins_its_windows(kernel, stride):
    x = values((1, 2, 6, 6), np.float64, 3)
    x[0, 0, 1, 1] = x[0, 1, 4, 5] = np.nan
    args = (kernel, stride, (0, 0))
    fast, reference = max_pool2d_values_numba(x, *args), max_pool2d_values_numpy(x, *args)
    assert np.isnan(reference).any()
    np.testing.assert_array_equal(fast, reference)
