"""Matrix products: batched ``matmul`` (NumPy's broadcasting rules) and the fused ``linear``.

Tests: ``tests/minnet/ops/test_linalg.py``.
"""
from __future__ import annotations

import numpy as np

from minnet.tensor import Function


class MatMul(Function):
    """Z = A B (batch dimensions broadcast);  dL/dA = G B^T, dL/dB = A^T G.

    1-D operands are promoted as NumPy does (a vector a becomes a row 1×n, b a column n×1) and
    the promoted axes are removed again from the gradients; batch axes an operand lacks or
    was stretched along are summed by the engine (``minnet.tensor.unbroadcast``).
    """
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        if a.ndim == 1 and b.ndim == 1:
            return g * b, g * a
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = np.matmul(g, np.swapaxes(b2, -1, -2))
            ga = ga.reshape(ga.shape[:-2] + (a.shape[-1],)) if a.ndim == 1 else ga
        if ctx.needs_input_grad[1]:
            gb = np.matmul(np.swapaxes(a2, -1, -2), g)
            gb = gb[..., 0] if b.ndim == 1 else gb
        return ga, gb


class Linear(Function):
    """y = x W^T + b with x (..., in), W (out, in), b (out,);
    dL/dx = G W,  dL/dW = G^T x (summed over leading axes),  dL/db = sum G."""
    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight)
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        gx = g @ weight if ctx.needs_input_grad[0] else None
        g2 = g.reshape(-1, g.shape[-1])
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        if len(ctx.needs_input_grad) == 2:  # applied without a bias input
            return gx, gw
        return gx, gw, g2.sum(axis=0) if ctx.needs_input_grad[2] else None
