"""Integer ops of quantized graphs, in ONNX semantics (QDQ and QOperator formats): the ops
that quantized ONNX models hold (``QuantizeLinear``, ``DequantizeLinear``, ``QLinearConv``,
``QLinearMatMul``, ``MatMulInteger``, ``ConvInteger``, ``DynamicQuantizeLinear``) and the
com.microsoft contrib ops that onnxruntime runs and ``optim.quant.graph_convert`` emits
(``QGemm``, ``QLinearAdd``, ``QLinearConcat``, ``QLinearAveragePool``,
``QLinearGlobalAveragePool``). Registered in ``optim.graph.ops.OPS`` like every other op.

Not differentiable; computed exactly: integer codes, exact integer accumulators, and the float32
requantization that onnxruntime's CPU kernels use. The accumulators of QLinearConv, QGemm and
QLinearMatMul take ``optim.quant.int_gemm``'s exact u8·s8 product (the VNNI micro-kernel, else
float32 BLAS blocks) for int8 weights with zero point 0 under the Numba backend, and the exact
float64 reference otherwise.
Tests: ``tests/optim/graph/test_graph_onnx_ops.py`` (the ONNX-standard ops against onnxruntime),
``tests/optim/quant/test_graph_quant_ops.py`` (fast paths against the reference, the contrib
ops against onnxruntime and hand-worked cases).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from minnet.kernels.backend import get_backend
from minnet.ops import conv as C
from minnet.ops import pool as P
from minnet.tensor import Context
from optim.graph import dims as D
from optim.graph.ops import (Arrays, Types, _concatenate, _conv, _conv_window, _conv_work,
                             _export_as, _fail, _forward, _import_as, _in_elements, _matmul_work,
                             _out_elements, _pool, _pool_work, _register, matmul_shape)
from optim.graph.types import Node, TensorType, as_type


# ---- integer ops of quantized ONNX models (QDQ and QOperator formats) -------------------------
# Not differentiable; computed exactly: integer codes, int64 accumulators, and the float32
# requantization that onnxruntime's CPU kernels use.


def _qparam_shape(t: TensorType | None, x: TensorType, axis: int | None, what: str) -> None:
    if t is None:
        return
    if axis is None:
        if t.shape not in ((), (1,)):
            _fail(f"{what} {t.shape} must be a scalar for per-tensor quantization")
    elif len(t.shape) != 1 or not D.same(t.shape[0], x.shape[axis]):
        _fail(f"{what} {t.shape} must have {x.shape[axis]} entries along axis {axis}")


def _quantize_linear(types: Types, attrs: Mapping) -> TensorType:
    x, scale, zero = (list(types) + [None])[:3]
    axis = attrs["axis"]
    if axis is not None and not 0 <= axis < len(x.shape):
        _fail(f"axis {axis} is out of range for {len(x.shape)} dimensions")
    _qparam_shape(scale, x, axis, "scale")
    _qparam_shape(zero, x, axis, "zero point")
    return as_type(x.shape, attrs["dtype"])


def _per_axis(value: np.ndarray | None, axis: int | None) -> np.ndarray | None:
    """A scale / zero point as the scalar or 1-D array ``optim.quant.affine`` expects."""
    if value is None:
        return None
    return np.asarray(value).reshape(()) if axis is None else np.asarray(value)


def _quantize_linear_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    """q = saturate(round_half_even(x / s) + z) (ONNX QuantizeLinear; ``optim.quant.quantize``)."""
    from optim.quant.affine import quantize  # optim.quant imports optim.graph: no cycle at load
    x, scale, zero = (list(arrays) + [None])[:3]
    info = np.iinfo(attrs["dtype"])
    axis = attrs["axis"]
    zero = 0 if zero is None else _per_axis(zero, axis).astype(np.int64)
    q = quantize(x, _per_axis(scale, axis).astype(x.dtype), zero, int(info.min), int(info.max), axis)
    return q.astype(attrs["dtype"])


def _dequantize_linear(types: Types, attrs: Mapping) -> TensorType:
    x, scale, zero = (list(types) + [None])[:3]
    axis = attrs["axis"]
    if axis is not None and not 0 <= axis < len(x.shape):
        _fail(f"axis {axis} is out of range for {len(x.shape)} dimensions")
    if x.dtype.kind not in "iu":
        _fail(f"DequantizeLinear needs integer codes, got {x.dtype}")
    _qparam_shape(scale, x, axis, "scale")
    _qparam_shape(zero, x, axis, "zero point")
    return as_type(x.shape, scale.dtype)


def _dequantize_linear_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    """x = (q − z) · s (ONNX DequantizeLinear; ``optim.quant.dequantize``)."""
    from optim.quant.affine import dequantize
    q, scale, zero = (list(arrays) + [None])[:3]
    axis = attrs["axis"]
    zero = 0 if zero is None else _per_axis(zero, axis).astype(np.int64)
    return dequantize(q, _per_axis(scale, axis), zero, axis, dtype=scale.dtype)


def _q_axis(im, position: int) -> int | None:
    """Per-tensor (None) unless the scale is a vector; ONNX's ``axis`` (default 1) then."""
    if len(im.type(position).shape) == 0 or im.type(position).shape == (1,):
        return None
    ndim = len(im.type(0).shape)
    axis = im.attr("axis", 1)
    if not -ndim <= axis < ndim:
        raise im.invalid(f"axis {axis} is out of range for {ndim} dimensions")
    return axis % ndim


