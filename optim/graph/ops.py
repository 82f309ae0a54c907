"""The operator table of the graph IR.

Op types are the names of minnet's ``Function`` classes (``Conv2d``, ``Linear``, ``ReLU``, ...),
so a traced node runs the very ``forward`` that eager minnet runs, plus graph-only ops:
``Identity``, ``Dropout`` (identity at inference) and the fused ``Conv2dReLU``, ``LinearReLU``,
``AddReLU``. For each op the table holds

- ``infer``: its shape and dtype rule (the same formulas the minnet op validates);
- ``run``: the reference kernel on arrays (``Function.forward`` with a throwaway context);
- ``work``: an operation count for the cost model: multiply-accumulates for conv, linear and
  matmul (thop's convention, as ``optim.metrics.macs``), window reads for pooling, output
  elements otherwise, 0 for pure views;
- ``kind``: ``"elementwise"`` (output may overwrite a same-shaped input), ``"view"`` (output
  may alias its first input) or ``"compute"``.

BatchNorm reads its running statistics as inputs (x, weight, bias, mean, var) rather than as
attributes, so passes can fold them like any constant.
Tests: ``tests/optim/graph/test_graph_ir.py`` (every rule against the minnet op's own output).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minnet.kernels.im2col import output_size
from minnet.ops import conv as C
from minnet.ops import elementwise as E
from minnet.ops import linalg as L
from minnet.ops import norm as N
from minnet.ops import pool as P
from minnet.ops import reduce as R
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


OPS: dict[str, OpDef] = {}


def _register(name: str, n_inputs: tuple[int, int], infer, run, work, kind="compute",
              function=None, shape_attrs=()) -> None:
    OPS[name] = OpDef(name, n_inputs, infer, run, work, kind, function, tuple(shape_attrs))


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


# ---- elementwise -------------------------------------------------------------------------


def _broadcast(types: Types, attrs: Mapping) -> TensorType:
    present = [t for t in types if t is not None]
    shape = D.broadcast_shapes(*(t.shape for t in present))
    dtypes = [t.dtype for t in present[-2:]]  # Where: the condition does not set the dtype
    return as_type(shape, np.result_type(*dtypes))


def _same(types: Types, attrs: Mapping) -> TensorType:
    return types[0]


for _fn in (E.Add, E.Sub, E.Mul, E.Div, E.Pow, E.Maximum, E.Minimum):
    _register(_fn.__name__, (2, 2), _broadcast, _forward(_fn), _out_elements, "elementwise", _fn)
_register("Where", (3, 3), _broadcast, _forward(E.Where), _out_elements, "elementwise", E.Where)
for _fn in (E.Neg, E.Exp, E.Log, E.Sqrt, E.Abs, E.Clip, E.ReLU, E.LeakyReLU, E.Sigmoid, E.Tanh,
            E.GELU):
    _register(_fn.__name__, (1, 1), _same, _forward(_fn), _out_elements, "elementwise", _fn)

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


for _fn in (R.Sum, R.Mean, R.Max, R.Var):
    _register(_fn.__name__, (1, 1), _reduce, _forward(_fn), _in_elements, function=_fn)
for _fn in (R.Softmax, R.LogSoftmax):
    _register(_fn.__name__, (1, 1), _softmax, _forward(_fn), _out_elements, function=_fn)

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


_register("Reshape", (1, 1), _reshape, _forward(S.Reshape), _no_work, "view", S.Reshape,
          shape_attrs=("shape",))
_register("Identity", (1, 1), _same, _identity_run, _no_work, "view")
_register("Dropout", (1, 1), _same, _identity_run, _no_work, "view")
_register("Transpose", (1, 1), _transpose, _forward(S.Transpose), _out_elements, function=S.Transpose)
_register("GetItem", (1, 1), _getitem, _forward(S.GetItem), _out_elements, function=S.GetItem)
_register("Concatenate", (1, None), _concatenate, _forward(S.Concatenate), _out_elements,
          function=S.Concatenate)
_register("Stack", (1, None), _stack, _forward(S.Stack), _out_elements, function=S.Stack)
_register("Pad", (1, 1), _pad, _forward(S.Pad), _out_elements, function=S.Pad)

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


_register("MatMul", (2, 2), _matmul, _forward(L.MatMul), _matmul_work, function=L.MatMul)
_register("Linear", (2, 3), _linear, _forward(L.Linear), _linear_work, function=L.Linear)

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
    return 2 * out.size


_register("Conv2d", (2, 3), _conv, _forward(C.Conv2d), _conv_work, function=C.Conv2d)
_register("MaxPool2d", (1, 1), _pool, _forward(P.MaxPool2d), _pool_work, function=P.MaxPool2d)
_register("AvgPool2d", (1, 1), _pool, _forward(P.AvgPool2d), _pool_work, function=P.AvgPool2d)
_register("AdaptiveAvgPool2d", (1, 1), _adaptive, _forward(P.AdaptiveAvgPool2d), _in_elements,
          function=P.AdaptiveAvgPool2d)
_register("BatchNorm", (1, 5), _batch_norm, _batch_norm_run, _bn_work, function=N.BatchNorm)

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


def node_work(node: Node, types: Mapping[str, TensorType]) -> int:
    """The op count of ``node`` (see the module docstring)."""
    ins = [types[n] if n else None for n in node.inputs]
    return int(OPS[node.op].work(ins, types[node.output], node.attrs))
