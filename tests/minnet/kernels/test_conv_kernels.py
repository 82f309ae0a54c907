"""conv2d kernels: the direct definition, the adjoint identities of both gradients, the Numba
backend equal to the NumPy one, and PyTorch's conv2d."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.cases import BACKENDS, conv_cases, needs_numba, random_array
from minnet.kernels import conv as K
from minnet.kernels.backend import use_backend

DTYPES = [np.float32, np.float64]
seeds = st.integers(0, 2**16)


def brute_force_conv2d(x, w, stride, padding, dilation, groups):
    """y[n, o, u, v] = sum_{c, i, j} w[o, c, i, j] x[n, g C/G + c, u s + i d - p, v s + j d - p]."""
    n, c_in, h, wd = x.shape
    c_out, c_group, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, c_out, oh, ow))
    for b in range(n):
        for o in range(c_out):
            first = (o // (c_out // groups)) * c_group
            for u in range(oh):
                for v in range(ow):
                    for c in range(c_group):
                        for i in range(kh):
                            for j in range(kw):
                                r, s = u * sh + i * dh - ph, v * sw + j * dw - pw
                                if 0 <= r < h and 0 <= s < wd:
                                    y[b, o, u, v] += w[o, c, i, j] * x[b, first + c, r, s]
    return y


def _inputs(case, dtype, seed):
    return random_array(case.x_shape, dtype, seed), random_array(case.w_shape, dtype, seed + 1)


@given(case=conv_cases(), seed=seeds)
def test_numpy_conv2d_matches_direct_definition(case, seed):
    x, w = _inputs(case, np.float64, seed)
    with use_backend("numpy"):
        y, _ = K.conv2d_forward(x, w, *case.geometry)
    np.testing.assert_allclose(y, brute_force_conv2d(x, w, *case.geometry), rtol=1e-10, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=conv_cases(), seed=seeds)
def test_numba_backend_equals_numpy_backend(dtype, case, seed):
    x, w = _inputs(case, dtype, seed)
    results = {}
    for name in ("numpy", "numba"):
        with use_backend(name):
            y, cols = K.conv2d_forward(x, w, *case.geometry)
            g = random_array(y.shape, dtype, seed + 2)
            results[name] = (y, K.conv2d_input_grad(g, w, x.shape, *case.geometry),
                             K.conv2d_weight_grad(g, cols, w.shape, case.groups))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for ref, got in zip(results["numpy"], results["numba"]):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=conv_cases(), seed=seeds)
def test_gradients_are_adjoints(backend, case, seed):
    """<conv(x, w), g> = <x, input_grad(g, w)> = <w, weight_grad(g, x)>: conv is bilinear."""
    x, w = _inputs(case, np.float64, seed)
    with use_backend(backend):
        y, cols = K.conv2d_forward(x, w, *case.geometry)
        g = random_array(y.shape, np.float64, seed + 2)
        gx = K.conv2d_input_grad(g, w, x.shape, *case.geometry)
        gw = K.conv2d_weight_grad(g, cols, w.shape, case.groups)
    assert gx.shape == x.shape and gw.shape == w.shape
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, gx), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(w, gw), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=conv_cases(), seed=seeds)
def test_agrees_with_torch(backend, case, seed):
    torch = pytest.importorskip("torch")
    x, w = _inputs(case, np.float64, seed)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    stride, padding, dilation, groups = case.geometry
    ty = torch.nn.functional.conv2d(tx, tw, None, stride, padding, dilation, groups)
    g = random_array(tuple(ty.shape), np.float64, seed + 2)
    ty.backward(torch.from_numpy(g))
    with use_backend(backend):
        y, cols = K.conv2d_forward(x, w, *case.geometry)
        gx = K.conv2d_input_grad(g, w, x.shape, *case.geometry)
        gw = K.conv2d_weight_grad(g, cols, w.shape, groups)
    for ours, theirs in ((y, ty.detach()), (gx, tx.grad), (gw, tw.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_dtype_is_input_dtype(backend, dtype):
    x, w = random_array((2, 4, 7, 6), dtype, 0), random_array((6, 2, 3, 3), dtype, 1)
    geometry = ((2, 1), (1, 1), (1, 2), 2)
    with use_backend(backend):
        y, cols = K.conv2d_forward(x, w, *geometry)
        gx = K.conv2d_input_grad(y, w, x.shape, *geometry)
        gw = K.conv2d_weight_grad(y, cols, w.shape, 2)
    assert y.dtype == gx.dtype == gw.dtype == dtype
