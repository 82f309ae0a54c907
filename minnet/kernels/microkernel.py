r"""Register-tiled micro-kernels emitted as LLVM IR from Numba: the inner loop of the GEMM-like
kernels (indirect / implicit convolution, exact 8-bit products).

One tile computes, for rows r < R, vectors j < J and lanes l < L,

.. math::
    c[c_0 + r\,c_s + L j + l] = \sum_{q < Q} \mathrm{op}\big(
        a[\mathrm{rows}_{r_0 + r} + \mathrm{a\_off}_q],\ b[b_0 + \mathrm{b\_off}_q + L j + l]\big)

with the :math:`R \times J` accumulators in vector registers for the whole depth loop: one
scalar of ``a`` per row and depth is broadcast to every lane, one vector of ``b`` per depth is
shared by every row (a rank-1 update per depth, the micro-kernel of Goto & van de Geijn 2008,
"Anatomy of high-performance matrix multiplication", section 6). Addressing rows and depths
through offset tables lets the same tile run a dense matrix product, a convolution over the
padded input itself (depth offsets = kernel taps) and the indirect convolution (row offsets =
output positions; Dukhan 2019, "The indirect convolution algorithm").

Kinds: ``"f32"`` / ``"f64"``, fused multiply-add (``llvm.fma``) on 16 float32 / 8 float64
lanes; ``"u8s8"``, AVX512-VNNI ``vpdpbusd``: ``a`` holds four unsigned bytes per depth (read
as one 32-bit word), ``b`` 16 lanes of four signed bytes, each lane adding their four
products to an int32 accumulator (Intel SDM, VPDPBUSD); ``"s8u8w"`` (sliding windows), the
same instruction with the roles swapped: ``a`` holds four signed bytes per depth (weights),
and lane l of a ``b`` vector is the four unsigned bytes ``b[b_0 + off_q + 16 j + l + t]``,
t < 4, built from one unaligned load by ``vpermb`` (AVX512-VBMI) — 16 neighbouring windows
of four bytes, which is what an output position of a stride-1 convolution reads from one
kernel row. Offsets count elements of each array (bytes for the 8-bit kinds; a ``u8s8``
vector is 64 bytes, an ``s8u8w`` vector advances 16).

Only built when Numba is installed; ``HAVE_AVX512`` / ``HAVE_VNNI`` say whether the host can
run the 512-bit kinds. The NumPy references live beside the kernels that use a tile
(``minnet.kernels.conv_direct``, ``optim.quant.int_gemm``); the tests compare against them.
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import HAVE_NUMBA

# Rows per tile: R x J accumulators + J vectors + 1 broadcast fit the 32 zmm registers.
ROWS = {"f32": 6, "f64": 6, "u8s8": 4, "s8u8w": 6}
# Lanes per vector and elements of b per vector.
LANES = {"f32": 16, "f64": 8, "u8s8": 16, "s8u8w": 16}
B_STEP = {"f32": 16, "f64": 8, "u8s8": 64, "s8u8w": 16}
# bytes a vector load of b reads past b_step: the s8u8w windows load 64 bytes per 16 lanes
B_EXTRA = {"f32": 0, "f64": 0, "u8s8": 0, "s8u8w": 48}
# the windows' byte shuffle: lane l, byte t <- byte l + t of the load
WINDOWS = [l + t for l in range(16) for t in range(4)]
MAX_VECTORS = 4


def _host_features() -> dict:
    if not HAVE_NUMBA:
        return {}
    try:
        from llvmlite import binding
        return dict(binding.get_host_cpu_features())
    except (ImportError, RuntimeError):  # pragma: no cover - unusual llvmlite builds
        return {}


_FEATURES = _host_features()
HAVE_AVX512 = bool(_FEATURES.get("avx512f", False))
HAVE_VNNI = HAVE_AVX512 and bool(_FEATURES.get("avx512vnni", False))
HAVE_VBMI = HAVE_VNNI and bool(_FEATURES.get("avx512vbmi", False))


_KINDS = {"uint8": "u8s8", "int8": "s8u8w", "float32": "f32", "float64": "f64"}
_KIND_OF_DTYPE = {np.dtype(name): kind for name, kind in _KINDS.items()}


def _kind(dtype) -> str:
    return _KIND_OF_DTYPE[dtype] if dtype in _KIND_OF_DTYPE else _KINDS[str(dtype)]


def _tile_intrinsic():
    """The Numba intrinsic ``tile(a, rows, r0, a_off, b, b0, b_off, c, c0, c_stride, depth,
    vectors)`` of the module docstring; the kind follows a's dtype (uint8: ``u8s8``, int8:
    ``s8u8w``) and J =
    ``vectors`` must be a literal int, R = ``ROWS[kind]``."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic(prefer_literal=True)
    def tile(typingctx, a, rows, r0, a_off, b, b0, b_off, c, c0, c_stride, depth, vectors):
        if not isinstance(vectors, types.IntegerLiteral):
            return None
        kind, count = _kind(a.dtype), vectors.literal_value
        rows_per_tile, lanes, b_step = ROWS[kind], LANES[kind], B_STEP[kind]
        if kind in ("u8s8", "s8u8w"):
            scalar = ir.IntType(32)
            zero = [0] * lanes
        else:
            scalar = ir.FloatType() if kind == "f32" else ir.DoubleType()
            zero = [0.0] * lanes
        vector = ir.VectorType(scalar, lanes)
        sig = types.void(a, rows, r0, a_off, b, b0, b_off, c, c0, c_stride, depth, vectors)

        def codegen(context, builder, signature, args):
            r0, b0, c0, c_stride, depth = args[2], args[5], args[8], args[9], args[10]
            index = r0.type

            def const(value):
                return ir.Constant(index, value)

            def pointer(position):
                array = context.make_array(signature.args[position])(context, builder,
                                                                     args[position])
                return array.data

            def element(base, offset, pointee):
                """Address of ``base[offset]`` read as ``pointee`` (unaligned)."""
                return builder.bitcast(builder.gep(base, [offset]), pointee.as_pointer())

            a_ptr, rows_ptr, a_off_ptr = pointer(0), pointer(1), pointer(3)
            b_ptr, b_off_ptr, c_ptr = pointer(4), pointer(6), pointer(7)
            if kind in ("u8s8", "s8u8w"):
                op = builder.module.declare_intrinsic(
                    "llvm.x86.avx512.vpdpbusd.512",
                    fnty=ir.FunctionType(vector, [vector, vector, vector]))
            else:
                name = f"llvm.fma.v{lanes}{'f32' if kind == 'f32' else 'f64'}"
                op = builder.module.declare_intrinsic(
                    name, fnty=ir.FunctionType(vector, [vector, vector, vector]))
            row_base = [builder.load(builder.gep(rows_ptr, [builder.add(r0, const(r))]))
                        for r in range(rows_per_tile)]
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vector, zero))
                    for _ in range(count)] for _ in range(rows_per_tile)]
            splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            with cgutils.for_range(builder, depth) as loop:
                q = loop.index
                b_at = builder.add(b0, builder.load(builder.gep(b_off_ptr, [q])))
                if kind == "s8u8w":
                    bytes64 = ir.VectorType(ir.IntType(8), 64)
                    permute = builder.module.declare_intrinsic(
                        "llvm.x86.avx512.permvar.qi.512",
                        fnty=ir.FunctionType(bytes64, [bytes64, bytes64]))
                    windows = ir.Constant(bytes64, WINDOWS)
                    b_vec = [builder.bitcast(builder.call(permute, [builder.load(
                        element(b_ptr, builder.add(b_at, const(b_step * j)), bytes64), align=1),
                        windows]), vector) for j in range(count)]
                else:
                    b_vec = [builder.load(element(b_ptr, builder.add(b_at, const(b_step * j)),
                                                  vector), align=1) for j in range(count)]
                a_at = builder.load(builder.gep(a_off_ptr, [q]))
                for r in range(rows_per_tile):
                    value = builder.load(element(a_ptr, builder.add(row_base[r], a_at), scalar),
                                         align=1)
                    lane0 = builder.insert_element(ir.Constant(vector, None), value,
                                                   ir.Constant(ir.IntType(32), 0))
                    splat = builder.shuffle_vector(lane0, ir.Constant(vector, None), splat_mask)
                    for j in range(count):
                        total = builder.load(acc[r][j])
                        if kind == "u8s8":
                            total = builder.call(op, [total, splat, b_vec[j]])
                        elif kind == "s8u8w":
                            total = builder.call(op, [total, b_vec[j], splat])
                        else:
                            total = builder.call(op, [splat, b_vec[j], total])
                        builder.store(total, acc[r][j])
            for r in range(rows_per_tile):
                row = builder.add(c0, builder.mul(const(r), c_stride))
                for j in range(count):
                    target = element(c_ptr, builder.add(row, const(lanes * j)), vector)
                    builder.store(builder.load(acc[r][j]), target, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return tile


if HAVE_AVX512:
    from minnet.kernels.backend import jit

    tile = _tile_intrinsic()

    @jit
    def _bounds_ok(a, rows, step, scalar, a_off, b, b0, b_off, b_step, b_extra, vectors, crow,
                   ccol, c, lanes):
        """Every address a tile of ``_run_tiles`` touches lies inside its array."""
        if rows.size % step or b_off.size != a_off.size or a_off.size == 0:
            return False
        low, high = rows.min() + a_off.min(), rows.max() + a_off.max() + scalar
        if low < 0 or high > a.size:
            return False
        for k in range(b0.size):
            if (b0[k] + b_off.min() < 0
                    or b0[k] + b_off.max() + b_step * vectors[k] + b_extra > b.size):
                return False
            if crow[k] < 0 or crow[k] + rows.size > c.shape[0]:
                return False
            if ccol[k] < 0 or ccol[k] + lanes * vectors[k] > c.shape[1]:
                return False
        return True

    @jit
    def _run_tiles(a, rows, step, a_off, b, b0, b_off, vectors, crow, ccol, c):
        stride, depth = c.shape[1], a_off.size
        flat = c.reshape(-1)
        for k in range(b0.size):
            bk, count = b0[k], vectors[k]
            for m in range(0, rows.size, step):
                ck = (crow[k] + m) * stride + ccol[k]
                if count == 4:
                    tile(a, rows, m, a_off, b, bk, b_off, flat, ck, stride, depth, 4)
                elif count == 3:
                    tile(a, rows, m, a_off, b, bk, b_off, flat, ck, stride, depth, 3)
                elif count == 2:
                    tile(a, rows, m, a_off, b, bk, b_off, flat, ck, stride, depth, 2)
                else:
                    tile(a, rows, m, a_off, b, bk, b_off, flat, ck, stride, depth, 1)


    @jit
    def checked_tiles(a, rows, step, scalar, a_off, b, b0, b_off, b_step, b_extra, vectors,
                      crow, ccol, c, lanes):
        """``_run_tiles`` if ``_bounds_ok``; returns whether it ran (callable from Numba)."""
        if not _bounds_ok(a, rows, step, scalar, a_off, b, b0, b_off, b_step, b_extra, vectors,
                          crow, ccol, c, lanes):
            return False
        _run_tiles(a, rows, step, a_off, b, b0, b_off, vectors, crow, ccol, c)
        return True


def run_tiles(a, rows, a_off, b, b0, b_off, vectors, crow, ccol, c) -> None:
    r"""Every tile of a blocked product, in place in c (2-D): for each column block k
    (``b0[k]``, J = ``vectors[k]`` in 1..4, output at row ``crow[k]``, column ``ccol[k]``) and
    each tile of ``ROWS`` rows m of ``rows`` (whose length is a multiple of ``ROWS``),

    c[crow_k + m + r, ccol_k + L j + l] = sum_q op(a[rows[m + r] + a_off[q]],
                                                   b[b0_k + b_off[q] + L j + l]).

    ``a``, ``b``, ``c`` C-contiguous; the index arrays int64. Every address is checked to lie
    inside its array before any tile runs (the tiles themselves do not check)."""
    kind = _kind(a.dtype)
    needs = {"u8s8": (HAVE_VNNI, "AVX512-VNNI"), "s8u8w": (HAVE_VBMI, "AVX512-VNNI and VBMI")}
    available, features = needs.get(kind, (HAVE_AVX512, "AVX-512"))
    if not available:
        raise RuntimeError(f"the {kind} micro-kernel needs Numba and a CPU with {features}")
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous
            and c.ndim == 2):
        raise ValueError("a, b and a 2-D c must be C-contiguous")
    step, scalar = ROWS[kind], 4 if kind in ("u8s8", "s8u8w") else 1
    if not checked_tiles(a, rows, step, scalar, a_off, b, b0, b_off, B_STEP[kind], B_EXTRA[kind],
                         vectors, crow, ccol, c, LANES[kind]):
        raise ValueError(f"tile addresses fall outside a {a.shape}, b {b.shape} or c {c.shape} "
                         f"(or rows {rows.shape} is not a multiple of {step})")
