r"""Integer-only 2-D convolution (Jacob et al. 2018, sections 2.3-2.4).

The input is shifted by its zero point first, so that zero padding is the real value 0:
:math:`\tilde x = q_x - z_x`. Then, with :math:`\tilde X = \operatorname{im2col}(\tilde x)`
(``minnet.kernels.im2col``) and the weight codes as a (C_out, C_in k_h k_w) matrix,

.. math::
    acc_{n, o, p} = q_{b,o} + \sum_k q_{w,ok}\, \tilde X_{n,k,p} \quad \text{(int32)}, \qquad
    q_y = \operatorname{clamp}(z_y + \operatorname{requant}(acc; M_{0,o}, n_o),\ lo,\ q_{max})

exactly as ``int_linear`` with one row per output position. The reference computes it in
int64 with NumPy's im2col. The fast path, chosen at import as ``int_linear``'s:

- with AVX512-VNNI, the raw unsigned codes :math:`u` (``int_gemm.unsigned_codes``) padded
  with :math:`z_u` (so a padded position is the real value 0, as above). A stride-1 conv
  (width dilation 1, with VBMI) reads them in place (``conv2d_windows``: lanes = 16 output
  positions, each lane's four bytes the window of four taps of one kernel row, rows = output
  channels), writing channel planes that requantize as vector loops; any other geometry
  gathers them into the row-padded (N H_out W_out, C_in k_h k_w) patch matrix
  (``_patch_rows_loops``) for ``int_gemm``'s VNNI micro-kernel. The correction
  :math:`-z_u \sum_k q_{w,ok}` and the requantization write NCHW codes directly;
- otherwise Numba's im2col on int16 and ``int_linear``'s blocked int16 loops.

They agree bitwise (``tests/optim/quant/test_quant_kernels.py::test_conv_numba_equals_numpy``,
``tests/optim/quant/test_quant_int_gemm.py::test_conv_routes_equal_reference``).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import dispatch, jit
from minnet.kernels.im2col import im2col_numba, im2col_numpy, output_size
from minnet.kernels.microkernel import HAVE_VBMI, run_tiles
from minnet.kernels.microkernel import ROWS as TILE_ROWS
from minnet.ops.conv import int_pair

from .int_gemm import HAVE_VNNI, ROWS, unsigned_codes, vnni_product
from .int_linear import (
    _requantize_one,
    check_operands,
    code_dtype,
    linear_rows_numba,
    relu_floor,
    requantize_relu,
    requantize_vnni,
    shifted_int16,
)


def quantized_conv2d_numpy(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin,
                           qmax, relu, stride, padding, dilation):
    """Reference: int64 im2col and matrix product, ``requantize`` per output channel."""
    n, c_out = x_q.shape[0], w_q.shape[0]
    cols = im2col_numpy(x_q.astype(np.int64) - x_zero_point, w_q.shape[2:], stride, padding,
                        dilation)
    acc = w_q.reshape(c_out, -1).astype(np.int64) @ cols + bias_q.astype(np.int64)[:, None]
    y = requantize_relu(acc, M0, shift, out_zero_point, qmin, qmax, relu, axis=1)
    return y.reshape(n, c_out, *_out_hw(x_q.shape, w_q.shape, stride, padding, dilation))


def conv2d_int16(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax, relu,
                 stride, padding, dilation):
    """The portable route: int16 im2col, patches as rows, ``int_linear``'s blocked loops."""
    n, c_out = x_q.shape[0], w_q.shape[0]
    cols = im2col_numba(shifted_int16(x_q, x_zero_point), w_q.shape[2:], stride, padding,
                        dilation)
    patches = cols.transpose(0, 2, 1).reshape(-1, cols.shape[1])
    y = linear_rows_numba(patches, w_q.reshape(c_out, -1), bias_q, M0, shift, out_zero_point,
                          qmin, qmax, relu)
    oh, ow = _out_hw(x_q.shape, w_q.shape, stride, padding, dilation)
    return np.ascontiguousarray(y.reshape(n, oh * ow, c_out).transpose(0, 2, 1)).reshape(
        n, c_out, oh, ow)


@jit
def _patch_rows_loops(upad, kh, kw, sh, sw, dh, dw, oh, ow, a):
    """a[n H_out W_out + y W_out + x, (c k_h + i) k_w + j] = upad[n, c, y s_h + i d_h,
    x s_w + j d_w] (the row order of im2col's transpose, written in one pass)."""
    n_batch, channels = upad.shape[:2]
    sh, sw, dh, dw = max(sh, 1), max(sw, 1), max(dh, 1), max(dw, 1)  # see minnet's im2col
    for n in range(n_batch):
        for y in range(oh):
            for x in range(ow):
                row = a[(n * oh + y) * ow + x]
                k = 0
                for c in range(channels):
                    for i in range(kh):
                        src = upad[n, c, y * sh + i * dh]
                        for j in range(kw):
                            row[k + j] = src[x * sw + j * dw]
                        k += kw


@jit
def _requantize_planes(c, rows_per_sample, pitch, column_sums, zero_point_u, bias, m0, shift,
                       zero_point, lo, hi, out):
    """out[n, o, y, x] = requant(c[n R + o, y pitch + x] - z_u colsum[o] + bias[o]) for out
    (N, O, H, W): channel planes, so each output row is one vector loop."""
    n_batch, outputs, height, width = out.shape
    for n in range(n_batch):
        for o in range(outputs):
            plane = c[n * rows_per_sample + o]
            correction = np.int64(bias[o]) - zero_point_u * column_sums[o]
            m0o, shift_o = m0[o], shift[o]
            for y in range(height):
                # a row slice indexed by range variables only: no negative-index wraparound,
                # so LLVM vectorizes the loop (see minnet.kernels.im2col)
                src, dst = plane[y * pitch:y * pitch + width], out[n, o, y]
                for x in range(width):
                    acc = np.int32(np.int64(src[x]) + correction)
                    dst[x] = _requantize_one(acc, m0o, shift_o, zero_point, lo, hi)


