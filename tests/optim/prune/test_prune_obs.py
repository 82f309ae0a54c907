"""Optimal Brain Surgeon against brute force: exact quadratic increases, the constrained
minimum solved directly, the recursive inverse against np.linalg.inv, OBS against OBD."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.prune import (linear_output_jacobians, obd_scores, obs_inverse_hessian,
                         obs_prune, obs_prune_linear, obs_saliency, obs_update)


def _quadratic(seed, d=6):
    """A positive definite Hessian H, a minimum w* and E(w) = ½ (w − w*)ᵀ H (w − w*)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    h = a @ a.T + 0.1 * np.eye(d)
    w = rng.normal(size=d)
    return h, w, lambda v: 0.5 * (v - w) @ h @ (v - w)


def _constrained_minimum(h, w, pruned):
    """min ½ δᵀHδ subject to (w + δ)_q = 0 for q in pruned, by solving the KKT system."""
    d, p = len(w), len(pruned)
    e = np.eye(d)[list(pruned)]
    kkt = np.block([[h, e.T], [e, np.zeros((p, p))]])
    rhs = np.concatenate([np.zeros(d), -w[list(pruned)]])
    delta = np.linalg.solve(kkt, rhs)[:d]
    return w + delta


@given(seed=st.integers(0, 10_000))
def test_saliency_is_the_exact_quadratic_increase(seed):
    h, w, loss = _quadratic(seed)
    h_inv = np.linalg.inv(h)
    saliency = obs_saliency(w, h_inv)
    for q in range(len(w)):
        new = obs_update(w, h_inv, q)
        assert new[q] == 0.0
        np.testing.assert_allclose(loss(new), saliency[q], rtol=1e-9)
        # and it is the best any update can do with w_q deleted
        np.testing.assert_allclose(new, _constrained_minimum(h, w, [q]), rtol=1e-8, atol=1e-10)


@given(seed=st.integers(0, 10_000))
def test_obs_never_loses_more_than_obd(seed):
    h, w, loss = _quadratic(seed)
    saliency = obs_saliency(w, np.linalg.inv(h))
    obd = obd_scores(w, np.diag(h))
    for q in range(len(w)):
        zeroed = w.copy()
        zeroed[q] = 0.0  # OBD: delete without touching the others
        np.testing.assert_allclose(loss(zeroed), obd[q], rtol=1e-9)
        assert saliency[q] <= obd[q] * (1 + 1e-12)


@given(seed=st.integers(0, 10_000), k=st.integers(1, 5))
def test_sequential_obs_reaches_the_constrained_minimum(seed, k):
    h, w, loss = _quadratic(seed)
    new, mask, predicted = obs_prune(w, np.linalg.inv(h), k)
    pruned = np.flatnonzero(~mask)
    assert len(pruned) == k and np.all(new[pruned] == 0)
    np.testing.assert_allclose(loss(new), predicted, rtol=1e-8)
    np.testing.assert_allclose(new, _constrained_minimum(h, w, pruned), rtol=1e-7, atol=1e-9)
    # the first deletion is the weight of least single saliency
    assert np.argmin(obs_saliency(w, np.linalg.inv(h))) in pruned


@given(seed=st.integers(0, 10_000), p=st.integers(1, 12), k=st.integers(1, 3),
       alpha=st.sampled_from([1e-4, 1e-2, 1.0]))
def test_recursive_inverse_equals_the_direct_inverse(seed, p, k, alpha):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(p, k, 5))
    h = sum(np.outer(v, v) for v in x.reshape(-1, 5)) / p
    expected = np.linalg.inv(alpha * np.eye(5) + h)
    np.testing.assert_allclose(obs_inverse_hessian(x, alpha), expected, rtol=1e-6,
                               atol=1e-8 * np.abs(expected).max())


def test_linear_jacobians_give_the_mse_hessian():
    rng = np.random.default_rng(0)
    x, n_out = rng.normal(size=(7, 3)), 2
    jac = linear_output_jacobians(x, n_out)
    # brute force: Hessian of E(W) = 1/(2P) Σ ||t − W x||² by central differences of its gradient
    t = rng.normal(size=(7, n_out))
    grad = lambda v: -((t - x @ v.reshape(n_out, 3).T).T @ x / len(x)).ravel()  # noqa: E731
    eps, d = 1e-4, n_out * 3
    brute = np.stack([(grad(np.eye(d)[j] * eps) - grad(-np.eye(d)[j] * eps)) / (2 * eps)
                      for j in range(d)], axis=1)
    h = np.einsum("pki,pkj->ij", jac, jac) / len(x)
    np.testing.assert_allclose(h, brute, atol=1e-9)
    np.testing.assert_allclose(h, np.kron(np.eye(n_out), x.T @ x / len(x)), atol=1e-12)


def test_obs_on_a_linear_layer_predicts_its_mse_increase():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12))
    t = x @ rng.normal(size=(12, 10)) + 0.1 * rng.normal(size=(200, 10))
    w = np.linalg.lstsq(x, t, rcond=None)[0].T  # (10, 12): 120 weights at the MSE minimum
    mse = lambda v: 0.5 * np.mean(np.sum((t - x @ v.T) ** 2, axis=1))  # noqa: E731
    new, mask, predicted = obs_prune_linear(w, x, 0.5, alpha=1e-8)
    assert mask.sum() == 60 and np.all(new[~mask] == 0)
    np.testing.assert_allclose(mse(new) - mse(w), predicted, rtol=1e-5)
    # at the same sparsity, magnitude pruning without compensation loses more
    magnitude = np.where(np.abs(w) >= np.sort(np.abs(w).ravel())[60], w, 0.0)
    assert mse(new) < mse(magnitude)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="h_inv must have shape"):
        obs_saliency(np.ones(3), np.eye(4))
    with pytest.raises(ValueError, match="alpha"):
        obs_inverse_hessian(np.ones((2, 3)), alpha=0.0)
    with pytest.raises(ValueError, match="q must be"):
        obs_update(np.ones(3), np.eye(3), 3)
    with pytest.raises(ValueError, match="inputs must have shape"):
        obs_prune_linear(np.ones((2, 3)), np.ones((5, 4)), 1)
