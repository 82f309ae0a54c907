r"""CP (canonical polyadic) decomposition of a convolution kernel (Lebedev et al. 2015).

A kernel :math:`K \in \mathbb R^{T \times S \times d_h \times d_w}` (out, in, kh, kw) is a sum
of :math:`R` rank-one tensors,

.. math:: K_{t,s,i,j} \approx \sum_{r=1}^{R} U^{t}_{t r}\, U^{s}_{s r}\, U^{y}_{i r}\, U^{x}_{j r}

(Lebedev et al. 2015, "Speeding-up Convolutional Neural Networks Using Fine-tuned
CP-Decomposition", Sec. 3), which is four convolutions in a row (Sec. 3 as well):

1. a 1×1 convolution S → R with kernel :math:`U^{s\top}`;
2. a :math:`d_h \times 1` depthwise convolution (R groups) with :math:`U^{y}`;
3. a :math:`1 \times d_w` depthwise convolution with :math:`U^{x}`;
4. a 1×1 convolution R → T with :math:`U^{t}` and the original bias.

Stride, padding and dilation of the height go to step 2, those of the width to step 3.

The factors are fitted by alternating least squares (CP-ALS; Kolda & Bader 2009, "Tensor
Decompositions and Applications", Sec. 3.4, Fig. 3.3): for each mode :math:`n` in turn,

.. math:: U^{(n)} \leftarrow K_{(n)} \big(\textstyle\bigodot_{m \ne n} U^{(m)}\big)
          \big(\textstyle\mathop{\ast}_{m \ne n} U^{(m)\top} U^{(m)}\big)^{\dagger}

(:math:`\odot` Khatri-Rao, :math:`\ast` Hadamard product), each step the exact least-squares
solution for that factor, so the error never increases from sweep to sweep. The starting
factors are the leading left singular vectors of each unfolding (random columns beyond its
rank). Lebedev et al. fit the same model by non-linear least squares (Tensorlab) instead of
ALS; the model and the layers are the same.

Tests: ``tests/optim/lowrank/test_lowrank_cp.py``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minnet import nn
from minnet.ops.conv import int_pair

from .conv import _kernel

_SUBSCRIPTS = "tsyx"


class CP(NamedTuple):
    """Factors ``out`` (T, R), ``inp`` (S, R), ``vertical`` (kh, R), ``horizontal`` (kw, R)
    and ``errors``: the relative Frobenius error :math:`\\|K - \\hat K\\|_F / \\|K\\|_F` after
    each ALS sweep."""
    out: np.ndarray
    inp: np.ndarray
    vertical: np.ndarray
    horizontal: np.ndarray
    errors: np.ndarray


def cp_kernel(factors: CP | tuple) -> np.ndarray:
    r""":math:`\hat K_{t,s,i,j} = \sum_r U^t_{tr} U^s_{sr} U^y_{ir} U^x_{jr}`."""
    return np.einsum("tr,sr,yr,xr->tsyx", *factors[:4])


def _column_norms(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=0)
    return np.where(norms > 0, norms, 1.0)


def _initial(unfolding: np.ndarray, rank: int, rng: np.random.Generator) -> np.ndarray:
    u, _, _ = np.linalg.svd(unfolding, full_matrices=False)
    if u.shape[1] >= rank:
        return u[:, :rank].copy()
    return np.concatenate([u, rng.normal(size=(len(u), rank - u.shape[1]))], axis=1)


def cp_als(w: np.ndarray, rank: int, n_iter: int = 200, tol: float = 1e-10,
           seed: int = 0) -> CP:
    r"""Rank-``rank`` CP factors of ``w`` (T, S, kh, kw) by ALS, at most ``n_iter`` sweeps,
    stopping when the relative error improves by less than ``tol``. Float64; the column scales
    end up in the ``out`` factor. Tests:
    ``tests/optim/lowrank/test_lowrank_cp.py::test_cp_als_recovers_an_exact_low_rank_kernel``,
    ``::test_cp_error_never_increases_and_shrinks_with_rank``."""
    w = _kernel(w).astype(np.float64)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    rng = np.random.default_rng(seed)
    factors = [_initial(np.moveaxis(w, n, 0).reshape(w.shape[n], -1), rank, rng)
               for n in range(4)]
    norm = np.linalg.norm(w)
    errors: list[float] = []
    for _ in range(n_iter):
        for n in range(4):
            others = [m for m in range(4) if m != n]
            gram = np.ones((rank, rank))
            for m in others:
                gram *= factors[m].T @ factors[m]
            spec = ("tsyx," + ",".join(f"{_SUBSCRIPTS[m]}r" for m in others)
                    + f"->{_SUBSCRIPTS[n]}r")
            mttkrp = np.einsum(spec, w, *(factors[m] for m in others))
            factors[n] = mttkrp @ np.linalg.pinv(gram)
            if n < 3:  # unit columns; the next update absorbs the scale
                factors[n] /= _column_norms(factors[n])
        errors.append(float(np.linalg.norm(w - cp_kernel(factors)) / (norm if norm > 0 else 1.0)))
        if len(errors) > 1 and errors[-2] - errors[-1] < tol:
            break
    out, inp, vertical, horizontal = factors
    scale = _column_norms(horizontal)
    return CP(out * scale, inp, vertical, horizontal / scale, np.array(errors))


def cp_conv2d(conv: nn.Conv2d, rank: int, n_iter: int = 200, seed: int = 0) -> nn.Sequential:
    """``Sequential(Conv2d(S, R, 1), Conv2d(R, R, (kh, 1), groups=R), Conv2d(R, R, (1, kw),
    groups=R), Conv2d(R, T, 1))`` computing ``conv`` (groups 1) with its rank-R CP kernel
    (``cp_als``). Test:
    ``tests/optim/lowrank/test_lowrank_cp.py::test_cp_modules_compute_the_reconstructed_convolution``."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be a minnet.nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"only convolutions with groups=1 can be decomposed, got groups={conv.groups}")
    w = conv.weight.data
    t, s, kh, kw = w.shape
    out, inp, vertical, horizontal, _ = cp_als(w, rank, n_iter, seed=seed)
    (sh, sw), (ph, pw) = int_pair("stride", conv.stride, 1), int_pair("padding", conv.padding, 0)
    dh, dw = int_pair("dilation", conv.dilation, 1)
    layers = [nn.Conv2d(s, rank, 1, bias=False, dtype=w.dtype),
              nn.Conv2d(rank, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=rank, bias=False,
                        dtype=w.dtype),
              nn.Conv2d(rank, rank, (1, kw), (1, sw), (0, pw), (1, dw), groups=rank, bias=False,
                        dtype=w.dtype),
              nn.Conv2d(rank, t, 1, bias=conv.bias is not None, dtype=w.dtype)]
    layers[0].weight.data[...] = inp.T[:, :, None, None]
    layers[1].weight.data[...] = vertical.T[:, None, :, None]
    layers[2].weight.data[...] = horizontal.T[:, None, None, :]
    layers[3].weight.data[...] = out[:, :, None, None]
    if conv.bias is not None:
        layers[3].bias.data[...] = conv.bias.data
    return nn.Sequential(*layers)
