"""Gaussian-process regression with a Matérn-5/2 ARD kernel, and expected improvement.

Hyperparameters are kept as logarithms, ``theta = [log s2, log l_1..l_d, log noise]`` (signal
variance, one lengthscale per input dimension, noise variance), and fitted by maximising the
log marginal likelihood with ``scipy.optimize.minimize`` (SLSQP with bounds, analytic gradient).
Source throughout: Rasmussen & Williams, *Gaussian Processes for Machine Learning* (2006).
Everything is float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import cho_solve, solve_triangular
from scipy.linalg.lapack import dtrtri
from scipy.optimize import minimize
from scipy.stats import norm

__all__ = ["matern52", "log_marginal_likelihood", "GPParams", "fit_gp", "gp_posterior",
           "expected_improvement"]

_SQRT5 = np.sqrt(5.0)
_JITTER = 1e-10
#: Bounds of theta during fitting (inputs in [0, 1]^d, targets standardised).
LOG_BOUNDS = {"variance": (np.log(1e-2), np.log(1e2)), "lengthscale": (np.log(1e-2), np.log(1e2)),
              "noise": (np.log(1e-6), np.log(1.0))}


def _as_matrix(x: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {x.shape}")
    return x


def _scaled_sq_dists(x1: np.ndarray, x2: np.ndarray, lengthscale: np.ndarray) -> np.ndarray:
    """Per-dimension squared differences divided by l_k^2, shape (n1, n2, d)."""
    return ((x1[:, None, :] - x2[None, :, :]) / lengthscale) ** 2


def matern52(x1: ArrayLike, x2: ArrayLike, lengthscale: ArrayLike, variance: float = 1.0) -> np.ndarray:
    """Matérn-5/2 covariance matrix between the rows of ``x1`` (n1, d) and ``x2`` (n2, d).

    .. math:: k(x, x') = s^2 \\left(1 + \\sqrt5 r + \\tfrac53 r^2\\right) e^{-\\sqrt5 r},
              \\qquad r^2 = \\sum_k \\frac{(x_k - x'_k)^2}{l_k^2}

    ``lengthscale`` is a scalar or one value per dimension (ARD). Source: Rasmussen & Williams
    (2006), eq. 4.17. Tested by ``tests/optim/nas/test_nas_gp.py::test_matern52_closed_form``.
    """
    x1, x2 = _as_matrix(x1, "x1"), _as_matrix(x2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of columns, got {x1.shape} and {x2.shape}")
    lengthscale = np.broadcast_to(np.asarray(lengthscale, dtype=np.float64), (x1.shape[1],))
    if np.any(lengthscale <= 0) or not variance > 0:
        raise ValueError(f"lengthscale and variance must be positive, got {lengthscale} and {variance}")
    r = np.sqrt(_scaled_sq_dists(x1, x2, lengthscale).sum(axis=-1))
    return variance * (1.0 + _SQRT5 * r + 5.0 / 3.0 * r * r) * np.exp(-_SQRT5 * r)


@dataclass(frozen=True)
class GPParams:
    """Kernel hyperparameters: signal variance, lengthscales (d,), noise variance."""

    variance: float
    lengthscale: np.ndarray
    noise: float

    @property
    def theta(self) -> np.ndarray:
        return np.concatenate([[np.log(self.variance)], np.log(self.lengthscale), [np.log(self.noise)]])

    @classmethod
    def from_theta(cls, theta: ArrayLike) -> "GPParams":
        theta = np.asarray(theta, dtype=np.float64)
        return cls(float(np.exp(theta[0])), np.exp(theta[1:-1]), float(np.exp(theta[-1])))


def _check_data(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_matrix(x, "x"), np.asarray(y, dtype=np.float64)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x {x.shape}, got {y.shape}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one observation")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    return x, y


def _factor(x: np.ndarray, params: GPParams) -> np.ndarray:
    """Lower Cholesky factor of K + (noise + jitter) I."""
    k = matern52(x, x, params.lengthscale, params.variance)
    return np.linalg.cholesky(k + (params.noise + _JITTER) * np.eye(len(x)))


def log_marginal_likelihood(x: ArrayLike, y: ArrayLike, theta: ArrayLike) -> tuple[float, np.ndarray]:
    """Log evidence of ``y`` under the zero-mean GP and its gradient with respect to ``theta``.

    With :math:`K_y = K + \\sigma_n^2 I = L L^\\top` and :math:`\\alpha = K_y^{-1} y`,

    .. math:: \\log p(y \\mid X, \\theta) = -\\tfrac12 y^\\top \\alpha - \\sum_i \\log L_{ii}
              - \\tfrac n2 \\log 2\\pi,
              \\qquad \\frac{\\partial}{\\partial \\theta_j} = \\tfrac12 \\operatorname{tr}
              \\left((\\alpha\\alpha^\\top - K_y^{-1}) \\frac{\\partial K_y}{\\partial \\theta_j}\\right)

    with :math:`\\partial K/\\partial \\log s^2 = K`,
    :math:`\\partial k/\\partial \\log l_k = \\tfrac53 s^2 (1 + \\sqrt5 r) e^{-\\sqrt5 r}
    (x_k - x'_k)^2 / l_k^2` and :math:`\\partial K_y/\\partial \\log \\sigma_n^2 = \\sigma_n^2 I`.
    Source: Rasmussen & Williams (2006), eqs. 2.30 and 5.9, Algorithm 2.1. Tested by
    ``tests/optim/nas/test_nas_gp.py::test_log_marginal_likelihood_value_and_gradient``.
    """
    x, y = _check_data(x, y)
    params = GPParams.from_theta(theta)
    n = len(x)
    chol = _factor(x, params)
    chol_inv, info = dtrtri(chol, lower=1)
    if info:
        raise np.linalg.LinAlgError(f"dtrtri failed with info={info}")
    k_inv = chol_inv.T @ chol_inv
    alpha = k_inv @ y
    value = -0.5 * y @ alpha - np.sum(np.log(np.diag(chol))) - 0.5 * n * np.log(2 * np.pi)
    inner = np.outer(alpha, alpha) - k_inv
    sq = _scaled_sq_dists(x, x, params.lengthscale)
    r = np.sqrt(sq.sum(axis=-1))
    k = params.variance * (1.0 + _SQRT5 * r + 5.0 / 3.0 * r * r) * np.exp(-_SQRT5 * r)
    radial = 5.0 / 3.0 * params.variance * (1.0 + _SQRT5 * r) * np.exp(-_SQRT5 * r)
    grad = np.empty(len(params.theta))
    grad[0] = 0.5 * np.sum(inner * k)
    grad[1:-1] = 0.5 * np.einsum("ij,ij,ijk->k", inner, radial, sq)
    grad[-1] = 0.5 * params.noise * np.trace(inner)
    return float(value), grad


def fit_gp(x: ArrayLike, y: ArrayLike, rng: np.random.Generator, restarts: int = 2,
           start: GPParams | None = None) -> GPParams:
    """Hyperparameters maximising ``log_marginal_likelihood`` within ``LOG_BOUNDS``.

    SLSQP (bounded, analytic gradient) from ``start`` (default: unit variance, lengthscales
    0.5, noise 1e-4) and ``restarts`` starts drawn uniformly within the bounds; the best
    optimum wins. Expects
    ``y`` standardised. Source: Rasmussen & Williams (2006), Section 5.4.1. Tested by
    ``tests/optim/nas/test_nas_gp.py::test_fit_gp_does_not_lower_the_evidence``.
    """
    x, y = _check_data(x, y)
    d = x.shape[1]
    bounds = [LOG_BOUNDS["variance"]] + [LOG_BOUNDS["lengthscale"]] * d + [LOG_BOUNDS["noise"]]
    low, high = np.array(bounds).T
    starts = [np.clip((start or GPParams(1.0, np.full(d, 0.5), 1e-4)).theta, low, high)]
    starts += [rng.uniform(low, high) for _ in range(restarts)]

    def negative(theta):
        try:
            value, grad = log_marginal_likelihood(x, y, theta)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros_like(theta)
        return -value, -grad

    # SLSQP rather than L-BFGS-B: same optima here, and it stays fast when BLAS threads
    # compete for the cores (L-BFGS-B makes many tiny BLAS calls per iteration).
    best = min((minimize(negative, start, jac=True, method="SLSQP", bounds=bounds)
                for start in starts), key=lambda result: result.fun)
    return GPParams.from_theta(best.x)


def gp_posterior(x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                 params: GPParams) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and variance of the latent function at the rows of ``x_test``.

    .. math:: \\mu_* = K_*^\\top (K + \\sigma_n^2 I)^{-1} y, \\qquad
              \\sigma_*^2 = k(x_*, x_*) - K_*^\\top (K + \\sigma_n^2 I)^{-1} K_*

    computed through the Cholesky factor; the variance is clipped at 0. Source: Rasmussen &
    Williams (2006), eqs. 2.25-2.26, Algorithm 2.1. Tested by
    ``tests/optim/nas/test_nas_gp.py::test_posterior_interpolates_noiseless_observations``.
    """
    x_train, y_train = _check_data(x_train, y_train)
    x_test = _as_matrix(x_test, "x_test")
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_test must have {x_train.shape[1]} columns, got shape {x_test.shape}")
    chol = _factor(x_train, params)
    cross = matern52(x_train, x_test, params.lengthscale, params.variance)
    mean = cross.T @ cho_solve((chol, True), y_train)
    v = solve_triangular(chol, cross, lower=True)
    variance = np.maximum(params.variance - np.sum(v * v, axis=0), 0.0)
    return mean, variance


def expected_improvement(mean: ArrayLike, std: ArrayLike, best: float, xi: float = 0.0) -> np.ndarray:
    """Expected improvement below ``best`` (minimisation) of a Gaussian :math:`N(\\mu, \\sigma^2)`.

    .. math:: EI = (f^* - \\mu - \\xi)\\,\\Phi(z) + \\sigma\\,\\varphi(z), \\qquad
              z = \\frac{f^* - \\mu - \\xi}{\\sigma}

    clipped at 0 against rounding, and
    :math:`EI = \\max(f^* - \\mu - \\xi, 0)` where :math:`\\sigma = 0`; this equals
    :math:`E[\\max(f^* - \\xi - Y, 0)]` for :math:`Y \\sim N(\\mu, \\sigma^2)`.
    Source: Jones, Schonlau & Welch (1998), "Efficient global optimization of expensive
    black-box functions" (after Mockus et al. 1978). Tested by
    ``tests/optim/nas/test_nas_gp.py::test_expected_improvement_is_an_expectation``.
    """
    mean, std = np.broadcast_arrays(np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64))
    if np.any(std < 0) or not np.all(np.isfinite(std)):
        raise ValueError("std must be finite and non-negative")
    gain = best - mean - xi
    safe = np.where(std > 0, std, 1.0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # |z| = inf is fine
        z = gain / safe
        spread = np.maximum(gain * norm.cdf(z) + safe * norm.pdf(z), 0.0)
    return np.where(std > 0, spread, np.maximum(gain, 0.0))
