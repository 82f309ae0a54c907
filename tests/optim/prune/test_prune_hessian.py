"""Hessian diagonals (Fisher, Hutchinson) against the exact diagonal of a quadratic and of
logistic regression, finite-difference Hessian-vector products, and Optimal Brain Damage."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from optim.prune import finite_difference_hvp, fisher_diagonal, hutchinson_diagonal, obd_scores


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _logistic(seed, n=30, d=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    p = 1 / (1 + np.exp(-(x @ w)))
    hessian = (x * (p * (1 - p))[:, None]).T @ x / n  # of the mean log-loss, any labels
    y = (rng.random(n) < 0.5).astype(np.float64)

    def mean_grad(v):
        return ((1 / (1 + np.exp(-(x @ v))) - y) @ x) / n

    return rng, x, w, p, hessian, mean_grad


@given(seed=st.integers(0, 10_000), d=st.integers(1, 8))
def test_finite_difference_hvp_is_exact_for_a_quadratic(seed, d):
    rng = np.random.default_rng(seed)
    a, b = _spd(rng, d), rng.normal(size=d)
    w, v = rng.normal(size=d), rng.normal(size=d)
    hv = finite_difference_hvp(lambda u: a @ u + b, w, v, eps=1e-3)
    np.testing.assert_allclose(hv, a @ v, rtol=1e-8, atol=1e-8)


@given(seed=st.integers(0, 10_000))
def test_finite_difference_hvp_approximates_the_logistic_hessian(seed):
    rng, x, w, p, hessian, mean_grad = _logistic(seed)
    v = rng.normal(size=w.size)
    np.testing.assert_allclose(finite_difference_hvp(mean_grad, w, v, eps=1e-4), hessian @ v,
                               rtol=1e-5, atol=1e-8)


@given(seed=st.integers(0, 10_000), d=st.integers(1, 6), n_samples=st.integers(1, 5))
def test_hutchinson_is_exact_for_a_diagonal_hessian(seed, d, n_samples):
    h = np.random.default_rng(seed).uniform(0.1, 3.0, size=d)
    np.testing.assert_allclose(hutchinson_diagonal(lambda v: h * v, (d,), n_samples, rng=seed), h,
                               rtol=1e-12)


@given(seed=st.integers(0, 10_000), n_samples=st.sampled_from([10, 100, 1000]))
def test_hutchinson_error_shrinks_with_samples(seed, n_samples):
    rng = np.random.default_rng(seed)
    a = _spd(rng, 6)
    estimate = hutchinson_diagonal(lambda v: a @ v, (6,), n_samples, rng=rng)
    # each entry is a mean of n_samples terms with variance sum_{j != i} a_ij^2
    sigma = np.sqrt((np.sum(a ** 2, axis=1) - np.diag(a) ** 2) / n_samples)
    assert np.all(np.abs(estimate - np.diag(a)) <= 6 * sigma + 1e-12)


@given(seed=st.integers(0, 10_000))
def test_hutchinson_with_finite_differences_on_logistic_regression(seed):
    rng, x, w, p, hessian, mean_grad = _logistic(seed)
    estimate = hutchinson_diagonal(lambda v: finite_difference_hvp(mean_grad, w, v), w.shape, 400,
                                   rng=rng)
    sigma = np.sqrt((np.sum(hessian ** 2, axis=1) - np.diag(hessian) ** 2) / 400)
    assert np.all(np.abs(estimate - np.diag(hessian)) <= 6 * sigma + 1e-6)


@given(seed=st.integers(0, 10_000))
def test_fisher_with_model_label_weights_is_the_logistic_hessian(seed):
    rng, x, w, p, hessian, _ = _logistic(seed)
    # every sample twice: label 1 weighted by p, label 0 weighted by 1 - p
    grads = np.concatenate([(p - 1)[:, None] * x, p[:, None] * x])
    weights = np.concatenate([p, 1 - p])
    np.testing.assert_allclose(fisher_diagonal(grads, weights), np.diag(hessian), rtol=1e-10)


@given(seed=st.integers(0, 1000))
def test_empirical_fisher_approaches_hessian_with_samples_from_the_model(seed):
    rng, x, w, p, hessian, _ = _logistic(seed, n=10)
    draws = 4000
    y = rng.random((draws, len(p))) < p  # labels sampled from the model
    g2 = ((p - y)[:, :, None] * x[None]) ** 2  # (draws, n, d) squared per-sample gradients
    estimate = fisher_diagonal(((p - y)[:, :, None] * x[None]).reshape(-1, x.shape[1]))
    sigma = g2.reshape(-1, x.shape[1]).std(axis=0) / np.sqrt(g2.shape[0] * g2.shape[1])
    assert np.all(np.abs(estimate - np.diag(hessian)) <= 6 * sigma + 1e-12)


@given(seed=st.integers(0, 10_000), d=st.integers(1, 6))
def test_obd_is_exact_for_a_diagonal_quadratic(seed, d):
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.1, 3.0, size=d)
    w_star = rng.normal(size=d)  # the minimum of L(w) = 1/2 (w - w*)^T diag(h) (w - w*)

    def loss(w):
        return 0.5 * np.sum(h * (w - w_star) ** 2)

    scores = obd_scores(w_star, h)
    delete = rng.random(d) < 0.5
    # deleting any set of weights costs exactly the sum of their saliencies
    assert np.isclose(loss(np.where(delete, 0.0, w_star)), scores[delete].sum(), rtol=1e-12)


@given(seed=st.integers(0, 10_000), d=st.integers(1, 6))
def test_obd_is_exact_for_single_deletions_of_any_quadratic(seed, d):
    rng = np.random.default_rng(seed)
    a, w_star = _spd(rng, d), rng.normal(size=d)
    scores = obd_scores(w_star, np.diag(a))
    for i in range(d):
        w = w_star.copy()
        w[i] = 0.0
        assert np.isclose(0.5 * (w - w_star) @ a @ (w - w_star), scores[i], rtol=1e-10)
