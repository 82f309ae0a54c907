r"""Integer-only 2-D convolution (Jacob et al. 2018, sections 2.3-2.4).

The input is shifted by its zero point first, so that zero padding is the real value 0:
:math:`\tilde x = q_x - z_x`. Then, with :math:`\tilde X = \operatorname{im2col}(\tilde x)`
(``minnet.kernels.im2col``) and the weight codes as a (C_out, C_in k_h k_w) matrix,

.. math::
    acc_{n, o, p} = q_{b,o} + \sum_k q_{w,ok}\, \tilde X_{n,k,p} \quad \text{(int32)}, \qquad
    q_y = \operatorname{clamp}(z_y + \operatorname{requant}(acc; M_{0,o}, n_o),\ lo,\ q_{max})

exactly as ``int_linear`` with one row per output position. The reference computes it in
int64 with NumPy's im2col; the fast path runs Numba's im2col on int16 and hands the
(N H_out W_out, C_in k_h k_w) patch matrix to ``int_linear``'s blocked Numba loops. They agree
bitwise (``tests/optim/quant/test_quant_kernels.py::test_conv_numba_equals_numpy``).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import dispatch
from minnet.kernels.im2col import im2col_numba, im2col_numpy, output_size
from minnet.ops.conv import int_pair

from .int_linear import check_operands, linear_rows_numba, requantize_relu, shifted_int16


def quantized_conv2d_numpy(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin,
                           qmax, relu, stride, padding, dilation):
    """Reference: int64 im2col and matrix product, ``requantize`` per output channel."""
    n, c_out = x_q.shape[0], w_q.shape[0]
    cols = im2col_numpy(x_q.astype(np.int64) - x_zero_point, w_q.shape[2:], stride, padding,
                        dilation)
    acc = w_q.reshape(c_out, -1).astype(np.int64) @ cols + bias_q.astype(np.int64)[:, None]
    y = requantize_relu(acc, M0, shift, out_zero_point, qmin, qmax, relu, axis=1)
    return y.reshape(n, c_out, *_out_hw(x_q.shape, w_q.shape, stride, padding, dilation))


def quantized_conv2d_numba(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin,
                           qmax, relu, stride, padding, dilation):
    """Fast path: int16 im2col, patches as rows, ``int_linear``'s blocked loops."""
    n, c_out = x_q.shape[0], w_q.shape[0]
    cols = im2col_numba(shifted_int16(x_q, x_zero_point), w_q.shape[2:], stride, padding,
                        dilation)
    patches = cols.transpose(0, 2, 1).reshape(-1, cols.shape[1])
    y = linear_rows_numba(patches, w_q.reshape(c_out, -1), bias_q, M0, shift, out_zero_point,
                          qmin, qmax, relu)
    oh, ow = _out_hw(x_q.shape, w_q.shape, stride, padding, dilation)
    return np.ascontiguousarray(y.reshape(n, oh * ow, c_out).transpose(0, 2, 1)).reshape(
        n, c_out, oh, ow)


def _out_hw(x_shape, w_shape, stride, padding, dilation) -> tuple[int, int]:
    return tuple(output_size(x_shape[2 + a], w_shape[2 + a], stride[a], padding[a], dilation[a])
                 for a in (0, 1))


conv2d_kernel = dispatch(quantized_conv2d_numpy, quantized_conv2d_numba)


def quantized_conv2d(
    x_q: np.ndarray,
    x_zero_point: int,
    w_q: np.ndarray,
    bias_q: np.ndarray,
    M0: np.ndarray,
    shift: np.ndarray,
    out_zero_point: int,
    qmin: int,
    qmax: int,
    relu: bool = False,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> np.ndarray:
    r"""Integer-only ``conv2d`` (groups = 1; see the module docstring for the formula).

    ``x_q``: uint8/int8 codes (N, C_in, H, W); ``w_q``: int8 codes (C_out, C_in, k_h, k_w),
    zero point 0; ``bias_q``, ``M0``, ``shift``: (C_out,) as in ``quantized_linear``; output
    codes (N, C_out, H_out, W_out) in ``[qmin, qmax]``, clamped at :math:`z_y` below when
    ``relu``. Geometry as ``minnet.functional.conv2d``.

    Source: Jacob et al. 2018, sections 2.2-2.4.
    Checked by ``tests/optim/quant/test_quant_kernels.py::test_conv_numba_equals_numpy`` and
    ``::test_conv_matches_float_within_one_step``.
    """
    x_q, w_q = np.asarray(x_q), np.asarray(w_q)
    bias_q, M0, shift = np.asarray(bias_q), np.asarray(M0), np.asarray(shift)
    if x_q.ndim != 4 or w_q.ndim != 4 or x_q.shape[1] != w_q.shape[1]:
        raise ValueError(f"x_q (N, C_in, H, W) and w_q (C_out, C_in, kh, kw) must agree in "
                         f"C_in, got {x_q.shape} and {w_q.shape}")
    stride, padding = int_pair("stride", stride, 1), int_pair("padding", padding, 0)
    dilation = int_pair("dilation", dilation, 1)
    if min(_out_hw(x_q.shape, w_q.shape, stride, padding, dilation)) < 1:
        raise ValueError(f"kernel {w_q.shape[2:]} (dilation {dilation}) does not fit the input "
                         f"{x_q.shape[2:]} padded by {padding}")
    check_operands(x_q.dtype, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax)
    return conv2d_kernel(x_q, int(x_zero_point), w_q, bias_q, M0, shift, int(out_zero_point),
                         int(qmin), int(qmax), bool(relu), stride, padding, dilation)
