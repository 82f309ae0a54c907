"""im2col / col2im: the definition, the adjoint identity, and Numba equal to NumPy."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.cases import conv_cases, random_array
from minnet.kernels import im2col as K

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**16)


def _geometry(case):
    return case.w_shape[2:], case.stride, case.padding, case.dilation


def brute_force_im2col(x, kernel_size, stride, padding, dilation):
    """cols[n, (c, i, j), (y, x)] = x[n, c, y s + i d - p, x s + j d - p], zero outside x."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    oh = K.output_size(h, kh, sh, ph, dh)
    ow = K.output_size(w, kw, sw, pw, dw)
    cols = np.zeros((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        for u in range(ow):
                            r, s = y * sh + i * dh - ph, u * sw + j * dw - pw
                            if 0 <= r < h and 0 <= s < w:
                                cols[b, (ch * kh + i) * kw + j, y * ow + u] = x[b, ch, r, s]
    return cols


def test_output_size_matches_torch_formula_examples():
    # LeNet-5: 28x28, 5x5 kernel, padding 2 keeps 28; no padding gives 24; stride 2 halves
    assert K.output_size(28, 5, 1, 2, 1) == 28
    assert K.output_size(28, 5, 1, 0, 1) == 24
    assert K.output_size(28, 2, 2, 0, 1) == 14
    assert K.output_size(7, 3, 2, 1, 2) == 3  # (7 + 2 - 4 - 1) // 2 + 1


@given(case=conv_cases(), seed=seeds)
def test_numpy_im2col_matches_definition(case, seed):
    x = random_array(case.x_shape, np.float64, seed)
    np.testing.assert_array_equal(K.im2col_numpy(x, *_geometry(case)),
                                  brute_force_im2col(x, *_geometry(case)))


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=conv_cases(), seed=seeds)
def test_numba_im2col_equals_numpy(dtype, case, seed):
    x = random_array(case.x_shape, dtype, seed)
    expected = K.im2col_numpy(x, *_geometry(case))
    got = K.im2col_numba(x, *_geometry(case))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=conv_cases(), seed=seeds)
def test_numba_col2im_equals_numpy(dtype, case, seed):
    x = np.empty(case.x_shape, dtype)
    cols = random_array(K.im2col_numpy(x, *_geometry(case)).shape, dtype, seed)
    expected = K.col2im_numpy(cols, x.shape, *_geometry(case))
    got = K.col2im_numba(cols, x.shape, *_geometry(case))
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=conv_cases(), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(impl, case, seed):
    """<im2col(x), c> = <x, col2im(c)> for all x, c."""
    im2col, col2im = getattr(K.im2col, impl), getattr(K.col2im, impl)
    x = random_array(case.x_shape, np.float64, seed)
    cols = im2col(x, *_geometry(case))
    c = random_array(cols.shape, np.float64, seed + 1)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, col2im(c, x.shape, *_geometry(case))),
                               rtol=1e-10, atol=1e-10)


def test_numba_im2col_accepts_non_contiguous_input():
    x = random_array((2, 3, 6, 5), np.float32, 0).transpose(0, 1, 3, 2)
    geometry = ((3, 2), (1, 2), (1, 0), (1, 1))
    np.testing.assert_array_equal(K.im2col_numba(x, *geometry), K.im2col_numpy(x, *geometry))
