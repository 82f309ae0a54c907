r"""Integer-only fully connected layer (Jacob et al. 2018, section 2.3-2.4).

With input codes :math:`q_x` (zero point :math:`z_x`), symmetric per-channel weight codes
:math:`q_w` (zero point 0), int32 bias codes :math:`q_b` at scale :math:`s_x s_{w,o}` and the
per-channel multiplier :math:`M_o = s_x s_{w,o} / s_y \approx M_{0,o}\, 2^{-31-n_o}`:

.. math::
    acc_{mo} = q_{b,o} + \sum_k (q_{x,mk} - z_x)\, q_{w,ok} \quad \text{(int32)}, \qquad
    q_{y,mo} = \operatorname{clamp}(z_y + \operatorname{requant}(acc_{mo}; M_{0,o}, n_o),\
        lo,\ q_{max})

with :math:`lo = \max(q_{min}, z_y)` when a ReLU is fused (real 0 is the code :math:`z_y`),
else :math:`q_{min}`. ``requant`` is ``optim.quant.requantize`` (gemmlowp's rounding
doubling high multiply and rounding right shift).

``quantized_linear_numpy`` is the reference (int64 arithmetic, then ``requantize``);
``quantized_linear_numba`` the fast path, chosen at import:

- with AVX512-VNNI (``int_gemm.HAVE_VNNI``), ``int_gemm``'s register-tiled ``vpdpbusd``
  micro-kernel on the raw unsigned codes, then one loop that subtracts
  :math:`z_u \sum_k q_{w,ok}`, adds the bias and requantizes (``linear_rows_vnni``);
- otherwise operands widened to int16 (LLVM turns the int32 dot product into ``vpmaddwd``)
  and blocks of ``_BLOCK`` output rows of the weight kept in L1 while every input row passes
  over them, with requantization fused (``linear_rows_int16``).

All agree bitwise (``tests/optim/quant/test_quant_kernels.py::test_linear_numba_equals_numpy``,
``tests/optim/quant/test_quant_int_gemm.py::test_linear_routes_equal_reference``).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import dispatch, jit

from ._checks import check_int, check_qrange
from .int_gemm import HAVE_VNNI, ROWS, packed_weights, unsigned_codes
from .requant import INT32_MAX, INT32_MIN, requantize

# Codes of up to 8 bits: int8 weights, uint8/int8 activations, int32 accumulators and biases.
MAX_INTEGER_BITS = 8
# Weight rows per cache block: 32 rows of up to ~500 int8 weights stay in a 32 KiB L1 cache.
_BLOCK = 32


def relu_floor(qmin: int, out_zero_point: int, relu: bool) -> int:
    """Lower clamp of the output codes: the code of real 0, :math:`z_y`, with a fused ReLU."""
    return max(qmin, out_zero_point) if relu else qmin


def requantize_relu(acc, M0, shift, out_zero_point, qmin, qmax, relu, axis):
    """``requantize`` into ``[qmin, qmax]``, then the fused ReLU's clamp at ``relu_floor``."""
    y = requantize(acc, M0, shift, out_zero_point, qmin, qmax, axis=axis)
    return np.maximum(y, relu_floor(qmin, out_zero_point, relu)).astype(code_dtype(qmin))


def code_dtype(qmin: int) -> np.dtype:
    """uint8 or int8: the dtype of codes in an 8-bit range starting at ``qmin``."""
    return np.dtype(np.uint8 if qmin >= 0 else np.int8)


def quantized_linear_numpy(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin,
                           qmax, relu):
    """Reference: int64 accumulators, ``requantize`` per output channel (axis 1)."""
    acc = (x_q.astype(np.int64) - x_zero_point) @ w_q.astype(np.int64).T + bias_q
    return requantize_relu(acc, M0, shift, out_zero_point, qmin, qmax, relu, axis=1)


@jit
def _requantize_one(acc, m0, n, zero_point, lo, hi):
    """``requantize`` of one int32 accumulator (int64 arithmetic, as the reference)."""
    left = max(-n, 0)
    right = max(n, 0)
    v = np.int64(acc) << left
    v = min(max(v, INT32_MIN), INT32_MAX)
    v = (v * np.int64(m0) + (np.int64(1) << 30)) >> 31
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (1 if v < 0 else 0)
    v = (v >> right) + (1 if (v & mask) > threshold else 0)
    return min(max(v + zero_point, lo), hi)


@jit
def _linear_loops(x, w, bias, m0, shift, zero_point, lo, hi, out):
    rows, depth = x.shape
    outputs = w.shape[0]
    for start in range(0, outputs, _BLOCK):
        stop = min(start + _BLOCK, outputs)
        for m in range(rows):
            xm = x[m]
            for o in range(start, stop):
                wo = w[o]
                acc = np.int32(0)
                for k in range(depth):  # kept in int32 (Numba widens sums to int64)
                    acc = np.int32(acc + np.int32(xm[k]) * np.int32(wo[k]))
                out[m, o] = _requantize_one(acc + bias[o], m0[o], shift[o], zero_point, lo, hi)


