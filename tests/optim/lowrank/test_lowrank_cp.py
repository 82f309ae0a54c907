"""CP-ALS of conv kernels: an exactly low-rank kernel recovered, the error never rising from
sweep to sweep and shrinking with the rank, and the four convolutions equal to one
convolution with the reconstructed kernel."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import nn
from optim.lowrank import cp_als, cp_conv2d, cp_kernel

from lowrank_cases import conv_cases, conv_with_kernel, run


@given(seed=st.integers(0, 10_000), rank=st.integers(1, 3))
def test_cp_als_recovers_an_exact_low_rank_kernel(seed, rank):
    rng = np.random.default_rng(seed)
    factors = [rng.normal(size=(n, rank)) for n in (6, 5, 3, 3)]
    w = np.einsum("tr,sr,yr,xr->tsyx", *factors)
    result = cp_als(w, rank, n_iter=500)
    assert np.linalg.norm(w - cp_kernel(result)) <= 1e-5 * np.linalg.norm(w)


@given(seed=st.integers(0, 10_000))
def test_cp_error_never_increases_and_shrinks_with_rank(seed):
    w = np.random.default_rng(seed).normal(size=(6, 5, 3, 3))
    final = []
    for rank in (1, 4, 16):
        result = cp_als(w, rank, n_iter=30)
        assert np.all(np.diff(result.errors) <= 1e-9)
        np.testing.assert_allclose(result.errors[-1],
                                   np.linalg.norm(w - cp_kernel(result)) / np.linalg.norm(w),
                                   rtol=1e-9, atol=1e-12)
        final.append(result.errors[-1])
    assert np.all(np.diff(final) < 0)


@given(case=conv_cases(), rank=st.integers(1, 5))
def test_cp_modules_compute_the_reconstructed_convolution(case, rank):
    conv, x = case
    seq = cp_conv2d(conv, rank, n_iter=20)
    kernel = cp_kernel(cp_als(conv.weight.data, rank, n_iter=20))
    np.testing.assert_allclose(run(seq, x), conv_with_kernel(conv, kernel, x), atol=1e-9)
    assert seq[1].groups == seq[2].groups == rank


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        cp_als(np.ones((2, 2, 3, 3)), 0)
    with pytest.raises(ValueError, match="4-D kernel"):
        cp_als(np.ones((2, 3, 3)), 1)
    with pytest.raises(TypeError, match="minnet.nn.Conv2d"):
        cp_conv2d(nn.Linear(2, 2), 1)
