r"""Exact 8-bit integer matrix product, the core of the integer-only linear and conv kernels.

With activation codes :math:`q_x` (zero point :math:`z_x`) and int8 weight codes :math:`q_w`,
the zero point is factored out of the sum (Jacob et al. 2018, eq. 7-8), so the product runs on
the raw unsigned codes:

.. math::
    \sum_k (q_{x,mk} - z_x)\, q_{w,ok} = \sum_k u_{mk}\, q_{w,ok} - z_u \sum_k q_{w,ok},
    \qquad u = q_x + 128\,[q_x \text{ signed}] \in [0, 255],\ z_u = z_x + 128\,[\ldots]

:math:`\sum_k u_{mk} q_{w,ok}` is what AVX512-VNNI's ``vpdpbusd`` computes: each 32-bit lane
adds four products of an unsigned byte and a signed byte to an int32 accumulator, wrapping
modulo :math:`2^{32}` (Intel SDM, VPDPBUSD; the scheme of FBGEMM's u8·s8 kernels). Wrapping is
harmless: the final sum fits int32 (``int_linear.check_operands``), and arithmetic modulo
:math:`2^{32}` then returns it exactly.

Kernels, bit-exact with one another (``tests/optim/quant/test_quant_int_gemm.py``):

- ``gemm_u8s8_numpy``: the reference, an int64 matrix product;
- ``gemm_u8s8_vnni``: ``minnet.kernels.microkernel``'s register-tiled ``u8s8`` tile, 4
  activation rows by up to 64 output channels (16 zmm accumulators), its depth loop emitted as
  LLVM IR calling ``llvm.x86.avx512.vpdpbusd.512`` from Numba. Weights are packed in panels
  ``[panel][k / 4][64 channels][4]`` (one 64-byte load holds 16 channels times 4 depths),
  once per frozen weight array (``packed_weights``);
- ``gemm_u8s8_blas``: the portable route, float32 BLAS on depth blocks short enough that every
  partial sum is an integer below :math:`2^{24}` (exact in float32), summed in int32.

``HAVE_VNNI`` (the host CPU reports ``avx512vnni`` and Numba is installed) selects at import the
fast path ``gemm_u8s8``: VNNI, else the BLAS blocks.
"""
from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from minnet.kernels.backend import jit
from minnet.kernels.microkernel import HAVE_VNNI, run_tiles
from minnet.kernels.microkernel import ROWS as ROWS_PER_TILE

# Channels per packed weight panel: 4 zmm registers of 16 int32 lanes.
PANEL = 64
# Activation rows per micro-kernel tile (4 rows x 4 vectors = 16 accumulators).
ROWS = ROWS_PER_TILE["u8s8"]
# Largest |u * w|: 255 * 128. A float32 sum of BLAS_BLOCK such products stays below 2**24.
BLAS_BLOCK = (2**24 - 1) // (255 * 128)


def unsigned_codes(x_q: np.ndarray, x_zero_point: int) -> tuple[np.ndarray, int]:
    """``(u, z_u)``: uint8 codes and zero point with :math:`u - z_u = q_x - z_x`; int8 codes
    are moved up by 128 (flipping the sign bit), uint8 codes are returned as they are."""
    if x_q.dtype == np.int8:
        return (x_q.view(np.uint8) ^ np.uint8(0x80)), int(x_zero_point) + 128
    return x_q, int(x_zero_point)


