"""Normalization and regularization: batch normalization and dropout.

Tests: ``tests/minnet/ops/test_norm.py``.
"""
from __future__ import annotations

import numpy as np

from minnet.tensor import Function


class BatchNorm(Function):
    """Batch normalization (Ioffe & Szegedy 2015, Algorithm 1), channels on axis 1.

    y = gamma (x - mu) / sqrt(var + eps) + beta, statistics over every axis but 1: the batch's
    (biased var) when training, the running estimates otherwise. Training also updates the
    running estimates in place as PyTorch does: r <- (1 - m) r + m s, using the unbiased batch
    variance n/(n-1) var for ``running_var``.

    Backward with x_hat = (x - mu)/sqrt(var + eps) and n elements per channel:
    training: dL/dx = gamma/(n sqrt(var + eps)) (n g - sum g - x_hat sum(g x_hat));
    eval:     dL/dx = gamma g / sqrt(var + eps);
    dL/dgamma = sum g x_hat,  dL/dbeta = sum g.
    """
    @staticmethod
    def forward(ctx, x, weight, bias, *, running_mean, running_var, training, momentum, eps):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        if training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            n = x.size // x.shape[1]
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean
            if running_var is not None:
                running_var *= 1 - momentum
                running_var += momentum * var * (n / max(n - 1, 1))
        else:
            mean, var = running_mean, running_var
        inv_std = (1 / np.sqrt(var + eps)).astype(x.dtype).reshape(shape)
        x_hat = (x - mean.astype(x.dtype).reshape(shape)) * inv_std
        ctx.x_hat, ctx.inv_std, ctx.axes, ctx.training, ctx.shape = x_hat, inv_std, axes, training, shape
        ctx.weight = None if weight is None else weight.reshape(shape)
        y = x_hat if weight is None else x_hat * ctx.weight
        return y if bias is None else y + bias.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        x_hat, axes, shape = ctx.x_hat, ctx.axes, ctx.shape
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            scale = ctx.inv_std if ctx.weight is None else ctx.inv_std * ctx.weight
            if ctx.training:
                n = g.size // g.shape[1]
                g_sum = g.sum(axis=axes).reshape(shape)
                gx_hat_sum = (g * x_hat).sum(axis=axes).reshape(shape)
                gx = scale / n * (n * g - g_sum - x_hat * gx_hat_sum)
            else:
                gx = g * scale
        if ctx.needs_input_grad[1]:
            gw = (g * x_hat).sum(axis=axes)
        if ctx.needs_input_grad[2]:
            gb = g.sum(axis=axes)
        return gx, gw, gb


class Dropout(Function):
    """Inverted dropout (Srivastava et al. 2014): y = x m / (1 - p), m ~ Bernoulli(1 - p);
    dL/dx = g m / (1 - p)."""
    @staticmethod
    def forward(ctx, x, *, p, rng):
        ctx.mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)
        return x * ctx.mask

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask
