"""Fused losses whose composite forms are slow or unstable: cross entropy and BCE with logits.

Tests: ``tests/minnet/ops/test_loss.py`` (each against its composite definition).
"""
from __future__ import annotations

import numpy as np
from scipy import special

from minnet.tensor import Function


class CrossEntropy(Function):
    """Per-row cross entropy of logits x (N, C) against integer targets, with label smoothing.

    q = (1 - eps) onehot(t) + eps / C,  p = softmax(x),  l_i = -sum_c q_ic log p_ic
    (PyTorch's ``label_smoothing``; Szegedy et al. 2016, section 7).
    dl_i/dx_i = p_i - q_i.  Returns the per-row losses (N,); reductions are applied outside.
    """
    @staticmethod
    def forward(ctx, logits, *, target, label_smoothing=0.0):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = np.arange(len(target))
        nll = -log_p[rows, target]
        if label_smoothing:
            nll = (1 - label_smoothing) * nll - label_smoothing * log_p.mean(axis=1)
        ctx.log_p, ctx.target, ctx.eps = log_p, target, label_smoothing
        return nll

    @staticmethod
    def backward(ctx, g):
        grad = np.exp(ctx.log_p)
        n_classes = grad.shape[1]
        if ctx.eps:
            grad -= ctx.eps / n_classes
        grad[np.arange(len(ctx.target)), ctx.target] -= 1 - ctx.eps
        return grad * g[:, None]


class BCEWithLogits(Function):
    """l = max(x, 0) - x y + log(1 + e^(-|x|))  (stable form of -y log s(x) - (1-y) log(1-s(x)));
    dl/dx = sigmoid(x) - y,  dl/dy = -x."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        gx = g * (special.expit(x) - y) if ctx.needs_input_grad[0] else None
        gy = -g * x if ctx.needs_input_grad[1] else None
        return gx, gy
