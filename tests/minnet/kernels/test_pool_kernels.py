"""Pooling kernels: the window definitions, the first-max rule on ties, adjoint identities, the
Numba fast paths equal to the NumPy references, and PyTorch's pooling."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.cases import adaptive_cases, pool_cases, random_array, tied_array
from minnet.kernels import pool as K

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**16)


def _windows(case):
    """Yield (u, v, [(r, s), ...]): each output cell and its in-bounds input cells, row-major."""
    _, _, h, w = case.x_shape
    (kh, kw), (sh, sw), (ph, pw) = case.kernel_size, case.stride, case.padding
    for u in range((h + 2 * ph - kh) // sh + 1):
        for v in range((w + 2 * pw - kw) // sw + 1):
            yield u, v, [(u * sh + i - ph, v * sw + j - pw) for i in range(kh) for j in range(kw)
                         if 0 <= u * sh + i - ph < h and 0 <= v * sw + j - pw < w]


def _args(case):
    return case.kernel_size, case.stride, case.padding


def _numpy_and_numba(kernel, *args):
    return kernel.numpy(*args), kernel.numba(*args)


# ---- max pooling ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds)
def test_max_pool_is_the_first_window_maximum(impl, case, seed):
    """y = max over the in-bounds window (padding is -inf), idx = the first cell holding it."""
    x = tied_array(case.x_shape, np.float64, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case))
    w = case.x_shape[3]
    for u, v, cells in _windows(case):
        values = x[:, :, [r for r, _ in cells], [s for _, s in cells]]  # (N, C, cells)
        first = values.argmax(axis=-1)  # the first maximum, cells in row-major order
        np.testing.assert_array_equal(y[:, :, u, v], values.max(axis=-1))
        expected = [[cells[k][0] * w + cells[k][1] for k in row] for row in first]
        np.testing.assert_array_equal(idx[:, :, u, v], expected)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds)
def test_max_pool_gradient_goes_to_exactly_the_first_max(impl, case, seed):
    x = tied_array(case.x_shape, np.float64, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case))
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.max_pool2d_backward, impl)(g, idx, x.shape)
    expected = np.zeros_like(x)
    w = case.x_shape[3]
    for u, v, cells in _windows(case):
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                first = max(cells, key=lambda rs: (x[n, c, rs[0], rs[1]], -rs[0] * w - rs[1]))
                expected[n, c, first[0], first[1]] += g[n, c, u, v]
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds)
def test_max_pool_backward_is_adjoint_of_gathering(impl, case, seed):
    """y = x[idx], so <y, g> = <x, scatter(g, idx)>."""
    x = random_array(case.x_shape, np.float64, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case))
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.max_pool2d_backward, impl)(g, idx, x.shape)
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=pool_cases(), seed=seeds, ties=st.booleans())
def test_numba_max_pool_equals_numpy(dtype, case, seed, ties):
    x = (tied_array if ties else random_array)(case.x_shape, dtype, seed)
    (y0, i0), (y1, i1) = _numpy_and_numba(K.max_pool2d_forward, x, *_args(case))
    assert y1.dtype == dtype
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(i1, i0)
    g = random_array(y0.shape, dtype, seed + 1)
    dx0, dx1 = _numpy_and_numba(K.max_pool2d_backward, g, i0, x.shape)
    assert dx1.dtype == dtype
    np.testing.assert_allclose(dx1, dx0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_max_pool_propagates_nan_at_its_first_position(impl):
    x = np.array([[[[1.0, np.nan], [np.nan, 5.0]]]])
    y, idx = getattr(K.max_pool2d_forward, impl)(x, (2, 2), (2, 2), (0, 0))
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1


# ---- average pooling --------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds)
def test_avg_pool_divides_by_the_full_kernel_area(impl, case, seed):
    """count_include_pad=True: the in-bounds sum over k_h k_w, padding counted as zeros."""
    x = random_array(case.x_shape, np.float64, seed)
    y = getattr(K.avg_pool2d_forward, impl)(x, *_args(case))
    area = case.kernel_size[0] * case.kernel_size[1]
    for u, v, cells in _windows(case):
        total = sum(x[:, :, r, s] for r, s in cells)
        np.testing.assert_allclose(y[:, :, u, v], total / area, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds)
def test_avg_pool_backward_is_the_adjoint(impl, case, seed):
    x = random_array(case.x_shape, np.float64, seed)
    y = getattr(K.avg_pool2d_forward, impl)(x, *_args(case))
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.avg_pool2d_backward, impl)(g, x.shape, *_args(case))
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=pool_cases(), seed=seeds)
def test_numba_avg_pool_equals_numpy(dtype, case, seed):
    x = random_array(case.x_shape, dtype, seed)
    y0, y1 = _numpy_and_numba(K.avg_pool2d_forward, x, *_args(case))
    g = random_array(y0.shape, dtype, seed + 1)
    dx0, dx1 = _numpy_and_numba(K.avg_pool2d_backward, g, x.shape, *_args(case))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for ref, got in ((y0, y1), (dx0, dx1)):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


# ---- adaptive average pooling -----------------------------------------------------------


@given(size=st.integers(1, 40), out=st.integers(1, 40))
def test_adaptive_bounds_follow_pytorch(size, out):
    """start_u = floor(u size / out), end_u = ceil((u + 1) size / out), in exact arithmetic."""
    start, end = K.adaptive_bounds(size, out)
    assert start.tolist() == [math.floor(u * size / out) for u in range(out)]
    assert end.tolist() == [math.ceil((u + 1) * size / out) for u in range(out)]
    assert start[0] == 0 and end[-1] == size and np.all(end > start)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=adaptive_cases(), seed=seeds)
def test_adaptive_avg_pool_is_the_window_mean_and_backward_its_adjoint(impl, case, seed):
    shape, out = case
    x = random_array(shape, np.float64, seed)
    y = getattr(K.adaptive_avg_pool2d_forward, impl)(x, out)
    (r0, r1), (c0, c1) = K.adaptive_bounds(shape[2], out[0]), K.adaptive_bounds(shape[3], out[1])
    for u in range(out[0]):
        for v in range(out[1]):
            np.testing.assert_allclose(y[:, :, u, v], x[:, :, r0[u]:r1[u], c0[v]:c1[v]].mean(axis=(2, 3)),
                                       rtol=1e-12, atol=1e-12)
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.adaptive_avg_pool2d_backward, impl)(g, shape)
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=adaptive_cases(), seed=seeds)
def test_numba_adaptive_avg_pool_equals_numpy(dtype, case, seed):
    shape, out = case
    x = random_array(shape, dtype, seed)
    y0, y1 = _numpy_and_numba(K.adaptive_avg_pool2d_forward, x, out)
    g = random_array(y0.shape, dtype, seed + 1)
    dx0, dx1 = _numpy_and_numba(K.adaptive_avg_pool2d_backward, g, shape)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for ref, got in ((y0, y1), (dx0, dx1)):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


# ---- PyTorch ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ties=st.booleans())
def test_pooling_agrees_with_torch(impl, case, seed, ties):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = (tied_array if ties else random_array)(case.x_shape, np.float64, seed)
    tx = torch.tensor(x)
    ty, tidx = F.max_pool2d(tx, *_args(case), return_indices=True)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case))
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    tx.requires_grad_(True)
    ta = F.avg_pool2d(tx, *_args(case))
    g = random_array(tuple(ta.shape), np.float64, seed + 1)
    ta.backward(torch.from_numpy(g))
    np.testing.assert_allclose(getattr(K.avg_pool2d_forward, impl)(x, *_args(case)),
                               ta.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(getattr(K.avg_pool2d_backward, impl)(g, x.shape, *_args(case)),
                               tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=adaptive_cases(), seed=seeds)
def test_adaptive_pooling_agrees_with_torch(impl, case, seed):
    torch = pytest.importorskip("torch")
    shape, out = case
    x = random_array(shape, np.float64, seed)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, out)
    g = random_array(tuple(ty.shape), np.float64, seed + 1)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(getattr(K.adaptive_avg_pool2d_forward, impl)(x, out),
                               ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(getattr(K.adaptive_avg_pool2d_backward, impl)(g, shape),
                               tx.grad.numpy(), rtol=1e-12, atol=1e-12)
