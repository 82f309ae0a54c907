"""The GP's kernel and data checks at their edges, worked by hand, and its documented bounds."""
import numpy as np
import pytest

from optim.nas.gp import LOG_BOUNDS, GPParams, log_marginal_likelihood, matern52


def test_fitting_bounds_are_the_documented_ones():
    """variance and lengthscales in [1e-2, 1e2], noise in [1e-6, 1], on the log scale."""
    expected = {"variance": (1e-2, 1e2), "lengthscale": (1e-2, 1e2), "noise": (1e-6, 1.0)}
    assert set(LOG_BOUNDS) == set(expected)
    for k, (lo, hi) in expected.items():
        np.testing.assert_allclose(LOG_BOUNDS[k], (np.log(lo), np.log(hi)), rtol=1e-15)


def test_matern52_default_variance_and_positive_parameters():
    """k(x, x) = s^2 = 1 by default; at r = 1 (one lengthscale apart), (1 + √5 + 5/3) e^-√5.
    A zero lengthscale or a zero variance is refused."""
    x = np.array([[0.0], [1.0]])
    k = matern52(x, x, 1.0)
    np.testing.assert_allclose(np.diag(k), [1.0, 1.0])
    np.testing.assert_allclose(k[0, 1], (1 + np.sqrt(5) + 5 / 3) * np.exp(-np.sqrt(5)))
    for lengthscale, variance in ((0.0, 1.0), (1.0, 0.0)):
        with pytest.raises(ValueError, match="positive"):
            matern52(x, x, lengthscale, variance)


def test_data_needs_one_finite_observation():
    """One observation is enough; none, a NaN target alone or a NaN input alone is refused."""
    theta = GPParams(1.0, np.array([1.0]), 1e-3).theta
    value, _ = log_marginal_likelihood(np.array([[0.5]]), np.array([0.0]), theta)
    # one point: log N(0 | 0, 1 + 1e-3 (+ jitter)) = -½ log(2π (1.001))
    assert value == pytest.approx(-0.5 * np.log(2 * np.pi * 1.001), rel=1e-6)
    for x, y in ((np.zeros((0, 1)), np.zeros(0)), (np.array([[0.5]]), np.array([np.nan])),
                 (np.array([[np.nan]]), np.array([0.0]))):
        with pytest.raises(ValueError):
            log_marginal_likelihood(x, y, theta)
