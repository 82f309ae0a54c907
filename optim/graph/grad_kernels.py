"""Kernels of the compiled training step's gradient ops, written into preallocated outputs:
a NumPy reference and a Numba twin of each, chosen by ``minnet.kernels.backend``.

- ``max_pool2d_grad_into``: the VJP of max pooling, dx[argmax of each window] += dy (the
  window's first maximum, PyTorch's rule), with ``relu=True`` also multiplied by
  1[x > 0]: the ReLU before the pooling (x is its output) fused into the same pass;
- ``relu_grad_into``: dx = dy ⊙ 1[x > 0].

Tests: ``tests/optim/graph/test_graph_training.py::test_gradient_kernels_numba_equal_numpy``.
"""
from __future__ import annotations

import numpy as np

from minnet.kernels import pool as PK
from minnet.kernels.backend import dispatch, jit

__all__ = ["max_pool2d_grad_into", "relu_grad_into"]

Pair = tuple[int, int]


def max_pool2d_grad_into_numpy(dy: np.ndarray, x: np.ndarray, kernel_size: Pair, stride: Pair,
                               padding: Pair, relu: bool, out: np.ndarray) -> None:
    """out = VJP of max pooling at x applied to dy (times 1[x > 0] if ``relu``)."""
    _, indices = PK.max_pool2d_forward_numpy(x, kernel_size, stride, padding, False)
    dx = PK.max_pool2d_backward_numpy(dy, indices, x.shape)
    if relu:
        dx *= x > 0
    out[...] = dx


@jit
def _max_pool_grad_loops(dy, x, kh, kw, sh, sw, ph, pw, relu, out):  # pragma: no cover - numba
    n, c, h, w = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    out[b, ch, i, j] = 0
            for oi in range(oh):
                for oj in range(ow):
                    best, best_i, best_j = -np.inf, -1, -1
                    for di in range(kh):
                        ii = oi * sh - ph + di
                        if ii < 0 or ii >= h:
                            continue
                        for dj in range(kw):
                            jj = oj * sw - pw + dj
                            if jj < 0 or jj >= w:
                                continue
                            v = x[b, ch, ii, jj]
                            if best_i < 0:  # the window's first position unless a value wins
                                best_i, best_j = ii, jj
                            # minnet's (PyTorch's) rule: strict > keeps the first maximum, a
                            # NaN always wins, so the last NaN stays
                            if v > best or v != v:
                                best, best_i, best_j = v, ii, jj
                    if best_i >= 0 and (not relu or best > 0):
                        out[b, ch, best_i, best_j] += dy[b, ch, oi, oj]


@jit
def _max_pool_grad_2x2(dy, x, relu, out):  # pragma: no cover - numba
    """2x2 windows, stride 2, no padding: the four taps compared with selects, not branches
    (a random maximum position mispredicts half the branches), every input written once."""
    n, c, h, w = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for b in range(n):
        for ch in range(c):
            plane, o, gplane = x[b, ch], out[b, ch], dy[b, ch]
            o[2 * oh:, :] = 0  # an odd last row or column belongs to no window
            o[:, 2 * ow:] = 0
            for oi in range(oh):
                i = 2 * oi
                for oj in range(ow):
                    j = 2 * oj
                    best, k = plane[i, j], 0
                    for tap, v in ((1, plane[i, j + 1]), (2, plane[i + 1, j]),
                                   (3, plane[i + 1, j + 1])):
                        take = (v > best) | (v != v)
                        best = v if take else best
                        k = tap if take else k
                    g = dy[b, ch, oi, oj] if (best > 0) | (not relu) else 0
                    o[i, j] = g if k == 0 else 0
                    o[i, j + 1] = g if k == 1 else 0
                    o[i + 1, j] = g if k == 2 else 0
                    o[i + 1, j + 1] = g if k == 3 else 0


def max_pool2d_grad_into_numba(dy: np.ndarray, x: np.ndarray, kernel_size: Pair, stride: Pair,
                               padding: Pair, relu: bool, out: np.ndarray) -> None:
    """Numba twin of ``max_pool2d_grad_into_numpy``: one pass finds each window's maximum by
    minnet's forward rule and adds dy there (a branch-free loop for 2x2 windows of stride 2)."""
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    if tuple(kernel_size) == (2, 2) == tuple(stride) and tuple(padding) == (0, 0):
        _max_pool_grad_2x2(dy, x, relu, out)
    else:
        _max_pool_grad_loops(dy, x, *kernel_size, *stride, *padding, relu, out)


def relu_grad_into_numpy(dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = dy ⊙ 1[x > 0]."""
    np.multiply(dy, x > 0, out=out)


@jit
def _relu_grad_loop(dy, x, out):  # pragma: no cover - numba
    for i in range(dy.size):
        out[i] = dy[i] if x[i] > 0 else 0


def relu_grad_into_numba(dy: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """Numba twin of ``relu_grad_into_numpy``."""
    _relu_grad_loop(dy.reshape(-1), x.reshape(-1), out.reshape(-1))


max_pool2d_grad_into = dispatch(max_pool2d_grad_into_numpy, max_pool2d_grad_into_numba)
relu_grad_into = dispatch(relu_grad_into_numpy, relu_grad_into_numba)
