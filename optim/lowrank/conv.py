r"""Low-rank factors of a convolution kernel :math:`W` (N, C, k_h, k_w), two schemes.

**Channel** (a k_h×k_w convolution with r filters, then a 1×1 convolution; Zhang et al. 2016,
section 3; Denton et al. 2014's "monochromatic"/bi-clustering family): reshape :math:`W` to
the matrix :math:`N \times C k_h k_w` and truncate its SVD,

.. math::
    W_{n,(c,i,j)} \approx \sum_{k=1}^{r} A_{nk} B_{k,(c,i,j)}, \qquad
    \text{params } r\,(C k_h k_w + N).

**Spatial** (Jaderberg, Vedaldi & Zisserman 2014, scheme 2: a vertical k_h×1 convolution with
r filters, then a horizontal 1×k_w convolution): every 2-D slice is a sum of r separable
filters shared across channels,

.. math::
    W_{n,c,i,j} \approx \sum_{k=1}^{r} V_{k,c,i}\, H_{n,k,j}, \qquad
    \text{params } r\,(C k_h + N k_w).

Its filter-reconstruction optimum is the truncated SVD of the matrix
:math:`M_{(c,i),(n,j)} = W_{n,c,i,j}` (C k_h × N k_w) — the closed form Tai et al. 2016 give
for Jaderberg's scheme 2. In both schemes the error of the kernel in Frobenius norm is the
discarded singular energy of the reshaped matrix, and full rank reproduces the convolution
exactly (stride, padding and dilation are split between the two factors).

Tests: ``tests/optim/lowrank/test_lowrank_conv.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .svd import truncated_svd

SCHEMES = ("channel", "spatial")


def _kernel(w: Any) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"w must be a 4-D kernel (N, C, kh, kw), got shape {w.shape}")
    return w


def check_scheme(scheme: Any) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def kernel_matrix(w: Any, scheme: str) -> np.ndarray:
    """The matrix whose truncated SVD factorizes ``w`` under ``scheme``: (N, C kh kw) for
    ``"channel"``, (C kh, N kw) with rows (c, i) and columns (n, j) for ``"spatial"``."""
    w = _kernel(w)
    n, c, kh, kw = w.shape
    if check_scheme(scheme) == "channel":
        return w.reshape(n, c * kh * kw)
    return w.transpose(1, 2, 0, 3).reshape(c * kh, n * kw)


def conv_factors(w: Any, rank: int, scheme: str = "channel") -> tuple[np.ndarray, np.ndarray]:
    r"""Kernels ``(first, second)`` of the two convolutions that replace ``w`` (N, C, kh, kw).

    ``"channel"``: first (r, C, kh, kw), second (N, r, 1, 1).
    ``"spatial"``: first (r, C, kh, 1), second (N, r, 1, kw).
    ``rank`` lies in [1, min of ``kernel_matrix(w, scheme).shape``]. Recombining the factors
    (``compose_kernel``) gives the best rank-r kernel in Frobenius norm. Tested by
    ``tests/optim/lowrank/test_lowrank_conv.py::test_full_rank_factors_reproduce_the_convolution`` and
    ``::test_kernel_error_is_the_discarded_energy``.
    """
    w = _kernel(w)
    n, c, kh, kw = w.shape
    a, b = truncated_svd(kernel_matrix(w, scheme), rank)
    r = a.shape[1]
    if scheme == "channel":
        return b.reshape(r, c, kh, kw), a.reshape(n, r, 1, 1)
    vertical = a.T.reshape(r, c, kh, 1)
    horizontal = b.reshape(r, n, kw).transpose(1, 0, 2)[:, :, None, :]
    return vertical, np.ascontiguousarray(horizontal)


def compose_kernel(first: Any, second: Any, scheme: str) -> np.ndarray:
    """The single kernel (N, C, kh, kw) equal to ``first`` followed by ``second`` (stride 1)."""
    first, second = _kernel(first), _kernel(second)
    if check_scheme(scheme) == "channel":
        return np.einsum("nk,kcij->ncij", second[:, :, 0, 0], first)
    return np.einsum("kci,nkj->ncij", first[:, :, :, 0], second[:, :, 0, :])


def factorized_params(shape: tuple[int, int, int, int], scheme: str) -> tuple[int, int]:
    """``(params per unit of rank, max rank)`` of the factorized kernel of ``shape`` (no bias)."""
    n, c, kh, kw = shape
    if check_scheme(scheme) == "channel":
        return c * kh * kw + n, min(n, c * kh * kw)
    return c * kh + n * kw, min(c * kh, n * kw)
