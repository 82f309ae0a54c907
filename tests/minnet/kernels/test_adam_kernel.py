"""The fused Adam/AdamW kernel: the Numba path equals the NumPy reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet.kernels.adam import adam_step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**16), size=st.integers(1, 300), steps=st.integers(1, 4),
       weight_decay=st.sampled_from([0.0, 0.1]), decoupled=st.booleans(), amsgrad=st.booleans())
def test_numba_adam_equals_numpy(dtype, seed, size, steps, weight_decay, decoupled, amsgrad):
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(size).astype(dtype)
    runs = []
    for impl in (adam_step.numpy, adam_step.numba):
        param, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
        vmax = np.zeros_like(start) if amsgrad else None
        grads = np.random.default_rng(seed + 1)
        for step in range(1, steps + 1):
            grad = grads.standard_normal(size).astype(dtype)
            impl(param, grad, m, v, vmax, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=weight_decay, decoupled_weight_decay=decoupled)
        runs.append((param, m, v))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_numba_adam_updates_non_contiguous_views_in_place():
    param = np.ones((4, 6), np.float32)[:, ::2]
    grad, m, v = np.ones_like(param), np.zeros_like(param), np.zeros_like(param)
    adam_step.numba(param, grad, m, v, None, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled_weight_decay=False)
    np.testing.assert_allclose(param, 0.9, rtol=1e-6)
