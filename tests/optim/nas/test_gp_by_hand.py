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


def test_fit_gp_starts_and_minimises_the_negative_evidence(monkeypatch):
    """Default: the documented start (variance 1, lengthscales 0.5, noise 1e-4) and 2 random
    restarts; the objective handed to SLSQP is -log evidence with its gradient (checked by
    central differences)."""
    from optim.nas import gp as G
    calls = []
    real = G.minimize

    def recording(fun, x0, **kwargs):
        calls.append((fun, np.array(x0)))
        return real(fun, x0, **kwargs)

    monkeypatch.setattr(G, "minimize", recording)
    rng = np.random.default_rng(0)
    x = rng.random((6, 2))
    y = np.sin(3 * x[:, 0]) - x[:, 1]
    G.fit_gp(x, y, np.random.default_rng(1))
    assert len(calls) == 3
    np.testing.assert_allclose(calls[0][1], GPParams(1.0, np.full(2, 0.5), 1e-4).theta)
    fun, theta = calls[0]
    value, grad = fun(theta)
    assert value == pytest.approx(-log_marginal_likelihood(x, y, theta)[0])
    step = 1e-6
    numeric = [(fun(theta + step * e)[0] - fun(theta - step * e)[0]) / (2 * step)
               for e in np.eye(theta.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_expected_improvement_by_hand():
    """mean 0, std 1, best 0 and the default xi = 0: EI = φ(0) = 1/√(2π). std 0: the plain
    gain max(best - mean, 0) = 1."""
    from optim.nas.gp import expected_improvement
    assert expected_improvement(0.0, 1.0, 0.0) == pytest.approx(1 / np.sqrt(2 * np.pi))
    assert expected_improvement(0.0, 0.0, 1.0) == 1.0


def test_fit_gp_survives_a_likelihood_that_cannot_be_factorised(monkeypatch):
    """A Cholesky failure at a trial θ counts as -inf likelihood (zero gradient), not as an
    error: with every θ failing, the fit still returns bounded parameters."""
    from optim.nas import gp as G

    def failing(x, y, theta):
        raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(G, "log_marginal_likelihood", failing)
    params = G.fit_gp(np.array([[0.0], [1.0]]), np.array([0.0, 1.0]),
                      np.random.default_rng(0), restarts=0)
    assert isinstance(params, GPParams)


def test_mismatched_observations_name_both_shapes():
    from optim.nas import gp as G
    with pytest.raises(ValueError, match=r"y must have shape \(3,\) to match x"):
        G.fit_gp(np.zeros((3, 1)), np.zeros(2), np.random.default_rng(0))


def test_one_observation_is_enough_and_none_is_refused():
    from optim.nas import gp as G
    params = G.fit_gp(np.array([[0.5, 0.5]]), np.array([1.0]), np.random.default_rng(0),
                      restarts=0)
    assert isinstance(params, GPParams)
    with pytest.raises(ValueError, match="at least one observation"):
        G.fit_gp(np.zeros((0, 2)), np.zeros(0), np.random.default_rng(0))
