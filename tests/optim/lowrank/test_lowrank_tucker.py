"""Tucker-2 of conv kernels: exact at full ranks, the error of an orthogonal projection that
shrinks with either rank and obeys the HOSVD bound, HOOI never worse, and the three
convolutions equal to one convolution with the reconstructed kernel."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import nn
from optim.lowrank import tucker2, tucker2_conv2d, tucker2_kernel, tucker2_ranks

from lowrank_cases import conv_cases, conv_with_kernel, run


def _kernel(seed, shape=(6, 5, 3, 3)):
    return np.random.default_rng(seed).normal(size=shape)


@given(seed=st.integers(0, 10_000), t=st.integers(1, 5), s=st.integers(1, 5))
def test_full_rank_tucker_is_exact(seed, t, s):
    w = _kernel(seed, (t, s, 3, 2))
    np.testing.assert_allclose(tucker2_kernel(tucker2(w, (s, t))), w, atol=1e-12)


def _singular_values(w, mode):
    return np.linalg.svd(np.moveaxis(w, mode, 0).reshape(w.shape[mode], -1), compute_uv=False)


@given(seed=st.integers(0, 10_000))
def test_tucker_error_is_a_projection_and_shrinks_with_rank(seed):
    w = _kernel(seed)
    errors = np.empty((5, 6))
    for r3 in range(1, 6):
        for r4 in range(1, 7):
            factors = tucker2(w, (r3, r4))
            err2 = np.sum((w - tucker2_kernel(factors)) ** 2)
            np.testing.assert_allclose(err2, np.sum(w ** 2) - np.sum(factors.core ** 2),
                                       rtol=1e-9, atol=1e-9)
            # De Lathauwer et al. 2000, property 10: at most the energy discarded in each mode
            bound = np.sum(_singular_values(w, 1)[r3:] ** 2) + np.sum(_singular_values(w, 0)[r4:] ** 2)
            assert err2 <= bound + 1e-9
            errors[r3 - 1, r4 - 1] = err2
    assert np.all(np.diff(errors, axis=0) <= 1e-9) and np.all(np.diff(errors, axis=1) <= 1e-9)
    assert errors[-1, -1] < 1e-18 and errors[0, 0] > 0


@given(seed=st.integers(0, 10_000), r3=st.integers(1, 4), r4=st.integers(1, 5))
def test_hooi_never_increases_the_error(seed, r3, r4):
    w = _kernel(seed)
    errors = [np.linalg.norm(w - tucker2_kernel(tucker2(w, (r3, r4), n_iter=k))) for k in range(4)]
    assert np.all(np.diff(errors) <= 1e-9)


@given(case=conv_cases(), data=st.data())
def test_tucker_modules_compute_the_reconstructed_convolution(case, data):
    conv, x = case
    t, s = conv.weight.shape[:2]
    ranks = (data.draw(st.integers(1, s)), data.draw(st.integers(1, t)))
    seq = tucker2_conv2d(conv, ranks)
    assert [m.weight.shape for m in seq] == [(ranks[0], s, 1, 1), (ranks[1], ranks[0]) +
                                             conv.weight.shape[2:], (t, ranks[1], 1, 1)]
    kernel = tucker2_kernel(tucker2(conv.weight.data, ranks))
    np.testing.assert_allclose(run(seq, x), conv_with_kernel(conv, kernel, x), atol=1e-10)
    full = tucker2_conv2d(conv, (s, t))
    np.testing.assert_allclose(run(full, x), run(conv, x), atol=1e-10)


def test_energy_ranks_are_per_mode():
    w = _kernel(3)
    for energy in (0.3, 0.8, 0.99, 1.0):
        r3, r4 = tucker2_ranks(w, energy)
        for mode, r in ((1, r3), (0, r4)):
            e = np.cumsum(_singular_values(w, mode) ** 2) / np.sum(w ** 2)
            assert e[r - 1] >= energy - 1e-12 and (r == 1 or e[r - 2] < energy)
    conv = nn.Conv2d(5, 6, 3, dtype=np.float64)
    seq = tucker2_conv2d(conv, energy=0.9)
    assert (seq[0].weight.shape[0], seq[1].weight.shape[0]) == tucker2_ranks(conv.weight.data, 0.9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rank must be in"):
        tucker2(_kernel(0), (6, 2))
    with pytest.raises(ValueError, match="exactly one of ranks and energy"):
        tucker2_conv2d(nn.Conv2d(2, 2, 3), (1, 1), energy=0.5)
    with pytest.raises(ValueError, match="groups=1"):
        tucker2_conv2d(nn.Conv2d(2, 2, 3, groups=2), (1, 1))
