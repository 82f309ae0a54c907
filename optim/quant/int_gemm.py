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
- ``gemm_u8s8_vnni``: a register-tiled micro-kernel, 4 activation rows by up to 64 output
  channels (16 zmm accumulators), the inner loop emitted as LLVM IR calling
  ``llvm.x86.avx512.vpdpbusd.512`` from Numba. Weights are packed once per call in panels
  ``[panel][k / 4][channel][4]`` so that one 64-byte load holds 16 channels times 4 depths;
- ``gemm_u8s8_blas``: the portable route, float32 BLAS on depth blocks short enough that every
  partial sum is an integer below :math:`2^{24}` (exact in float32), summed in int32.

``HAVE_VNNI`` (the host CPU reports ``avx512vnni`` and Numba is installed) selects at import the
fast path ``gemm_u8s8``: VNNI, else the BLAS blocks.
"""
from __future__ import annotations

import weakref

import numpy as np

from minnet.kernels.backend import HAVE_NUMBA, jit

# Channels per packed weight panel: 4 zmm registers of 16 int32 lanes.
PANEL = 64
# Activation rows per micro-kernel tile (4 rows x 4 vectors = 16 accumulators).
ROWS = 4
# Largest |u * w|: 255 * 128. A float32 sum of BLAS_BLOCK such products stays below 2**24.
BLAS_BLOCK = (2**24 - 1) // (255 * 128)


def _host_has_vnni() -> bool:
    if not HAVE_NUMBA:
        return False
    try:
        from llvmlite import binding
        return bool(binding.get_host_cpu_features().get("avx512vnni", False))
    except (ImportError, RuntimeError):  # pragma: no cover - unusual llvmlite builds
        return False


HAVE_VNNI = _host_has_vnni()


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


def _make_tile(vectors: int):
    """A Numba intrinsic ``tile(a, a_off, a_step, offsets, b, b_off, c, c_off, c_stride,
    quads)``:

    c[c_off + r c_stride + 16 j + l] = sum_q sum_t a[a_off + r a_step + offsets[q] + t]
                                                   * b[b_off + 64 vectors q + 64 j + 4 l + t]

    for rows r < ``ROWS``, vectors j < ``vectors``, lanes l < 16, depth quads q < ``quads``:
    a's four bytes at each row's address are broadcast to every lane, b holds 16 lanes of four
    bytes per vector. The ROWS x vectors accumulators stay in zmm registers for the whole depth
    loop.
    """
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    i8, i32 = ir.IntType(8), ir.IntType(32)
    v16 = ir.VectorType(i32, 16)

    @intrinsic
    def tile(typingctx, a, a_off, a_step, offsets, b, b_off, c, c_off, c_stride, quads):
        sig = types.void(a, a_off, a_step, offsets, b, b_off, c, c_off, c_stride, quads)

        def codegen(context, builder, signature, args):
            a_arr, a_off, a_step, off_arr, b_arr, b_off, c_arr, c_off, c_stride, quads = args
            index = a_off.type

            def const(v):
                return ir.Constant(index, v)

            def data(position, value, pointee):
                array = context.make_array(signature.args[position])(context, builder, value)
                return builder.bitcast(array.data, pointee.as_pointer())

            a_ptr, off_ptr = data(0, a_arr, i8), data(3, off_arr, index)
            b_ptr, c_ptr = data(4, b_arr, i8), data(6, c_arr, i32)
            dpbusd = builder.module.declare_intrinsic(
                "llvm.x86.avx512.vpdpbusd.512", fnty=ir.FunctionType(v16, [v16, v16, v16]))
            zero = ir.Constant(v16, [0] * 16)
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                   for _ in range(ROWS)]
            with cgutils.for_range(builder, quads) as loop:
                q = loop.index
                b_base = builder.add(b_off, builder.mul(q, const(64 * vectors)))
                b_vec = [builder.load(builder.bitcast(
                    builder.gep(b_ptr, [builder.add(b_base, const(64 * j))]), v16.as_pointer()),
                    align=1) for j in range(vectors)]
                a_base = builder.add(a_off, builder.load(builder.gep(off_ptr, [q])))
                for r in range(ROWS):
                    a_at = builder.add(a_base, builder.mul(const(r), a_step))
                    quad = builder.load(builder.bitcast(builder.gep(a_ptr, [a_at]),
                                                        i32.as_pointer()), align=1)
                    lane0 = builder.insert_element(ir.Constant(v16, None), quad,
                                                   ir.Constant(i32, 0))
                    splat = builder.shuffle_vector(lane0, ir.Constant(v16, None),
                                                   ir.Constant(v16, [0] * 16))
                    for j in range(vectors):
                        total = builder.call(dpbusd, [builder.load(acc[r][j]), splat, b_vec[j]])
                        builder.store(total, acc[r][j])
            for r in range(ROWS):
                row = builder.add(c_off, builder.mul(const(r), c_stride))
                for j in range(vectors):
                    at = builder.gep(c_ptr, [builder.add(row, const(16 * j))])
                    builder.store(builder.load(acc[r][j]), builder.bitcast(at, v16.as_pointer()),
                                  align=1)
            return context.get_dummy_value()

        return sig, codegen

    return tile


if HAVE_VNNI:
    _tile1, _tile2, _tile3, _tile4 = (_make_tile(v) for v in (1, 2, 3, 4))

    @jit
    def _vnni_loops(a, bases, rows, step, offsets, quads, packed, c):
        """Every tile of c (len(bases) rows, O_pad): ``vnni_product``'s formula."""
        channels = c.shape[1]
        c_flat = c.reshape(-1)
        for p in range(0, channels, PANEL):
            vectors = min(PANEL, channels - p) // 16
            b_off = p * 4 * quads  # the panels before p are full (64 channels each)
            for s in range(bases.size):
                for m in range(0, rows, ROWS):
                    args = (a, bases[s] + m * step, step, offsets, packed, b_off, c_flat,
                            (s * rows + m) * channels + p, channels, quads)
                    if vectors == 4:
                        _tile4(*args)
                    elif vectors == 3:
                        _tile3(*args)
                    elif vectors == 2:
                        _tile2(*args)
                    else:
                        _tile1(*args)