def _quantize_in(im) -> None:
    dtype = im.type(2).dtype if im.input(2) else np.dtype(np.uint8)
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        raise im.unsupported(f"quantization to {dtype}")
    im.emit("QuantizeLinear", im.inputs(), im.out(), axis=_q_axis(im, 1), dtype=dtype.name)


def _dequantize_in(im) -> None:
    im.emit("DequantizeLinear", im.inputs(), im.out(), axis=_q_axis(im, 1))


def _q_out(onnx_type: str) -> Callable:
    def handler(ex, node: Node, out: str) -> None:
        axis = node.attrs["axis"]
        ex.add(onnx_type, node.inputs, out, **({} if axis is None else {"axis": axis}))
    return handler


_register("QuantizeLinear", (2, 3), _quantize_linear, _quantize_linear_run, _out_elements,
          onnx_import={"QuantizeLinear": _quantize_in}, onnx_export=_q_out("QuantizeLinear"))
_register("DequantizeLinear", (2, 3), _dequantize_linear, _dequantize_linear_run, _out_elements,
          onnx_import={"DequantizeLinear": _dequantize_in}, onnx_export=_q_out("DequantizeLinear"))


def dynamic_qparams(x: np.ndarray) -> tuple[np.float32, np.uint8]:
    """Scale and zero point of ONNX ``DynamicQuantizeLinear`` (uint8): with
    m = min(0, min x), M = max(0, max x), s = (M − m)/255 and z = saturate(round_half_even(−m/s));
    an all-zero input gives s = 1, z = 0, as onnxruntime returns.
    Test: ``tests/optim/graph/test_graph_onnx_ops.py::test_dynamic_quantize_matches_onnxruntime``.
    """
    low = np.float32(min(0.0, float(x.min()) if x.size else 0.0))
    high = np.float32(max(0.0, float(x.max()) if x.size else 0.0))
    scale = np.float32((high - low) / np.float32(255))
    if scale == 0:
        return np.float32(1), np.uint8(0)
    return scale, np.uint8(np.clip(np.rint(-low / scale), 0, 255))


def _dynamic_scale_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    return np.asarray(dynamic_qparams(arrays[0])[0])


def _dynamic_zero_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    return np.asarray(dynamic_qparams(arrays[0])[1])


