"""The operator table of the graph IR: one definition per op.

Op types are the names of minnet's ``Function`` classes (``Conv2d``, ``Linear``, ``ReLU``, ...),
so a traced node runs the very ``forward`` that eager minnet runs, plus graph-only ops:
``Identity``, ``Dropout`` (identity at inference), ``Cast``, the integer ops of quantized
graphs (``QuantizeLinear``, ``QLinearConv``, ``QLinearAdd``, ...; defined in ``optim.graph.qops``,
registered here) and the fused ``Conv2dReLU``,
``LinearReLU``, ``AddReLU``. Everything known about an op is registered in one ``_register``
call, next to its rule:

- ``infer``: its shape and dtype rule (the same formulas the minnet op validates), over
  symbolic dimensions (``optim.graph.dims``): it proves the output shape or raises GraphError;
- ``run``: the reference kernel on arrays (``Function.forward`` with a throwaway context, or a
  NumPy kernel here for ops minnet does not have);
- ``work``: the operation count that the cost model and ``optim.metrics.macs`` both read:
  multiply-accumulates for conv, linear and matmul (thop's convention), window reads for
  pooling, one per output element for BatchNorm (a folded y = a x + b) and elementwise ops,
  0 for pure views;
- ``kind``: ``"elementwise"`` (output may overwrite a same-shaped input), ``"view"`` (output
  may alias its first input) or ``"compute"``;
- ``function``: the differentiable minnet ``Function`` (None: the op runs on arrays only);
- ``shape_attrs``: attributes holding Dims, evaluated by ``specialise``;
- ``onnx_import``: ONNX op type -> handler turning one ONNX node into IR nodes (collected in
  ``ONNX_IMPORT``; handlers talk to ``optim.graph.onnx_import.Importer``: ``attr``, ``input``,
  ``type``, ``const``, ``dims``, ``emit``, ``constant``);
- ``onnx_export``: handler writing one IR node as ONNX nodes (``optim.graph.onnx_export``'s
  ``Exporter``: ``add``, ``constant``).

Neither this module nor its handlers import ``onnx``: the handlers only build node lists.
BatchNorm reads its running statistics as inputs (x, weight, bias, mean, var) rather than as
attributes, so passes can fold them like any constant.
Tests: ``tests/optim/graph/test_graph_ir.py`` (every rule against the minnet op's own output),
``tests/optim/graph/test_graph_onnx_ops.py`` (the new ops against onnxruntime).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minnet.ops import conv as C
from minnet.ops import elementwise as E
from minnet.ops import linalg as L
from minnet.ops import norm as N
from minnet.ops import pool as P
from minnet.ops import reduce as R
from minnet.ops import resize as RZ
from minnet.ops import shape as S
from minnet.tensor import Context, Function
from optim.graph import dims as D
from optim.graph.types import GraphError, Node, TensorType, as_type

Types = Sequence["TensorType | None"]
Arrays = Sequence["np.ndarray | None"]


@dataclass(frozen=True)
class OpDef:
    name: str
    n_inputs: tuple[int, int | None]  # (required, maximum); None: variadic
    infer: Callable[[Types, Mapping], TensorType]
    run: Callable[[Arrays, Mapping], np.ndarray]
    work: Callable[[Types, TensorType, Mapping], int]
    kind: str = "compute"
    function: type[Function] | None = None
    shape_attrs: tuple[str, ...] = ()  # attributes holding Dims, evaluated by ``specialise``
    onnx_import: tuple[str, ...] = ()  # the ONNX op types whose handlers emit this op
    onnx_export: Callable | None = None  # (exporter, node, output name) -> None


OPS: dict[str, OpDef] = {}
ONNX_IMPORT: dict[str, Callable] = {}  # ONNX op type -> handler(importer)


def _register(name: str, n_inputs: tuple[int, int | None], infer, run, work, kind="compute",
              function=None, shape_attrs=(), onnx_import: Mapping[str, Callable] | None = None,
              onnx_export: Callable | None = None) -> None:
    for onnx_type, handler in (onnx_import or {}).items():
        if onnx_type in ONNX_IMPORT:
            raise RuntimeError(f"ONNX op {onnx_type!r} is imported twice")
        ONNX_IMPORT[onnx_type] = handler
    OPS[name] = OpDef(name, n_inputs, infer, run, work, kind, function, tuple(shape_attrs),
                      tuple(onnx_import or ()), onnx_export)


def _forward(fn: type[Function]) -> Callable[[Arrays, Mapping], np.ndarray]:
    def run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
        return np.asarray(fn.forward(Context((False,) * len(arrays)), *arrays, **attrs))
    return run


def _out_elements(types: Types, out: TensorType, attrs: Mapping) -> int:
    return out.size


def _in_elements(types: Types, out: TensorType, attrs: Mapping) -> int:
    return types[0].size


def _no_work(types: Types, out: TensorType, attrs: Mapping) -> int:
    return 0


def _fail(message: str) -> None:
    raise GraphError(message)


# ---- ONNX handler helpers (see the module docstring) ----------------------------------------


def _import_as(op: str, **attrs_from: tuple[str, Any]) -> Callable:
    """Import handler: the ONNX node becomes one ``op`` node on the same inputs; float
    attributes ``ours=(theirs, default)``."""
    def handler(im) -> None:
        attrs = {ours: float(im.attr(theirs, default)) for ours, (theirs, default) in attrs_from.items()}
        im.emit(op, im.inputs(), im.out(), **attrs)
    return handler


def _export_as(onnx_type: str, **attrs_to: str) -> Callable:
    """Export handler: the IR node becomes one ``onnx_type`` node; attributes ``theirs=ours``."""
    def handler(ex, node: Node, out: str) -> None:
        ex.add(onnx_type, node.inputs, out, **{theirs: node.attrs[ours]
                                               for theirs, ours in attrs_to.items()})
    return handler


def _import_binary(op: str) -> Callable:
    """Binary (and variadic: Sum, Max, Min) elementwise ops as a left fold of ``op``; equal dtypes
    only (ONNX requires them), no integer division (ONNX truncates, NumPy floors)."""
    def handler(im) -> None:
        inputs = im.inputs()
        dtypes = {im.types[n].dtype for n in inputs}
        if len(dtypes) > 1:
            raise im.unsupported(f"mixing dtypes {sorted(map(str, dtypes))}")
        if op == "Div" and not np.issubdtype(dtypes.pop(), np.floating):
            raise im.unsupported("integer division")
        value = inputs[0]
        for k, other in enumerate(inputs[1:], start=2):
            value = im.emit(op, (value, other), im.out() if k == len(inputs) else None)
        if len(inputs) == 1:
            im.emit("Identity", (value,), im.out())
    return handler


# ---- elementwise -------------------------------------------------------------------------


def _broadcast(types: Types, attrs: Mapping) -> TensorType:
    present = [t for t in types if t is not None]
    shape = D.broadcast_shapes(*(t.shape for t in present))
    dtypes = [t.dtype for t in present[-2:]]  # Where: the condition does not set the dtype
    return as_type(shape, np.result_type(*dtypes))


def _same(types: Types, attrs: Mapping) -> TensorType:
    return types[0]


def _expand_in(im) -> None:
    """Expand(x, shape) of a computed x: x + zeros(shape) (ONNX's bidirectional broadcast); the
    zeros are a read-only broadcast constant, or a ``Full`` node for a symbolic shape."""
    x = im.type(0)
    target = im.dims(1, "shape")
    if any(isinstance(n, int) and n < 0 for n in target):
        raise im.invalid(f"shape {list(target)} has a negative dimension")
    if D.is_static(target):
        zeros = im.constant(np.broadcast_to(np.zeros((), x.dtype), target), "zeros")
    else:
        zeros = im.emit("Full", (), shape=tuple(target), value=0, dtype=x.dtype.name)
    im.emit("Add", (im.input(0), zeros), im.out())


_BINARY = {E.Add: ("Add", "Sum", "Expand"), E.Sub: ("Sub",), E.Mul: ("Mul",), E.Div: ("Div",),
           E.Pow: ("Pow",), E.Maximum: ("Max",), E.Minimum: ("Min",)}
for _fn, _names in _BINARY.items():
    _register(_fn.__name__, (2, 2), _broadcast, _forward(_fn), _out_elements, "elementwise", _fn,
              onnx_import={n: _expand_in if n == "Expand" else _import_binary(_fn.__name__)
                           for n in _names},
              onnx_export=_export_as(_names[0]))
_register("Where", (3, 3), _broadcast, _forward(E.Where), _out_elements, "elementwise", E.Where,
          onnx_import={"Where": _import_as("Where")}, onnx_export=_export_as("Where"))
_UNARY = {E.Neg: "Neg", E.Exp: "Exp", E.Log: "Log", E.Sqrt: "Sqrt", E.Abs: "Abs",
          E.ReLU: "Relu", E.Sigmoid: "Sigmoid", E.Tanh: "Tanh"}
for _fn, _name in _UNARY.items():
    _register(_fn.__name__, (1, 1), _same, _forward(_fn), _out_elements, "elementwise", _fn,
              onnx_import={_name: _import_as(_fn.__name__)}, onnx_export=_export_as(_name))
_register("LeakyReLU", (1, 1), _same, _forward(E.LeakyReLU), _out_elements, "elementwise",
          E.LeakyReLU, onnx_import={"LeakyRelu": _import_as("LeakyReLU",
                                                            negative_slope=("alpha", 0.01))},
          onnx_export=_export_as("LeakyRelu", alpha="negative_slope"))


def _clip_in(im) -> None:
    if im.opset < 11:
        low, high = im.attr("min"), im.attr("max")
    else:
        low, high = im.const(1, "min"), im.const(2, "max")
    x = im.input(0)
    bounds = {k: None if v is None else np.asarray(v, dtype=im.types[x].dtype).item()
              for k, v in (("min", low), ("max", high))}
    if bounds["min"] is None and bounds["max"] is None:
        im.emit("Identity", (x,), im.out())
    else:
        im.emit("Clip", (x,), im.out(), **bounds)


def _clip_out(ex, node: Node, out: str) -> None:
    dtype = ex.types[node.inputs[0]].dtype
    bounds = [ex.constant(np.asarray(node.attrs[k], dtype), f"{out}.{k}")
              if node.attrs.get(k) is not None else "" for k in ("min", "max")]
    ex.add("Clip", [node.inputs[0], *bounds], out)


_register("Clip", (1, 1), _same, _forward(E.Clip), _out_elements, "elementwise", E.Clip,
          onnx_import={"Clip": _clip_in}, onnx_export=_clip_out)


def _gelu_in(im) -> None:
    if im.attr("approximate", "none") != "none":
        raise im.unsupported(f"Gelu approximate={im.attr('approximate')!r}")
    im.emit("GELU", im.inputs(), im.out())


def _gelu_out(ex, node: Node, out: str) -> None:
    """x · ½(1 + erf(x/√2)) in opset-17 ops (Gelu itself is opset 20)."""
    x, dtype = node.inputs[0], ex.types[node.inputs[0]].dtype
    scaled = ex.add("Div", [x, ex.constant(np.asarray(np.sqrt(2), dtype), f"{out}.sqrt2")])
    one = ex.add("Add", [ex.add("Erf", [scaled]), ex.constant(np.asarray(1, dtype), f"{out}.one")])
    half = ex.add("Mul", [one, ex.constant(np.asarray(0.5, dtype), f"{out}.half")])
    ex.add("Mul", [x, half], out)


_register("GELU", (1, 1), _same, _forward(E.GELU), _out_elements, "elementwise", E.GELU,
          onnx_import={"Gelu": _gelu_in}, onnx_export=_gelu_out)


_register("HardSigmoid", (1, 1), _same, _forward(E.HardSigmoid), _out_elements, "elementwise",
          E.HardSigmoid,
          onnx_import={"HardSigmoid": _import_as("HardSigmoid", alpha=("alpha", 0.2),
                                                 beta=("beta", 0.5))},
          onnx_export=_export_as("HardSigmoid", alpha="alpha", beta="beta"))
_register("HardSwish", (1, 1), _same, _forward(E.HardSwish), _out_elements, "elementwise",
          E.HardSwish, onnx_import={"HardSwish": _import_as("HardSwish")},
          onnx_export=_export_as("HardSwish"))
_register("Erf", (1, 1), _same, _forward(E.Erf), _out_elements, "elementwise", E.Erf,
          onnx_import={"Erf": _import_as("Erf")}, onnx_export=_export_as("Erf"))


def _cast(types: Types, attrs: Mapping) -> TensorType:
    return as_type(types[0].shape, attrs["dtype"])


def _cast_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    return arrays[0].astype(attrs["dtype"])


def _cast_in(im) -> None:
    im.emit("Cast", im.inputs(), im.out(), dtype=im.dtype_attr("to"))


def _cast_out(ex, node: Node, out: str) -> None:
    ex.add("Cast", node.inputs, out, to=ex.onnx_dtype(node.attrs["dtype"]))


_register("Cast", (1, 1), _cast, _cast_run, _out_elements, onnx_import={"Cast": _cast_in},
          onnx_export=_cast_out)

# ---- reductions and softmax --------------------------------------------------------------


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            _fail(f"axis {a} is out of range for {ndim} dimensions")
    return tuple(sorted({int(a) % max(ndim, 1) for a in axes}))


def _reduce(types: Types, attrs: Mapping) -> TensorType:
    x = types[0]
    axes = _axes(attrs.get("axis"), len(x.shape))
    keep = attrs.get("keepdims", False)
    shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape) if keep or i not in axes)
    return as_type(shape, x.dtype)


def _softmax(types: Types, attrs: Mapping) -> TensorType:
    _axes(attrs.get("axis", -1), len(types[0].shape))
    return types[0]


def _import_reduce(op: str, input_from: int) -> Callable:
    """ReduceSum/Mean/Max: ``axes`` is an input from opset ``input_from`` on, an attribute
    before; no axes reduce everything unless ``noop_with_empty_axes``."""
    def handler(im) -> None:
        ndim = len(im.type(0).shape)
        if im.opset < input_from and im.input(1):
            raise im.invalid(f"axes is an attribute before opset {input_from}, not an input")
        axes = im.axes(1 if im.opset >= input_from else None, max(ndim, 1))
        if not axes and im.attr("noop_with_empty_axes", 0):
            im.emit("Identity", (im.input(0),), im.out())
            return
        im.emit(op, (im.input(0),), im.out(), axis=None if not axes else tuple(sorted(axes)),
                keepdims=bool(im.attr("keepdims", 1)))
    return handler


def _global_max_in(im) -> None:
    ndim = len(im.type(0).shape)
    if ndim < 3:
        raise im.unsupported(f"GlobalMaxPool on {ndim}-D input")
    im.emit("Max", (im.input(0),), im.out(), axis=tuple(range(2, ndim)), keepdims=True)


def _reduce_out(ex, node: Node, out: str) -> None:
    """ReduceSum (axes input, opset 13) and ReduceMean/ReduceMax (axes attribute, opset 17)."""
    axis, x = node.attrs.get("axis"), node.inputs[0]
    axes = list(range(len(ex.types[x].shape))) if axis is None else [int(a) for a in np.atleast_1d(axis)]
    keep = int(bool(node.attrs.get("keepdims", False)))
    if node.op == "Sum":
        ex.add("ReduceSum", [x, ex.constant(np.asarray(axes, np.int64), f"{out}.axes")], out,
               keepdims=keep)
    else:
        ex.add("Reduce" + node.op, [x], out, axes=axes, keepdims=keep)


_register("Sum", (1, 1), _reduce, _forward(R.Sum), _in_elements, function=R.Sum,
          onnx_import={"ReduceSum": _import_reduce("Sum", 13)}, onnx_export=_reduce_out)
_register("Mean", (1, 1), _reduce, _forward(R.Mean), _in_elements, function=R.Mean,
          onnx_import={"ReduceMean": _import_reduce("Mean", 18)}, onnx_export=_reduce_out)
_register("Max", (1, 1), _reduce, _forward(R.Max), _in_elements, function=R.Max,
          onnx_import={"ReduceMax": _import_reduce("Max", 18), "GlobalMaxPool": _global_max_in},
          onnx_export=_reduce_out)
_register("Var", (1, 1), _reduce, _forward(R.Var), _in_elements, function=R.Var)


def _import_softmax(op: str) -> Callable:
    """Softmax / LogSoftmax. Opset >= 13: over one axis (default -1). Before 13 the input is
    flattened to 2-D at ``axis`` (default 1) and normalised over the second factor; that is
    emitted as Reshape -> op(axis=1) -> Reshape unless the axis is already the last."""
    def handler(im) -> None:
        shape = im.type(0).shape
        ndim = max(len(shape), 1)
        axis = im.attr("axis", -1 if im.opset >= 13 else 1)
        if not -ndim <= axis < ndim:
            raise im.invalid(f"axis {axis} is out of range for {len(shape)} dimensions")
        axis %= ndim
        if im.opset >= 13 or axis == ndim - 1:
            im.emit(op, (im.input(0),), im.out(), axis=axis)
            return
        flat = im.emit("Reshape", (im.input(0),),
                       shape=(D.product(shape[:axis]), D.product(shape[axis:])))
        y = im.emit(op, (flat,), axis=1)
        im.emit("Reshape", (y,), im.out(), shape=tuple(shape))
    return handler


_register("Softmax", (1, 1), _softmax, _forward(R.Softmax), _out_elements, function=R.Softmax,
          onnx_import={"Softmax": _import_softmax("Softmax")},
          onnx_export=_export_as("Softmax", axis="axis"))
_register("LogSoftmax", (1, 1), _softmax, _forward(R.LogSoftmax), _out_elements,
          function=R.LogSoftmax, onnx_import={"LogSoftmax": _import_softmax("LogSoftmax")},
          onnx_export=_export_as("LogSoftmax", axis="axis"))

# ---- movement ----------------------------------------------------------------------------


def _reshape(types: Types, attrs: Mapping) -> TensorType:
    return as_type(D.reshape_shape(types[0].shape, attrs["shape"]), types[0].dtype)


def _transpose(types: Types, attrs: Mapping) -> TensorType:
    x, axes = types[0], tuple(attrs["axes"])
    if sorted(axes) != list(range(len(x.shape))):
        _fail(f"axes {axes} are not a permutation of {len(x.shape)} axes")
    return as_type([x.shape[a] for a in axes], x.dtype)


def _indexed_shape(shape: tuple[int, ...], index: Any) -> tuple[int, ...]:
    try:
        return np.broadcast_to(np.empty((), np.bool_), shape)[index].shape
    except IndexError as e:
        _fail(f"index {index!r} does not fit shape {shape}: {e}")


def _getitem(types: Types, attrs: Mapping) -> TensorType:
    """Static shapes index an empty broadcast array; a symbolic axis must come out of the index
    untouched, which two different stand-in sizes prove (anything else is rejected)."""
    x, index = types[0], attrs["index"]
    if x.static:
        return as_type(_indexed_shape(x.shape, index), x.dtype)
    stand_ins = [tuple(d if isinstance(d, int) else base + 7 * i for i, d in enumerate(x.shape))
                 for base in (1_000_003, 2_000_029)]
    first, second = (_indexed_shape(s, index) for s in stand_ins)
    symbol_of = {s[i]: d for s in stand_ins for i, d in enumerate(x.shape) if isinstance(d, str)}
    shape = []
    for a, b in zip(first, second):
        if a == b:
            shape.append(a)
        elif symbol_of.get(a) is not None and symbol_of.get(a) == symbol_of.get(b):
            shape.append(symbol_of[a])
        else:
            _fail(f"index {index!r} on symbolic shape {x.shape} gives a size that is not provable")
    return as_type(shape, x.dtype)


def _concatenate(types: Types, attrs: Mapping) -> TensorType:
    first, axis = types[0], attrs.get("axis", 0)
    ndim = len(first.shape)
    (axis,) = _axes(axis, ndim)
    for t in types[1:]:
        if len(t.shape) != ndim or any(not D.same(a, b) for i, (a, b)
                                       in enumerate(zip(t.shape, first.shape)) if i != axis):
            _fail(f"cannot concatenate shapes {first.shape} and {t.shape} along axis {axis}")
    shape = list(first.shape)
    for t in types[1:]:
        shape[axis] = D.add(shape[axis], t.shape[axis])
    return as_type(shape, np.result_type(*(t.dtype for t in types)))


def _stack(types: Types, attrs: Mapping) -> TensorType:
    first = types[0]
    if any(t.shape != first.shape for t in types):
        _fail("stack needs equal shapes, got " + ", ".join(str(t.shape) for t in types))
    (axis,) = _axes(attrs.get("axis", 0), len(first.shape) + 1)
    shape = list(first.shape)
    shape.insert(axis, len(types))
    return as_type(shape, np.result_type(*(t.dtype for t in types)))


def _pad(types: Types, attrs: Mapping) -> TensorType:
    x, widths = types[0], attrs["pad_width"]
    if len(widths) != len(x.shape):
        _fail(f"pad_width {widths} does not match {len(x.shape)} dimensions")
    if any(a < 0 or b < 0 for a, b in widths):
        _fail(f"pad_width {widths} must be non-negative")
    return as_type([D.add(n, a + b) for n, (a, b) in zip(x.shape, widths)], x.dtype)


def _identity_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    return arrays[0]


def _reshape_in(im) -> None:
    """Reshape to a target read from a constant or a shape value (``Shape``-derived, possibly
    symbolic); ONNX's 0 copies the input's dimension unless ``allowzero``."""
    x = im.type(0).shape
    target = list(im.dims(1, "shape"))
    if not im.attr("allowzero", 0):
        for i, n in enumerate(target):
            if isinstance(n, int) and n == 0:
                if i >= len(x):
                    raise im.invalid(f"shape {target} copies dimension {i} (0) that input "
                                     f"{x} does not have")
                target[i] = x[i]
    im.reshape(D.reshape_shape(x, target))


def _flatten_in(im) -> None:
    shape = im.type(0).shape
    axis = im.attr("axis", 1)
    if not -len(shape) <= axis <= len(shape):
        raise im.invalid(f"axis {axis} is out of range for {len(shape)} dimensions")
    axis = axis + len(shape) if axis < 0 else axis
    im.reshape((D.product(shape[:axis]), D.product(shape[axis:])))


def _squeeze_in(im) -> None:
    shape = im.type(0).shape
    axes = im.axes(1 if im.opset >= 13 else None, len(shape))
    if axes is None:
        axes = [i for i, n in enumerate(shape) if isinstance(n, int) and n == 1]
    if any(not D.same(shape[a], 1) for a in axes):
        raise im.invalid(f"cannot squeeze axes {axes} of shape {shape} (not provably 1)")
    im.reshape(tuple(n for i, n in enumerate(shape) if i not in axes))


def _unsqueeze_in(im) -> None:
    shape = list(im.type(0).shape)
    raw = im.axes(1 if im.opset >= 13 else None, None)
    if raw is None:
        raise im.invalid("Unsqueeze needs axes")
    ndim = len(shape) + len(raw)
    if any(not -ndim <= a < ndim for a in raw) or len({a % ndim for a in raw}) < len(raw):
        raise im.invalid(f"axes {raw} are invalid for an output of {ndim} dimensions")
    for a in sorted(a % ndim for a in raw):
        shape.insert(a, 1)
    im.reshape(tuple(shape))


def _reshape_out(ex, node: Node, out: str) -> None:
    """A symbolic target is written with ONNX's own placeholders: 0 where it keeps the input's
    dimension at the same position, -1 for one remaining symbolic dimension; otherwise as a
    shape computed from the graph inputs (``Exporter.shape_tensor``)."""
    source, target = ex.types[node.inputs[0]].shape, list(node.attrs["shape"])
    if not D.is_static(target):
        for i, n in enumerate(target):
            if isinstance(n, str) and i < len(source) and D.same(n, source[i]):
                target[i] = 0
        left = [i for i, n in enumerate(target) if isinstance(n, str)]
        if len(left) > 1 or (left and -1 in target) or any(n == 0 for n in node.attrs["shape"]):
            # no placeholder spelling: the target computed from the input shapes
            ex.add("Reshape", [node.inputs[0], ex.shape_tensor(node.attrs["shape"], out)], out)
            return
        for i in left:
            target[i] = -1
    ex.add("Reshape", [node.inputs[0], ex.constant(np.asarray(target, np.int64), f"{out}.shape")],
           out)


def _dropout_in(im) -> None:
    """Inference Dropout is the identity; its optional mask output is all true, a constant
    when the shape is static (a symbolic-shaped mask is refused if anything reads it)."""
    training = im.const(2, "training_mode") if im.opset >= 12 else None
    if (training is not None and bool(np.asarray(training))) or (im.opset < 7 and im.attr("is_test", 0) == 0):
        raise im.unsupported("Dropout in training mode")
    im.emit("Dropout", (im.input(0),), im.out())
    mask = im.out(1)
    if mask:
        shape = im.type(0).shape
        if D.is_static(shape):
            im.constant(np.ones(shape, np.bool_), output=mask)
        else:
            im.unavailable(mask, f"the mask of a Dropout on symbolic shape {shape}")


def _transpose_in(im) -> None:
    ndim = len(im.type(0).shape)
    im.emit("Transpose", (im.input(0),), im.out(),
            axes=tuple(int(a) for a in im.attr("perm", range(ndim - 1, -1, -1))))


def onnx_slices(ndim: int, starts, ends, axes, steps) -> tuple:
    """ONNX Slice as a tuple of Python slices (Python clamps out-of-range bounds as ONNX does)."""
    index = [slice(None)] * ndim
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise ValueError(f"slice step 0 on axis {axis}")
        index[axis] = slice(int(start), int(end), int(step))
    return tuple(index)


def _slice_in(im) -> None:
    ndim = len(im.type(0).shape)
    if im.opset >= 10:
        starts, ends = im.const(1, "starts"), im.const(2, "ends")
        axes, steps = im.axes(3, ndim), im.const(4, "steps")
    else:
        starts, ends, axes, steps = im.attr("starts"), im.attr("ends"), im.axes(None, ndim), None
    try:
        index = onnx_slices(ndim, np.ravel(starts), np.ravel(ends), axes,
                        None if steps is None else np.ravel(steps))
    except ValueError as e:
        raise im.invalid(str(e)) from None
    im.emit("GetItem", (im.input(0),), im.out(), index=index)


def _gather_in(im) -> None:
    ndim = len(im.type(0).shape)
    axis = im.attr("axis", 0)
    if not -ndim <= axis < ndim:
        raise im.invalid(f"axis {axis} is out of range for {ndim} dimensions")
    indices = np.asarray(im.const(1, "indices"))
    size = im.type(0).shape[axis % ndim]
    if isinstance(size, int) and indices.size and not (-size <= indices.min() and indices.max() < size):
        raise im.invalid(f"indices {indices.ravel().tolist()} are out of range for size {size}")
    position = int(indices) if indices.ndim == 0 else indices.astype(np.int64)
    im.emit("GetItem", (im.input(0),), im.out(),
            index=(slice(None),) * (axis % ndim) + (position,))


def _split_in(im) -> None:
    """Split into GetItem slices: sizes from the ``split`` input (opset 13) or attribute, else
    ``num_outputs`` (opset 18) / the number of outputs, the last part taking the remainder."""
    shape = im.type(0).shape
    axis = im.attr("axis", 0)
    if not -len(shape) <= axis < len(shape):
        raise im.invalid(f"axis {axis} is out of range for {len(shape)} dimensions")
    axis %= len(shape)
    size, outputs = shape[axis], list(im.outputs())
    sizes = im.const(1, "split") if im.opset >= 13 else im.attr("split")
    if sizes is None:
        if not isinstance(size, int):
            raise im.unsupported(f"an even Split of the symbolic axis {size!r}")
        parts = int(im.attr("num_outputs", len(outputs)))
        if parts < 1 or (im.opset < 18 and size % parts):
            raise im.invalid(f"axis {axis} of size {size} does not split evenly into {parts}")
        chunk = -(-size // parts)
        sizes = [min(chunk, size - k * chunk) for k in range(parts)]
    sizes = [int(n) for n in np.ravel(sizes)]
    if len(sizes) != len(outputs) or min(sizes, default=0) < 0 or (
            isinstance(size, int) and sum(sizes) != size):
        raise im.invalid(f"split sizes {sizes} do not cut axis {axis} of size {size} into "
                         f"{len(outputs)} parts")
    start = 0
    for n, name in zip(sizes, outputs):
        if name:
            im.emit("GetItem", (im.input(0),), name,
                    index=(slice(None),) * axis + (slice(start, start + n),))
        start += n


def _getitem_out(ex, node: Node, out: str) -> None:
    """Basic slices as Slice; one integer or integer array (the others full slices) as Gather."""
    index = node.attrs["index"]
    index = index if isinstance(index, tuple) else (index,)
    picks = [i for i, k in enumerate(index) if not isinstance(k, slice)]
    if not picks:
        starts, ends, axes, steps = [], [], [], []
        for axis, k in enumerate(index):
            if k != slice(None):
                step = 1 if k.step is None else k.step
                big = np.iinfo(np.int64).max
                starts.append(k.start if k.start is not None else (0 if step > 0 else big))
                ends.append(k.stop if k.stop is not None else (big if step > 0 else -big))
                axes.append(axis)
                steps.append(step)
        arrays = [np.asarray(v, np.int64) for v in (starts, ends, axes, steps)]
        ex.add("Slice", [node.inputs[0]] + [ex.constant(a, f"{out}.{n}") for a, n in
                                            zip(arrays, ("starts", "ends", "axes", "steps"))], out)
    elif len(picks) == 1 and all(k == slice(None) for k in index if isinstance(k, slice)) and \
            np.asarray(index[picks[0]]).dtype.kind in "iu":
        ex.add("Gather", [node.inputs[0], ex.constant(np.asarray(index[picks[0]], np.int64),
                                                      f"{out}.indices")], out, axis=picks[0])
    else:
        raise NotImplementedError(f"node {node.output!r} (GetItem): index {index!r} has no "
                                  "ONNX export")


def _concat_in(im) -> None:
    im.emit("Concatenate", im.inputs(), im.out(), axis=int(im.attr("axis")))


def _pad_in(im) -> None:
    if im.attr("mode", "constant") != "constant":
        raise im.unsupported(f"Pad mode {im.attr('mode')!r}")
    ndim = len(im.type(0).shape)
    pads = [int(p) for p in np.ravel(im.const(1, "pads") if im.opset >= 11 else im.attr("pads"))]
    value = im.const(2, "constant_value") if im.opset >= 11 else im.attr("value", 0.0)
    axes = im.axes(3, ndim) if im.opset >= 18 else None
    axes = list(range(ndim)) if axes is None else axes
    if len(pads) != 2 * len(axes):
        raise im.invalid(f"pads {pads} need {2 * len(axes)} values")
    if any(p < 0 for p in pads):
        raise im.unsupported("negative pads (cropping)")
    widths = [(0, 0)] * ndim
    for k, a in enumerate(axes):
        widths[a] = (pads[k], pads[k + len(axes)])
    fill = 0.0 if value is None else np.asarray(value).item()
    im.emit("Pad", (im.input(0),), im.out(), pad_width=tuple(widths), value=fill)


def _pad_out(ex, node: Node, out: str) -> None:
    widths = node.attrs["pad_width"]
    pads = [w[0] for w in widths] + [w[1] for w in widths]
    value = np.asarray(node.attrs.get("value", 0.0), ex.types[node.inputs[0]].dtype)
    ex.add("Pad", [node.inputs[0], ex.constant(np.asarray(pads, np.int64), f"{out}.pads"),
                   ex.constant(value, f"{out}.value")], out)


_register("Reshape", (1, 1), _reshape, _forward(S.Reshape), _no_work, "view", S.Reshape,
          shape_attrs=("shape",),
          onnx_import={"Reshape": _reshape_in, "Flatten": _flatten_in, "Squeeze": _squeeze_in,
                       "Unsqueeze": _unsqueeze_in}, onnx_export=_reshape_out)
_register("Identity", (1, 1), _same, _identity_run, _no_work, "view",
          onnx_import={"Identity": _import_as("Identity")}, onnx_export=_export_as("Identity"))
_register("Dropout", (1, 1), _same, _identity_run, _no_work, "view",
          onnx_import={"Dropout": _dropout_in}, onnx_export=_export_as("Identity"))
_register("Transpose", (1, 1), _transpose, _forward(S.Transpose), _out_elements, function=S.Transpose,
          onnx_import={"Transpose": _transpose_in}, onnx_export=_export_as("Transpose", perm="axes"))
_register("GetItem", (1, 1), _getitem, _forward(S.GetItem), _out_elements, function=S.GetItem,
          onnx_import={"Slice": _slice_in, "Gather": _gather_in, "Split": _split_in},
          onnx_export=_getitem_out)
_register("Concatenate", (1, None), _concatenate, _forward(S.Concatenate), _out_elements,
          function=S.Concatenate, onnx_import={"Concat": _concat_in},
          onnx_export=_export_as("Concat", axis="axis"))
_register("Stack", (1, None), _stack, _forward(S.Stack), _out_elements, function=S.Stack)


def _full(types: Types, attrs: Mapping) -> TensorType:
    return as_type(attrs["shape"], attrs["dtype"])


def _full_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    return np.full(attrs["shape"], attrs["value"], dtype=attrs["dtype"])


def _full_in(im) -> None:
    """ConstantOfShape of a symbolic shape value (a static one is folded to a constant)."""
    fill = im.attr("value")
    fill = np.zeros(1, np.float32) if fill is None else im.numpy_helper.to_array(fill)
    if fill.size != 1:
        raise im.invalid(f"value must hold one element, got {fill.size}")
    shape = im.dims(0, "shape")
    if any(isinstance(n, int) and n < 0 for n in shape):
        raise im.invalid(f"shape {list(shape)} has a negative dimension")
    im.emit("Full", (), im.out(), shape=tuple(shape), value=fill.item(), dtype=fill.dtype.name)


def _full_out(ex, node: Node, out: str) -> None:
    value = np.full(1, node.attrs["value"], node.attrs["dtype"])
    ex.add("ConstantOfShape", [ex.shape_tensor(node.attrs["shape"], out)], out,
           value=ex.numpy_helper.from_array(value))


_register("Full", (0, 0), _full, _full_run, _out_elements, shape_attrs=("shape",),
          onnx_import={"ConstantOfShape": _full_in}, onnx_export=_full_out)
_register("Pad", (1, 1), _pad, _forward(S.Pad), _out_elements, function=S.Pad,
          onnx_import={"Pad": _pad_in}, onnx_export=_pad_out)

# ---- linear algebra ----------------------------------------------------------------------


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's matmul shape rule (1-D promotion, broadcast batch axes)."""
    if not a or not b:
        _fail(f"matmul needs at least 1-D operands, got {a} and {b}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if not D.same(a2[-1], b2[-2]):
        _fail(f"matmul shapes {a} and {b} do not match ({a2[-1]} != {b2[-2]})")
    batch = D.broadcast_shapes(a2[:-2], b2[:-2])
    shape = batch + (a2[-2], b2[-1])
    if len(b) == 1:
        shape = shape[:-1]
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:] if len(b) > 1 else shape[:-1]
    return shape


def _matmul(types: Types, attrs: Mapping) -> TensorType:
    a, b = types
    return as_type(matmul_shape(a.shape, b.shape), np.result_type(a.dtype, b.dtype))


def _matmul_work(types: Types, out: TensorType, attrs: Mapping) -> int:
    return out.size * types[0].shape[-1]


def _linear(types: Types, attrs: Mapping) -> TensorType:
    x, w, b = (list(types) + [None])[:3]
    if len(w.shape) != 2 or not x.shape or not D.same(x.shape[-1], w.shape[1]):
        _fail(f"linear input {x.shape} does not match weight {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        _fail(f"linear bias {b.shape} does not match weight {w.shape}")
    return as_type(x.shape[:-1] + (w.shape[0],), x.dtype)


def _linear_work(types: Types, out: TensorType, attrs: Mapping) -> int:
    return out.size * types[1].shape[1]


def _gemm_in(im) -> None:
    """Gemm: Y = α·A'·B' + β·C. A constant B with α = β = 1, no transA and a bias of shape (n,)
    (or none) is a Linear; anything else is MatMul with Transpose, Mul and Add."""
    a, b, c = im.input(0), im.input(1), im.input(2)
    alpha, beta = float(im.attr("alpha", 1.0)), float(im.attr("beta", 1.0))
    trans_a, trans_b = im.attr("transA", 0), im.attr("transB", 0)
    if len(im.types[a].shape) != 2 or len(im.types[b].shape) != 2:
        raise im.invalid(f"Gemm needs 2-D A and B, got {im.types[a].shape} and {im.types[b].shape}")
    out = im.out()
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


def _linear_out(ex, node: Node, out: str) -> None:
    """Gemm(transB=1) on 2-D inputs; MatMul with the transposed weight (+ Add) otherwise."""
    ins = list(node.inputs)
    if len(ex.types[ins[0]].shape) == 2:
        ex.add("Gemm", ins, out, transB=1)
        return
    if ins[1] not in ex.graph.constants:
        raise NotImplementedError(f"node {node.output!r} (Linear): a non-constant weight on a "
                                  f"{len(ex.types[ins[0]].shape)}-D input cannot be exported")
    wt = ex.constant(np.ascontiguousarray(ex.graph.constants[ins[1]].T), f"{ins[1]}.T")
    if len(ins) > 2 and ins[2]:
        ex.add("Add", [ex.add("MatMul", [ins[0], wt]), ins[2]], out)
    else:
        ex.add("MatMul", [ins[0], wt], out)


_register("MatMul", (2, 2), _matmul, _forward(L.MatMul), _matmul_work, function=L.MatMul,
          onnx_import={"MatMul": _import_as("MatMul")}, onnx_export=_export_as("MatMul"))
_register("Linear", (2, 3), _linear, _forward(L.Linear), _linear_work, function=L.Linear,
          onnx_import={"Gemm": _gemm_in}, onnx_export=_linear_out)

# ---- convolution, pooling, normalization ---------------------------------------------------


def _pair_attr(attrs: Mapping, name: str, low: int, default: Any = None) -> tuple[int, int]:
    """A window attribute as two ints >= ``low`` (ONNX / onnxruntime reject 0 kernels, strides
    and dilations and negative pads); GraphError naming it otherwise."""
    value = attrs.get(name, default)
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if (len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in pair) or min(pair) < low):
        _fail(f"{name} must be two integers >= {low}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _spatial(x: TensorType, kernel: Sequence[int], stride, padding, dilation,
             ceil_mode: bool = False) -> tuple:
    """PyTorch's output size per spatial axis (``dims.conv_out``; ceil mode as ``MaxPool2d``:
    a last window must start inside the input or its left padding)."""
    out = []
    for a in (0, 1):
        size = x.shape[2 + a]
        n = D.conv_out(size, kernel[a], stride[a], padding[a], dilation[a])
        if ceil_mode and stride[a] > 1:
            if not isinstance(size, int):
                _fail(f"ceil_mode on the symbolic axis {size!r} is not supported")
            span = size + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1
            n = -(-span // stride[a]) + 1
            if (n - 1) * stride[a] >= size + padding[a]:
                n -= 1
        if isinstance(n, int) and n < 1:
            _fail(f"window {tuple(kernel)} (stride {stride}, padding {padding}, dilation "
                  f"{dilation}) does not fit input {x.shape}")
        out.append(n)
    return tuple(out)


def _conv(types: Types, attrs: Mapping) -> TensorType:
    x, w, b = (list(types) + [None])[:3]
    groups = attrs["groups"]
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        _fail(f"groups must be a positive integer, got {groups!r}")
    if len(x.shape) != 4 or len(w.shape) != 4:
        _fail(f"conv needs 4-D input and weight, got {x.shape} and {w.shape}")
    if not D.same(D.mul(w.shape[1], groups), x.shape[1]) or w.shape[0] % groups:
        _fail(f"conv weight {w.shape} with groups={groups} does not fit input {x.shape}")
    if b is not None and b.shape != (w.shape[0],):
        _fail(f"conv bias {b.shape} does not match weight {w.shape}")
    if min(w.shape[2:]) < 1:
        _fail(f"conv kernel {w.shape[2:]} must be at least 1x1")
    hw = _spatial(x, w.shape[2:], _pair_attr(attrs, "stride", 1), _pair_attr(attrs, "padding", 0),
                  _pair_attr(attrs, "dilation", 1))
    return as_type((x.shape[0], w.shape[0]) + hw, x.dtype)


def _conv_work(types: Types, out: TensorType, attrs: Mapping) -> int:
    w = types[1].shape
    return out.size * w[1] * w[2] * w[3]


def _pool(types: Types, attrs: Mapping) -> TensorType:
    """Pooling windows: kernel, stride >= 1, padding >= 0 and at most half the kernel (PyTorch's
    rule; a window entirely in the padding would pool nothing)."""
    x = types[0]
    if len(x.shape) != 4:
        _fail(f"pooling needs a 4-D input, got {x.shape}")
    kernel = _pair_attr(attrs, "kernel_size", 1)
    stride = _pair_attr(attrs, "stride", 1)
    padding = _pair_attr(attrs, "padding", 0)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        _fail(f"padding {padding} must be at most half of kernel_size {kernel}")
    hw = _spatial(x, kernel, stride, padding, (1, 1), bool(attrs.get("ceil_mode", False)))
    return as_type(x.shape[:2] + hw, x.dtype)


def _pool_work(types: Types, out: TensorType, attrs: Mapping) -> int:
    return out.size * math.prod(attrs["kernel_size"])


def _adaptive(types: Types, attrs: Mapping) -> TensorType:
    x = types[0]
    if len(x.shape) != 4:
        _fail(f"adaptive pooling needs a 4-D input, got {x.shape}")
    return as_type(x.shape[:2] + tuple(attrs["output_size"]), x.dtype)


def _batch_norm(types: Types, attrs: Mapping) -> TensorType:
    x = types[0]
    if len(x.shape) < 2:
        _fail(f"batch norm needs (N, C, ...) input, got {x.shape}")
    for t in types[1:]:
        if t is not None and (len(t.shape) != 1 or not D.same(t.shape[0], x.shape[1])):
            _fail(f"batch norm parameter {t.shape} does not match {x.shape[1]} channels")
    if not attrs.get("training", False) and (len(types) < 5 or types[3] is None or types[4] is None):
        _fail("batch norm at inference needs the running mean and variance")
    return x


def _batch_norm_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    x, w, b, mean, var = (list(arrays) + [None] * 5)[:5]
    training = attrs.get("training", False)
    if training:  # batch statistics; the running estimates are never updated by a graph
        mean = var = None
    return N.BatchNorm.forward(Context((False,) * 3), x, w, b, running_mean=mean,
                               running_var=var, training=training, momentum=0.0,
                               eps=attrs["eps"])


def _bn_work(types: Types, out: TensorType, attrs: Mapping) -> int:
    """One multiply-add per element at inference (y = a x + b with a = γ/σ, b = β − aμ)."""
    return out.size


def _onnx_ints(im, name: str, n: int, low: int, default: Sequence[int] | None) -> tuple[int, ...]:
    """An ONNX list attribute of ``n`` ints >= ``low`` (ValueError naming it otherwise: a
    window attribute is never silently fixed or cropped)."""
    value = im.attr(name, default)
    if value is None:
        raise im.invalid(f"attribute {name!r} is required")
    if not isinstance(value, (list, tuple)):
        raise im.invalid(f"{name} must be a list of {n} integers, got {value!r}")
    value = tuple(value)
    if len(value) != n or any(not isinstance(v, (int, np.integer)) or v < low for v in value):
        raise im.invalid(f"{name} must be {n} integers >= {low}, got {list(value)}")
    return tuple(int(v) for v in value)


def _spatial_pads(im, kernel: tuple[int, int], strides: tuple[int, int],
                  dilations: tuple[int, int]) -> list[int]:
    """[top, left, bottom, right] from ``pads`` or ``auto_pad`` (SAME_* needs static sizes)."""
    auto = im.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return list(_onnx_ints(im, "pads", 4, 0, (0, 0, 0, 0)))
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise im.invalid(f"auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    begin, end = [], []
    for a in (0, 1):
        size = im.type(0).shape[2 + a]
        if not isinstance(size, int):
            raise im.unsupported(f"auto_pad {auto} on the symbolic axis {size!r}")
        total = max((-(-size // strides[a]) - 1) * strides[a]
                    + dilations[a] * (kernel[a] - 1) + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


def _padded_input(im, x: str, pads: list[int], value: float,
                  limit: tuple[int, int] | None = None) -> tuple[str, tuple[int, int]]:
    """Symmetric pads (at most ``limit`` per axis) stay an attribute; others become an explicit
    Pad node."""
    fits = limit is None or (pads[0] <= limit[0] and pads[1] <= limit[1])
    if pads[0] == pads[2] and pads[1] == pads[3] and fits:
        return x, (pads[0], pads[1])
    widths = ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3]))
    return im.emit("Pad", (x,), pad_width=widths, value=value), (0, 0)


def _conv_window(im, w_shape) -> tuple:
    if len(w_shape) != 4 or len(im.type(0).shape) != 4:
        raise im.unsupported(f"{len(w_shape) - 2}-D convolution")
    kernel = _onnx_ints(im, "kernel_shape", 2, 1, w_shape[2:])
    if kernel != tuple(w_shape[2:]):
        raise im.invalid(f"kernel_shape {list(kernel)} does not match weight {w_shape}")
    strides = _onnx_ints(im, "strides", 2, 1, (1, 1))
    dilations = _onnx_ints(im, "dilations", 2, 1, (1, 1))
    return kernel, strides, dilations, _spatial_pads(im, kernel, strides, dilations)


def _conv_in(im) -> None:
    kernel, strides, dilations, pads = _conv_window(im, im.type(1).shape)
    x, padding = _padded_input(im, im.input(0), pads, 0.0)
    im.emit("Conv2d", (x, im.input(1), im.input(2)), im.out(), stride=strides,
            padding=padding, dilation=dilations, groups=int(im.attr("group", 1)))


def _conv_out(ex, node: Node, out: str) -> None:
    (ph, pw), w = node.attrs["padding"], ex.types[node.inputs[1]].shape
    ex.add("Conv", node.inputs, out, kernel_shape=list(w[2:]), strides=list(node.attrs["stride"]),
           pads=[ph, pw, ph, pw], dilations=list(node.attrs["dilation"]),
           group=node.attrs["groups"])


def _import_pool(op: str) -> Callable:
    """MaxPool / AveragePool (2-D, no dilation, no indices output), with ceil_mode and
    AveragePool's count_include_pad. ONNX allows pads up to kernel - 1; pads beyond PyTorch's
    kernel // 2, or asymmetric ones, become an explicit Pad (-inf for max, 0 for an average that
    counts padding); an average that excludes such padding is refused."""
    def handler(im) -> None:
        if len(im.type(0).shape) != 4:
            raise im.unsupported(f"{len(im.type(0).shape) - 2}-D pooling")
        if len(im.outputs()) > 1 or im.attr("storage_order", 0):
            raise im.unsupported("pooling indices")
        kernel = _onnx_ints(im, "kernel_shape", 2, 1, None)
        strides = _onnx_ints(im, "strides", 2, 1, (1, 1))
        if _onnx_ints(im, "dilations", 2, 1, (1, 1)) != (1, 1):
            raise im.unsupported("dilated pooling")
        pads = _spatial_pads(im, kernel, strides, (1, 1))
        if any(p >= k for p, k in zip(pads, kernel + kernel)):
            raise im.invalid(f"pads {pads} must be smaller than kernel_shape {list(kernel)}")
        attrs = {}
        if im.attr("ceil_mode", 0):
            attrs["ceil_mode"] = True
        include = bool(im.attr("count_include_pad", 0))
        if op == "AvgPool2d" and not include:
            attrs["count_include_pad"] = False
        half = (kernel[0] // 2, kernel[1] // 2)
        symmetric = pads[:2] == pads[2:] and pads[0] <= half[0] and pads[1] <= half[1]
        if op == "AvgPool2d" and not include and not symmetric:
            _average_excluding_pads(im, kernel, strides, pads, attrs)
            return
        x, padding = _padded_input(im, im.input(0), pads, -np.inf if op == "MaxPool2d" else 0.0, half)
        im.emit(op, (x,), im.out(), kernel_size=kernel, stride=strides, padding=padding, **attrs)
    return handler


def _average_excluding_pads(im, kernel, strides, pads, attrs) -> None:
    """An average over the non-padding elements of each window, for pads that the pooling
    attribute cannot hold: pool(pad₀(x)) / pool(pad₀(1)), the same pooling of the zero-padded
    input and of a zero-padded all-ones image (a constant: the fraction of real elements)."""
    x = im.type(0)
    if not D.is_static(x.shape[2:]):
        raise im.unsupported(f"average pooling that excludes padding {pads} on symbolic "
                             f"spatial axes {x.shape[2:]}")
    window = dict(kernel_size=kernel, stride=strides, padding=(0, 0),
                  **{k: v for k, v in attrs.items() if k == "ceil_mode"})
    widths = ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3]))
    ones = im.constant(np.ones((1, 1) + tuple(x.shape[2:]), x.dtype), "ones")
    fraction = im.emit("AvgPool2d", (im.emit("Pad", (ones,), pad_width=widths, value=0.0),), **window)
    total = im.emit("AvgPool2d", (im.emit("Pad", (im.input(0),), pad_width=widths, value=0.0),),
                    **window)
    im.emit("Div", (total, fraction), im.out())


def _pool_out(ex, node: Node, out: str) -> None:
    a = node.attrs
    (ph, pw) = a["padding"]
    extra = {"ceil_mode": int(bool(a.get("ceil_mode", False)))}
    if node.op == "AvgPool2d":
        extra["count_include_pad"] = int(a.get("count_include_pad", True))
    ex.add("MaxPool" if node.op == "MaxPool2d" else "AveragePool", node.inputs, out,
           kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
           pads=[ph, pw, ph, pw], **extra)


def _global_avg_in(im) -> None:
    if len(im.type(0).shape) != 4:
        raise im.unsupported("non 2-D global pooling")
    im.emit("AdaptiveAvgPool2d", (im.input(0),), im.out(), output_size=(1, 1))


def _adaptive_out(ex, node: Node, out: str) -> None:
    h, w = ex.types[node.inputs[0]].shape[2:]
    oh, ow = node.attrs["output_size"]
    if (oh, ow) == (1, 1):
        ex.add("GlobalAveragePool", node.inputs, out)
    elif isinstance(h, int) and isinstance(w, int) and h % oh == 0 and w % ow == 0:
        ex.add("AveragePool", node.inputs, out, kernel_shape=[h // oh, w // ow],
               strides=[h // oh, w // ow])
    else:
        raise NotImplementedError(f"node {node.output!r} (AdaptiveAvgPool2d): output "
                                  f"{node.attrs['output_size']} does not divide input {(h, w)}")


def _batchnorm_in(im) -> None:
    if im.attr("training_mode", 0) or len(im.outputs()) > 1:
        raise im.unsupported("training-mode BatchNormalization")
    im.emit("BatchNorm", tuple(im.input(i) for i in range(5)), im.out(),
            eps=float(im.attr("epsilon", 1e-5)), training=False)


def _batchnorm_out(ex, node: Node, out: str) -> None:
    if node.attrs.get("training"):
        raise NotImplementedError(f"node {node.output!r} (BatchNorm) uses batch statistics, which "
                                  "ONNX inference BatchNormalization cannot express")
    x = ex.types[node.inputs[0]]
    ins = (list(node.inputs) + [""] * 5)[:5]
    ins[1] = ins[1] or ex.constant(np.ones(x.shape[1], x.dtype), f"{out}.scale")
    ins[2] = ins[2] or ex.constant(np.zeros(x.shape[1], x.dtype), f"{out}.bias")
    ex.add("BatchNormalization", ins, out, epsilon=float(node.attrs["eps"]))


_register("Conv2d", (2, 3), _conv, _forward(C.Conv2d), _conv_work, function=C.Conv2d,
          onnx_import={"Conv": _conv_in}, onnx_export=_conv_out)
def _max_pool_run(arrays: Arrays, attrs: Mapping) -> np.ndarray:
    """minnet's max pooling; integer codes (QOperator models pool uint8) go through float64,
    exact for every integer below 2^53, and come back in their own dtype."""
    x = arrays[0]
    if x.dtype.kind in "iu":
        return _forward(P.MaxPool2d)([x.astype(np.float64)], attrs).astype(x.dtype)
    return _forward(P.MaxPool2d)(arrays, attrs)


_register("MaxPool2d", (1, 1), _pool, _max_pool_run, _pool_work, function=P.MaxPool2d,
          onnx_import={"MaxPool": _import_pool("MaxPool2d")}, onnx_export=_pool_out)
_register("AvgPool2d", (1, 1), _pool, _forward(P.AvgPool2d), _pool_work, function=P.AvgPool2d,
          onnx_import={"AveragePool": _import_pool("AvgPool2d")}, onnx_export=_pool_out)
_register("AdaptiveAvgPool2d", (1, 1), _adaptive, _forward(P.AdaptiveAvgPool2d), _in_elements,
          function=P.AdaptiveAvgPool2d, onnx_import={"GlobalAveragePool": _global_avg_in},
          onnx_export=_adaptive_out)
_register("BatchNorm", (1, 5), _batch_norm, _batch_norm_run, _bn_work, function=N.BatchNorm,
          onnx_import={"BatchNormalization": _batchnorm_in}, onnx_export=_batchnorm_out)


def _lrn(types: Types, attrs: Mapping) -> TensorType:
    x, size = types[0], attrs["size"]
    before = attrs.get("before", size // 2 if isinstance(size, int) else 0)
    if len(x.shape) < 3:
        _fail(f"local response norm needs (N, C, ...) input, got {x.shape}")
    if not isinstance(size, (int, np.integer)) or size < 1 or not 0 <= before < size:
        _fail(f"local response norm size {size!r} (window start {before!r}) is invalid")
    return x


def _lrn_in(im) -> None:
    """ONNX's window [c − ⌊(n−1)/2⌋, c + ⌈(n−1)/2⌉]; PyTorch's starts at c − ⌊n/2⌋."""
    size = im.attr("size")
    if not isinstance(size, int) or size < 1:
        raise im.invalid(f"size must be a positive integer, got {size!r}")
    im.emit("LocalResponseNorm", (im.input(0),), im.out(), size=size,
            alpha=float(im.attr("alpha", 1e-4)), beta=float(im.attr("beta", 0.75)),
            k=float(im.attr("bias", 1.0)), before=(size - 1) // 2)


def _lrn_out(ex, node: Node, out: str) -> None:
    a = node.attrs
    if a.get("before", a["size"] // 2) != (a["size"] - 1) // 2:
        raise NotImplementedError(f"node {node.output!r} (LocalResponseNorm): PyTorch's window of "
                                  f"even size {a['size']} has no ONNX LRN spelling")
    ex.add("LRN", node.inputs, out, size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["k"])


_register("LocalResponseNorm", (1, 1), _lrn, _forward(N.LocalResponseNorm),
          lambda t, o, a: o.size * a["size"], function=N.LocalResponseNorm,
          onnx_import={"LRN": _lrn_in}, onnx_export=_lrn_out)


def _layer_norm(types: Types, attrs: Mapping) -> TensorType:
    x, shape = types[0], tuple(attrs["normalized_shape"])
    if not shape or len(shape) > len(x.shape) or not all(
            D.same(a, b) for a, b in zip(shape, x.shape[len(x.shape) - len(shape):])):
        _fail(f"normalized_shape {shape} is not a suffix of the input shape {x.shape}")
    for t in types[1:]:
        if t is not None and t.shape != shape:
            _fail(f"layer norm parameter {t.shape} does not match normalized_shape {shape}")
    return x


def _layer_norm_in(im) -> None:
    if len(im.outputs()) > 1:
        raise im.unsupported("LayerNormalization's mean and inverse deviation outputs")
    shape = im.type(0).shape
    axis = im.attr("axis", -1)
    if not -len(shape) <= axis < len(shape):
        raise im.invalid(f"axis {axis} is out of range for {len(shape)} dimensions")
    params = [im.input(i) for i in (1, 2)]
    if any(p and im.types[p].shape != tuple(shape[axis:]) for p in params):
        raise im.unsupported("a LayerNormalization scale or bias that only broadcasts to "
                             f"{tuple(shape[axis:])}")
    im.emit("LayerNorm", (im.input(0), *params), im.out(), normalized_shape=tuple(shape[axis:]),
            eps=float(im.attr("epsilon", 1e-5)))


def _layer_norm_out(ex, node: Node, out: str) -> None:
    x, shape = ex.types[node.inputs[0]], tuple(node.attrs["normalized_shape"])
    ins = (list(node.inputs) + ["", ""])[:3]
    ins[1] = ins[1] or ex.constant(np.ones(shape, x.dtype), f"{out}.scale")
    ex.add("LayerNormalization", ins, out, axis=len(x.shape) - len(shape),
           epsilon=node.attrs["eps"])


_register("LayerNorm", (1, 3), _layer_norm, _forward(N.LayerNorm), _bn_work,
          function=N.LayerNorm, shape_attrs=("normalized_shape",),
          onnx_import={"LayerNormalization": _layer_norm_in}, onnx_export=_layer_norm_out)

# ---- resize ----------------------------------------------------------------------------------


def _resize(types: Types, attrs: Mapping) -> TensorType:
    x, size, scales = types[0], tuple(attrs["size"]), attrs.get("scales")
    if not size or len(size) > len(x.shape) or (scales is not None and len(scales) != len(size)):
        _fail(f"resize size {size} / scales {scales} do not fit input {x.shape}")
    if attrs.get("mode", "nearest") not in RZ.MODES or attrs.get(
            "coordinate_transformation_mode", "half_pixel") not in RZ.COORDINATE_MODES or attrs.get(
            "nearest_mode", "round_prefer_floor") not in RZ.NEAREST_MODES:
        _fail(f"resize modes {dict(attrs)} are not supported")
    return as_type(x.shape[:len(x.shape) - len(size)] + size, x.dtype)


def _resize_in(im) -> None:
    """Resize (opset 10: scales input; 11+: roi, scales, sizes) and Upsample (opset 7: scales
    attribute, 9: input) of the spatial axes (scales of N and C must be 1). Output size ⌊n·s⌋;
    a symbolic axis needs an integer scale."""
    x = im.type(0).shape
    mode = im.attr("mode", "nearest")
    if im.node.op_type == "Upsample" or im.opset < 11:
        coordinates, nearest_mode = "asymmetric", "floor"
        scales = im.attr("scales") if im.opset < 9 else im.const(2 if im.opset >= 10 and
                                                                 im.node.op_type == "Resize" else 1,
                                                                 "scales")
        sizes = None
    else:
        coordinates = im.attr("coordinate_transformation_mode", "half_pixel")
        nearest_mode = im.attr("nearest_mode", "round_prefer_floor")
        if im.attr("exclude_outside", 0) or im.attr("antialias", 0) or im.attr("axes") is not None \
                or im.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise im.unsupported("Resize exclude_outside, antialias, axes or keep_aspect_ratio_policy")
        scales = im.const(2, "scales")
        sizes = im.dims(3, "sizes") if im.input(3) else None
        if scales is not None and np.size(scales) == 0:
            scales = None
    mode = "linear" if mode == "bilinear" else mode
    if mode not in RZ.MODES or coordinates not in RZ.COORDINATE_MODES:
        raise im.unsupported(f"Resize mode {mode!r} with {coordinates!r} coordinates")
    if len(x) < 3:
        raise im.unsupported(f"Resize of a {len(x)}-D input")
    if sizes is None:
        if scales is None:
            raise im.invalid("Resize needs scales or sizes")
        scales = tuple(float(s) for s in np.ravel(scales))
        if len(scales) != len(x) or any(not s > 0 for s in scales):
            raise im.invalid(f"scales {list(scales)} must be {len(x)} positive numbers")
        if scales[:2] != (1.0, 1.0):
            raise im.unsupported(f"resizing the batch or channel axis (scales {list(scales)})")
        sizes = []
        for n, s in zip(x[2:], scales[2:]):
            if isinstance(n, int):
                sizes.append(int(math.floor(n * s)))
                if coordinates == "align_corners" and n * s != sizes[-1]:
                    raise im.unsupported("align_corners with a fractional output length n·s")
            elif float(s).is_integer():
                sizes.append(D.mul(n, int(s)))
            else:
                raise im.unsupported(f"a non-integer scale {s} of the symbolic axis {n!r}")
        scales = scales[2:]
    else:
        if len(sizes) != len(x) or not all(D.same(a, b) for a, b in zip(sizes[:2], x[:2])):
            raise im.invalid(f"sizes {list(sizes)} must have {len(x)} entries and keep N and C")
        sizes, scales = sizes[2:], None
    im.emit("Resize", (im.input(0),), im.out(), size=tuple(sizes), scales=scales, mode=mode,
            coordinate_transformation_mode=coordinates, nearest_mode=nearest_mode)


def _resize_out(ex, node: Node, out: str) -> None:
    a, x = node.attrs, ex.types[node.inputs[0]]
    lead = len(x.shape) - len(a["size"])
    if a.get("scales") is not None:
        scales = (1.0,) * lead + tuple(a["scales"])
        extra = [ex.constant(np.asarray(scales, np.float32), f"{out}.scales")]
    else:
        sizes = tuple(x.shape[:lead]) + tuple(a["size"])
        if not D.is_static(sizes):
            raise NotImplementedError(f"node {node.output!r} (Resize): symbolic sizes {sizes}")
        extra = ["", ex.constant(np.asarray(sizes, np.int64), f"{out}.sizes")]
    ex.add("Resize", [node.inputs[0], ""] + extra, out, mode=a.get("mode", "nearest"),
           coordinate_transformation_mode=a.get("coordinate_transformation_mode", "half_pixel"),
           nearest_mode=a.get("nearest_mode", "round_prefer_floor"))


_register("Resize", (1, 1), _resize, _forward(RZ.Resize),
          lambda t, o, a: o.size * (1 if a.get("mode") == "nearest" else 2 ** len(a["size"])),
          function=RZ.Resize, shape_attrs=("size",),
          onnx_import={"Resize": _resize_in, "Upsample": _resize_in}, onnx_export=_resize_out)


# ---- integer ops of quantized ONNX models: optim.graph.qops, registered here so that the
# table keeps its order (qops reads the helpers above).
from optim.graph import qops  # noqa: E402,F401


# ---- fused ops (made by optim.graph.passes.fuse_activations) --------------------------------


def _then_relu(run: Callable[[Arrays, Mapping], np.ndarray]) -> Callable[[Arrays, Mapping], np.ndarray]:
    def fused(arrays: Arrays, attrs: Mapping) -> np.ndarray:
        return np.maximum(run(arrays, attrs), 0)
    return fused


FUSED_RELU = {"Conv2d": "Conv2dReLU", "Linear": "LinearReLU", "Add": "AddReLU"}
for _base, _fused in FUSED_RELU.items():
    _op = OPS[_base]
    _register(_fused, _op.n_inputs, _op.infer, _then_relu(_op.run), _op.work, _op.kind)
UNFUSED = {v: k for k, v in FUSED_RELU.items()}

OP_BY_FUNCTION = {op.function: name for name, op in OPS.items()
                  if op.function is not None and name not in UNFUSED}


def infer_node(node: Node, types: Types) -> TensorType:
    """The output type of ``node`` given its input types; ``GraphError`` names the node."""
    op = OPS.get(node.op)
    if op is None:
        raise GraphError(f"node {node.output!r}: unknown op {node.op!r}")
    required, most = op.n_inputs
    if (len(types) < required or (most is not None and len(types) > most)
            or any(t is None for t in types[:required])):
        raise GraphError(f"node {node.output!r} ({node.op}) needs {required}..{most or 'any'} "
                         f"inputs, got {list(node.inputs)}")
    try:
        return op.infer(types, node.attrs)
    except D.DimError as e:  # GraphError included
        raise GraphError(f"node {node.output!r} ({node.op}): {e}") from None
    except (KeyError, TypeError) as e:
        raise GraphError(f"node {node.output!r} ({node.op}): bad attributes "
                         f"{dict(node.attrs)!r} ({e})") from None


def run_node(node: Node, arrays: Arrays) -> np.ndarray:
    """The reference kernel of ``node`` on input arrays (absent optional inputs as None)."""
    op = OPS[node.op]
    if op.n_inputs[1] is not None:
        arrays = list(arrays) + [None] * (op.n_inputs[1] - len(arrays))
    return op.run(arrays, node.attrs)


def function_work(fn: type, inputs: Sequence[Any], attrs: Mapping, output: Any) -> int:
    """The op count of one applied minnet ``Function`` (as ``observe_ops`` reports it) by the
    IR's rule for that op, 0 for a Function the IR does not know (``optim.metrics.macs``)."""
    op = OP_BY_FUNCTION.get(fn)
    if op is None:
        return 0
    types = [None if t is None else as_type(np.shape(getattr(t, "data", t)),
                                            np.asarray(getattr(t, "data", t)).dtype)
             for t in inputs]
    out = as_type(output.shape, output.dtype)
    return int(OPS[op].work(types, out, attrs))


def node_work(node: Node, types: Mapping[str, TensorType]) -> int:
    """The op count of ``node`` (see the module docstring)."""
    ins = [types[n] if n else None for n in node.inputs]
    return int(OPS[node.op].work(ins, types[node.output], node.attrs))
