"""Pooling kernels: the window definitions (output size with ceil_mode, the count_include_pad
divisor), the first-max rule on ties and the last-NaN rule, adjoint identities, the Numba fast
paths equal to the NumPy references, PyTorch's pooling, and random geometry (padding beyond the
kernel, huge strides) run in a child process so that an out-of-bounds read fails the test."""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kernels.cases import adaptive_cases, pool_cases, random_array, tied_array
from minnet.kernels import pool as K

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**16)


def _out_size(size, kernel, stride, padding, ceil_mode):
    """Brute force: window o (origin o s - p) exists while window o - 1 leaves padded cells
    uncovered (ceil_mode) or while it fits the padded input (floor); with ceil_mode a window
    must also start inside the input or its left padding."""
    o = 0
    while True:
        origin = (o + 1) * stride - padding
        fits = origin + kernel <= size + padding
        if ceil_mode:
            fits = o * stride + kernel < size + 2 * padding and origin < size
        if not fits:
            return o + 1 if kernel <= size + 2 * padding else 0
        o += 1


def _windows(case, ceil_mode=False):
    """Yield (u, v, [(r, s), ...]): each output cell and its in-bounds input cells, row-major."""
    _, _, h, w = case.x_shape
    (kh, kw), (sh, sw), (ph, pw) = case.kernel_size, case.stride, case.padding
    for u in range(_out_size(h, kh, sh, ph, ceil_mode)):
        for v in range(_out_size(w, kw, sw, pw, ceil_mode)):
            yield u, v, [(u * sh + i - ph, v * sw + j - pw) for i in range(kh) for j in range(kw)
                         if 0 <= u * sh + i - ph < h and 0 <= v * sw + j - pw < w]


def _args(case):
    return case.kernel_size, case.stride, case.padding


def _numpy_and_numba(kernel, *args):
    return kernel.numpy(*args), kernel.numba(*args)


@given(size=st.integers(0, 12), kernel=st.integers(1, 5), stride=st.integers(1, 4),
       padding=st.integers(0, 3), ceil_mode=st.booleans())
def test_output_size_counts_the_windows(size, kernel, stride, padding, ceil_mode):
    """In PyTorch's domain (padding <= kernel // 2 with ceil_mode): beyond it, the formula's
    single ceil_mode correction can keep a window lying wholly in the right padding (size 0,
    kernel 1, padding 2: 3 windows, the brute force counts 2), and PyTorch refuses the case."""
    assume(padding <= kernel // 2 or not ceil_mode)
    assert K.pool_output_size(size, kernel, stride, padding, ceil_mode) == \
        _out_size(size, kernel, stride, padding, ceil_mode)


# ---- max pooling ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans())
def test_max_pool_is_the_first_window_maximum(impl, case, seed, ceil_mode):
    """y = max over the in-bounds window (padding is -inf), idx = the first cell holding it."""
    x = tied_array(case.x_shape, np.float64, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case), ceil_mode)
    w = case.x_shape[3]
    cells_seen = 0
    for u, v, cells in _windows(case, ceil_mode):
        values = x[:, :, [r for r, _ in cells], [s for _, s in cells]]  # (N, C, cells)
        first = values.argmax(axis=-1)  # the first maximum, cells in row-major order
        np.testing.assert_array_equal(y[:, :, u, v], values.max(axis=-1))
        expected = [[cells[k][0] * w + cells[k][1] for k in row] for row in first]
        np.testing.assert_array_equal(idx[:, :, u, v], expected)
        cells_seen += 1
    assert y.shape[2] * y.shape[3] == cells_seen


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans())
def test_max_pool_gradient_goes_to_exactly_the_first_max(impl, case, seed, ceil_mode):
    x = tied_array(case.x_shape, np.float64, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case), ceil_mode)
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.max_pool2d_backward, impl)(g, idx, x.shape)
    expected = np.zeros_like(x)
    w = case.x_shape[3]
    for u, v, cells in _windows(case, ceil_mode):
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                first = max(cells, key=lambda rs: (x[n, c, rs[0], rs[1]], -rs[0] * w - rs[1]))
                expected[n, c, first[0], first[1]] += g[n, c, u, v]
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans())
def test_max_pool_backward_is_adjoint_of_gathering(impl, case, seed, ceil_mode):
    """y = x[idx], so <y, g> = <x, scatter(g, idx)>."""
    x = random_array(case.x_shape, np.float64, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case), ceil_mode)
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.max_pool2d_backward, impl)(g, idx, x.shape)
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=pool_cases(), seed=seeds, ties=st.booleans(), ceil_mode=st.booleans())
def test_numba_max_pool_equals_numpy(dtype, case, seed, ties, ceil_mode):
    x = (tied_array if ties else random_array)(case.x_shape, dtype, seed)
    (y0, i0), (y1, i1) = _numpy_and_numba(K.max_pool2d_forward, x, *_args(case), ceil_mode)
    assert y1.dtype == dtype
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(i1, i0)
    g = random_array(y0.shape, dtype, seed + 1)
    dx0, dx1 = _numpy_and_numba(K.max_pool2d_backward, g, i0, x.shape)
    assert dx1.dtype == dtype
    np.testing.assert_allclose(dx1, dx0, rtol=1e-6, atol=1e-6)