def _dynamic_in(im) -> None:
    """DynamicQuantizeLinear's three outputs as three IR nodes: scale, zero point, and a
    QuantizeLinear reading them."""
    if im.type(0).dtype != np.float32:
        raise im.unsupported(f"DynamicQuantizeLinear of {im.type(0).dtype}")
    y, scale, zero = (list(im.node.output) + ["", ""])[:3]
    scale = im.emit("DynamicQuantizeScale", (im.input(0),), scale or None)
    zero = im.emit("DynamicQuantizeZeroPoint", (im.input(0),), zero or None)
    if y:
        im.emit("QuantizeLinear", (im.input(0), scale, zero), y, axis=None, dtype="uint8")


def _dynamic_out(position: int) -> Callable:
    def handler(ex, node: Node, out: str) -> None:
        outputs = [ex.fresh(f"{out}.unused") for _ in range(3)]
        outputs[position] = out
        ex.add("DynamicQuantizeLinear", node.inputs, outputs)
    return handler


_register("DynamicQuantizeScale", (1, 1), lambda t, a: as_type((), np.float32), _dynamic_scale_run,
          _in_elements, onnx_import={"DynamicQuantizeLinear": _dynamic_in},
          onnx_export=_dynamic_out(1))
_register("DynamicQuantizeZeroPoint", (1, 1), lambda t, a: as_type((), np.uint8), _dynamic_zero_run,
          _in_elements, onnx_export=_dynamic_out(2))


def requantize_float(acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray,
                     dtype: np.dtype) -> np.ndarray:
    """y = saturate(round_half_even(float32(acc) · M) + z), M = s_a s_b / s_y in float32: the
    output stage of onnxruntime's QLinearConv / QLinearMatMul (MLAS ``RequantizeOutput``).
    Test: ``tests/optim/graph/test_graph_onnx_ops.py::test_qlinear_ops_match_onnxruntime``.
    """
    info = np.iinfo(dtype)
    y = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32)) + zero_point.astype(np.float32)
    return np.clip(y, info.min, info.max).astype(dtype)