def shifted_int16(x_q: np.ndarray, zero_point: int) -> np.ndarray:
    """:math:`q - z` as int16 (exact: codes and zero points of 8 bits differ by at most 255)."""
    return np.subtract(x_q, zero_point, dtype=np.int16)


@jit
def _requantize_loops(c, segment, pitch, column_sums, zero_point_u, bias, m0, shift, zero_point,
                      lo, hi, row, out):
    """out[n, o, y, x] = requant(c[n segment + y pitch + x, o] - z_u colsum[o] + bias[o]) for
    out (N, O, H, W); the raw sum c wraps modulo 2**32 like the int32 result, which fits
    (``check_operands``). Per output row and channel, a gather of the corrected sums into
    ``row`` (W,), then the requantization as one vector loop."""
    n_batch, outputs, height, width = out.shape
    for n in range(n_batch):
        for y in range(height):
            first = n * segment + y * pitch
            for o in range(outputs):
                correction = np.int64(bias[o]) - zero_point_u * column_sums[o]
                for x in range(width):
                    row[x] = np.int32(np.int64(c[first + x, o]) + correction)
                m0o, shift_o, dst = m0[o], shift[o], out[n, o, y]
                for x in range(width):
                    dst[x] = _requantize_one(row[x], m0o, shift_o, zero_point, lo, hi)


def requantize_vnni(c, column_sums, segment, pitch, zero_point_u, bias_q, M0, shift,
                    out_zero_point, qmin, qmax, relu, out):
    r"""``int_gemm.vnni_product``'s raw sums ``c`` corrected by :math:`-z_u \sum_k q_{w,ok}`,
    biased and requantized into ``out`` (N, O, H, W) (``_requantize_loops``)."""
    _requantize_loops(c, segment, pitch, column_sums, zero_point_u,
                      *(np.asarray(v, dtype=np.int32) for v in (bias_q, M0, shift)),
                      out_zero_point, relu_floor(qmin, out_zero_point, relu), qmax,
                      np.empty(out.shape[-1], np.int32), out)
    return out


