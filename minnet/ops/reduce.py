"""Reductions over axes: sum, mean, max, min, var, and the numerically stable softmax family.

``axis`` is None (all axes), an int or a tuple of ints; ``keepdims`` as in NumPy.
Tests: ``tests/minnet/ops/test_reduce.py``.
"""
from __future__ import annotations

import numpy as np

from minnet.tensor import Function


def _normalize_axis(axis, ndim: int) -> tuple[int, ...]:
    """The reduced axes, non-negative and sorted. A 0-d tensor accepts axis 0 and -1, as
    PyTorch's (reducing it over its one element leaves it as it is: no axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    span = max(ndim, 1)
    for a in axes:
        if not -span <= a < span:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(int(a) % ndim for a in axes)) if ndim else ()


def _expand(g: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Re-insert the reduced axes of g as size-1 axes, so it broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


class Sum(Function):
    """z = sum_{axes} x;  dz/dx = 1 broadcast back over the reduced axes."""
    @staticmethod
    def forward(ctx, x, *, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _normalize_axis(axis, x.ndim), keepdims, x.shape
        return np.asarray(x.sum(axis=ctx.axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        return np.broadcast_to(_expand(g, ctx.axes, ctx.keepdims), ctx.shape)


class Mean(Function):
    """z = (1/n) sum_{axes} x;  dz/dx = 1/n, n the number of reduced elements."""
    @staticmethod
    def forward(ctx, x, *, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _normalize_axis(axis, x.ndim), keepdims, x.shape
        ctx.count = int(np.prod([x.shape[a] for a in ctx.axes]))
        return np.asarray(x.mean(axis=ctx.axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        g = _expand(g, ctx.axes, ctx.keepdims) / ctx.count
        return np.broadcast_to(g, ctx.shape)


class Max(Function):
    """z = max_{axes} x;  dz/dx_i = 1[x_i = z] / #{j : x_j = z} (ties share the gradient
    evenly, as ``torch.amax``)."""
    @staticmethod
    def forward(ctx, x, *, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims = _normalize_axis(axis, x.ndim), keepdims
        z = x.max(axis=ctx.axes, keepdims=True)
        ctx.winners = x == z
        return np.asarray(z if keepdims else z.squeeze(ctx.axes))

    @staticmethod
    def backward(ctx, g):
        winners = ctx.winners
        share = winners / winners.sum(axis=ctx.axes, keepdims=True)
        return _expand(g, ctx.axes, ctx.keepdims) * share


class Var(Function):
    """z = (1/(n - ddof)) sum (x - mean x)^2;  dz/dx = 2 (x - mean x) / (n - ddof)."""
    @staticmethod
    def forward(ctx, x, *, axis=None, keepdims=False, ddof=0):
        ctx.axes, ctx.keepdims = _normalize_axis(axis, x.ndim), keepdims
        n = int(np.prod([x.shape[a] for a in ctx.axes]))
        if n - ddof <= 0:
            raise ValueError(f"var over {n} elements with ddof={ddof} is undefined")
        ctx.centered = x - x.mean(axis=ctx.axes, keepdims=True)
        ctx.denominator = n - ddof
        return np.asarray((ctx.centered ** 2).sum(axis=ctx.axes, keepdims=keepdims) / ctx.denominator)

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.axes, ctx.keepdims) * (2 / ctx.denominator) * ctx.centered


class Softmax(Function):
    """s = e^(x - max x) / sum e^(x - max x);  ds/dx · g = s (g - sum(g s))."""
    @staticmethod
    def forward(ctx, x, *, axis=-1):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        ctx.s, ctx.axis = e / e.sum(axis=axis, keepdims=True), axis
        return ctx.s

    @staticmethod
    def backward(ctx, g):
        s = ctx.s
        return s * (g - (g * s).sum(axis=ctx.axis, keepdims=True))


class LogSoftmax(Function):
    """l = x - max x - ln sum e^(x - max x) (stable);  dl/dx · g = g - softmax(x) sum g."""
    @staticmethod
    def forward(ctx, x, *, axis=-1):
        shifted = x - x.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.out, ctx.axis = out, axis
        return out

    @staticmethod
    def backward(ctx, g):
        return g - np.exp(ctx.out) * g.sum(axis=ctx.axis, keepdims=True)
