r"""Tucker-2 decomposition of a convolution kernel (Kim et al. 2016).

A kernel :math:`K \in \mathbb R^{T \times S \times d_h \times d_w}` (out, in, kh, kw) is
decomposed along its two channel modes only,

.. math:: K_{t,s,i,j} \approx \sum_{r_4=1}^{R_4} \sum_{r_3=1}^{R_3}
          \mathcal C_{r_4, r_3, i, j}\, U^{(3)}_{s, r_3}\, U^{(4)}_{t, r_4}

(Kim et al. 2016, "Compression of Deep Convolutional Neural Networks for Fast and Low Power
Mobile Applications", Sec. 2: the Tucker-2 kernel), which is three convolutions in a row:

1. a 1×1 convolution S → R₃ with kernel :math:`U^{(3)\top}`;
2. a :math:`d_h \times d_w` convolution R₃ → R₄ with the core :math:`\mathcal C` (it takes
   the original stride, padding and dilation);
3. a 1×1 convolution R₄ → T with kernel :math:`U^{(4)}` and the original bias.

The factors come from the higher-order SVD (De Lathauwer, De Moor & Vandewalle 2000):
:math:`U^{(3)}` holds the :math:`R_3` leading left singular vectors of the mode-in unfolding
:math:`K_{(s), (t,i,j)}`, :math:`U^{(4)}` those of the mode-out unfolding, and
:math:`\mathcal C = K \times_{\text{in}} U^{(3)\top} \times_{\text{out}} U^{(4)\top}`.
Because the reconstruction is an orthogonal projection,
:math:`\|K - \hat K\|_F^2 = \|K\|_F^2 - \|\mathcal C\|_F^2`; it never grows with either rank,
is at most the sum of the squared singular values discarded in the two unfoldings (De
Lathauwer et al. 2000, property 10), and is zero at full ranks. ``n_iter`` > 0 refines the
factors by higher-order orthogonal iteration (HOOI, De Lathauwer et al. 2000b, "On the best
rank-(R1, ..., RN) approximation"), which never increases the error.

Ranks: given by the user, or the smallest keeping a fraction ``energy`` of each unfolding's
squared singular values. Kim et al. choose them by variational Bayesian matrix factorization
(VBMF) of the two unfoldings; VBMF is **not** implemented here.

Tests: ``tests/optim/lowrank/test_lowrank_tucker.py``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minnet import nn
from minnet.ops.conv import int_pair

from .conv import _kernel
from .svd import check_rank, energy_rank


class Tucker2(NamedTuple):
    """``first`` (R₃, S, 1, 1), ``core`` (R₄, R₃, kh, kw), ``last`` (T, R₄, 1, 1): the kernels
    of the three convolutions."""
    first: np.ndarray
    core: np.ndarray
    last: np.ndarray


def _leading_vectors(unfolding: np.ndarray, rank: int) -> np.ndarray:
    u, _, _ = np.linalg.svd(unfolding, full_matrices=False)
    return u[:, :rank]


def tucker2_ranks(w: np.ndarray, energy: float) -> tuple[int, int]:
    r"""``(R₃, R₄)``: for the mode-in and mode-out unfoldings of ``w`` (T, S, kh, kw), the
    smallest rank keeping a fraction ``energy`` of :math:`\sum_i \sigma_i^2`
    (``svd.energy_rank``). Test: ``tests/optim/lowrank/test_lowrank_tucker.py::test_energy_ranks_are_per_mode``."""
    w = _kernel(w).astype(np.float64)
    t, s = w.shape[:2]
    sigma_in = np.linalg.svd(w.transpose(1, 0, 2, 3).reshape(s, -1), compute_uv=False)
    sigma_out = np.linalg.svd(w.reshape(t, -1), compute_uv=False)
    return energy_rank(sigma_in, energy), energy_rank(sigma_out, energy)


def tucker2(w: np.ndarray, ranks: tuple[int, int], n_iter: int = 0) -> Tucker2:
    r"""Tucker-2 factors of ``w`` (T, S, kh, kw) with ``ranks = (R₃, R₄)`` (in, out), by
    HOSVD and then ``n_iter`` sweeps of HOOI: :math:`U^{(3)}` ← leading vectors of
    :math:`(K \times_{\text{out}} U^{(4)\top})_{(s)}`, then :math:`U^{(4)}` likewise. Float64.
    Tests: ``tests/optim/lowrank/test_lowrank_tucker.py::test_full_rank_tucker_is_exact``,
    ``::test_tucker_error_is_a_projection_and_shrinks_with_rank``,
    ``::test_hooi_never_increases_the_error``."""
    w = _kernel(w).astype(np.float64)
    t, s, kh, kw = w.shape
    if not isinstance(ranks, (tuple, list)) or len(ranks) != 2:
        raise ValueError(f"ranks must be a pair (R3, R4) for the in and out modes, got {ranks!r}")
    r3, r4 = check_rank(ranks[0], s), check_rank(ranks[1], t)
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
    u3 = _leading_vectors(w.transpose(1, 0, 2, 3).reshape(s, -1), r3)
    u4 = _leading_vectors(w.reshape(t, -1), r4)
    for _ in range(n_iter):
        u3 = _leading_vectors(np.einsum("tsij,tq->sqij", w, u4).reshape(s, -1), r3)
        u4 = _leading_vectors(np.einsum("tsij,sp->tpij", w, u3).reshape(t, -1), r4)
    core = np.einsum("tsij,sp,tq->qpij", w, u3, u4)
    return Tucker2(u3.T[:, :, None, None].copy(), core, u4[:, :, None, None].copy())


def tucker2_kernel(factors: Tucker2) -> np.ndarray:
    r"""The kernel :math:`\hat K_{t,s,i,j} = \sum C_{q,p,i,j} U^{(3)}_{s,p} U^{(4)}_{t,q}`
    that the three convolutions compute together."""
    first, core, last = factors
    return np.einsum("ps,qpij,tq->tsij", first[:, :, 0, 0], core, last[:, :, 0, 0])


def tucker2_conv2d(conv: nn.Conv2d, ranks: tuple[int, int] | None = None, *,
                   energy: float | None = None, n_iter: int = 0) -> nn.Sequential:
    """``Sequential(Conv2d(S, R₃, 1), Conv2d(R₃, R₄, k, stride, padding, dilation),
    Conv2d(R₄, T, 1))`` computing ``conv`` (groups 1) with its Tucker-2 kernel; give ``ranks``
    or ``energy``. Test: ``tests/optim/lowrank/test_lowrank_tucker.py::test_tucker_modules_compute_the_reconstructed_convolution``."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be a minnet.nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"only convolutions with groups=1 can be decomposed, got groups={conv.groups}")
    if (ranks is None) == (energy is None):
        raise ValueError(f"give exactly one of ranks and energy, got ranks={ranks!r}, energy={energy!r}")
    w = conv.weight.data
    t, s, kh, kw = w.shape
    if ranks is None:
        ranks = tucker2_ranks(w, energy)
    first_w, core_w, last_w = tucker2(w, ranks, n_iter)
    r3, r4 = len(first_w), len(core_w)
    stride, padding = int_pair("stride", conv.stride, 1), int_pair("padding", conv.padding, 0)
    dilation = int_pair("dilation", conv.dilation, 1)
    first = nn.Conv2d(s, r3, 1, bias=False, dtype=w.dtype)
    core = nn.Conv2d(r3, r4, (kh, kw), stride, padding, dilation, bias=False, dtype=w.dtype)
    last = nn.Conv2d(r4, t, 1, bias=conv.bias is not None, dtype=w.dtype)
    for layer, value in ((first, first_w), (core, core_w), (last, last_w)):
        layer.weight.data[...] = value
    if conv.bias is not None:
        last.bias.data[...] = conv.bias.data
    return nn.Sequential(first, core, last)
