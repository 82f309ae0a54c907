"""Normalization and regularization: batch, layer and local response normalization, dropout.

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


class LayerNorm(Function):
    """Layer normalization (Ba, Kiros & Hinton 2016, eq. 4; PyTorch's ``layer_norm``) over the
    last k axes (k = len(normalized_shape)), n elements per normalized group:

    y = gamma x_hat + beta,  x_hat = (x - mu) / sqrt(var + eps), mu and var (biased) per group.

    Backward with gh = g gamma:  dL/dx = (1 / (n sqrt(var + eps))) (n gh - sum gh - x_hat sum(gh x_hat)),
    dL/dgamma = sum over the leading axes of g x_hat,  dL/dbeta = sum over the leading axes of g.
    """
    @staticmethod
    def forward(ctx, x, weight, bias, *, normalized_shape, eps=1e-5):
        axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        inv_std = (1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)).astype(x.dtype, copy=False)
        x_hat = (x - mean) * inv_std
        ctx.x_hat, ctx.inv_std, ctx.axes, ctx.weight = x_hat, inv_std, axes, weight
        y = x_hat if weight is None else x_hat * weight
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, g):
        x_hat, axes = ctx.x_hat, ctx.axes
        leading = tuple(range(g.ndim - len(axes)))
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gh = g if ctx.weight is None else g * ctx.weight
            n = np.prod([g.shape[a] for a in axes])
            gx = ctx.inv_std / n * (n * gh - gh.sum(axis=axes, keepdims=True)
                                    - x_hat * (gh * x_hat).sum(axis=axes, keepdims=True))
        if ctx.needs_input_grad[1]:
            gw = (g * x_hat).sum(axis=leading)
        if ctx.needs_input_grad[2]:
            gb = g.sum(axis=leading)
        return gx, gw, gb


def channel_window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """s[:, c] = sum of v[:, c'] for c - before <= c' <= c + after, 0 <= c' < C (axis 1)."""
    s = np.zeros_like(v)
    channels = v.shape[1]
    # offsets beyond the channel count add nothing: a huge window costs no more than C shifts
    for offset in range(-min(before, channels - 1), min(after, channels - 1) + 1):
        lo, hi = max(0, -offset), min(channels, channels - offset)
        if lo < hi:
            s[:, lo:hi] += v[:, lo + offset:hi + offset]
    return s


class LocalResponseNorm(Function):
    """Local response normalization across channels (Krizhevsky, Sutskever & Hinton 2012,
    §3.3; the ONNX LRN operator; PyTorch's ``local_response_norm``):

    b_c = a_c / d_c^beta,  d_c = k + (alpha / n) sum_{c' in W(c)} a_{c'}^2,
    W(c) = [c - before, c + after] clipped to the channels, before + after + 1 = n (``size``).

    Backward (the window seen from c' is the mirrored one, [c' - after, c' + before]):
    dL/da_j = g_j d_j^-beta - (2 alpha beta / n) a_j sum_{c: j in W(c)} g_c a_c d_c^(-beta-1).
    """
    @staticmethod
    def forward(ctx, x, *, size, alpha=1e-4, beta=0.75, k=1.0, before=None):
        before = size // 2 if before is None else before
        after = size - 1 - before
        d = k + alpha / size * channel_window_sum(x * x, before, after)
        ctx.x, ctx.d, ctx.window, ctx.coefficients = x, d, (before, after), (size, alpha, beta)
        return (x * d ** -beta).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, d, (before, after), (size, alpha, beta) = ctx.x, ctx.d, ctx.window, ctx.coefficients
        spread = channel_window_sum(g * x * d ** (-beta - 1), after, before)
        return (g * d ** -beta - 2 * alpha * beta / size * x * spread).astype(x.dtype, copy=False)


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
