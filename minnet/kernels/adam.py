"""The Adam/AdamW parameter update as one fused pass: NumPy reference and Numba fast path.

The formula, its sources and its PyTorch conventions are in ``minnet.optimizers.adam_update``,
which calls ``adam_step``. Scalars are cast to the parameter's dtype first, as NumPy does for
Python floats, so both paths round alike. Tests:
``tests/minnet/kernels/test_adam_kernel.py`` (Numba equals NumPy, float32 and float64).
"""
from __future__ import annotations

import math

import numpy as np

from minnet.kernels.backend import dispatch, jit


def _scalars(dtype, step, lr, beta1, beta2, eps, weight_decay):
    """(decay factor, L2 factor, beta1, 1-beta1, beta2, 1-beta2, step size, bias2 sqrt, eps)."""
    cast = np.dtype(dtype).type
    return (cast(1 - lr * weight_decay), cast(weight_decay), cast(beta1), cast(1 - beta1),
            cast(beta2), cast(1 - beta2), cast(lr / (1 - beta1 ** step)),
            cast(math.sqrt(1 - beta2 ** step)), cast(eps))


def adam_step_numpy(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
                    eps, weight_decay, decoupled_weight_decay):
    """In place: param, exp_avg, exp_avg_sq (and max_exp_avg_sq unless None)."""
    decay, l2, b1, one_b1, b2, one_b2, step_size, bias2, eps = _scalars(
        param.dtype, step, lr, beta1, beta2, eps, weight_decay)
    g = grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= decay
        else:
            g = g + l2 * param
    exp_avg *= b1
    exp_avg += one_b1 * g
    exp_avg_sq *= b2
    exp_avg_sq += one_b2 * g * g
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    param -= step_size * exp_avg / (np.sqrt(second) / bias2 + eps)


@jit(fastmath=True)
def _adam_loop(p, g, m, v, decay, l2, b1, one_b1, b2, one_b2, step_size, bias2, eps):
    for i in range(p.size):
        pi = p[i] * decay
        gi = g[i] + l2 * pi
        mi = m[i] * b1 + one_b1 * gi
        vi = v[i] * b2 + one_b2 * gi * gi
        m[i], v[i] = mi, vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) / bias2 + eps)


def adam_step_numba(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2,
                    eps, weight_decay, decoupled_weight_decay):
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if max_exp_avg_sq is not None or not all(a.flags.c_contiguous for a in arrays):
        # AMSGrad and non-contiguous views (updated in place) take the reference path
        return adam_step_numpy(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr,
                               beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                               decoupled_weight_decay=decoupled_weight_decay)
    decay, l2, *rest = _scalars(param.dtype, step, lr, beta1, beta2, eps, weight_decay)
    if decoupled_weight_decay:
        l2 = l2.dtype.type(0)
    else:
        decay = decay.dtype.type(1)
    _adam_loop(*(a.reshape(-1) for a in arrays), decay, l2, *rest)


adam_step = dispatch(adam_step_numpy, adam_step_numba)
