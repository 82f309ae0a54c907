"""ONNX import: ``from_onnx(path) -> Graph`` (optional extra: ``pip install onnx``).

Each ONNX op is imported by the handler registered with its IR op in ``optim.graph.ops``
(``ONNX_IMPORT``); this module holds what is common to all of them:

- **Symbolic dimensions.** A graph input's ``dim_param`` stays a symbol: names that are not
  Python identifiers are sanitised (``"batch size"`` -> ``batch_size``, ``"2d"`` -> ``_2d``,
  collisions numbered); a dynamic dimension with neither ``dim_value`` nor ``dim_param`` gets a
  fresh symbol ``<input>_<axis>``. ``dim_symbols(model)`` returns the mapping.
- **Shape values.** The Shape / Gather / Unsqueeze / Squeeze / Concat / Slice / Cast / Add /
  Sub / Mul / Div / Reshape / Identity / Expand / ConstantOfShape / Range subgraphs that
  exporters emit for ``view`` and ``flatten`` are evaluated at import on "shape values": 1-D
  int tensors whose elements are Dims (object arrays of ints and symbolic dims). Where every
  element is known they become int64 constants; where not they stay symbolic, so
  ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`` becomes a Reshape with target
  ``("N", -1)`` resolved by the shape rule. A shape value read as data by any other op is
  refused with one error naming the op and the node.
- **Constant folding.** A node whose inputs are all constants is computed at import.
- **Bounded allocation.** Initializers are checked against the bytes the file really holds
  before they are read; no folded constant may exceed ``MAX_FOLDED_ELEMENTS`` elements.

Errors: NotImplementedError names the op and the node of an unsupported op or attribute;
ValueError (GraphError is one) for malformed attributes, shapes that do not fit, a missing
initializer, a non-constant static argument, or a value that depends on data.
Tests: ``tests/optim/graph/test_graph_onnx.py``, ``tests/optim/graph/test_graph_onnx_ops.py``,
``tests/optim/graph/test_graph_onnx_fixtures.py``, ``tests/optim/graph/test_graph_onnx_zoo.py``,
``tests/optim/graph/test_graph_onnx_backend.py`` and
``tests/adversarial/test_onnx_fuzz.py``.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping

import numpy as np

from optim.graph import dims as D
from optim.graph.ir import Graph, GraphError, Node, TensorType, as_type, fresh_name
from optim.graph.ops import ONNX_IMPORT, infer_node, onnx_slices, run_node

__all__ = ["from_onnx", "dim_symbols", "Importer", "MAX_FOLDED_ELEMENTS", "OPSET", "SHAPE_OPS"]

OPSET = 17
MAX_FOLDED_ELEMENTS = 1 << 26  # 64 Mi elements: the largest constant an import may create
_PLAIN_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64"}


def onnx_modules():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("ONNX support needs the optional 'onnx' package: pip install onnx") from None
    return onnx, helper, numpy_helper


# ---- shape values --------------------------------------------------------------------------


class SymDim:
    """A symbolic element of a shape value, with the integer arithmetic ONNX applies to shapes
    (``optim.graph.dims``); an operation whose result is an int gives a plain int."""
    __slots__ = ("dim",)

    def __init__(self, dim: D.Dim):
        self.dim = dim

    @staticmethod
    def wrap(d: D.Dim) -> Any:
        return d if isinstance(d, int) else SymDim(d)

    @staticmethod
    def unwrap(v: Any) -> D.Dim:
        if isinstance(v, SymDim):
            return v.dim
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return int(v)
        raise D.DimError(f"a shape value cannot hold {v!r}")

    def __add__(self, o):
        return SymDim.wrap(D.add(self.dim, SymDim.unwrap(o)))

    __radd__ = __add__

    def __sub__(self, o):
        return SymDim.wrap(D.sub(self.dim, SymDim.unwrap(o)))

    def __rsub__(self, o):
        return SymDim.wrap(D.sub(SymDim.unwrap(o), self.dim))

    def __mul__(self, o):
        return SymDim.wrap(D.mul(self.dim, SymDim.unwrap(o)))

    __rmul__ = __mul__

    def __floordiv__(self, o):
        return SymDim.wrap(D.floordiv(self.dim, SymDim.unwrap(o)))

    def __repr__(self) -> str:
        return repr(self.dim)


def _shape_array(values: Any) -> np.ndarray:
    """An object array of ints and SymDims; plain int64 when nothing is symbolic."""
    array = np.asarray(values, dtype=object)
    flat = [SymDim.wrap(SymDim.unwrap(v)) for v in array.ravel()]
    if all(isinstance(v, int) for v in flat):
        return np.asarray(flat, dtype=np.int64).reshape(array.shape)
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


# ---- symbols of the input dimensions ------------------------------------------------------


def _check_strings(graph) -> None:
    """Every name the import reads must be text (protobuf hands back bytes for invalid UTF-8)."""
    names = [v.name for v in list(graph.input) + list(graph.output) + list(graph.initializer)]
    names += [d.dim_param for v in graph.input if v.type.HasField("tensor_type")
              for d in v.type.tensor_type.shape.dim]
    for node in graph.node:
        names += [node.op_type, node.name, node.domain, *node.input, *node.output]
        names += [a.name for a in node.attribute]
    bad = next((n for n in names if not isinstance(n, str)), None)
    if bad is not None:
        raise ValueError(f"the model holds a name that is not valid UTF-8: {bad!r}")


def _identifier(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", text) or "_"
    return "_" + name if name[0].isdigit() else name


def dim_symbols(model: Any) -> dict[tuple[str, int], str]:
    """(graph input name, axis) -> symbol for every dynamic input dimension of ``model`` (an
    ``onnx.ModelProto``): its sanitised ``dim_param``, or ``<input>_<axis>`` when unnamed."""
    found: dict[tuple[str, int], str] = {}
    by_param: dict[str, str] = {}
    taken: set[str] = set()
    initializers = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in initializers or not vi.type.HasField("tensor_type"):
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                continue
            if d.dim_param:
                if d.dim_param not in by_param:
                    by_param[d.dim_param] = fresh_name(taken, _identifier(d.dim_param))
                    taken.add(by_param[d.dim_param])
                found[(vi.name, axis)] = by_param[d.dim_param]
            else:
                found[(vi.name, axis)] = fresh_name(taken, _identifier(f"{vi.name}_{axis}"))
                taken.add(found[(vi.name, axis)])
    return found


# ---- the importer -----------------------------------------------------------------------------


class Importer:
    """State of one import: value types, constants, shape values and the emitted IR nodes;
    the interface that the handlers in ``optim.graph.ops`` use."""

    def __init__(self, helper, numpy_helper, opset: int):
        self.helper, self.numpy_helper, self.opset = helper, numpy_helper, opset
        self.types: dict[str, TensorType | None] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.shapes: dict[str, np.ndarray] = {}  # symbolic shape values
        self.unavailable_values: dict[str, str] = {}  # outputs that may not be read, and why
        self.nodes: list[Node] = []
        self.node = None  # the ONNX node being imported

    # -- reading the node --
    @property
    def where(self) -> str:
        first = self.node.output[0] if self.node.output else ""
        return f"{self.node.op_type} node {self.node.name or first!r}"

    def unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{self.where}: {what} is not supported")

    def invalid(self, what: str) -> ValueError:
        return ValueError(f"{self.where}: {what}")

    def attr(self, name: str, default: Any = None) -> Any:
        for a in self.node.attribute:
            if a.name == name:
                value = self.helper.get_attribute_value(a)
                return value.decode(errors="replace") if isinstance(value, bytes) else value
        return default

    def dtype_attr(self, name: str) -> str:
        code = self.attr(name)
        try:
            dtype = np.dtype(self.helper.tensor_dtype_to_np_dtype(code))
        except (KeyError, TypeError, ValueError):
            raise self.invalid(f"{name}={code!r} is not a supported tensor type") from None
        if dtype.name not in _PLAIN_DTYPES:
            raise self.unsupported(f"tensor type {dtype.name}")
        return dtype.name

    def input(self, i: int) -> str:
        """Name of input i ('' when absent)."""
        return self.node.input[i] if i < len(self.node.input) else ""

    def inputs(self) -> tuple[str, ...]:
        names = list(self.node.input)
        while names and not names[-1]:
            names.pop()
        return tuple(names)

    def out(self, k: int = 0) -> str:
        return self.node.output[k] if k < len(self.node.output) else ""

    def outputs(self) -> tuple[str, ...]:
        names = list(self.node.output)
        while names and not names[-1]:
            names.pop()
        return tuple(names)

    def type(self, i: int) -> TensorType:
        return self.types[self.input(i)]

    def const(self, i: int, what: str) -> np.ndarray | None:
        """The constant at input i (None when absent); ValueError if it is computed at run time."""
        name = self.input(i)
        if not name:
            return None
        if name in self.shapes:
            raise self.invalid(f"input {name!r} ({what}) depends on a symbolic input dimension "
                               f"{self.shapes[name].tolist()}; it must be a constant here")
        if name not in self.constants:
            raise self.invalid(f"input {name!r} ({what}) must be a constant initializer; bind it "
                               "with from_onnx(..., bind={...})")
        return self.constants[name]

    def dims(self, i: int, what: str) -> tuple[D.Dim, ...]:
        """Input i as a 1-D list of Dims: a constant or a (symbolic) shape value."""
        name = self.input(i)
        value = self.shapes.get(name)
        if value is None:
            value = self.const(i, what)
            if value is None:
                raise self.invalid(f"input {i} ({what}) is required")
            if np.asarray(value).dtype.kind not in "iu":
                raise self.invalid(f"{what} must be integers, got {np.asarray(value).dtype}")
        return tuple(SymDim.unwrap(v) for v in np.ravel(value))

    def axes(self, position: int | None, ndim: int | None) -> list[int] | None:
        """The ``axes`` argument from input ``position`` (None: the attribute), normalised to
        [0, ndim) when ``ndim`` is given; ValueError for an axis out of range or repeated."""
        raw = self.attr("axes") if position is None else self.const(position, "axes")
        if raw is None:
            return None
        axes = [int(a) for a in np.ravel(raw)]
        if ndim is None:
            return axes
        if any(not -ndim <= a < ndim for a in axes) or len({a % ndim for a in axes}) < len(axes):
            raise self.invalid(f"axes {axes} are invalid for {ndim} dimensions")
        return [a % ndim for a in axes]

    # -- writing IR --
    def fresh(self, base: str) -> str:
        name = fresh_name(self.types, base)
        self.types[name] = None  # reserved
        return name

    def emit(self, op: str, inputs, output: str | None = None, **attrs) -> str:
        """Add ``output = op(*inputs, **attrs)``; computed at once when all inputs are constants."""
        for name in inputs:
            if name in self.shapes:
                raise self.invalid(f"{name!r} is computed from a symbolic input dimension "
                                   f"{self.shapes[name].tolist()} and cannot be read as data "
                                   f"by {op}")
            if name in self.unavailable_values:
                raise self.unsupported(f"reading {self.unavailable_values[name]}")
        output = output or self.fresh(f"{self.node.output[0]}.{op.lower()}")
        node = Node(op, tuple(inputs), output, attrs)
        try:
            out_type = infer_node(node, [self.types[n] if n else None for n in inputs])
        except GraphError as e:
            raise GraphError(f"{self.where}: {e}") from None
        self.types[output] = out_type
        if inputs and all(not n or n in self.constants for n in inputs) and out_type.static:
            self._check_fold_size(out_type.size)
            self.constants[output] = np.asarray(run_node(node, [self.constants.get(n) for n in inputs]))
        else:
            self.nodes.append(node)
        return output

    def constant(self, value: np.ndarray, base: str = "const", output: str | None = None) -> str:
        name = output or self.fresh(f"{self.node.output[0]}.{base}")
        self.constants[name] = np.asarray(value)
        self.types[name] = as_type(self.constants[name].shape, self.constants[name].dtype)
        return name

    def unavailable(self, name: str, why: str) -> None:
        self.unavailable_values[name] = why
        self.types[name] = None

    def reshape(self, shape: tuple[D.Dim, ...]) -> None:
        self.emit("Reshape", (self.input(0),), self.out(),
                  shape=tuple(n if isinstance(n, str) else int(n) for n in shape))

    def _check_fold_size(self, elements: int) -> None:
        if elements > MAX_FOLDED_ELEMENTS:
            raise self.invalid(f"a constant of {elements} elements exceeds the import cap "
                               f"MAX_FOLDED_ELEMENTS = {MAX_FOLDED_ELEMENTS}")

    # -- shape values --
    def known(self, name: str) -> np.ndarray | None:
        return self.shapes.get(name, self.constants.get(name)) if name else None

    def set_value(self, name: str, value: Any) -> None:
        """Record a shape-op result: an int64 constant when static, else a shape value."""
        value = np.asarray(value)
        if value.dtype == object:
            value = _shape_array(value)
        if value.dtype == object:
            self.shapes[name] = value
            self.types[name] = as_type(value.shape, np.int64)
        else:
            self.constant(value, output=name)


# ---- shape-value evaluation ------------------------------------------------------------------


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.ravel(value)]


def _shape_op(im: Importer, values: list) -> Any:
    """The result of the current node on known inputs (constants or shape values), or
    NotImplemented when this op is not evaluated here."""
    op, a = im.node.op_type, values[0] if values else None
    if op == "Shape":
        shape = im.type(0).shape
        start, end = im.attr("start", 0), im.attr("end", len(shape))
        return _shape_array([SymDim.wrap(d) for d in shape[slice(start, end)]])
    if op == "Size":
        return _shape_array(SymDim.wrap(D.product(im.type(0).shape)))
    if a is None or any(v is None for v in values[:1]):
        return NotImplemented
    if op == "Identity":
        return a
    if op == "Cast":
        target = np.dtype(im.dtype_attr("to"))
        if a.dtype == object:
            if target.kind not in "iu":
                return NotImplemented
            return a
        return a.astype(target)
    if op == "Gather":
        axis = im.attr("axis", 0)
        indices = np.asarray(values[1]).astype(np.int64)
        size = a.shape[axis] if -a.ndim <= axis < a.ndim else 0
        if indices.size and not (-size <= indices.min() and indices.max() < size):
            raise im.invalid(f"indices {indices.ravel().tolist()} are out of range for size {size}")
        return np.take(a, indices, axis=axis)
    if op == "Unsqueeze":
        axes = _ints(values[1] if im.opset >= 13 else im.attr("axes"))
        ndim = a.ndim + len(axes)
        for axis in sorted(x % ndim for x in axes):
            a = np.expand_dims(a, axis)
        return a
    if op == "Squeeze":
        axes = values[1] if im.opset >= 13 and len(values) > 1 else im.attr("axes")
        return np.squeeze(a, axis=None if axes is None else tuple(_ints(axes)))
    if op == "Concat":
        if any(v is None for v in values):
            return NotImplemented
        return np.concatenate([np.asarray(v, dtype=object) if a.dtype == object or any(
            x.dtype == object for x in values) else v for v in values], axis=im.attr("axis"))
    if op == "Slice":
        if im.opset < 10:
            starts, ends, axes, steps = im.attr("starts"), im.attr("ends"), im.attr("axes"), None
        else:
            starts, ends = values[1], values[2]
            axes = values[3] if len(values) > 3 else None
            steps = values[4] if len(values) > 4 else None
        axes = None if axes is None else [x % a.ndim for x in _ints(axes)]
        return a[onnx_slices(a.ndim, _ints(starts), _ints(ends), axes,
                         None if steps is None else _ints(steps))]
    if op in ("Add", "Sub", "Mul", "Div"):
        if len(values) < 2 or values[1] is None:
            return NotImplemented
        b = values[1]
        if a.dtype != object and b.dtype != object and (a.dtype.kind == "f" or b.dtype.kind == "f"):
            return NotImplemented  # float constants fold through the IR ops
        if op == "Div":
            if a.dtype != object and b.dtype != object:
                if np.any(b == 0):
                    raise im.invalid("integer division by zero")
                return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(a.dtype)
            return np.vectorize(lambda p, q: p // q, otypes=[object])(a, b)
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](a, b)
    if op == "Reshape":
        target = list(_ints(values[1]))
        target = [a.shape[i] if n == 0 and not im.attr("allowzero", 0) else n
                  for i, n in enumerate(target)]
        return a.reshape(target)
    if op == "ConstantOfShape":
        if a.dtype == object:
            return NotImplemented  # a Full node (ops.py)
        shape = _ints(a)
        if any(n < 0 for n in shape):
            raise im.invalid(f"shape {shape} has a negative dimension")
        fill = im.attr("value")
        fill = np.zeros(1, np.float32) if fill is None else _read_tensor(
            im.helper, im.numpy_helper, fill, f"{im.where} value")
        if fill.size != 1:
            raise im.invalid(f"value must hold one element, got {fill.size}")
        # a read-only broadcast of one element: no memory, however large the shape
        return np.broadcast_to(fill.reshape(()), tuple(shape))
    if op == "Expand":
        if a.dtype == object or values[1] is None or values[1].dtype == object:
            return NotImplemented
        target = tuple(_ints(values[1]))
        if any(n < 0 for n in target):
            raise im.invalid(f"shape {list(target)} has a negative dimension")
        return np.broadcast_to(a, np.broadcast_shapes(a.shape, target))  # a view: no memory
    if op == "Range":
        if any(v is None or v.dtype == object for v in values[:3]):
            return NotImplemented
        start, limit, delta = (np.asarray(v).item() for v in values[:3])
        if delta == 0:
            raise im.invalid("Range delta 0")
        im._check_fold_size(max(0, math.ceil((limit - start) / delta)))
        return np.arange(start, limit, delta, dtype=np.asarray(values[0]).dtype)
    return NotImplemented


SHAPE_OPS = {"Shape", "Size", "Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat",
              "Slice", "Add", "Sub", "Mul", "Div", "Reshape", "ConstantOfShape", "Expand", "Range"}


def _constant_node(im: Importer) -> None:
    if len(im.node.attribute) != 1:
        raise im.invalid("Constant needs exactly one value attribute")
    a = im.node.attribute[0]
    value = im.helper.get_attribute_value(a)
    if a.name == "value":
        value = _read_tensor(im.helper, im.numpy_helper, value, f"{im.where} value")
    elif a.name in ("value_float", "value_floats"):
        value = np.asarray(value, dtype=np.float32)
    elif a.name in ("value_int", "value_ints"):
        value = np.asarray(value, dtype=np.int64)
    else:
        raise im.unsupported(f"Constant attribute {a.name!r}")
    im.constant(value, output=im.out())


def _import_node(im: Importer) -> None:
    op = im.node.op_type
    if op == "Constant":
        _constant_node(im)
        return
    if op in SHAPE_OPS:
        values = [im.known(n) for n in im.node.input]
        shape_source = op in ("Shape", "Size")
        all_known = all(v is not None for v, n in zip(values, im.node.input) if n)
        if shape_source or (all_known and values):
            try:
                result = _shape_op(im, values)
            except (IndexError, TypeError, ValueError) as e:  # AxisError and DimError included
                if im.where in str(e):
                    raise
                raise im.invalid(f"cannot evaluate on {[None if v is None else np.shape(v) for v in values]}"
                                 f" (shapes): {e}") from None
            if result is not NotImplemented:
                im.set_value(im.out(), result)
                return
    handler = ONNX_IMPORT.get(op)
    if handler is None:
        raise NotImplementedError(f"ONNX op {op!r} ({im.where}) is not supported")
    try:
        handler(im)
    except (TypeError, IndexError, KeyError) as e:  # an attribute or input of the wrong kind
        raise ValueError(f"{im.where}: malformed attributes or inputs "
                         f"({type(e).__name__}: {e})") from None


# ---- reading the model ------------------------------------------------------------------------


def _read_tensor(helper, numpy_helper, tensor, what: str) -> np.ndarray:
    """``numpy_helper.to_array`` after checking that the declared size is what the message
    really holds (a small file cannot make the import allocate more than it contains)."""
    from onnx import TensorProto
    if any(d < 0 for d in tensor.dims):
        raise ValueError(f"{what}: dimensions {list(tensor.dims)} must be non-negative")
    count = math.prod(tensor.dims)
    if tensor.data_location == TensorProto.EXTERNAL:
        raise ValueError(f"{what}: external data is not loaded; pass a file path so onnx loads it")
    if tensor.data_type == TensorProto.STRING:
        raise NotImplementedError(f"{what}: string tensors are not supported")
    if tensor.HasField("raw_data"):
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{what}: unsupported data type {tensor.data_type}") from None
        held = len(tensor.raw_data) // max(itemsize, 1)
    else:
        held = max(len(tensor.float_data), len(tensor.int32_data), len(tensor.int64_data),
                   len(tensor.double_data), len(tensor.uint64_data))
        if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
            held //= 2
    if count != held:
        raise ValueError(f"{what}: declares {count} elements of shape {list(tensor.dims)} but "
                         f"holds {held}")
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{what}: unreadable tensor ({e})") from None


def _value_type(value_info, helper, symbols: Mapping[tuple[str, int], str]) -> TensorType:
    if not value_info.type.HasField("tensor_type"):
        raise NotImplementedError(f"input {value_info.name!r} is not a tensor "
                                  f"({value_info.type.WhichOneof('value')}); only tensors are supported")
    tensor = value_info.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else symbols[(value_info.name, axis)]
             for axis, d in enumerate(tensor.shape.dim)]
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    except (KeyError, TypeError, ValueError):
        raise NotImplementedError(f"input {value_info.name!r} has unsupported element type "
                                  f"{tensor.elem_type}") from None
    return as_type(shape, dtype)


def from_onnx(path: Any, bind: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Import an ONNX model (``path`` to a file, or an ``onnx.ModelProto``) as a Graph.

    Dynamic input dimensions become symbols (``dim_symbols``); ``bind`` maps graph input names
    to arrays that become constants (for inputs that ops need as static arguments, such as a
    Reshape's target shape).

    Raises NotImplementedError naming the op and the node for an unsupported op or attribute;
    ValueError for malformed attributes or tensors, a node input that nothing defines (a
    missing initializer), a non-constant static argument or a value that depends on data.
    """
    onnx, helper, numpy_helper = onnx_modules()
    if isinstance(path, (str, os.PathLike)):
        try:
            model = onnx.load(os.fspath(path))
        except (onnx.checker.ValidationError, ValueError) as e:
            raise ValueError(f"cannot read ONNX model {os.fspath(path)!r}: {e}") from None
        except Exception as e:  # protobuf's DecodeError is not a ValueError
            if type(e).__name__ != "DecodeError":
                raise
            raise ValueError(f"cannot read ONNX model {os.fspath(path)!r}: {e}") from None
    else:
        model = path
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"path must be a file path or an onnx.ModelProto, got {type(path).__name__}")
    _check_strings(model.graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    im = Importer(helper, numpy_helper, opset)
    g = model.graph
    for init in g.initializer:
        im.constants[init.name] = _read_tensor(helper, numpy_helper, init, f"initializer {init.name!r}")
    for name, value in (bind or {}).items():
        im.constants[name] = np.asarray(value)
    for name, value in im.constants.items():
        im.types[name] = as_type(value.shape, value.dtype)
    symbols = dim_symbols(model)
    inputs = {}
    for vi in g.input:
        if vi.name not in im.constants:
            inputs[vi.name] = im.types[vi.name] = _value_type(vi, helper, symbols)
    for node in g.node:
        im.node = node
        if node.domain not in ("", "ai.onnx"):
            raise NotImplementedError(f"{im.where}: operator domain {node.domain!r} is not supported")
        if not node.output or not node.output[0]:
            raise ValueError(f"{im.where}: a node needs a first output")
        for name in node.input:
            if name and name not in im.types:
                raise ValueError(f"{im.where} reads {name!r}, which is neither a graph input, an "
                                 "initializer nor an earlier node's output (missing initializer?)")
        for name in node.output:
            if name and (name in im.types and im.types[name] is not None or name in inputs):
                raise ValueError(f"{im.where}: output {name!r} is already defined")
        _import_node(im)
    outputs = [o.name for o in g.output]
    for name in outputs:
        if name in im.shapes:
            raise ValueError(f"graph output {name!r} is a symbolic shape value "
                             f"{im.shapes[name].tolist()}, not a tensor")
        if name in im.unavailable_values:
            raise NotImplementedError(f"graph output {name!r}: {im.unavailable_values[name]} "
                                      "is not supported")
    used = {n for node in im.nodes for n in node.inputs} | set(outputs)
    constants = {k: v for k, v in im.constants.items() if k in used}
    return Graph.build(inputs, im.nodes, outputs, constants)