if HAVE_VNNI:
    from minnet.kernels.microkernel import checked_tiles

    @jit
    def _linear_vnni_loops(u, packed, panel_starts, quad_offsets, vectors, zeros, columns, quads,
                           channels_pad, column_sums, zero_point_u, bias, m0, shift, zero_point,
                           lo, hi, out):
        """The whole VNNI route in one call (batch-1 inference is dominated by call
        overhead): rows padded to ``ROWS``, the tiles, then per row the correction and the
        requantization as one vector loop over channels. False if a tile address check
        failed."""
        rows_in, depth = u.shape
        rows = -(-rows_in // ROWS) * ROWS
        a = np.zeros((rows, 4 * quads), np.uint8)
        a[:rows_in, :depth] = u
        c = np.empty((rows, channels_pad), np.int32)
        if not checked_tiles(a.reshape(-1), np.arange(rows) * (4 * quads), ROWS, 4,
                             4 * np.arange(quads), packed, panel_starts, quad_offsets, 64, 0,
                             vectors, zeros, columns, c, 16):
            return False
        for m in range(rows_in):
            for o in range(out.shape[1]):
                acc = np.int32(np.int64(c[m, o]) + np.int64(bias[o])
                               - zero_point_u * column_sums[o])
                out[m, o] = _requantize_one(acc, m0[o], shift[o], zero_point, lo, hi)
        return True


def linear_rows_vnni(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax,
                     relu):
    """The VNNI route: raw unsigned codes through ``int_gemm``'s packed weights and
    ``minnet.kernels.microkernel``'s tiles, the zero point corrected after."""
    u, zero_point_u = unsigned_codes(x_q, x_zero_point)
    pw = packed_weights(w_q)
    out = np.empty((x_q.shape[0], w_q.shape[0]), dtype=code_dtype(qmin))
    if not _linear_vnni_loops(np.ascontiguousarray(u), pw.packed, pw.panel_starts,
                              pw.quad_offsets, pw.vectors, pw.zeros, pw.columns, pw.quads,
                              pw.channels_pad, pw.column_sums, zero_point_u,
                              *(np.asarray(v, dtype=np.int32) for v in (bias_q, M0, shift)),
                              out_zero_point, relu_floor(qmin, out_zero_point, relu), qmax, out):
        raise ValueError(f"x_q {x_q.shape} does not match the packed weights {w_q.shape}")
    return out


def linear_rows_numba(x, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax, relu):
    """The blocked int16 loops on zero-point-shifted int16 rows ``x`` (M, K)."""
    out = np.empty((x.shape[0], w_q.shape[0]), dtype=code_dtype(qmin))
    _linear_loops(np.ascontiguousarray(x), np.ascontiguousarray(w_q),
                  *(np.asarray(a, dtype=np.int32) for a in (bias_q, M0, shift)),
                  out_zero_point, relu_floor(qmin, out_zero_point, relu), qmax, out)
    return out


def linear_rows_int16(x_q, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax,
                      relu):
    """The portable route: the zero point subtracted once into int16, then the blocked loops."""
    return linear_rows_numba(shifted_int16(x_q, x_zero_point), w_q, bias_q, M0, shift,
                             out_zero_point, qmin, qmax, relu)


quantized_linear_numba = linear_rows_vnni if HAVE_VNNI else linear_rows_int16


linear_kernel = dispatch(quantized_linear_numpy, quantized_linear_numba)


def check_operands(x_dtype, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin,
                   qmax) -> None:
    """Validate the integer-kernel operands shared by linear and conv: dtypes, one
    ``bias_q`` / ``M0`` / ``shift`` per output channel, zero points in range, 8-bit codes, and
    no possible int32 overflow of the accumulator."""
    x_dtype = np.dtype(x_dtype)
    if x_dtype not in (np.uint8, np.int8):
        raise TypeError(f"x_q must be uint8 or int8 codes, got dtype {x_dtype}")
    if w_q.dtype != np.int8:
        raise TypeError(f"w_q must be int8 codes, got dtype {w_q.dtype}")
    channels = w_q.shape[0]
    for name, value in (("bias_q", bias_q), ("M0", M0), ("shift", shift)):
        if value.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {value.dtype}")
        if value.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},) (one per output channel), "
                             f"got {value.shape}")
    qmin, qmax = check_qrange(qmin, qmax)
    if qmin < -128 or qmax > 255 or (qmin < 0 and qmax > 127):
        raise ValueError(f"[qmin, qmax] = [{qmin}, {qmax}] must fit uint8 or int8")
    x_zero_point = check_int(x_zero_point, "x_zero_point")
    info = np.iinfo(x_dtype)
    if not info.min <= x_zero_point <= info.max:
        raise ValueError(f"x_zero_point must lie in [{info.min}, {info.max}], got {x_zero_point}")
    out_zero_point = check_int(out_zero_point, "out_zero_point")
    if not qmin <= out_zero_point <= qmax:
        raise ValueError(f"out_zero_point must lie in [qmin, qmax] = [{qmin}, {qmax}], "
                         f"got {out_zero_point}")
    depth = int(np.prod(w_q.shape[1:]))
    x_span = max(abs(info.min - x_zero_point), abs(info.max - x_zero_point))
    largest_bias = int(np.abs(bias_q.astype(np.int64)).max(initial=0))
    if depth * x_span * 128 + largest_bias > INT32_MAX:
        raise ValueError(f"the int32 accumulator may overflow: {depth} products of up to "
                         f"{x_span} * 128 plus a bias of up to {largest_bias}")


def quantized_linear(
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
) -> np.ndarray:
    r"""Integer-only :math:`y = x W^T + b` (see the module docstring for the formula).

    ``x_q``: uint8/int8 codes of shape (N, K); ``w_q``: int8 codes (O, K), zero point 0;
    ``bias_q``: int32 (O,) at scale :math:`s_x s_{w,o}` (``quantize_bias``); ``M0``,
    ``shift``: (O,) from ``quantize_multiplier`` of :math:`s_x s_{w,o} / s_y`; output codes
    in ``[qmin, qmax]`` (uint8 or int8), clamped at :math:`z_y` below when ``relu``. Runs the
    active backend's kernel (``MINNET_BACKEND``).

    Source: Jacob et al. 2018, sections 2.2-2.4; gemmlowp's output pipeline.
    Checked by ``tests/optim/quant/test_quant_kernels.py::test_linear_numba_equals_numpy`` and
    ``::test_linear_matches_float_within_one_step``.
    """
    x_q, w_q = np.asarray(x_q), np.asarray(w_q)
    bias_q, M0, shift = np.asarray(bias_q), np.asarray(M0), np.asarray(shift)
    if x_q.ndim != 2 or w_q.ndim != 2 or x_q.shape[1] != w_q.shape[1]:
        raise ValueError(f"x_q (N, K) and w_q (O, K) must agree in K, got {x_q.shape} and "
                         f"{w_q.shape}")
    check_operands(x_q.dtype, x_zero_point, w_q, bias_q, M0, shift, out_zero_point, qmin, qmax)
    return linear_kernel(x_q, int(x_zero_point), w_q, bias_q, M0, shift, int(out_zero_point),
                         int(qmin), int(qmax), bool(relu))
