"""2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``) and its two gradients.

With x (N, C_in, H, W), weight w (C_out, C_in / G, k_h, k_w) and G groups, output channel o of
group g = o // (C_out / G) sees input channels g C_in / G ... (g + 1) C_in / G - 1:

    y[n, o, u, v] = sum_{c, i, j} w[o, c, i, j] xpad[n, g C_in / G + c, u s_h + i d_h, v s_w + j d_w]

In column form (``minnet.kernels.im2col``), per sample and group, Y = W X with
X = im2col(x) ((C_in / G) k_h k_w, H_out W_out) and W the weight as a (C_out / G, (C_in / G) k_h k_w)
matrix. Its adjoints give the gradients for an upstream gradient G_y:

    dL/dW = sum_n G_y[n] X[n]^T,      dL/dx = col2im(W^T G_y).

Bias is added by the op (``minnet.ops.conv``). Geometry arguments are (height, width) int pairs.
Tests: ``tests/minnet/kernels/test_conv_kernels.py`` (brute-force definition, adjoint identities,
Numba equals NumPy, PyTorch).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.im2col import Pair, col2im, im2col, output_size


def _grouped(a: np.ndarray, n: int, groups: int) -> np.ndarray:
    """View (N, C, P) as (N, G, C / G, P)."""
    return a.reshape(n, groups, -1, a.shape[-1])


def conv2d_forward(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                   dilation: Pair, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """y = conv2d(x, w) without bias. Returns ``(y, cols)``; ``cols = im2col(x)`` of shape
    (N, C_in k_h k_w, H_out W_out) is what ``conv2d_weight_grad`` needs."""
    n = x.shape[0]
    c_out, _, kh, kw = weight.shape
    oh = output_size(x.shape[2], kh, stride[0], padding[0], dilation[0])
    ow = output_size(x.shape[3], kw, stride[1], padding[1], dilation[1])
    cols = im2col(x, (kh, kw), stride, padding, dilation)
    w = weight.reshape(groups, c_out // groups, -1)
    y = np.matmul(w, _grouped(cols, n, groups))
    return y.reshape(n, c_out, oh, ow), cols


def conv2d_input_grad(grad: np.ndarray, weight: np.ndarray, input_shape: tuple, stride: Pair,
                      padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """dL/dx = col2im(W^T G_y), per sample and group."""
    n, c_out = grad.shape[:2]
    w = weight.reshape(groups, c_out // groups, -1)
    g = _grouped(grad.reshape(n, c_out, -1), n, groups)
    cols = np.matmul(w.transpose(0, 2, 1), g)
    return col2im(cols.reshape(n, -1, g.shape[-1]), input_shape, weight.shape[2:], stride,
                  padding, dilation)


def conv2d_weight_grad(grad: np.ndarray, cols: np.ndarray, weight_shape: tuple,
                       groups: int) -> np.ndarray:
    """dL/dW = sum_n G_y[n] X[n]^T, per group; ``cols`` is the X returned by the forward.

    Computed as the transpose of sum_n X[n] G_y[n]^T, the product shape BLAS runs faster here.
    """
    n, c_out = grad.shape[:2]
    g = _grouped(grad.reshape(n, c_out, -1), n, groups)
    dw_t = np.matmul(_grouped(cols, n, groups), g.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw_t.transpose(0, 2, 1).reshape(weight_shape)
