r"""Truncated SVD, the rank rules (kept energy, parameter budget) and data-aware factors.

A weight :math:`W \in \mathbb{R}^{m \times n}` with singular values
:math:`\sigma_1 \ge \dots \ge \sigma_k` (:math:`k = \min(m, n)`) is replaced by two thin
factors :math:`W \approx A B`, :math:`A \in \mathbb{R}^{m \times r}`,
:math:`B \in \mathbb{R}^{r \times n}`, costing :math:`r (m + n)` numbers instead of
:math:`m n`. The truncated SVD is the best such pair in Frobenius (and spectral) norm, with
error :math:`\sqrt{\sum_{i > r} \sigma_i^2}` (Eckart & Young 1936); Denton et al. 2014 and
Jaderberg et al. 2014 apply it to network layers. Here the factors share the singular values
evenly, :math:`A = U_r \Sigma_r^{1/2}`, :math:`B = \Sigma_r^{1/2} V_r^\top`, so neither
factor's scale dominates when they are fine-tuned.

Tests: ``tests/optim/lowrank/test_lowrank_svd.py``.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def _matrix(name: str, w: Any) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {w.dtype}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} must be finite, got NaN or Inf")
    return w


def check_rank(rank: Any, max_rank: int) -> int:
    """``rank`` as an int; TypeError unless an integer, ValueError unless 1 <= rank <= max_rank."""
    if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank must be an integer, got {rank!r}")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"rank must be in [1, {max_rank}] (min(m, n) of the matrix), got {rank}")
    return int(rank)


def decompose(w: Any, inputs: Any = None, rcond: float = 1e-10
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(U, sigma, Vt)`` in float64 with :math:`W = U \operatorname{diag}(\sigma) V^\top`
    (the SVD of ``w``), or, given ``inputs``, the whitened form of ``whitened_svd``:
    :math:`U \Sigma V^\top = W Q \Lambda^{1/2}` returned with ``Vt`` :math:`= V^\top
    \Lambda^{-1/2} Q^\top`, so that in both cases ``factors(U, sigma, Vt, r)`` are the rank-r
    factors. Shared by ``truncated_svd``, ``whitened_svd`` and ``factorize`` (one SVD per layer)."""
    w = _matrix("w", w).astype(np.float64)
    if inputs is None:
        return np.linalg.svd(w, full_matrices=False)
    x = _matrix("inputs", inputs)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"inputs of shape {x.shape} must have {w.shape[1]} columns to match w "
                         f"of shape {w.shape}")
    x = x.astype(np.float64)
    lam, q = np.linalg.eigh(x.T @ x)
    keep = lam > rcond * max(lam.max(), 0.0)
    if not np.any(keep):
        raise ValueError("inputs must not be all zero")
    root, q = np.sqrt(lam[keep]), q[:, keep]
    u, s, vt = np.linalg.svd(w @ (q * root), full_matrices=False)
    return u, s, (vt / root) @ q.T


def factors(u: np.ndarray, s: np.ndarray, vt: np.ndarray, rank: int, dtype=None
            ) -> tuple[np.ndarray, np.ndarray]:
    r"""Balanced rank-r factors :math:`A = U_r \Sigma_r^{1/2}`, :math:`B = \Sigma_r^{1/2} V_r^\top`
    of a decomposition from ``decompose``, cast to ``dtype`` (default: float64)."""
    rank = check_rank(rank, len(s))
    root = np.sqrt(s[:rank])
    dtype = np.float64 if dtype is None else dtype
    return (u[:, :rank] * root).astype(dtype), (root[:, None] * vt[:rank]).astype(dtype)


