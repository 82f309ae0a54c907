"""ONNX export and import (optional extra: ``pip install onnx``; onnxruntime only for tests).

Exports use opset 17 with static shapes. Supported ONNX ops (import) and the IR ops they become:

- Conv (2-D; pads, auto_pad, asymmetric pads via an explicit Pad) -> Conv2d (+ Pad);
- Gemm (alpha, beta, transA, transB) -> Linear, or MatMul with Transpose, Mul, Add; MatMul;
- Add, Sub, Mul, Div (float), Pow (equal dtypes), Max, Min, Sum (variadic) -> Add, Sub, Mul,
  Div, Pow, Maximum, Minimum;
- Relu, Sigmoid, Tanh, LeakyRelu, Neg, Exp, Log, Sqrt, Abs, Clip -> the ops of the same name;
- Softmax, LogSoftmax (opset >= 13 semantics, or the last axis);
- MaxPool, AveragePool (2-D, ceil_mode 0, no dilation; AveragePool with padding only with
  count_include_pad=1) -> MaxPool2d, AvgPool2d (+ Pad); GlobalAveragePool -> AdaptiveAvgPool2d;
  GlobalMaxPool -> Max;
- BatchNormalization (inference) -> BatchNorm; Dropout (inference, no mask) -> Dropout;
- Reshape, Flatten, Squeeze, Unsqueeze -> Reshape; Transpose; Concat -> Concatenate;
- Pad (constant mode), Where, Identity, Constant, ReduceSum, ReduceMean, ReduceMax -> Pad,
  Where, Identity, a constant, Sum, Mean, Max.

Export writes the fused ops back as their ONNX pairs (Conv + Relu, Gemm + Relu, Add + Relu).
Anything else raises ``NotImplementedError`` naming the op and the node. Shape arguments
(Reshape's shape, Pad's pads, Clip's bounds, axes) must be constants; ``bind`` turns graph
inputs into constants for that. Tests: ``tests/optim/graph/test_graph_onnx.py`` (round trip,
onnxruntime agreement, checker) and ``test_graph_onnx_backend.py`` (the ONNX package's own node
tests through ``optim.graph.onnx_backend``).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import numpy as np

from minnet.io import atomic_write
from optim.graph.ir import Graph, Node, TensorType, as_type, fresh_name
from optim.graph import dims as D
from optim.graph.ops import infer_node

__all__ = ["to_onnx", "from_onnx", "OPSET"]

OPSET = 17


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("ONNX support needs the optional 'onnx' package: pip install onnx") from None
    return onnx, helper, numpy_helper


# ==== import ===================================================================================


class _Importer:
    """State of one import: known types and constants, emitted IR nodes."""

    def __init__(self, helper, numpy_helper, opset: int):
        self.helper, self.numpy_helper, self.opset = helper, numpy_helper, opset
        self.types: dict[str, TensorType] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.node = None  # the ONNX node being imported

    @property
    def where(self) -> str:
        return f"{self.node.op_type} node {self.node.name or self.node.output[0]!r}"

    def unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{self.where}: {what} is not supported")

    def attr(self, name: str, default: Any = None) -> Any:
        for a in self.node.attribute:
            if a.name == name:
                value = self.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def input(self, i: int) -> str:
        """Name of input i ('' when absent)."""
        return self.node.input[i] if i < len(self.node.input) else ""

    def const(self, i: int, what: str) -> np.ndarray | None:
        name = self.input(i)
        if not name:
            return None
        if name not in self.constants:
            raise ValueError(f"{self.where}: input {name!r} ({what}) must be a constant "
                             "initializer; bind it with from_onnx(..., bind={...})")
        return self.constants[name]

    def type(self, i: int) -> TensorType:
        return self.types[self.input(i)]

    def fresh(self, base: str) -> str:
        name = fresh_name(self.types, base)
        self.types[name] = None  # reserved
        return name

    def emit(self, op: str, inputs, output: str | None = None, **attrs) -> str:
        output = output or self.fresh(f"{self.node.output[0]}.{op.lower()}")
        node = Node(op, tuple(inputs), output, attrs)
        self.types[output] = infer_node(node, [self.types[n] if n else None for n in inputs])
        self.nodes.append(node)
        return output

    def constant(self, value: np.ndarray, base: str) -> str:
        name = self.fresh(f"{self.node.output[0]}.{base}")
        self.constants[name] = np.asarray(value)
        self.types[name] = as_type(self.constants[name].shape, self.constants[name].dtype)
        return name


def _elementwise(op: str) -> Callable[[_Importer], None]:
    def run(im: _Importer) -> None:
        inputs = [n for n in im.node.input]
        dtypes = {im.types[n].dtype for n in inputs}
        if len(dtypes) > 1:
            raise im.unsupported(f"mixing dtypes {sorted(map(str, dtypes))}")
        if op == "Div" and not np.issubdtype(dtypes.pop(), np.floating):
            raise im.unsupported("integer division")
        value = inputs[0]
        for k, other in enumerate(inputs[1:], start=2):
            value = im.emit(op, (value, other), im.node.output[0] if k == len(inputs) else None)
        if len(inputs) == 1:
            im.emit("Identity", (value,), im.node.output[0])
    return run


def _unary(op: str, **attr_names: tuple[str, Any]) -> Callable[[_Importer], None]:
    def run(im: _Importer) -> None:
        attrs = {ours: float(im.attr(theirs, default)) for ours, (theirs, default) in attr_names.items()}
        im.emit(op, (im.input(0),), im.node.output[0], **attrs)
    return run


def _clip(im: _Importer) -> None:
    if im.opset < 11:
        low, high = im.attr("min"), im.attr("max")
    else:
        low, high = im.const(1, "min"), im.const(2, "max")
    x = im.input(0)
    bounds = {k: None if v is None else np.asarray(v, dtype=im.types[x].dtype).item()
              for k, v in (("min", low), ("max", high))}
    if bounds["min"] is None and bounds["max"] is None:
        im.emit("Identity", (x,), im.node.output[0])
    else:
        im.emit("Clip", (x,), im.node.output[0], **bounds)


def _softmax(op: str) -> Callable[[_Importer], None]:
    def run(im: _Importer) -> None:
        ndim = len(im.type(0).shape)
        axis = im.attr("axis", -1 if im.opset >= 13 else 1) % max(ndim, 1)
        if im.opset < 13 and axis != ndim - 1:
            raise im.unsupported(f"opset {im.opset} {op} over flattened axes {axis}..")
        im.emit(op, (im.input(0),), im.node.output[0], axis=axis)
    return run


def _spatial_pads(im: _Importer, kernel: tuple[int, int], strides: tuple[int, int],
                  dilations: tuple[int, int]) -> list[int]:
    """[top, left, bottom, right] from ``pads`` or ``auto_pad`` (static shapes)."""
    auto = im.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return list(im.attr("pads", [0, 0, 0, 0]))
    if auto == "VALID":
        return [0, 0, 0, 0]
    begin, end = [], []
    for a in (0, 1):
        size = im.type(0).shape[2 + a]
        total = max((math.ceil(size / strides[a]) - 1) * strides[a]
                    + dilations[a] * (kernel[a] - 1) + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


def _padded_input(im: _Importer, pads: list[int], value: float,
                  limit: tuple[int, int] | None = None) -> tuple[str, tuple[int, int]]:
    """Symmetric pads (at most ``limit`` per axis) stay an attribute; others become an explicit
    Pad node."""
    if any(p < 0 for p in pads):
        raise ValueError(f"{im.where}: pads {pads} must be non-negative")
    fits = limit is None or (pads[0] <= limit[0] and pads[1] <= limit[1])
    if pads[0] == pads[2] and pads[1] == pads[3] and fits:
        return im.input(0), (pads[0], pads[1])
    widths = ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3]))
    return im.emit("Pad", (im.input(0),), pad_width=widths, value=value), (0, 0)


def _conv(im: _Importer) -> None:
    w = im.type(1)
    if len(w.shape) != 4:
        raise im.unsupported(f"{len(w.shape) - 2}-D convolution")
    kernel = tuple(im.attr("kernel_shape", w.shape[2:]))
    strides, dilations = tuple(im.attr("strides", (1, 1))), tuple(im.attr("dilations", (1, 1)))
    x, padding = _padded_input(im, _spatial_pads(im, kernel, strides, dilations), 0.0)
    im.emit("Conv2d", (x, im.input(1), im.input(2)), im.node.output[0], stride=strides,
            padding=padding, dilation=dilations, groups=int(im.attr("group", 1)))


def _pool(op: str) -> Callable[[_Importer], None]:
    def run(im: _Importer) -> None:
        if len(im.type(0).shape) != 4:
            raise im.unsupported(f"{len(im.type(0).shape) - 2}-D pooling")
        if im.attr("ceil_mode", 0) or any(d != 1 for d in im.attr("dilations", (1, 1))):
            raise im.unsupported("ceil_mode or dilated pooling")
        if im.attr("storage_order", 0) or len([o for o in im.node.output if o]) > 1:
            raise im.unsupported("pooling indices")
        kernel, strides = tuple(im.attr("kernel_shape")), tuple(im.attr("strides", (1, 1)))
        pads = _spatial_pads(im, kernel, strides, (1, 1))
        if op == "AvgPool2d" and any(pads) and not im.attr("count_include_pad", 0):
            raise im.unsupported("average pooling that excludes padding (count_include_pad=0)")
        if any(p >= k for p, k in zip(pads, kernel + kernel)):
            raise ValueError(f"{im.where}: pads {pads} must be smaller than kernel_shape {kernel}")
        x, padding = _padded_input(im, pads, -np.inf if op == "MaxPool2d" else 0.0,
                                   (kernel[0] // 2, kernel[1] // 2))
        im.emit(op, (x,), im.node.output[0], kernel_size=kernel, stride=strides, padding=padding)
    return run


def _global_pool(im: _Importer) -> None:
    if len(im.type(0).shape) != 4:
        raise im.unsupported("non 2-D global pooling")
    if im.node.op_type == "GlobalAveragePool":
        im.emit("AdaptiveAvgPool2d", (im.input(0),), im.node.output[0], output_size=(1, 1))
    else:
        im.emit("Max", (im.input(0),), im.node.output[0], axis=(2, 3), keepdims=True)


def _gemm(im: _Importer) -> None:
    a, b, c = im.input(0), im.input(1), im.input(2)
    alpha, beta = float(im.attr("alpha", 1.0)), float(im.attr("beta", 1.0))
    trans_a, trans_b = im.attr("transA", 0), im.attr("transB", 0)
    out = im.node.output[0]
    bias = im.constants.get(c) if c else None
    n_out = im.types[b].shape[0 if trans_b else 1]
    if (b in im.constants and not trans_a and alpha == 1.0 and beta == 1.0
            and (not c or (bias is not None and bias.shape == (n_out,)))):
        weight = b if trans_b else im.constant(np.ascontiguousarray(im.constants[b].T), "weight")
        im.emit("Linear", (a, weight, c), out)
        return
    if trans_a:
        a = im.emit("Transpose", (a,), axes=(1, 0))
    if trans_b:
        b = im.emit("Transpose", (b,), axes=(1, 0))
    dtype = im.types[a].dtype
    y = im.emit("MatMul", (a, b), None if (alpha != 1.0 or c) else out)
    if alpha != 1.0:
        y = im.emit("Mul", (y, im.constant(np.asarray(alpha, dtype), "alpha")), None if c else out)
    if c:
        if beta != 1.0:
            c = im.emit("Mul", (c, im.constant(np.asarray(beta, dtype), "beta")))
        im.emit("Add", (y, c), out)


def _batchnorm(im: _Importer) -> None:
    if im.attr("training_mode", 0) or len([o for o in im.node.output if o]) > 1:
        raise im.unsupported("training-mode BatchNormalization")
    im.emit("BatchNorm", tuple(im.input(i) for i in range(5)), im.node.output[0],
            eps=float(im.attr("epsilon", 1e-5)), training=False)


def _dropout(im: _Importer) -> None:
    training = im.const(2, "training_mode") if im.opset >= 12 else None
    if len([o for o in im.node.output if o]) > 1 or (training is not None and bool(training)):
        raise im.unsupported("Dropout in training mode or with its mask output")
    im.emit("Dropout", (im.input(0),), im.node.output[0])


def _reshape_to(im: _Importer, shape: tuple[int, ...]) -> None:
    im.emit("Reshape", (im.input(0),), im.node.output[0],
            shape=tuple(n if isinstance(n, str) else int(n) for n in shape))


def _reshape(im: _Importer) -> None:
    x = im.type(0)
    target = [int(n) for n in im.const(1, "shape")]
    if not im.attr("allowzero", 0):
        target = [x.shape[i] if n == 0 else n for i, n in enumerate(target)]
    _reshape_to(im, D.reshape_shape(x.shape, target))


def _flatten(im: _Importer) -> None:
    shape = im.type(0).shape
    axis = im.attr("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    _reshape_to(im, (D.product(shape[:axis]), D.product(shape[axis:])))


def _axes(im: _Importer, ndim: int, input_from: int) -> list[int] | None:
    """The ``axes`` argument: an input from opset ``input_from`` on, an attribute before."""
    axes = im.const(1, "axes") if im.opset >= input_from else im.attr("axes")
    return None if axes is None else [int(a) % ndim for a in np.ravel(axes)]


def _squeeze(im: _Importer) -> None:
    shape = im.type(0).shape
    axes = _axes(im, len(shape), 13)
    axes = [i for i, n in enumerate(shape) if n == 1] if axes is None else axes
    _reshape_to(im, tuple(n for i, n in enumerate(shape) if i not in axes))


def _unsqueeze(im: _Importer) -> None:
    shape = list(im.type(0).shape)
    raw = np.ravel(im.const(1, "axes") if im.opset >= 13 else im.attr("axes"))
    for a in sorted(int(a) % (len(shape) + len(raw)) for a in raw):
        shape.insert(a, 1)
    _reshape_to(im, tuple(shape))


def _transpose(im: _Importer) -> None:
    ndim = len(im.type(0).shape)
    im.emit("Transpose", (im.input(0),), im.node.output[0],
            axes=tuple(int(a) for a in im.attr("perm", range(ndim - 1, -1, -1))))


def _concat(im: _Importer) -> None:
    im.emit("Concatenate", tuple(im.node.input), im.node.output[0], axis=int(im.attr("axis")))


def _pad(im: _Importer) -> None:
    if im.attr("mode", "constant") != "constant":
        raise im.unsupported(f"Pad mode {im.attr('mode')!r}")
    ndim = len(im.type(0).shape)
    pads = [int(p) for p in (im.const(1, "pads") if im.opset >= 11 else im.attr("pads"))]
    value = im.const(2, "constant_value") if im.opset >= 11 else im.attr("value", 0.0)
    axes = im.const(3, "axes")
    axes = range(ndim) if axes is None else [int(a) % ndim for a in axes]
    if any(p < 0 for p in pads):
        raise im.unsupported("negative pads (cropping)")
    widths = [(0, 0)] * ndim
    for k, a in enumerate(axes):
        widths[a] = (pads[k], pads[k + len(axes)])
    fill = 0.0 if value is None else np.asarray(value).item()
    im.emit("Pad", (im.input(0),), im.node.output[0], pad_width=tuple(widths), value=fill)


def _reduce(op: str, input_from: int) -> Callable[[_Importer], None]:
    def run(im: _Importer) -> None:
        ndim = len(im.type(0).shape)
        axes = _axes(im, max(ndim, 1), input_from)
        keep = bool(im.attr("keepdims", 1))
        if not axes and im.attr("noop_with_empty_axes", 0):
            im.emit("Identity", (im.input(0),), im.node.output[0])
            return
        im.emit(op, (im.input(0),), im.node.output[0],
                axis=None if not axes else tuple(sorted(axes)), keepdims=keep)
    return run


def _where(im: _Importer) -> None:
    im.emit("Where", tuple(im.node.input), im.node.output[0])


def _constant(im: _Importer) -> None:
    for a in im.node.attribute:
        value = im.helper.get_attribute_value(a)
        if a.name == "value":
            value = im.numpy_helper.to_array(value)
        elif a.name in ("value_float", "value_floats"):
            value = np.asarray(value, dtype=np.float32)
        elif a.name in ("value_int", "value_ints"):
            value = np.asarray(value, dtype=np.int64)
        else:
            raise im.unsupported(f"Constant attribute {a.name!r}")
        name = im.node.output[0]
        im.constants[name] = value
        im.types[name] = as_type(value.shape, value.dtype)


IMPORTERS: dict[str, Callable[[_Importer], None]] = {
    "Add": _elementwise("Add"), "Sub": _elementwise("Sub"), "Mul": _elementwise("Mul"),
    "Div": _elementwise("Div"), "Pow": _elementwise("Pow"), "Max": _elementwise("Maximum"),
    "Min": _elementwise("Minimum"), "Sum": _elementwise("Add"), "MatMul": _elementwise("MatMul"),
    "Relu": _unary("ReLU"), "Sigmoid": _unary("Sigmoid"), "Tanh": _unary("Tanh"),
    "Neg": _unary("Neg"), "Exp": _unary("Exp"), "Log": _unary("Log"), "Sqrt": _unary("Sqrt"),
    "Abs": _unary("Abs"), "Identity": _unary("Identity"),
    "LeakyRelu": _unary("LeakyReLU", negative_slope=("alpha", 0.01)), "Clip": _clip,
    "Softmax": _softmax("Softmax"), "LogSoftmax": _softmax("LogSoftmax"),
    "Conv": _conv, "Gemm": _gemm, "MaxPool": _pool("MaxPool2d"), "AveragePool": _pool("AvgPool2d"),
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "BatchNormalization": _batchnorm, "Dropout": _dropout, "Reshape": _reshape,
    "Flatten": _flatten, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Transpose": _transpose,
    "Concat": _concat, "Pad": _pad, "Where": _where, "Constant": _constant,
    "ReduceSum": _reduce("Sum", 13), "ReduceMean": _reduce("Mean", 18),
    "ReduceMax": _reduce("Max", 18),
}


def _value_type(value_info, helper) -> TensorType:
    if not value_info.type.HasField("tensor_type"):
        raise NotImplementedError(f"input {value_info.name!r} is not a tensor "
                                  f"({value_info.type.WhichOneof('value')}); only tensors are supported")
    tensor = value_info.type.tensor_type
    dims = []
    for d in tensor.shape.dim:
        if not d.HasField("dim_value"):
            raise ValueError(f"input {value_info.name!r} has a symbolic dimension "
                             f"{d.dim_param!r}; graphs have static shapes")
        dims.append(d.dim_value)
    return as_type(dims, helper.tensor_dtype_to_np_dtype(tensor.elem_type))


def from_onnx(path: Any, bind: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Import an ONNX model (``path`` to a file, or an ``onnx.ModelProto``) as a Graph.

    ``bind`` maps graph input names to arrays that become constants (for inputs that ops need
    as static arguments, such as a Reshape's target shape).

    Raises NotImplementedError naming the op and the node for an unsupported op or attribute;
    ValueError for a node input that nothing defines (a missing initializer), a non-constant
    shape argument, or a symbolic input dimension.
    """
    onnx, helper, numpy_helper = _onnx()
    model = onnx.load(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"path must be a file path or an onnx.ModelProto, got {type(path).__name__}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    im = _Importer(helper, numpy_helper, opset)
    g = model.graph
    for init in g.initializer:
        im.constants[init.name] = numpy_helper.to_array(init)
    for name, value in (bind or {}).items():
        im.constants[name] = np.asarray(value)
    for name, value in im.constants.items():
        im.types[name] = as_type(value.shape, value.dtype)
    inputs = {}
    for vi in g.input:
        if vi.name not in im.constants:
            inputs[vi.name] = im.types[vi.name] = _value_type(vi, helper)
    for node in g.node:
        im.node = node
        if node.domain not in ("", "ai.onnx"):
            raise NotImplementedError(f"{im.where}: operator domain {node.domain!r} is not supported")
        for name in node.input:
            if name and name not in im.types:
                raise ValueError(f"{im.where} reads {name!r}, which is neither a graph input, an "
                                 "initializer nor an earlier node's output (missing initializer?)")
        importer = IMPORTERS.get(node.op_type)
        if importer is None:
            raise NotImplementedError(f"ONNX op {node.op_type!r} ({im.where}) is not supported")
        importer(im)
    used = {n for node in im.nodes for n in node.inputs} | {o.name for o in g.output}
    constants = {k: v for k, v in im.constants.items() if k in used}
    return Graph.build(inputs, im.nodes, [o.name for o in g.output], constants)


# ==== export ===================================================================================


class _Exporter:
    def __init__(self, graph: Graph, helper, numpy_helper):
        self.graph, self.helper, self.numpy_helper = graph, helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.taken = set(graph.types)

    def fresh(self, base: str) -> str:
        name = fresh_name(self.taken, base)
        self.taken.add(name)
        return name

    def constant(self, value: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(self, op_type: str, inputs, outputs, name: str, **attrs) -> None:
        self.nodes.append(self.helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs))


def _export_node(ex: _Exporter, node: Node) -> None:
    op, out, a = node.op, node.output, node.attrs
    ins = list(node.inputs)
    fused = op in ("Conv2dReLU", "LinearReLU", "AddReLU")
    target = ex.fresh(f"{out}.pre_relu") if fused else out
    base = {"Conv2dReLU": "Conv2d", "LinearReLU": "Linear", "AddReLU": "Add"}.get(op, op)
    types = ex.graph.types
    if base == "Conv2d":
        (ph, pw), w = a["padding"], types[ins[1]].shape
        ex.add("Conv", [i for i in ins if i], [target], out, kernel_shape=list(w[2:]),
               strides=list(a["stride"]), pads=[ph, pw, ph, pw], dilations=list(a["dilation"]),
               group=a["groups"])
    elif base == "Linear":
        if len(types[ins[0]].shape) == 2:
            ex.add("Gemm", [i for i in ins if i], [target], out, transB=1)
        else:
            if ins[1] not in ex.graph.constants:
                raise NotImplementedError(f"node {out!r} (Linear): a non-constant weight on a "
                                          f"{len(types[ins[0]].shape)}-D input cannot be exported")
            wt = ex.constant(np.ascontiguousarray(ex.graph.constants[ins[1]].T), f"{ins[1]}.T")
            product = ex.fresh(f"{out}.matmul") if len(ins) > 2 and ins[2] else target
            ex.add("MatMul", [ins[0], wt], [product], out)
            if product != target:
                ex.add("Add", [product, ins[2]], [target], f"{out}.bias")
    elif base in _SIMPLE:
        ex.add(_SIMPLE[base], ins, [target], out)
    elif base == "LeakyReLU":
        ex.add("LeakyRelu", ins, [out], out, alpha=float(a["negative_slope"]))
    elif base == "Clip":
        dtype = types[ins[0]].dtype
        bounds = [ex.constant(np.asarray(a[k], dtype), f"{out}.{k}") if a.get(k) is not None else ""
                  for k in ("min", "max")]
        ex.add("Clip", [ins[0], *bounds], [out], out)
    elif base in ("Softmax", "LogSoftmax"):
        ex.add(base, ins, [out], out, axis=int(a["axis"]))
    elif base in ("Sum", "Mean", "Max"):
        axis = a.get("axis")
        axes = list(range(len(types[ins[0]].shape))) if axis is None else list(np.atleast_1d(axis))
        keep = int(bool(a.get("keepdims", False)))
        if base == "Sum":
            ex.add("ReduceSum", [ins[0], ex.constant(np.asarray(axes, np.int64), f"{out}.axes")],
                   [out], out, keepdims=keep)
        else:
            ex.add("Reduce" + base, ins, [out], out, axes=[int(x) for x in axes], keepdims=keep)
    elif base == "Reshape":
        ex.add("Reshape", [ins[0], ex.constant(np.asarray(a["shape"], np.int64), f"{out}.shape")],
               [out], out)
    elif base == "Transpose":
        ex.add("Transpose", ins, [out], out, perm=list(a["axes"]))
    elif base == "Concatenate":
        ex.add("Concat", ins, [out], out, axis=int(a["axis"]))
    elif base == "Pad":
        widths = a["pad_width"]
        pads = [w[0] for w in widths] + [w[1] for w in widths]
        value = np.asarray(a.get("value", 0.0), types[ins[0]].dtype)
        ex.add("Pad", [ins[0], ex.constant(np.asarray(pads, np.int64), f"{out}.pads"),
                       ex.constant(value, f"{out}.value")], [out], out)
    elif base == "BatchNorm":
        if a.get("training"):
            raise NotImplementedError(f"node {out!r} (BatchNorm) uses batch statistics, which "
                                      "ONNX inference BatchNormalization cannot express")
        c, dtype = types[ins[0]].shape[1], types[ins[0]].dtype
        ins = (ins + [""] * 5)[:5]
        ins[1] = ins[1] or ex.constant(np.ones(c, dtype), f"{out}.scale")
        ins[2] = ins[2] or ex.constant(np.zeros(c, dtype), f"{out}.bias")
        ex.add("BatchNormalization", ins, [out], out, epsilon=float(a["eps"]))
    elif base in ("MaxPool2d", "AvgPool2d"):
        (ph, pw) = a["padding"]
        extra = {"count_include_pad": 1} if base == "AvgPool2d" else {}
        ex.add("MaxPool" if base == "MaxPool2d" else "AveragePool", ins, [out], out,
               kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
               pads=[ph, pw, ph, pw], **extra)
    elif base == "AdaptiveAvgPool2d":
        h, w = types[ins[0]].shape[2:]
        oh, ow = a["output_size"]
        if (oh, ow) == (1, 1):
            ex.add("GlobalAveragePool", ins, [out], out)
        elif h % oh == 0 and w % ow == 0:
            ex.add("AveragePool", ins, [out], out, kernel_shape=[h // oh, w // ow],
                   strides=[h // oh, w // ow])
        else:
            raise NotImplementedError(f"node {out!r} (AdaptiveAvgPool2d): output {a['output_size']} "
                                      f"does not divide input {(h, w)}")
    else:
        raise NotImplementedError(f"op {op!r} (node {out!r}) has no ONNX export")
    if fused:
        ex.add("Relu", [target], [out], f"{out}.relu")


_SIMPLE = {"Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div", "Pow": "Pow",
           "Maximum": "Max", "Minimum": "Min", "MatMul": "MatMul", "Neg": "Neg", "Exp": "Exp",
           "Log": "Log", "Sqrt": "Sqrt", "Abs": "Abs", "ReLU": "Relu", "Sigmoid": "Sigmoid",
           "Tanh": "Tanh", "Identity": "Identity", "Dropout": "Identity", "Where": "Where"}


def to_onnx(graph: Graph, path: str | os.PathLike | None = None, name: str = "minnet") -> Any:
    """Export ``graph`` as an ONNX model (opset 17), checked by ``onnx.checker``; write it to
    ``path`` atomically when given. Returns the ``onnx.ModelProto``.

    Raises NotImplementedError naming the op and node for ops ONNX cannot express here
    (GELU, GetItem, Stack, Var, training-mode BatchNorm).
    """
    onnx, helper, numpy_helper = _onnx()
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a Graph, got {type(graph).__name__}")
    ex = _Exporter(graph, helper, numpy_helper)
    for k, v in graph.constants.items():
        ex.initializers.append(numpy_helper.from_array(np.ascontiguousarray(v), k))
    for node in graph.nodes:
        _export_node(ex, node)
    outputs = []
    for k in graph.outputs:  # an ONNX output must be produced by a node
        if k in graph.inputs or k in graph.constants:
            alias = ex.fresh(f"{k}.output")
            ex.add("Identity", [k], [alias], alias)
            k = alias
        outputs.append(k)

    def info(name: str, t: TensorType):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(t.dtype), list(t.shape))

    onnx_graph = helper.make_graph(
        ex.nodes, name, [info(k, graph.types[k]) for k in graph.inputs],
        [info(o, graph.types[k]) for o, k in zip(outputs, graph.outputs)], ex.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="minnet-optim")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        with atomic_write(path) as f:
            f.write(model.SerializeToString())
    return model