def _int32_params(bias_q, M0, shift):
    return tuple(np.asarray(v, dtype=np.int32) for v in (bias_q, M0, shift))


def conv2d_windows(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax, relu,
                   padding, dilation_h):
    """Stride 1, width dilation 1: ``microkernel``'s ``s8u8w`` tiles over the padded input
    itself, lanes = 16 flat padded output positions whose four-byte windows of one kernel row
    (``conv_quad_offsets``) ``vpermb`` builds from one load, rows = output channels with their
    weight quads broadcast; output channel planes, requantized row by row."""
    n, c_in, h, w = x_q.shape
    c_out, _, kh, kw = w_q.shape
    (ph, pw) = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - dilation_h * (kh - 1), wp - (kw - 1)
    u, zero_point_u = unsigned_codes(x_q, x_zero_point)
    rows = -(-c_out // ROWS_S8U8W) * ROWS_S8U8W
    kw4 = -(-kw // 4) * 4
    weights = np.zeros((rows, c_in, kh, kw4), dtype=np.int8)
    weights[:c_out, :, :, :kw] = w_q
    offsets = conv_quad_offsets(c_in, kh, kw, hp, wp, dilation_h)
    vectors = min(range(4, 0, -1), key=lambda v: -(-oh * wp // (16 * v)) * 16 * v)
    positions = -(-oh * wp // (16 * vectors)) * 16 * vectors
    sample = c_in * hp * wp
    # Past the last sample: bytes read only by dropped positions or by zero weights.
    flat = np.empty(max(n * sample, (n - 1) * sample + positions + int(offsets.max()) + 48),
                    dtype=np.uint8)
    upad = flat[:n * sample].reshape(n, c_in, hp, wp)
    upad[...] = zero_point_u
    upad[:, :, ph:ph + h, pw:pw + w] = u
    starts = np.arange(0, positions, 16 * vectors)
    samples, starts = np.repeat(np.arange(n), starts.size), np.tile(starts, n)
    c = np.empty((n * rows, positions), dtype=np.int32)
    run_tiles(weights.reshape(-1), np.arange(rows) * weights[0].size, 4 * np.arange(offsets.size),
              flat, samples * sample + starts, offsets, np.full(starts.size, vectors),
              samples * rows, starts, c)
    out = np.empty((n, c_out, oh, ow), dtype=code_dtype(qmin))
    _requantize_planes(c, rows, wp, w_q.reshape(c_out, -1).sum(axis=1, dtype=np.int64),
                       zero_point_u, *_int32_params(bias_q, M0, shift), out_zero_point,
                       relu_floor(qmin, out_zero_point, relu), qmax, out)
    return out


def conv2d_vnni(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax, relu,
                stride, padding, dilation):
    """The VNNI route: ``conv2d_windows`` for stride 1 and width dilation 1 (with VBMI), else
    unsigned codes padded with :math:`z_u` gathered into patch rows for ``int_gemm``'s
    micro-kernel; then corrected and requantized into NCHW."""
    if stride == (1, 1) and dilation[1] == 1 and HAVE_VBMI:
        return conv2d_windows(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin,
                              qmax, relu, padding, dilation[0])
    n, c_in = x_q.shape[:2]
    c_out, _, kh, kw = w_q.shape
    oh, ow = _out_hw(x_q.shape, w_q.shape, stride, padding, dilation)
    (ph, pw) = padding
    u, zero_point_u = unsigned_codes(x_q, x_zero_point)
    out = np.empty((n, c_out, oh, ow), dtype=code_dtype(qmin))
    upad = u if ph == pw == 0 else np.pad(u, ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                                          constant_values=zero_point_u)
    quads = -(-c_in * kh * kw // 4)
    # Rows past N H_out W_out and depths past K are never initialised: their products meet
    # zero weights (depth) or are never read (rows).
    a = np.empty((-(-n * oh * ow // ROWS) * ROWS, 4 * quads), dtype=np.uint8)
    _patch_rows_loops(np.ascontiguousarray(upad), kh, kw, *stride, *dilation, oh, ow, a)
    c, column_sums = vnni_product(a.reshape(-1), np.zeros(1, np.int64), a.shape[0], a.shape[1],
                                  4 * np.arange(quads), w_q)
    return requantize_vnni(c, column_sums, oh * ow, ow, zero_point_u, bias_q, M0, shift,
                           out_zero_point, qmin, qmax, relu, out)


def conv_quad_offsets(channels: int, kh: int, kw: int, hp: int, wp: int,
                      dh: int) -> np.ndarray:
    """Byte offset of depth quad (c, i, j4) in a padded (C, H_p, W_p) sample:
    c H_p W_p + i d_h W_p + 4 j4, so that the quad holds the four taps 4 j4 ... 4 j4 + 3 of
    kernel row i (weights zero-padded to a multiple of 4 per row). An output at flat position
    y W_p + x then reads its window at those offsets from y W_p + x: a stride-1 convolution is
    a matrix product over the padded input itself, with W_p - W_out dropped positions per
    output row."""
    c = np.arange(channels)[:, None, None] * (hp * wp)
    i = np.arange(kh)[None, :, None] * (dh * wp)
    j = 4 * np.arange(-(-kw // 4))[None, None, :]
    return (c + i + j).reshape(-1).astype(np.int64)


ROWS_S8U8W = TILE_ROWS["s8u8w"]
quantized_conv2d_numba = conv2d_vnni if HAVE_VNNI else conv2d_int16


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
