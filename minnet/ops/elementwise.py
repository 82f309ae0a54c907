"""Elementwise ops: arithmetic, unary math, clipping, selection and activations.

Each class states its derivative; gradients may come back in broadcast shape (the engine
un-broadcasts). Kinks follow PyTorch: relu'(0) = 0, |x|'(0) = 0, clip passes the gradient at its
bounds, maximum/minimum split it evenly on ties, hardsigmoid'(x) = 0 at its two corners,
hardswish'(-3) = 0 and hardswish'(3) = 1 (the x/3 + 1/2 branch is open).
Tests: ``tests/minnet/ops/test_elementwise.py``.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from minnet.tensor import Function

# ---- binary arithmetic -------------------------------------------------------------------


class Add(Function):
    """z = a + b;  dz/da = 1, dz/db = 1."""
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """z = a - b;  dz/da = 1, dz/db = -1."""
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g


class Mul(Function):
    """z = a b;  dz/da = b, dz/db = a."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (g * b if ctx.needs_input_grad[0] else None,
                g * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    """z = a / b;  dz/da = 1/b, dz/db = -a/b^2."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (g / b if ctx.needs_input_grad[0] else None,
                -g * a / (b * b) if ctx.needs_input_grad[1] else None)


class Pow(Function):
    """z = a^b;  dz/da = b a^(b-1), dz/db = a^b ln a (taken as 0 where a = 0)."""
    @staticmethod
    def forward(ctx, a, b):
        z = a ** b
        ctx.save_for_backward(a, b, z)
        return z

    @staticmethod
    def backward(ctx, g):
        a, b, z = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = g * b * a ** (b - 1)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                gb = g * np.where(a > 0, z * np.log(np.where(a > 0, a, 1)), 0)
        return ga, gb


class Maximum(Function):
    """z = max(a, b);  dz/da = 1[a > b] + 1/2 1[a = b] (and symmetrically for b)."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        share = (a > b) + 0.5 * (a == b)
        return g * share, g * (1 - share)


class Minimum(Function):
    """z = min(a, b);  dz/da = 1[a < b] + 1/2 1[a = b] (and symmetrically for b)."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        share = (a < b) + 0.5 * (a == b)
        return g * share, g * (1 - share)


class Where(Function):
    """z = where(c, a, b);  dz/da = 1[c], dz/db = 1[not c]; the condition gets no gradient."""
    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition = condition.astype(bool)
        return np.where(ctx.condition, a, b)

    @staticmethod
    def backward(ctx, g):
        c = ctx.condition
        zero = np.zeros((), dtype=g.dtype)
        return None, np.where(c, g, zero), np.where(c, zero, g)


# ---- unary math --------------------------------------------------------------------------


class Neg(Function):
    """z = -x;  dz/dx = -1."""
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """z = e^x;  dz/dx = e^x."""
    @staticmethod
    def forward(ctx, x):
        ctx.z = np.exp(x)
        return ctx.z

    @staticmethod
    def backward(ctx, g):
        return g * ctx.z


class Log(Function):
    """z = ln x;  dz/dx = 1/x."""
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return np.log(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.x


class Sqrt(Function):
    """z = sqrt(x);  dz/dx = 1 / (2 sqrt(x))."""
    @staticmethod
    def forward(ctx, x):
        ctx.z = np.sqrt(x)
        return ctx.z

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.z)


class Abs(Function):
    """z = |x|;  dz/dx = sign(x), with sign(0) = 0."""
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return np.abs(x)

    @staticmethod
    def backward(ctx, g):
        return g * np.sign(ctx.x)


class Erf(Function):
    """z = erf x = (2/sqrt(pi)) int_0^x e^(-t^2) dt;  dz/dx = (2/sqrt(pi)) e^(-x^2)."""
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return special.erf(x).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x = ctx.x
        return g * (2 / np.sqrt(np.pi) * np.exp(-x * x)).astype(x.dtype, copy=False)


class Clip(Function):
    """z = min(max(x, lo), hi);  dz/dx = 1[lo <= x <= hi] (gradient passes at the bounds)."""
    @staticmethod
    def forward(ctx, x, *, min=None, max=None):
        ctx.inside = np.ones(x.shape, dtype=bool)
        if min is not None:
            ctx.inside &= x >= min
        if max is not None:
            ctx.inside &= x <= max
        return np.clip(x, min, max).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.inside


# ---- activations -------------------------------------------------------------------------


class ReLU(Function):
    """z = max(x, 0);  dz/dx = 1[x > 0] (0 at x = 0, as PyTorch)."""
    @staticmethod
    def forward(ctx, x):
        ctx.positive = x > 0
        return np.maximum(x, 0)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.positive


class LeakyReLU(Function):
    """z = x if x > 0 else s x;  dz/dx = 1 if x > 0 else s."""
    @staticmethod
    def forward(ctx, x, *, negative_slope=0.01):
        ctx.slope = np.where(x > 0, 1, negative_slope).astype(x.dtype)
        return x * ctx.slope

    @staticmethod
    def backward(ctx, g):
        return g * ctx.slope


class Sigmoid(Function):
    """z = 1 / (1 + e^-x), computed without overflow;  dz/dx = z (1 - z)."""
    @staticmethod
    def forward(ctx, x):
        ctx.z = special.expit(x).astype(x.dtype, copy=False)
        return ctx.z

    @staticmethod
    def backward(ctx, g):
        z = ctx.z
        return g * z * (1 - z)


class Tanh(Function):
    """z = tanh x;  dz/dx = 1 - z^2."""
    @staticmethod
    def forward(ctx, x):
        ctx.z = np.tanh(x)
        return ctx.z

    @staticmethod
    def backward(ctx, g):
        return g * (1 - ctx.z * ctx.z)


class GELU(Function):
    """z = x Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016, exact form as
    PyTorch's default);  dz/dx = Phi(x) + x phi(x)."""
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        ctx.cdf = (0.5 * (1 + special.erf(x / np.sqrt(2)))).astype(x.dtype, copy=False)
        return x * ctx.cdf

    @staticmethod
    def backward(ctx, g):
        x = ctx.x
        pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
        return g * (ctx.cdf + x * pdf.astype(x.dtype, copy=False))


class HardSigmoid(Function):
    """z = max(0, min(1, alpha x + beta)) (ONNX HardSigmoid; PyTorch's hardsigmoid is
    alpha = 1/6, beta = 1/2);  dz/dx = alpha 1[0 < alpha x + beta < 1]."""
    @staticmethod
    def forward(ctx, x, *, alpha=1 / 6, beta=0.5):
        t = alpha * x + beta
        ctx.slope = np.where((t > 0) & (t < 1), alpha, 0).astype(x.dtype)
        return np.clip(t, 0, 1).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.slope


class HardSwish(Function):
    """z = x hardsigmoid(x) = x min(1, max(0, x/6 + 1/2)) (Howard et al. 2019, MobileNetV3 §5.2);
    dz/dx = 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, 1 for x >= 3 (PyTorch's branches)."""
    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return x * np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x = ctx.x
        return g * np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1)).astype(x.dtype, copy=False)