def _codes(q: np.ndarray, zero: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """q − z as float64: products and sums of such integers stay exact below 2^53, so a float64
    GEMM or convolution returns the exact integer accumulator."""
    return q.astype(np.float64) - np.asarray(zero, np.float64).reshape(shape)


def integer_matmul_reference(a: np.ndarray, a_zero: Any, b: np.ndarray, b_zero: Any) -> np.ndarray:
    """acc = (a − z_a) @ (b − z_b), exact (float64 products and sums of integers below 2^53);
    a per-column z_b is allowed. Returned as int64.
    Test: ``tests/optim/graph/test_graph_onnx_ops.py::test_qlinear_ops_match_onnxruntime``."""
    column = (1, -1) if np.size(b_zero) > 1 else ()
    return np.rint(_codes(a, 0 if a_zero is None else a_zero, ())
                   @ _codes(b, 0 if b_zero is None else b_zero, column)).astype(np.int64)


def integer_conv_reference(x: np.ndarray, x_zero: Any, w: np.ndarray, w_zero: Any,
                           attrs: Mapping) -> np.ndarray:
    """acc = conv(pad(x − z_x), w − z_w) with ``attrs["pads"]`` (top, left, bottom, right), exact
    as ``integer_matmul_reference``; padding is a real 0 (the code z_x, known only at run time
    for a dynamically quantized input); a per-output-channel z_w is allowed. Returned as int64.
    Test: ``tests/optim/graph/test_graph_onnx_ops.py::test_onnxruntime_quantized_model_imports_and_runs``."""
    w_shape = (-1, 1, 1, 1) if np.size(w_zero) > 1 else ()
    top, left, bottom, right = attrs["pads"]
    codes = np.pad(_codes(x, 0 if x_zero is None else x_zero, ()),
                   ((0, 0), (0, 0), (top, bottom), (left, right)))
    acc = C.Conv2d.forward(Context((False,) * 2), codes,
                           _codes(w, 0 if w_zero is None else w_zero, w_shape), None,
                           stride=attrs["stride"], padding=(0, 0), dilation=attrs["dilation"],
                           groups=attrs["groups"])
    return np.rint(acc).astype(np.int64)


def u8s8_applies(x: np.ndarray, x_zero: Any, w: np.ndarray, w_zero: Any, depth: int) -> bool:
    """Whether ``int_gemm``'s exact u8·s8 product can compute Σ_k (x − z_x)(w − z_w): the Numba
    backend, 8-bit activation codes with one zero point, int8 weights with zero point 0, and a
    depth whose sum of u·w products fits int32 (depth · 255 · 128 < 2^31)."""
    return (get_backend() == "numba" and x.dtype in (np.uint8, np.int8) and np.size(x_zero) <= 1
            and w.dtype == np.int8 and (w_zero is None or not np.any(w_zero))
            and depth * 255 * 128 < 2**31)


def _u8s8_rows(rows: np.ndarray, zero_u: int, w: np.ndarray) -> np.ndarray:
    """Σ_k (u_mk − z_u) w_ok for unsigned rows u (M, K) and int8 w (O, K): ``gemm_u8s8`` (VNNI
    micro-kernel, else float32 BLAS blocks), corrected by −z_u Σ_k w_ok; int64 (M, O)."""
    from optim.quant.int_gemm import gemm_u8s8
    c = gemm_u8s8(np.ascontiguousarray(rows), np.ascontiguousarray(w))
    return c.astype(np.int64) - zero_u * w.sum(axis=1, dtype=np.int64)


def integer_gemm(a: np.ndarray, a_zero: Any, w: np.ndarray, w_zero: Any) -> np.ndarray:
    """acc[m, o] = Σ_k (a[m, k] − z_a)(w[o, k] − z_w[o]) for a (M, K) and weights w (O, K), exact,
    int64: ``int_gemm``'s u8·s8 product when ``u8s8_applies``, else the float64 reference.
    Test: ``tests/optim/quant/test_graph_quant_ops.py::test_fast_accumulators_equal_reference``."""
    if not u8s8_applies(a, a_zero, w, w_zero, a.shape[1]):
        return integer_matmul_reference(a, a_zero, w.T, w_zero)
    from optim.quant.int_gemm import unsigned_codes
    u, zero_u = unsigned_codes(a, 0 if a_zero is None else int(np.asarray(a_zero).reshape(())))
    return _u8s8_rows(u, zero_u, w)


def integer_matmul(a: np.ndarray, a_zero: Any, b: np.ndarray, b_zero: Any) -> np.ndarray:
    """acc = (a − z_a) @ (b − z_b), exact, int64: ``integer_gemm`` on the rows of a for a 2-D b,
    the reference otherwise (per-column z_b allowed)."""
    if b.ndim != 2 or a.ndim < 2:
        return integer_matmul_reference(a, a_zero, b, b_zero)
    acc = integer_gemm(a.reshape(-1, a.shape[-1]), a_zero, b.T, b_zero)
    return acc.reshape(a.shape[:-1] + b.shape[1:])


def integer_conv(x: np.ndarray, x_zero: Any, w: np.ndarray, w_zero: Any, attrs: Mapping) -> np.ndarray:
    """``integer_conv_reference``'s accumulator, for one group by ``int_gemm``'s u8·s8 product
    when ``u8s8_applies``: the unsigned codes padded with z_u (a real 0), Numba's im2col, one row
    per output position. Test: ``tests/optim/quant/test_graph_quant_ops.py::test_fast_accumulators_equal_reference``."""
    if attrs["groups"] != 1 or not u8s8_applies(x, x_zero, w, w_zero, math.prod(w.shape[1:])):
        return integer_conv_reference(x, x_zero, w, w_zero, attrs)
    from minnet.kernels.im2col import im2col_numba
    from optim.quant.int_gemm import unsigned_codes
    u, zero_u = unsigned_codes(x, 0 if x_zero is None else int(np.asarray(x_zero).reshape(())))
    top, left, bottom, right = attrs["pads"]
    upad = np.pad(u, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=zero_u)
    cols = im2col_numba(upad, w.shape[2:], attrs["stride"], (0, 0), attrs["dilation"])
    n, depth = cols.shape[:2]
    acc = _u8s8_rows(cols.transpose(0, 2, 1).reshape(-1, depth), zero_u, w.reshape(w.shape[0], -1))
    oh, ow = _padded_conv(as_type(x.shape, x.dtype), as_type(w.shape, w.dtype), None, attrs).shape[2:]
    return np.ascontiguousarray(acc.reshape(n, oh * ow, -1).transpose(0, 2, 1)).reshape(n, -1, oh, ow)


def _qlinear_matmul(types: Types, attrs: Mapping) -> TensorType:
    a, b, y_zero = types[0], types[3], types[7]
    return as_type(matmul_shape(a.shape, b.shape), y_zero.dtype)


def _qlinear_matmul_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    a, a_s, a_z, b, b_s, b_z, y_s, y_z = arrays[:8]
    m = (np.float32(a_s) * np.asarray(b_s, np.float32)) / np.float32(y_s)
    return requantize_float(integer_matmul(a, a_z, b, b_z), m, np.asarray(y_z), y_z.dtype)


def _matmul_integer(types: Types, attrs: Mapping) -> TensorType:
    return as_type(matmul_shape(types[0].shape, types[1].shape), np.int32)


def _matmul_integer_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    a, b, a_z, b_z = (list(arrays) + [None] * 4)[:4]
    return integer_matmul(a, a_z, b, b_z).astype(np.int32)


def _padded_conv(x: TensorType, w: TensorType, bias: TensorType | None, attrs: Mapping) -> TensorType:
    """The conv rule on the input padded by ``attrs["pads"]`` (four ints >= 0)."""
    pads = attrs["pads"]
    if len(pads) != 4 or any(not isinstance(p, (int, np.integer)) or p < 0 for p in pads):
        _fail(f"pads must be four integers >= 0, got {pads!r}")
    if len(x.shape) != 4:
        _fail(f"conv needs a 4-D input, got {x.shape}")
    padded = as_type(x.shape[:2] + (D.add(x.shape[2], pads[0] + pads[2]),
                                    D.add(x.shape[3], pads[1] + pads[3])), x.dtype)
    return _conv([padded, w, bias], {**attrs, "padding": (0, 0)})


def _qlinear_conv(types: Types, attrs: Mapping) -> TensorType:
    bias = types[8] if len(types) > 8 else None
    return as_type(_padded_conv(types[0], types[3], bias, attrs).shape, types[7].dtype)


def _qlinear_conv_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    x, x_s, x_z, w, w_s, w_z, y_s, y_z = arrays[:8]
    bias = arrays[8] if len(arrays) > 8 else None
    acc = integer_conv(x, x_z, w, w_z, attrs)
    if bias is not None:
        acc = acc + bias.astype(np.float64).reshape(-1, 1, 1)
    m = (np.float32(x_s) * np.asarray(w_s, np.float32)) / np.float32(y_s)
    return requantize_float(acc, m.reshape(-1, 1, 1) if m.ndim else m, np.asarray(y_z), y_z.dtype)


def _conv_integer(types: Types, attrs: Mapping) -> TensorType:
    return as_type(_padded_conv(types[0], types[1], None, attrs).shape, np.int32)


def _conv_integer_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    x, w, x_z, w_z = (list(arrays) + [None] * 4)[:4]
    return integer_conv(x, x_z, w, w_z, attrs).astype(np.int32)


def _import_integer_conv(op: str, w_at: int) -> Callable:
    """QLinearConv / ConvInteger: ONNX's pads, in ONNX's order, as the op's ``pads``."""
    def handler(im) -> None:
        kernel, strides, dilations, pads = _conv_window(im, im.type(w_at).shape)
        top, left, bottom, right = pads
        im.emit(op, im.inputs(), im.out(), stride=strides, pads=(top, left, bottom, right),
                dilation=dilations, groups=int(im.attr("group", 1)))
    return handler


def _export_integer_conv(w_at: int) -> Callable:
    def handler(ex, node: Node, out: str) -> None:
        top, left, bottom, right = node.attrs["pads"]
        ex.add(node.op, node.inputs, out, kernel_shape=list(ex.types[node.inputs[w_at]].shape[2:]),
               strides=list(node.attrs["stride"]), dilations=list(node.attrs["dilation"]),
               pads=[top, left, bottom, right], group=node.attrs["groups"])
    return handler


_register("QLinearMatMul", (8, 8), _qlinear_matmul, _qlinear_matmul_run, _matmul_work,
          onnx_import={"QLinearMatMul": _import_as("QLinearMatMul")},
          onnx_export=_export_as("QLinearMatMul"))
_register("MatMulInteger", (2, 4), _matmul_integer, _matmul_integer_run, _matmul_work,
          onnx_import={"MatMulInteger": _import_as("MatMulInteger")},
          onnx_export=_export_as("MatMulInteger"))
_register("QLinearConv", (8, 9), _qlinear_conv, _qlinear_conv_run,
          lambda t, o, a: o.size * math.prod(t[3].shape[1:]),
          onnx_import={"QLinearConv": _import_integer_conv("QLinearConv", 3)},
          onnx_export=_export_integer_conv(3))
_register("ConvInteger", (2, 4), _conv_integer, _conv_integer_run, _conv_work,
          onnx_import={"ConvInteger": _import_integer_conv("ConvInteger", 1)},
          onnx_export=_export_integer_conv(1))


# ---- com.microsoft contrib ops (onnxruntime's QOperator format) ------------------------------
# Exported in the "com.microsoft" domain. Each run mirrors the onnxruntime CPU kernel's
# arithmetic: float32 scale ratios, round half to even, saturation to the output dtype.

MS = "com.microsoft"


def _saturate(v: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """saturate(round_half_even(v) + z) in the dtype of the zero point ``z``."""
    info = np.iinfo(zero_point.dtype)
    return np.clip(np.rint(v) + np.float32(zero_point), info.min, info.max).astype(zero_point.dtype)


def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> np.ndarray:
    """s (q − z) in float32 (per tensor)."""
    return np.float32(scale) * (q.astype(np.float32) - np.float32(0 if zero is None else zero))


def _ms_export(onnx_type: str, **attrs_to: Callable[[Mapping], Any]) -> Callable:
    def handler(ex, node: Node, out: str) -> None:
        ex.add(onnx_type, node.inputs, out, domain=MS,
               **{theirs: get(node.attrs) for theirs, get in attrs_to.items()})
    return handler


def _qgemm(types: Types, attrs: Mapping) -> TensorType:
    a, b = types[0], types[3]
    y_scale, y_zero = (list(types) + [None] * 9)[7:9]
    if y_scale is None or y_zero is None:
        _fail("QGemm needs y_scale and y_zero_point (a float output is not supported)")
    if len(a.shape) != 2 or len(b.shape) != 2:
        _fail(f"QGemm needs 2-D A and B, got {a.shape} and {b.shape}")
    k_b, n = (b.shape[1], b.shape[0]) if attrs["trans_b"] else b.shape
    if not D.same(a.shape[1], k_b):
        _fail(f"QGemm: A {a.shape} and B {b.shape} (trans_b={attrs['trans_b']}) do not match")
    return as_type((a.shape[0], n), y_zero.dtype)


def _qgemm_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    """y = saturate(round((Σ_k (a − z_a)(b − z_b) + c) · s_a s_b / s_y) + z_y): com.microsoft
    QGemm with alpha 1, A not transposed; c is the int32 bias at scale s_a s_b, zero point 0."""
    a, a_s, a_z, b, b_s, b_z, c, y_s, y_z = arrays[:9]
    acc = integer_gemm(a, a_z, b if attrs["trans_b"] else b.T, b_z)
    if c is not None:
        acc = acc + c.astype(np.int64)
    m = (np.float32(a_s) * np.asarray(b_s, np.float32)) / np.float32(y_s)
    return requantize_float(acc, m, np.asarray(y_z), y_z.dtype)


def _qgemm_in(im) -> None:
    if im.attr("transA", 0) or float(im.attr("alpha", 1.0)) != 1.0:
        raise im.unsupported("QGemm with transA or alpha != 1")
    im.emit("QGemm", im.inputs(), im.out(), trans_b=bool(im.attr("transB", 0)))


_register("QGemm", (6, 9), _qgemm, _qgemm_run, _matmul_work,
          onnx_import={"QGemm": _qgemm_in},
          onnx_export=_ms_export("QGemm", transB=lambda a: int(a["trans_b"])))


def _qlinear_add(types: Types, attrs: Mapping) -> TensorType:
    a, b, y_zero = types[0], types[3], (list(types) + [None] * 8)[7]
    if a.dtype != b.dtype or (y_zero is not None and y_zero.dtype != a.dtype):
        _fail(f"QLinearAdd needs one code dtype, got {a.dtype}, {b.dtype}")
    return as_type(D.broadcast_shapes(a.shape, b.shape), a.dtype)


def qlinear_add(a: np.ndarray, a_scale: Any, a_zero: Any, b: np.ndarray, b_scale: Any,
                b_zero: Any, y_scale: Any, y_zero: Any) -> np.ndarray:
    """y = saturate(round_half_even((s_a/s_y)(a − z_a) + (s_b/s_y)(b − z_b)) + z_y), the ratios
    in float32: com.microsoft QLinearAdd (onnxruntime's MLAS QLinearAdd), which is Jacob et al.
    2018 §2.4's addition of two differently scaled codes.
    Test: ``tests/optim/quant/test_graph_quant_ops.py::test_qlinear_add_hand_worked``."""
    y_s = np.float32(y_scale)
    value = ((np.float32(a_scale) / y_s) * (a.astype(np.float32) - np.float32(a_zero))
             + (np.float32(b_scale) / y_s) * (b.astype(np.float32) - np.float32(b_zero)))
    return _saturate(value, np.asarray(y_zero))


def _qlinear_add_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    a, a_s, a_z, b, b_s, b_z, y_s, y_z = arrays[:8]
    zero = np.zeros((), a.dtype)
    return qlinear_add(a, a_s, zero if a_z is None else a_z, b, b_s, zero if b_z is None else b_z,
                       y_s, zero if y_z is None else y_z)


_register("QLinearAdd", (7, 8), _qlinear_add, _qlinear_add_run, _out_elements,
          onnx_import={"QLinearAdd": _import_as("QLinearAdd")}, onnx_export=_ms_export("QLinearAdd"))


def _qlinear_concat(types: Types, attrs: Mapping) -> TensorType:
    if (len(types) - 2) % 3 or len(types) < 5:
        _fail(f"QLinearConcat takes y_scale, y_zero_point and (x, scale, zero) triples, got "
              f"{len(types)} inputs")
    codes = list(types[2::3])
    if any(t is None for t in types) or {t.dtype for t in codes} != {types[1].dtype}:
        _fail("QLinearConcat needs every zero point and input code of one dtype")
    return _concatenate(codes, {"axis": attrs["axis"]})


def _qlinear_concat_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    """y = concat_i(requant(x_i)), requant(x) = saturate(round_half_even(s_x (x − z_x) / s_y)
    + z_y) in float32, the identity when (s_x, z_x) = (s_y, z_y): com.microsoft QLinearConcat
    (Jacob et al. 2018 §2.4's requantization to a shared scale)."""
    y_s, y_z = arrays[0], np.asarray(arrays[1])
    parts = []
    for x, s, z in zip(arrays[2::3], arrays[3::3], arrays[4::3]):
        same = np.float32(s) == np.float32(y_s) and int(z) == int(y_z)
        parts.append(x if same else _saturate(_dequantized(x, s, z) / np.float32(y_s), y_z))
    return np.concatenate(parts, axis=attrs["axis"])


def _qlinear_concat_in(im) -> None:
    im.emit("QLinearConcat", im.inputs(), im.out(), axis=int(im.attr("axis")) % len(im.type(2).shape))


_register("QLinearConcat", (5, None), _qlinear_concat, _qlinear_concat_run, _out_elements,
          onnx_import={"QLinearConcat": _qlinear_concat_in},
          onnx_export=_ms_export("QLinearConcat", axis=lambda a: a["axis"]))


def _qpool(types: Types, attrs: Mapping) -> TensorType:
    x, y_zero = types[0], (list(types) + [None] * 5)[4]
    if y_zero is not None and y_zero.dtype != x.dtype:
        _fail(f"the output zero point ({y_zero.dtype}) must have the codes' dtype {x.dtype}")
    return _pool([x], attrs)


def _qlinear_average_pool_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    """y = saturate(round_half_even(avgpool(s_x (x − z_x)) / s_y) + z_y) in float32:
    com.microsoft QLinearAveragePool (onnxruntime dequantizes, pools in float, quantizes)."""
    x, x_s, x_z, y_s, y_z = (list(arrays) + [None] * 5)[:5]
    y_z = np.zeros((), x.dtype) if y_z is None else np.asarray(y_z)
    pooled = _forward(P.AvgPool2d)([_dequantized(x, x_s, x_z)], attrs)
    return _saturate(pooled / np.float32(y_s), y_z)


def _qlinear_average_pool_out(ex, node: Node, out: str) -> None:
    a = node.attrs
    (ph, pw) = a["padding"]
    ex.add("QLinearAveragePool", node.inputs, out, domain=MS, kernel_shape=list(a["kernel_size"]),
           strides=list(a["stride"]), pads=[ph, pw, ph, pw],
           ceil_mode=int(bool(a.get("ceil_mode", False))),
           count_include_pad=int(a.get("count_include_pad", True)))


_register("QLinearAveragePool", (4, 5), _qpool, _qlinear_average_pool_run, _pool_work,
          onnx_export=_qlinear_average_pool_out)


def _qglobal(types: Types, attrs: Mapping) -> TensorType:
    x = types[0]
    if len(x.shape) != 4:
        _fail(f"global pooling needs a 4-D input, got {x.shape}")
    return as_type(x.shape[:2] + (1, 1), x.dtype)


def qlinear_global_average_pool(x: np.ndarray, x_scale: Any, x_zero: Any, y_scale: Any,
                                y_zero: Any) -> np.ndarray:
    """y[n, c] = saturate(round_half_even((Σ_hw x − z_x H W) · s_x / (s_y H W)) + z_y), the sum
    exact in int64 and the multiplier in float32: com.microsoft QLinearGlobalAveragePool
    (onnxruntime's MLAS QLinearGlobalAveragePoolNchw).
    Test: ``tests/optim/quant/test_graph_quant_ops.py::test_contrib_ops_match_onnxruntime``."""
    size = x.shape[2] * x.shape[3]
    acc = x.sum(axis=(2, 3), keepdims=True, dtype=np.int64) - int(x_zero) * size
    multiplier = np.float32(x_scale) / (np.float32(y_scale) * np.float32(size))
    return _saturate(acc.astype(np.float32) * multiplier, np.asarray(y_zero))


def _qglobal_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    x, x_s, x_z, y_s, y_z = (list(arrays) + [None] * 5)[:5]
    zero = np.zeros((), x.dtype)
    return qlinear_global_average_pool(x, x_s, zero if x_z is None else x_z, y_s,
                                       zero if y_z is None else y_z)


_register("QLinearGlobalAveragePool", (4, 5), _qglobal, _qglobal_run, _in_elements,
          onnx_import={"QLinearGlobalAveragePool": _import_as("QLinearGlobalAveragePool")},
          onnx_export=_ms_export("QLinearGlobalAveragePool", channels_last=lambda a: 0))