def gemm_u8s8_numpy(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    r"""Reference: :math:`C_{mo} = \sum_k u_{mk} w_{ok}` in int64, returned modulo
    :math:`2^{32}` as int32 (the accumulator width of the fast paths). ``u``: uint8 (M, K),
    ``w``: int8 (O, K)."""
    return (u.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)


def gemm_u8s8_blas(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    r"""Portable exact route: :math:`C = \sum_b U_b W_b^T` over depth blocks :math:`b` of at
    most ``BLAS_BLOCK`` (= 514) columns, each block's float32 product exact because every
    partial sum is an integer of magnitude below :math:`514 \cdot 255 \cdot 128 < 2^{24}`;
    blocks are summed in int32 (wrapping as the reference)."""
    depth = u.shape[1]
    out = np.zeros((u.shape[0], w.shape[0]), dtype=np.int32)
    uf, wf = u.astype(np.float32), w.astype(np.float32)
    for start in range(0, depth, BLAS_BLOCK):
        block = uf[:, start:start + BLAS_BLOCK] @ wf[:, start:start + BLAS_BLOCK].T
        out += block.astype(np.int32)
    return out


# ---- VNNI micro-kernel ---------------------------------------------------------------------


@jit
def _pack_loops(w32, packed32):
    """packed32[(p quads + q) 64 + l] = w32[p + l, q]: the (C_pad, quads) int32 view of the
    padded weights (four depths per int32), one panel of 64 channels at a time."""
    channels, quads = w32.shape
    for p in range(0, channels, PANEL):
        for q in range(quads):
            base = (p * quads + q * PANEL)
            for lane in range(PANEL):
                packed32[base + lane] = w32[p + lane, q]


def pack_weights(w: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(packed, quads, channels_pad)``: int8 weights (O, K) in VNNI panel order, depth
    padded to ``4 quads`` and channels to a multiple of 64 with zeros:
    ``packed[4 ((p quads + q) 64 + l) + t] = w[p + l, 4 q + t]`` for the panel of 64 channels
    starting at ``p``; ``channels_pad`` is O rounded up to 16 (the columns computed)."""
    outputs, depth = w.shape
    quads = -(-depth // 4)
    padded = np.zeros((-(-outputs // PANEL) * PANEL, 4 * quads), dtype=np.int8)
    padded[:outputs, :depth] = w
    packed = np.empty(padded.size, dtype=np.int8)
    _pack_loops(padded.view(np.int32), packed.view(np.int32))
    return packed, quads, -(-outputs // 16) * 16


class PackedWeights(NamedTuple):
    r"""int8 weights in VNNI panel order (``pack_weights``), their row sums
    :math:`\sum_k w_{ok}` (int64) and the per-panel tables ``run_tiles`` reads."""
    packed: np.ndarray
    column_sums: np.ndarray
    quads: int
    channels_pad: int
    panel_starts: np.ndarray   # b0: byte offset of each panel
    quad_offsets: np.ndarray   # b_off: 256 q
    vectors: np.ndarray        # zmm vectors of 16 channels computed per panel
    zeros: np.ndarray          # crow: every panel writes rows from 0
    columns: np.ndarray        # ccol: first channel of each panel


_PACKED: dict[int, tuple] = {}


def packed_weights(w: np.ndarray) -> PackedWeights:
    """``PackedWeights`` of int8 weights (O, ...) read as the (O, K) matrix
    ``w.reshape(O, -1)``. Remembered for a read-only array that owns its data (its contents
    cannot change; ``IntegerModel`` freezes its weights so) until the array is freed; computed
    afresh for any other array."""
    key = id(w)
    entry = _PACKED.get(key)
    if entry is not None and entry[0]() is w:
        return entry[1]
    matrix = w.reshape(w.shape[0], -1)
    packed, quads, channels_pad = pack_weights(matrix)
    panels = np.arange(0, channels_pad, PANEL)
    result = PackedWeights(packed, matrix.sum(axis=1, dtype=np.int64), quads, channels_pad,
                           panels * 4 * quads, PANEL * 4 * np.arange(quads),
                           np.minimum(channels_pad - panels, PANEL) // 16,
                           np.zeros_like(panels), panels)
    if not w.flags.writeable and w.flags.owndata:
        _PACKED[key] = (weakref.ref(w, lambda _, key=key: _PACKED.pop(key, None)), result)
    return result


def padded_rows(u: np.ndarray, quads: int) -> np.ndarray:
    """u (M, K) copied into zeros of shape (M rounded up to ``ROWS``, 4 quads)."""
    rows = -(-u.shape[0] // ROWS) * ROWS
    a = np.zeros((rows, 4 * quads), dtype=np.uint8)
    a[:u.shape[0], :u.shape[1]] = u
    return a


def vnni_product(a: np.ndarray, bases: np.ndarray, rows: int, step: int, offsets: np.ndarray,
                 w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""``(c, column_sums)``: the VNNI product over rows addressed in the flat uint8 buffer
    ``a`` (``HAVE_VNNI`` only),

    .. math::
        c[s\,R + m, o] = \sum_q \sum_{t<4} a[\mathrm{bases}_s + m\,\mathrm{step}
                         + \mathrm{offsets}_q + t]\; W[o, 4q + t]

    for segments s, rows m < R = ``rows`` (a multiple of ``ROWS``) and W the weights ``w``
    (O, ...) as packed by ``packed_weights(w)``; ``bases`` and ``offsets`` int64
    arrays; c is int32 (S R, O_pad), wrapping
    modulo :math:`2^{32}`. Dense rows are one segment with ``step`` = the row length and
    ``offsets`` = 4q; a convolution's patch rows likewise.
    Runs ``minnet.kernels.microkernel``'s ``u8s8`` tiles, 4 rows by up to 64 channels.
    """
    if not HAVE_VNNI:
        raise RuntimeError("the VNNI kernel needs Numba and a CPU with AVX512-VNNI")
    pw = packed_weights(w)
    if rows % ROWS or offsets.shape != (pw.quads,):
        raise ValueError(f"rows must be a multiple of {ROWS} and offsets of shape ({pw.quads},), "
                         f"got {rows} and {offsets.shape}")
    row_table = (bases[:, None] + step * np.arange(rows)).reshape(-1)
    c = np.empty((row_table.size, pw.channels_pad), dtype=np.int32)
    run_tiles(a, row_table, offsets, pw.packed, pw.panel_starts, pw.quad_offsets, pw.vectors,
              pw.zeros, pw.columns, c)
    return c, pw.column_sums


def gemm_u8s8_vnni(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """VNNI micro-kernel route (``HAVE_VNNI`` only); same result as ``gemm_u8s8_numpy``."""
    quads = -(-u.shape[1] // 4)
    a = padded_rows(u, quads)
    c, _ = vnni_product(a.reshape(-1), np.zeros(1, np.int64), a.shape[0], a.shape[1],
                        4 * np.arange(quads), w)
    return c[:u.shape[0], :w.shape[0]]


gemm_u8s8 = gemm_u8s8_vnni if HAVE_VNNI else gemm_u8s8_blas
