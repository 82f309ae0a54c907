"""2-D convolution as a differentiable op, with PyTorch's argument conventions.

Tests: ``tests/minnet/ops/test_conv.py`` (finite differences in float64 over drawn
stride/padding/dilation/groups, PyTorch, one test per validation error).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from minnet.kernels import conv as K
from minnet.kernels.im2col import output_size
from minnet.tensor import Function, Tensor, as_tensor

IntPair = int | tuple[int, int]


def int_pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """``value`` as an (height, width) pair of ints >= ``minimum``; an int stands for both."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_float_nchw(name: str, x: Tensor) -> None:
    """x must be a 4-D (N, C, H, W) floating tensor."""
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 (as PyTorch's CPU path accumulates half in float); other
    floating dtypes as themselves."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


class Conv2d(Function):
    """y = conv2d(x, W) + b (cross-correlation; see ``minnet.kernels.conv``).

    With X = im2col(x) per sample:  dL/dW = sum_n G[n] X[n]^T,  dL/dx = col2im(W^T G),
    dL/db = sum over (n, u, v) of G. float16 inputs are computed in float32 and the results
    rounded back to float16; an empty batch (N = 0) gives an empty output and zero gradients
    for the weight and bias.
    """
    @staticmethod
    def forward(ctx, x, weight, bias, *, stride, padding, dilation, groups):
        ctx.input_shape, ctx.geometry, ctx.groups = x.shape, (stride, padding, dilation), groups
        ctx.dtype, work = x.dtype, compute_dtype(x.dtype)
        weight = weight.astype(work, copy=False)
        if x.shape[0] == 0:
            out_hw = tuple(output_size(x.shape[2 + a], weight.shape[2 + a], stride[a], padding[a],
                                       dilation[a]) for a in (0, 1))
            ctx.save_for_backward(weight, None)
            return np.zeros((0, weight.shape[0]) + out_hw, dtype=x.dtype)
        y, cols = K.conv2d_forward(x.astype(work, copy=False), weight, stride, padding, dilation,
                                   groups)
        if bias is not None:
            y += bias.astype(work, copy=False).reshape(-1, 1, 1)
        ctx.save_for_backward(weight, cols if ctx.needs_input_grad[1] else None)
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        weight, cols = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        dtype = ctx.dtype
        if g.shape[0] == 0:
            return (np.zeros(ctx.input_shape, dtype) if need_x else None,
                    np.zeros(weight.shape, dtype) if need_w else None,
                    np.zeros(weight.shape[0], dtype) if need_b else None)
        g = g.astype(weight.dtype, copy=False)
        gx = K.conv2d_input_grad(g, weight, ctx.input_shape, *ctx.geometry, ctx.groups) if need_x else None
        gw = K.conv2d_weight_grad(g, cols, weight.shape, ctx.groups) if need_w else None
        gb = g.sum(axis=(0, 2, 3)) if need_b else None
        return tuple(None if a is None else a.astype(dtype, copy=False) for a in (gx, gw, gb))


def conv2d(x: Any, weight: Any, bias: Any = None, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation) of x (N, C_in, H, W) with weight
    (C_out, C_in / groups, k_h, k_w), as ``torch.nn.functional.conv2d``.

    y[n, o, u, v] = b[o] + sum_{c, i, j} w[o, c, i, j] xpad[n, g C_in/G + c, u s_h + i d_h, v s_w + j d_w]
    with g = o // (C_out / G), and H_out = floor((H + 2 p_h - d_h (k_h - 1) - 1) / s_h) + 1.
    Gradients: ``Conv2d``. Tested against finite differences and PyTorch in
    ``tests/minnet/ops/test_conv.py``.

    Parameters
    ----------
    x, weight, bias : tensors or arrays of one floating dtype; bias has shape (C_out,) or is None.
    stride, dilation : positive int or (h, w) pair.  padding : non-negative int or pair (zeros).
    groups : positive int dividing C_in and C_out.

    Examples
    --------
    >>> import numpy as np
    >>> y = conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((2, 1, 3, 3), np.float32), padding=1)
    >>> y.shape, float(y.data[0, 0, 1, 1]), float(y.data[0, 0, 0, 0])
    ((1, 2, 4, 4), 9.0, 4.0)
    """
    x, weight = as_tensor(x), as_tensor(weight)
    check_float_nchw("x", x)
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (C_out, C_in / groups, kh, kw), got shape {weight.shape}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from x dtype {x.dtype}")
    stride, padding = int_pair("stride", stride, 1), int_pair("padding", padding, 0)
    dilation = int_pair("dilation", dilation, 1)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    c_in, c_out = x.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide x's {c_in} input channels and weight's "
                         f"{c_out} output channels")
    if weight.shape[1] * groups != c_in:
        raise ValueError(f"weight of shape {weight.shape} with groups={groups} expects "
                         f"{weight.shape[1] * groups} input channels, but x of shape {x.shape} has {c_in}")
    if bias is not None:
        bias = as_tensor(bias)
        if bias.shape != (c_out,):
            raise ValueError(f"bias must have shape ({c_out},), got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias dtype {bias.dtype} differs from x dtype {x.dtype}")
    for axis, name in ((0, "height"), (1, "width")):
        span = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
        padded = x.shape[2 + axis] + 2 * padding[axis]
        if span > padded:
            raise ValueError(f"kernel {name} {span} (dilated) exceeds the padded input {name} "
                             f"{padded}: x {x.shape}, weight {weight.shape}, padding {padding}, "
                             f"dilation {dilation}")
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                        groups=int(groups))