def _with_nans(shape, seed):
    """Small integers with about a third of the cells NaN: windows with several NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(np.float64)
    x[rng.random(shape) < 0.35] = np.nan
    return x


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans())
def test_max_pool_keeps_the_last_nan_of_a_window(impl, case, seed, ceil_mode):
    """PyTorch's CPU kernel updates on ``val > maxval || isnan(val)``: a window holding NaNs
    gives NaN, and its index is the last NaN in row-major order."""
    x = _with_nans(case.x_shape, seed)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case), ceil_mode)
    w = case.x_shape[3]
    for u, v, cells in _windows(case, ceil_mode):
        for n, c in np.ndindex(x.shape[:2]):
            nans = [r * w + s for r, s in cells if np.isnan(x[n, c, r, s])]
            if nans:
                assert np.isnan(y[n, c, u, v]) and idx[n, c, u, v] == nans[-1]


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_max_pool_nan_window_hand_example(impl):
    x = np.array([[[[1.0, np.nan], [np.nan, 5.0]]]])
    y, idx = getattr(K.max_pool2d_forward, impl)(x, (2, 2), (2, 2), (0, 0))
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 2


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans())
def test_max_pool_nans_agree_with_torch(impl, case, seed, ceil_mode):
    torch = pytest.importorskip("torch")
    x = _with_nans(case.x_shape, seed)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), *_args(case), ceil_mode=ceil_mode,
                                              return_indices=True)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case), ceil_mode)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_a_window_of_padding_only_reads_nothing(impl):
    """padding >= kernel (refused by the op layer, possible in the kernel): windows that lie in
    the padding give -inf with index -1 (max) or 0 (average over no cell) and no gradient."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, (1, 1), (3, 3), (3, 3))
    inside = idx >= 0
    assert np.all(y[~inside] == -np.inf) and np.all(x.ravel()[idx[inside]] == y[inside])
    dx = getattr(K.max_pool2d_backward, impl)(np.ones_like(y), idx, x.shape)
    assert dx.sum() == inside.sum()
    avg = getattr(K.avg_pool2d_forward, impl)(x, (1, 1), (3, 3), (3, 3), False, False)
    np.testing.assert_array_equal(avg[~inside], 0.0)
    np.testing.assert_array_equal(avg[inside], y[inside])


# ---- average pooling --------------------------------------------------------------------


