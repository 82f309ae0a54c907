"""Truncated SVD (Eckart–Young), rank rules and the data-aware whitened SVD."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.lowrank import (budget_rank, energy_rank, kept_energy, singular_values, truncated_svd,
                           truncation_error, whitened_svd)


@st.composite
def matrices_and_ranks(draw, max_side=8):
    m, n = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    w = draw(hnp.arrays(np.float64, (m, n), elements=st.floats(-5, 5, allow_nan=False)))
    return w, draw(st.integers(1, min(m, n)))


@given(case=matrices_and_ranks())
def test_truncation_error_is_the_discarded_energy(case):
    w, r = case
    a, b = truncated_svd(w, r)
    s = singular_values(w)
    assert a.shape == (w.shape[0], r) and b.shape == (r, w.shape[1])
    np.testing.assert_allclose(np.linalg.norm(w - a @ b), np.sqrt(np.sum(s[r:] ** 2)),
                               rtol=1e-7, atol=1e-9)
    expected = np.sqrt(np.sum(s[r:] ** 2))
    assert truncation_error(s, r) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    # the factors share the singular values evenly: ||A||_F^2 = ||B||_F^2 = sum of kept sigma
    np.testing.assert_allclose(np.sum(a * a), np.sum(s[:r]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.sum(b * b), np.sum(s[:r]), rtol=1e-9, atol=1e-12)


@given(case=matrices_and_ranks(), seed=st.integers(0, 2**16))
def test_truncated_svd_beats_any_other_rank_r_factorization(case, seed):
    w, r = case
    a, b = truncated_svd(w, r)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        other = rng.standard_normal((w.shape[0], r)) @ rng.standard_normal((r, w.shape[1]))
        # also the best rescaling of the random product, a fair competitor
        scale = np.sum(other * w) / max(np.sum(other * other), 1e-300)
        assert np.linalg.norm(w - a @ b) <= np.linalg.norm(w - scale * other) + 1e-9


def test_factors_keep_the_dtype_and_full_rank_is_exact():
    w = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    a, b = truncated_svd(w, 4)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a @ b, w, rtol=1e-5, atol=1e-5)


@given(s=hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(0, 10)),
       energy=st.floats(0.01, 1.0))
def test_energy_rank_is_the_smallest_sufficient_rank(s, energy):
    s = np.sort(s)[::-1]
    r = energy_rank(s, energy)
    assert 1 <= r <= len(s)
    assert kept_energy(s, r) >= energy * (1 - 1e-9)
    if r > 1:
        assert kept_energy(s, r - 1) < energy


@given(per=st.integers(1, 50), fixed=st.integers(0, 20), extra=st.integers(0, 500),
       max_rank=st.integers(1, 40))
def test_budget_rank_is_the_largest_fitting_rank(per, fixed, extra, max_rank):
    budget = fixed + per + extra  # rank 1 always fits
    r = budget_rank(per, fixed, budget, max_rank)
    assert 1 <= r <= max_rank and fixed + r * per <= budget
    assert r == max_rank or fixed + (r + 1) * per > budget


@st.composite
def layers_and_inputs(draw):
    m, n = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    samples = draw(st.integers(1, 10))
    elements = st.floats(-3, 3, allow_nan=False)
    w = draw(hnp.arrays(np.float64, (m, n), elements=elements))
    x = draw(hnp.arrays(np.float64, (samples, n), elements=elements))
    return w, x


@given(case=layers_and_inputs(), data=st.data())
def test_whitened_svd_error_on_the_data_is_the_discarded_energy(case, data):
    w, x = case
    assume(np.abs(x).max() > 0.1)
    s = whitened_svd(w, x, 1)[2]
    r = data.draw(st.integers(1, len(s)))
    a, b, _ = whitened_svd(w, x, r)
    data_error = np.linalg.norm((w - a @ b) @ x.T)
    # directions of the inputs below rcond = 1e-10 of the top Gram eigenvalue are dropped
    dropped = np.linalg.norm(w, 2) * np.linalg.norm(x, 2) * np.sqrt(1e-10 * x.shape[1])
    np.testing.assert_allclose(data_error, np.sqrt(np.sum(s[r:] ** 2)), rtol=1e-6,
                               atol=1e-7 + dropped)
    # optimal on the data: never worse there than the plain truncated SVD of the same rank
    a0, b0 = truncated_svd(w, r)  # r <= len(s) <= min(m, n)
    assert data_error <= np.linalg.norm((w - a0 @ b0) @ x.T) + 1e-7 + dropped
    # the singular energy of the responses is the energy of W X^T
    np.testing.assert_allclose(np.sum(s ** 2), np.linalg.norm(w @ x.T) ** 2, rtol=1e-7, atol=1e-7)


@given(case=matrices_and_ranks(max_side=6))
def test_whitened_svd_with_orthonormal_inputs_is_the_plain_svd(case):
    w, r = case
    a, b, _ = whitened_svd(w, np.eye(w.shape[1]), r)
    a0, b0 = truncated_svd(w, r)
    np.testing.assert_allclose(np.linalg.norm(w - a @ b), np.linalg.norm(w - a0 @ b0),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("rank, error", [(0, ValueError), (4, ValueError), (-1, ValueError),
                                         (1.0, TypeError), (True, TypeError)])
def test_bad_rank_is_rejected(rank, error):
    with pytest.raises(error, match="rank"):
        truncated_svd(np.ones((3, 5)), rank)


def test_bad_rules_and_matrices_are_rejected():
    with pytest.raises(ValueError, match="energy"):
        energy_rank(np.array([2.0, 1.0]), 0.0)
    with pytest.raises(ValueError, match="energy"):
        energy_rank(np.array([2.0, 1.0]), 1.5)
    with pytest.raises(ValueError, match="singular_values"):
        energy_rank(np.array([1.0, 2.0]), 0.5)
    with pytest.raises(ValueError, match="cannot hold even rank 1"):
        budget_rank(10, 5, 12, 3)
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(np.ones(3), 1)
    with pytest.raises(ValueError, match="inputs of shape"):
        whitened_svd(np.ones((2, 3)), np.ones((4, 2)), 1)