@jit
def _pack_loops(w32, packed32):
    """packed32[panel start * quads + width q + l] = w32[p + l, q]: the (C_pad, quads) int32
    view of the padded weights (four depths per int32), one panel of ``width`` channels at a
    time."""
    channels, quads = w32.shape
    for p in range(0, channels, PANEL):
        width = min(PANEL, channels - p)
        base = p * quads
        for q in range(quads):
            for lane in range(width):
                packed32[base + q * width + lane] = w32[p + lane, q]


def pack_weights(w: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(packed, quads, channels_pad)``: int8 weights (O, K) in VNNI panel order, depth
    padded to ``4 quads`` and channels to ``channels_pad`` (a multiple of 16) with zeros:
    ``packed[4 (p quads + width q + l) + t] = w[p + l, 4 q + t]`` for the panel of ``width``
    channels starting at ``p``."""
    outputs, depth = w.shape
    quads, channels_pad = -(-depth // 4), -(-outputs // 16) * 16
    padded = np.zeros((channels_pad, 4 * quads), dtype=np.int8)
    padded[:outputs, :depth] = w
    packed = np.empty(channels_pad * 4 * quads, dtype=np.int8)
    _pack_loops(padded.view(np.int32), packed.view(np.int32))
    return packed, quads, channels_pad


_PACKED: dict[tuple[int, bool], tuple] = {}


def packed_weights(w: np.ndarray, quad_rows: bool = False) -> tuple[np.ndarray, np.ndarray, int,
                                                                    int]:
    r"""``(packed, column_sums, quads, channels_pad)`` of int8 weights (O, ...) read as the
    (O, K) matrix ``w.reshape(O, -1)``: ``pack_weights`` and :math:`\sum_k w_{ok}` (int64).
    With ``quad_rows`` the last axis is first zero-padded to a multiple of 4 (every quad then
    lies in one kernel row, the layout of ``conv_quad_offsets``). Remembered for a read-only
    array that owns its data (its contents cannot change; ``IntegerModel`` freezes its weights
    so) until the array is freed; computed afresh for any other array."""
    key = (id(w), quad_rows)
    entry = _PACKED.get(key)
    if entry is not None and entry[0]() is w:
        return entry[1]
    padded = w
    if quad_rows:
        width = -(-w.shape[-1] // 4) * 4
        padded = np.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, width - w.shape[-1])])
    matrix = padded.reshape(w.shape[0], -1)
    packed, quads, channels_pad = pack_weights(matrix)
    result = (packed, matrix.sum(axis=1, dtype=np.int64), quads, channels_pad)
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
                 w: np.ndarray, quad_rows: bool = False) -> tuple[np.ndarray, np.ndarray]:
    r"""``(c, column_sums)``: the VNNI product over rows addressed in the flat uint8 buffer
    ``a`` (``HAVE_VNNI`` only),

    .. math::
        c[s\,R + m, o] = \sum_q \sum_{t<4} a[\mathrm{bases}_s + m\,\mathrm{step}
                         + \mathrm{offsets}_q + t]\; W[o, 4q + t]

    for segments s, rows m < R = ``rows`` (a multiple of ``ROWS``) and W the weights ``w``
    (O, ...) as packed by ``packed_weights(w, quad_rows)``; c is int32 (S R, O_pad), wrapping
    modulo :math:`2^{32}`. Dense rows are one segment with ``step`` = the row length and
    ``offsets`` = 4q; a convolution reads the padded input itself (``conv_quad_offsets``).
    """
    if not HAVE_VNNI:
        raise RuntimeError("the VNNI kernel needs Numba and a CPU with AVX512-VNNI")
    packed, column_sums, quads, channels_pad = packed_weights(w, quad_rows)
    bases, offsets = np.asarray(bases, np.int64), np.asarray(offsets, np.int64)
    if rows % ROWS or offsets.shape != (quads,):
        raise ValueError(f"rows must be a multiple of {ROWS} and offsets of shape ({quads},), "
                         f"got {rows} and {offsets.shape}")
    reach = int(bases.max()) + (rows - 1) * step + int(offsets.max()) + 4
    if a.ndim != 1 or int(bases.min()) < 0 or reach > a.size:
        raise ValueError(f"a must be a flat buffer of at least {reach} bytes, got {a.shape}")
    c = np.empty((bases.size * rows, channels_pad), dtype=np.int32)
    _vnni_loops(a, bases, rows, step, offsets, quads, packed, c)
    return c, column_sums


def gemm_u8s8_vnni(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """VNNI micro-kernel route (``HAVE_VNNI`` only); same result as ``gemm_u8s8_numpy``."""
    quads = -(-u.shape[1] // 4)
    a = padded_rows(u, quads)
    c, _ = vnni_product(a.reshape(-1), np.zeros(1, np.int64), a.shape[0], a.shape[1],
                        4 * np.arange(quads), w)
    return c[:u.shape[0], :w.shape[0]]


gemm_u8s8 = gemm_u8s8_vnni if HAVE_VNNI else gemm_u8s8_blas
