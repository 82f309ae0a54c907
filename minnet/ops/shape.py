"""Movement ops: reshape, transpose, indexing, concatenation, stacking and padding.

Their backward passes only move gradient entries back to where they came from.
Tests: ``tests/minnet/ops/test_shape.py``.
"""
from __future__ import annotations

import numpy as np

from minnet.tensor import Function


class Reshape(Function):
    """z = reshape(x, shape);  dL/dx = reshape(dL/dz, x.shape)."""
    @staticmethod
    def forward(ctx, x, *, shape):
        ctx.in_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class Transpose(Function):
    """z = permute(x, axes);  dL/dx = permute(dL/dz, argsort(axes))."""
    @staticmethod
    def forward(ctx, x, *, axes):
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(np.argsort(ctx.axes))


class GetItem(Function):
    """z = x[index];  dL/dx = scatter-add of dL/dz into zeros at ``index`` (repeated integer
    indices accumulate)."""
    @staticmethod
    def forward(ctx, x, *, index):
        ctx.shape, ctx.index = x.shape, index
        return np.asarray(x[index])

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        np.add.at(grad, ctx.index, g)
        return grad


class Concatenate(Function):
    """z = concat(x_1..x_k, axis);  dL/dx_i = the slice of dL/dz that x_i filled."""
    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        ctx.splits = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.split(g, ctx.splits, axis=ctx.axis))


class Stack(Function):
    """z = stack(x_1..x_k, axis);  dL/dx_i = dL/dz taken at position i along ``axis``."""
    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        return np.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.moveaxis(g, ctx.axis, 0))


class Pad(Function):
    """z = constant-pad(x, pad_width, value);  dL/dx = dL/dz with the padding cropped off."""
    @staticmethod
    def forward(ctx, x, *, pad_width, value=0.0):
        ctx.crop = tuple(slice(before, before + n) for (before, _), n in zip(pad_width, x.shape))
        return np.pad(x, pad_width, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.crop]