def truncated_svd(w: Any, rank: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Factors :math:`A` (m, r) and :math:`B` (r, n) of the best rank-``rank`` approximation
    of ``w`` (m, n).

    .. math:: A = U_r \Sigma_r^{1/2}, \quad B = \Sigma_r^{1/2} V_r^\top, \qquad
              \|W - A B\|_F = \sqrt{\textstyle\sum_{i > r} \sigma_i^2}

    The SVD runs in float64; the factors have ``w``'s dtype. ``rank`` must lie in
    :math:`[1, \min(m, n)]`. Source: Eckart & Young 1936. Tested by
    ``tests/optim/lowrank/test_lowrank_svd.py::test_truncation_error_is_the_discarded_energy`` and
    ``::test_truncated_svd_beats_any_other_rank_r_factorization``.

    >>> a, b = truncated_svd(np.diag([3.0, 2.0, 1.0]), 2)
    >>> np.round(a @ b, 12)
    array([[3., 0., 0.],
           [0., 2., 0.],
           [0., 0., 0.]])
    """
    w = _matrix("w", w)
    return factors(*decompose(w), rank, w.dtype)


def singular_values(w: Any) -> np.ndarray:
    """Singular values of ``w`` (m, n) in decreasing order (float64)."""
    return np.linalg.svd(_matrix("w", w).astype(np.float64), compute_uv=False)


def _spectrum(s: Any) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if (s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0)
            or np.any(np.diff(s) > 0)):
        raise ValueError("singular_values must be a non-empty, finite, non-negative, "
                         "non-increasing 1-D array")
    return s


def truncation_error(singular_values: Any, rank: int) -> float:
    r""":math:`\sqrt{\sum_{i > r} \sigma_i^2}`, the Frobenius error of the best rank-r
    approximation (Eckart & Young 1936)."""
    s = _spectrum(singular_values)
    rank = check_rank(rank, s.size)
    return float(np.sqrt(np.sum(s[rank:] ** 2)))


def kept_energy(singular_values: Any, rank: int) -> float:
    r"""Fraction of the singular energy that rank ``r`` keeps:
    :math:`\sum_{i \le r} \sigma_i^2 / \sum_i \sigma_i^2` (1 for a zero matrix)."""
    s = _spectrum(singular_values)
    rank = check_rank(rank, s.size)
    total = np.sum(s ** 2)
    return 1.0 if total == 0 else float(np.sum(s[:rank] ** 2) / total)


def energy_rank(singular_values: Any, energy: float) -> int:
    r"""The smallest rank keeping at least the fraction ``energy`` of the singular energy.

    .. math:: r(e) = \min\Big\{ r \ge 1 : \sum_{i \le r} \sigma_i^2 \ge e \sum_i \sigma_i^2 \Big\}

    ``energy`` in (0, 1]; ``energy = 1`` gives the numerical rank's upper end (all non-zero
    values). A relative slack of 1e-12 absorbs rounding in the cumulative sum. Tested by
    ``tests/optim/lowrank/test_lowrank_svd.py::test_energy_rank_is_the_smallest_sufficient_rank``.
    """
    s = _spectrum(singular_values)
    if isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not 0 < energy <= 1:
        raise ValueError(f"energy must be a number in (0, 1], got {energy!r}")
    cumulative = np.cumsum(s ** 2)
    if cumulative[-1] == 0:
        return 1
    return int(np.searchsorted(cumulative, energy * cumulative[-1] * (1 - 1e-12)) + 1)


def budget_rank(params_per_rank: int, fixed_params: int, budget: int, max_rank: int) -> int:
    r"""The largest rank whose factorized layer fits ``budget`` parameters:
    :math:`r = \min(r_{max}, \lfloor (\text{budget} - \text{fixed}) / \text{per rank} \rfloor)`.

    ``fixed_params`` counts what does not grow with the rank (a bias). ValueError when not even
    rank 1 fits. Tested by ``tests/optim/lowrank/test_lowrank_svd.py::test_budget_rank_is_the_largest_fitting_rank``.
    """
    for name, value in (("params_per_rank", params_per_rank), ("fixed_params", fixed_params),
                        ("budget", budget), ("max_rank", max_rank)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if params_per_rank < 1 or max_rank < 1:
        raise ValueError("params_per_rank and max_rank must be positive")
    rank = (budget - fixed_params) // params_per_rank
    if rank < 1:
        raise ValueError(f"budget of {budget} parameters cannot hold even rank 1 "
                         f"({fixed_params + params_per_rank} parameters)")
    return int(min(rank, max_rank))


def whitened_svd(w: Any, inputs: Any, rank: int, rcond: float = 1e-10
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Data-aware factors of a linear map :math:`y = W x`: the rank-r :math:`A B` closest to
    :math:`W` *on the given inputs*, and the singular values that rank the directions.

    With the inputs as rows of :math:`X` (N, n) and :math:`X^\top X = Q \Lambda Q^\top`:

    .. math::
        \min_{\operatorname{rank} \hat W \le r} \| (W - \hat W) X^\top \|_F, \qquad
        M = W Q \Lambda^{1/2} = U \Sigma V^\top, \qquad
        A = U_r \Sigma_r^{1/2}, \quad B = \Sigma_r^{1/2} V_r^\top \Lambda^{-1/2} Q^\top

    on the span of the inputs (eigenvalues below ``rcond`` times the largest are dropped, so
    :math:`\hat W` is zero on directions the data never visit). The error is
    :math:`\|(W - AB) X^\top\|_F = \sqrt{\sum_{i>r} \sigma_i(M)^2}`: Eckart–Young after
    whitening. Returns ``(A, B, sigma)``; ``sigma`` (float64) ranks directions by the output
    energy they carry, for ``energy_rank``. This is the closed form of the "response
    reconstruction" objective of Zhang et al. 2016 ("Accelerating Very Deep Convolutional
    Networks for Classification and Detection", linear case, solved there by a generalized SVD)
    and of SVD-LLM's truncation-aware data whitening (Wang et al. 2024). Tested by
    ``tests/optim/lowrank/test_lowrank_svd.py::test_whitened_svd_error_on_the_data_is_the_discarded_energy``.
    """
    w = _matrix("w", w)
    u, s, vt = decompose(w, inputs, rcond)
    return (*factors(u, s, vt, rank, w.dtype), s)
