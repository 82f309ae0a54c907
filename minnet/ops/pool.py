"""2-D pooling as differentiable ops, with PyTorch's conventions.

Formulas, the output size with ``ceil_mode``, the divisor of ``count_include_pad`` and the
tie/NaN rules: ``minnet.kernels.pool``. float16 is pooled in float32 and rounded back (as conv). Tests: ``tests/minnet/ops/test_pool.py`` (finite
differences in float64, the first-max rule on ties, NaN windows, PyTorch, validation errors).
"""
from __future__ import annotations

from typing import Any

from minnet.kernels import pool as K
from minnet.kernels.pool_values import max_pool2d_values
from minnet.ops.conv import IntPair, check_float_nchw, compute_dtype, int_pair
from minnet.tensor import Function, Tensor, as_tensor


class MaxPool2d(Function):
    """y = max over each window;  dL/dx[idx] += dL/dy with idx the window's first maximum."""
    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, ceil_mode=False):
        ctx.input_shape, ctx.dtype = x.shape, x.dtype
        if not ctx.needs_input_grad[0] and not ceil_mode:  # no backward: maxima only
            y = max_pool2d_values(x.astype(compute_dtype(x.dtype), copy=False), kernel_size,
                                  stride, padding)
            return y.astype(x.dtype, copy=False)
        y, ctx.indices = K.max_pool2d_forward(x.astype(compute_dtype(x.dtype), copy=False),
                                              kernel_size, stride, padding, ceil_mode)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        g = g.astype(compute_dtype(g.dtype), copy=False)
        return K.max_pool2d_backward(g, ctx.indices, ctx.input_shape).astype(ctx.dtype, copy=False)


class AvgPool2d(Function):
    """y = window sum / D (D: ``count_include_pad`` divisor);  dL/dx = spread of dL/dy / D."""
    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True):
        ctx.input_shape, ctx.dtype = x.shape, x.dtype
        ctx.window = (kernel_size, stride, padding, ceil_mode, count_include_pad)
        y = K.avg_pool2d_forward(x.astype(compute_dtype(x.dtype), copy=False), *ctx.window)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        g = g.astype(compute_dtype(g.dtype), copy=False)
        dx = K.avg_pool2d_backward(g, ctx.input_shape, *ctx.window)
        return dx.astype(ctx.dtype, copy=False)


class AdaptiveAvgPool2d(Function):
    """y[u, v] = mean of the adaptive window (u, v);  dL/dx = dL/dy[u, v] / |window| over it."""
    @staticmethod
    def forward(ctx, x, *, output_size):
        ctx.input_shape, ctx.dtype = x.shape, x.dtype
        y = K.adaptive_avg_pool2d_forward(x.astype(compute_dtype(x.dtype), copy=False), output_size)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        g = g.astype(compute_dtype(g.dtype), copy=False)
        return K.adaptive_avg_pool2d_backward(g, ctx.input_shape).astype(ctx.dtype, copy=False)


def _window_args(x: Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair,
                 ceil_mode: bool):
    """Validated (kernel_size, stride, padding) pairs for a pooling window over x (PyTorch's
    rules: kernel and stride positive, 0 <= padding <= kernel // 2, a non-empty output)."""
    check_float_nchw("x", x)
    kernel_size = int_pair("kernel_size", kernel_size, 1)
    stride = kernel_size if stride is None else int_pair("stride", stride, 1)
    padding = int_pair("padding", padding, 0)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"padding {padding} must be at most half of kernel_size {kernel_size}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    out = [K.pool_output_size(x.shape[2 + a], kernel_size[a], stride[a], padding[a], ceil_mode)
           for a in (0, 1)]
    if min(out) < 1:
        raise ValueError(f"output size {tuple(out)} is empty: x {x.shape}, kernel_size "
                         f"{kernel_size}, stride {stride}, padding {padding}")
    return kernel_size, stride, padding


def max_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, *, ceil_mode: bool = False) -> Tensor:
    """Max pooling over (N, C, H, W), as ``torch.nn.functional.max_pool2d``.

    y[n, c, u, v] = max_{i < k_h, j < k_w} xpad[n, c, u s_h + i, v s_w + j], padding counting as
    -inf; the gradient goes to the first maximum of each window (row-major), and accumulates where
    windows overlap. A NaN in a window propagates, and its last NaN receives the gradient
    (PyTorch's CPU kernel). ``stride`` defaults to ``kernel_size``; padding is at most half the
    kernel; ``ceil_mode`` rounds the output size up (``minnet.kernels.pool.pool_output_size``).
    Tested against finite differences, the first-max rule on ties, NaN windows and PyTorch in
    ``tests/minnet/ops/test_pool.py``.

    Examples
    --------
    >>> import numpy as np
    >>> max_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2).data[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    x = as_tensor(x)
    kernel_size, stride, padding = _window_args(x, kernel_size, stride, padding, ceil_mode)
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding,
                           ceil_mode=ceil_mode)


def avg_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, *, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Average pooling over (N, C, H, W), as ``torch.nn.functional.avg_pool2d``.

    y[n, c, u, v] = (1 / D) sum_{i < k_h, j < k_w} xpad[n, c, u s_h + i, v s_w + j] with zero
    padding; D = k_h k_w when ``count_include_pad`` (PyTorch's default; fewer only where a
    ``ceil_mode`` window runs past the padding), else the number of in-bounds cells (ONNX
    AveragePool's default ``count_include_pad=0``). Tested against finite differences, a
    brute-force divisor and PyTorch in ``tests/minnet/ops/test_pool.py``.

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2).data[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    x = as_tensor(x)
    kernel_size, stride, padding = _window_args(x, kernel_size, stride, padding, ceil_mode)
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding,
                           ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def adaptive_avg_pool2d(x: Any, output_size: IntPair) -> Tensor:
    """Average pooling to a fixed (H_out, W_out), as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output cell u averages input rows floor(u H / H_out) ... ceil((u + 1) H / H_out) - 1
    (likewise columns). Tested in ``tests/minnet/ops/test_pool.py``.

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_avg_pool2d(np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3), 1).data.ravel()
    array([2.5], dtype=float32)
    """
    x = as_tensor(x)
    check_float_nchw("x", x)
    output_size = int_pair("output_size", output_size, 1)
    if min(x.shape[2:]) < 1:
        raise ValueError(f"x must have non-empty height and width, got shape {x.shape}")
    return AdaptiveAvgPool2d.apply(x, output_size=output_size)