def _divisor(case, u, v, cells, count_include_pad):
    """Cells the average divides by: the window's cells inside the padded input (padding
    counted) or inside the input only."""
    if not count_include_pad:
        return len(cells)
    _, _, h, w = case.x_shape
    (kh, kw), (sh, sw), (ph, pw) = case.kernel_size, case.stride, case.padding
    return sum(-ph <= u * sh + i - ph < h + ph and -pw <= v * sw + j - pw < w + pw
               for i in range(kh) for j in range(kw))


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_avg_pool_divides_by_the_counted_cells(impl, case, seed, ceil_mode, count_include_pad):
    """The in-bounds sum over the window, divided by the cells counted: k_h k_w with
    count_include_pad (fewer only where a ceil-mode window passes the padding), else the
    in-bounds cells."""
    x = random_array(case.x_shape, np.float64, seed)
    y = getattr(K.avg_pool2d_forward, impl)(x, *_args(case), ceil_mode, count_include_pad)
    for u, v, cells in _windows(case, ceil_mode):
        total = sum(x[:, :, r, s] for r, s in cells)
        divisor = _divisor(case, u, v, cells, count_include_pad)
        if count_include_pad and not ceil_mode:
            assert divisor == case.kernel_size[0] * case.kernel_size[1]
        np.testing.assert_allclose(y[:, :, u, v], total / divisor, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_avg_pool_backward_is_the_adjoint(impl, case, seed, ceil_mode, count_include_pad):
    options = (ceil_mode, count_include_pad)
    x = random_array(case.x_shape, np.float64, seed)
    y = getattr(K.avg_pool2d_forward, impl)(x, *_args(case), *options)
    g = random_array(y.shape, np.float64, seed + 1)
    dx = getattr(K.avg_pool2d_backward, impl)(g, x.shape, *_args(case), *options)
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_numba_avg_pool_equals_numpy(dtype, case, seed, ceil_mode, count_include_pad):
    options = (ceil_mode, count_include_pad)
    x = random_array(case.x_shape, dtype, seed)
    y0, y1 = _numpy_and_numba(K.avg_pool2d_forward, x, *_args(case), *options)
    g = random_array(y0.shape, dtype, seed + 1)
    dx0, dx1 = _numpy_and_numba(K.avg_pool2d_backward, g, x.shape, *_args(case), *options)
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
@given(case=pool_cases(), seed=seeds, ties=st.booleans(), ceil_mode=st.booleans(),
       count_include_pad=st.booleans())
def test_pooling_agrees_with_torch(impl, case, seed, ties, ceil_mode, count_include_pad):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = (tied_array if ties else random_array)(case.x_shape, np.float64, seed)
    tx = torch.tensor(x)
    ty, tidx = F.max_pool2d(tx, *_args(case), ceil_mode=ceil_mode, return_indices=True)
    y, idx = getattr(K.max_pool2d_forward, impl)(x, *_args(case), ceil_mode)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    tx.requires_grad_(True)
    ta = F.avg_pool2d(tx, *_args(case), ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    g = random_array(tuple(ta.shape), np.float64, seed + 1)
    ta.backward(torch.from_numpy(g))
    options = (ceil_mode, count_include_pad)
    np.testing.assert_allclose(getattr(K.avg_pool2d_forward, impl)(x, *_args(case), *options),
                               ta.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(getattr(K.avg_pool2d_backward, impl)(g, x.shape, *_args(case), *options),
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


# ---- memory safety: any geometry, in a subprocess -----------------------------------------

_FUZZ_CHILD = r"""
import os
import numpy as np
from hypothesis import given, settings, strategies as st
from minnet.kernels import pool as K
from minnet.kernels.backend import HAVE_NUMBA

small_or_huge = lambda small, huge: st.one_of(st.integers(*small), st.integers(*huge))
pairs = lambda s: st.tuples(s, s)

@settings(max_examples=40 if os.environ.get("CI", "").lower() == "true" else 150,
          deadline=None, database=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(1, 2), st.integers(0, 6), st.integers(0, 6)),
       kernel=pairs(st.integers(1, 5)), stride=pairs(small_or_huge((1, 4), (5, 2**40))),
       padding=pairs(small_or_huge((0, 3), (4, 40))), ceil_mode=st.booleans(),
       count_include_pad=st.booleans(), seed=st.integers(0, 2**16))
def fuzz(shape, kernel, stride, padding, ceil_mode, count_include_pad, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(np.float64)
    x[rng.random(shape) < 0.2] = np.nan
    impls = ("numpy", "numba") if HAVE_NUMBA else ("numpy",)
    results = []
    for impl in impls:
        y, idx = getattr(K.max_pool2d_forward, impl)(x, kernel, stride, padding, ceil_mode)
        assert np.all((idx >= -1) & (idx < shape[2] * shape[3])), idx
        g = rng.standard_normal(y.shape) if not results else results[0][-1]
        dx = getattr(K.max_pool2d_backward, impl)(g, idx, shape)
        a = getattr(K.avg_pool2d_forward, impl)(x, kernel, stride, padding, ceil_mode,
                                                count_include_pad)
        da = getattr(K.avg_pool2d_backward, impl)(g, shape, kernel, stride, padding, ceil_mode,
                                                  count_include_pad)
        results.append((y, idx, dx, a, da, g))
    for got in results[1:]:
        for ref, new in zip(results[0][:-1], got[:-1]):
            np.testing.assert_allclose(new, ref, rtol=1e-12, atol=1e-12)

fuzz()
print("fuzz ok")
"""


def test_random_geometry_never_crashes_and_numba_equals_numpy():
    """Kernel sizes, huge strides and paddings far beyond the kernel (which only the op layer
    refuses) never read out of bounds: run in a child process, so a segmentation fault fails
    this test instead of killing pytest, and Numba matches the NumPy reference throughout."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run([sys.executable, "-c", _FUZZ_CHILD], capture_output=True, text=True,
                           env=env, timeout=600)
    assert child.returncode == 0, (f"child exited with {child.returncode} (negative: killed by "
                                   f"signal)\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
    assert "fuzz ok" in child.stdout
