"""Gaussian process and expected improvement against their textbook definitions."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.special import gamma, kv
from scipy.stats import multivariate_normal

from optim.nas import GPParams, expected_improvement, fit_gp, gp_posterior, log_marginal_likelihood, matern52


@st.composite
def gp_data(draw, max_points=8, max_dim=3):
    """Distinct points on a grid of step 0.25 in [0, 1]^d, targets in [-2, 2], lengthscales."""
    d = draw(st.integers(1, max_dim))
    cells = draw(st.lists(st.tuples(*[st.integers(0, 4)] * d), min_size=1, max_size=max_points, unique=True))
    x = np.array(cells, dtype=np.float64) / 4
    y = np.array(draw(st.lists(st.floats(-2, 2), min_size=len(x), max_size=len(x))))
    lengthscale = np.array(draw(st.lists(st.floats(0.1, 1.0), min_size=d, max_size=d)))
    variance = draw(st.floats(0.3, 3.0))
    return x, y, lengthscale, variance


def matern_by_bessel(r, nu=2.5):
    """General Matérn form (Rasmussen & Williams eq. 4.14) with the modified Bessel function."""
    if r == 0:
        return 1.0
    z = np.sqrt(2 * nu) * r
    return 2 ** (1 - nu) / gamma(nu) * z ** nu * kv(nu, z)


@given(gp_data())
def test_matern52_closed_form(data):
    x, _, lengthscale, variance = data
    k = matern52(x, x, lengthscale, variance)
    for i in range(len(x)):
        for j in range(len(x)):
            r = np.sqrt(np.sum(((x[i] - x[j]) / lengthscale) ** 2))
            assert k[i, j] == pytest.approx(variance * matern_by_bessel(r), rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(k, k.T)
    assert np.linalg.eigvalsh(k).min() > -1e-9


@given(gp_data(), st.floats(1e-4, 1e-1))
def test_log_marginal_likelihood_value_and_gradient(data, noise):
    x, y, lengthscale, variance = data
    theta = GPParams(variance, lengthscale, noise).theta
    value, grad = log_marginal_likelihood(x, y, theta)
    cov = matern52(x, x, lengthscale, variance) + (noise + 1e-10) * np.eye(len(x))
    assert value == pytest.approx(multivariate_normal(np.zeros(len(x)), cov).logpdf(y), rel=1e-8, abs=1e-8)
    eps = 1e-6
    numeric = [(log_marginal_likelihood(x, y, theta + eps * e)[0]
                - log_marginal_likelihood(x, y, theta - eps * e)[0]) / (2 * eps) for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5)


@given(gp_data())
def test_posterior_interpolates_noiseless_observations(data):
    x, y, lengthscale, variance = data
    params = GPParams(variance, lengthscale, 0.0)
    mean, var = gp_posterior(x, y, x, params)
    np.testing.assert_allclose(mean, y, atol=1e-5)
    np.testing.assert_allclose(var, 0.0, atol=1e-6)


@given(gp_data(), st.floats(1e-3, 1.0))
def test_posterior_matches_direct_formula(data, noise):
    x, y, lengthscale, variance = data
    params = GPParams(variance, lengthscale, noise)
    x_test = np.random.default_rng(0).random((5, x.shape[1]))
    mean, var = gp_posterior(x, y, x_test, params)
    ky = matern52(x, x, lengthscale, variance) + (noise + 1e-10) * np.eye(len(x))
    cross = matern52(x, x_test, lengthscale, variance)
    np.testing.assert_allclose(mean, cross.T @ np.linalg.solve(ky, y), atol=1e-8)
    np.testing.assert_allclose(var, variance - np.sum(cross * np.linalg.solve(ky, cross), axis=0), atol=1e-8)


def test_fit_gp_does_not_lower_the_evidence():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2))
    y = np.sin(6 * x[:, 0]) + 0.1 * x[:, 1]
    y = (y - y.mean()) / y.std()
    default = GPParams(1.0, np.full(2, 0.5), 1e-4)
    fitted = fit_gp(x, y, rng)
    assert log_marginal_likelihood(x, y, fitted.theta)[0] >= log_marginal_likelihood(x, y, default.theta)[0]
    # x1 barely matters: its lengthscale is the longer one
    assert fitted.lengthscale[1] > fitted.lengthscale[0]


@given(st.floats(-3, 3), st.floats(0.01, 3), st.floats(-3, 3), st.floats(0, 0.5))
def test_expected_improvement_is_an_expectation(mean, std, best, xi):
    # E[max(best - xi - Y, 0)] for Y ~ N(mean, std^2), integrated numerically
    def integrand(y):
        return (best - xi - y) * np.exp(-0.5 * ((y - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))

    low, high = mean - 12 * std, best - xi
    expected = quad(integrand, low, high)[0] if high > low else 0.0
    assert expected_improvement(mean, std, best, xi) == pytest.approx(expected, rel=1e-6, abs=1e-10)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20),
       st.lists(st.floats(0, 1e3), min_size=1, max_size=20), st.floats(-1e3, 1e3))
def test_expected_improvement_is_non_negative(means, stds, best):
    n = min(len(means), len(stds))
    assert np.all(expected_improvement(means[:n], stds[:n], best) >= 0)


@given(gp_data())
def test_expected_improvement_vanishes_at_noiseless_observations(data):
    x, y, lengthscale, variance = data
    mean, var = gp_posterior(x, y, x, GPParams(variance, lengthscale, 0.0))
    assert np.all(expected_improvement(y, np.zeros(len(y)), y.min()) == 0.0)
    assert np.all(expected_improvement(mean, np.sqrt(var), y.min()) < 1e-4)


def test_bad_gp_inputs_are_rejected():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="y must have shape"):
        log_marginal_likelihood(x, np.zeros(2), np.zeros(4))
    with pytest.raises(ValueError, match="x1 and x2"):
        matern52(x, np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="positive"):
        matern52(x, x, -1.0)
    with pytest.raises(ValueError, match="x_test"):
        gp_posterior(x + np.arange(3)[:, None], np.zeros(3), np.zeros((1, 3)), GPParams(1.0, np.ones(2), 0.1))
    with pytest.raises(ValueError, match="std"):
        expected_improvement([0.0], [-1.0], 0.0)
