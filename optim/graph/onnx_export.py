"""ONNX export: ``to_onnx(graph, path) -> onnx.ModelProto`` (optional extra: ``pip install onnx``).

Each IR node is written by the ``onnx_export`` handler registered with its op in
``optim.graph.ops``; a fused op (``Conv2dReLU``, ``LinearReLU``, ``AddReLU``) is its base op's
export followed by a Relu. Symbolic dimensions are written back: a plain symbol as a
``dim_param`` on inputs and outputs (an expression such as ``(H-5)//2+1`` on an output as an
unknown dimension), and a symbolic Reshape target with ONNX's own 0 / -1 placeholders.
The model uses opset 17 and is checked by ``onnx.checker`` (full check) before it is returned.
Tests: ``tests/optim/graph/test_graph_onnx.py`` (round trip, onnxruntime agreement, symbolic
batch) and ``tests/optim/graph/test_graph_onnx_ops.py``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from minnet.io import atomic_write
from optim.graph import dims as D
from optim.graph.ir import Graph, Node, TensorType, fresh_name
from optim.graph.onnx_import import OPSET, onnx_modules
from optim.graph.ops import OPS, UNFUSED

__all__ = ["to_onnx", "short_names", "sparse_pays", "Exporter"]


class Exporter:
    """State of one export: node and initializer lists, taken names; the interface of the
    export handlers in ``optim.graph.ops``."""

    def __init__(self, graph: Graph, helper, numpy_helper):
        self.graph, self.helper, self.numpy_helper = graph, helper, numpy_helper
        self.types = graph.types
        self.nodes, self.initializers = [], []
        self.taken = set(graph.types)
        self.node: Node | None = None

    def fresh(self, base: str) -> str:
        name = fresh_name(self.taken, base)
        self.taken.add(name)
        return name

    def constant(self, value: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def onnx_dtype(self, dtype: Any) -> int:
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def add(self, op_type: str, inputs, outputs: str | list[str] | None = None, **attrs) -> str:
        """Append an ONNX node (trailing absent inputs dropped); returns its first output, a
        fresh name derived from the IR node's when ``outputs`` is None."""
        inputs = list(inputs)
        while inputs and not inputs[-1]:
            inputs.pop()
        if outputs is None:
            outputs = [self.fresh(f"{self.node.output}.{op_type.lower()}")]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.nodes.append(self.helper.make_node(op_type, inputs, list(outputs),
                                                name=self.fresh(f"{self.node.output}.{op_type}"),
                                                **attrs))
        return outputs[0]

    def shape_tensor(self, dims, base: str) -> str:
        """A 1-D int64 value holding ``dims``: a constant when static, else Shape → Gather of the
        graph input axes that define each symbol, concatenated with the static parts."""
        if D.is_static(dims):
            return self.constant(np.asarray(dims, np.int64), f"{base}.shape")
        where = {d: (name, axis) for name in self.graph.inputs
                 for axis, d in enumerate(self.types[name].shape) if D.is_symbol(d)}
        parts = []
        for d in dims:
            if isinstance(d, int):
                parts.append(self.constant(np.asarray([d], np.int64), f"{base}.dim"))
            elif d in where:
                name, axis = where[d]
                shape = self.add("Shape", [name], self.fresh(f"{base}.{name}.shape"))
                parts.append(self.add("Gather", [shape, self.constant(
                    np.asarray([axis], np.int64), f"{base}.axis")], self.fresh(f"{base}.{d}")))
            else:
                raise NotImplementedError(f"node {self.node.output!r} ({self.node.op}): the "
                                          f"symbolic dimension {d!r} has no ONNX spelling")
        return self.add("Concat", parts, self.fresh(f"{base}.shape"), axis=0)

    def export(self, node: Node) -> None:
        self.node = node
        base = UNFUSED.get(node.op, node.op)
        handler = OPS[base].onnx_export
        if handler is None:
            raise NotImplementedError(f"op {node.op!r} (node {node.output!r}) has no ONNX export")
        if base == node.op:
            handler(self, node, node.output)
        else:
            pre = self.fresh(f"{node.output}.pre_relu")
            handler(self, Node(base, node.inputs, node.output, node.attrs), pre)
            self.add("Relu", [pre], node.output)


def _value_info(helper, name: str, t: TensorType):
    shape = [d if isinstance(d, int) else (d if D.is_symbol(d) else None) for d in t.shape]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(t.dtype), shape)


def short_names(graph: Graph) -> Graph:
    """``graph`` with every value but its inputs and outputs renamed to a short base-36 id in
    order of definition (constants first): the same function in a smaller file."""
    keep = set(graph.inputs) | set(graph.outputs)
    order = list(graph.constants) + [n.output for n in graph.nodes]
    ids = {}
    for old in order:
        if old not in keep:
            ids[old] = np.base_repr(len(ids), 36).lower()
    ids = {old: new if new not in keep else f"_{new}" for old, new in ids.items()}

    def rename(name: str) -> str:
        return ids.get(name, name)
    nodes = [Node(n.op, tuple(rename(i) for i in n.inputs), rename(n.output), n.attrs)
             for n in graph.nodes]
    return Graph.build(graph.input_types, nodes, graph.outputs,
                       {rename(k): v for k, v in graph.constants.items()})


def sparse_pays(array: np.ndarray) -> bool:
    """Whether a SparseTensorProto of ``array`` (its non-zeros plus one int64 linearized index
    each, the only index type onnxruntime accepts) is smaller than the dense tensor:
    (itemsize + 8) · nnz < itemsize · size."""
    array = np.asarray(array)
    return array.ndim >= 1 and \
        (array.itemsize + 8) * np.count_nonzero(array) < array.itemsize * array.size


def _sparse_tensor(helper, numpy_helper, name: str, array: np.ndarray):
    flat = np.flatnonzero(array)
    return helper.make_sparse_tensor(numpy_helper.from_array(array.ravel()[flat], name),
                                     numpy_helper.from_array(flat.astype(np.int64), f"{name}.idx"),
                                     list(array.shape))


def to_onnx(graph: Graph, path: str | os.PathLike | None = None, name: str = "minnet", *,
            compact: bool = False, sparse: bool = False) -> Any:
    """Export ``graph`` as an ONNX model (opset 17), checked by ``onnx.checker``; write it to
    ``path`` atomically when given. Returns the ``onnx.ModelProto``. ``compact``: values
    renamed by ``short_names`` (names can be a tenth of a small int8 model's file);
    ``sparse``: constants for which ``sparse_pays`` are written as sparse initialisers.

    Raises NotImplementedError naming the op and node for ops ONNX cannot express here
    (GetItem with advanced indices, Stack, Var, training-mode BatchNorm, a symbolic Reshape
    target with two unknown dimensions).
    """
    onnx, helper, numpy_helper = onnx_modules()
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a Graph, got {type(graph).__name__}")
    if compact:
        graph = short_names(graph)
    ex = Exporter(graph, helper, numpy_helper)
    sparse_initializers = []
    for k, v in graph.constants.items():  # np.array keeps 0-d scales 0-d
        if sparse and sparse_pays(v):
            sparse_initializers.append(_sparse_tensor(helper, numpy_helper, k, np.asarray(v)))
        else:
            ex.initializers.append(numpy_helper.from_array(np.array(v, order="C"), k))
    for node in graph.nodes:
        ex.export(node)
    outputs = []
    for k in graph.outputs:  # an ONNX output must be produced by a node
        if k in graph.inputs or k in graph.constants:
            ex.node = Node("Identity", (k,), k)
            k = ex.add("Identity", [k], ex.fresh(f"{k}.output"))
        outputs.append(k)
    onnx_graph = helper.make_graph(
        ex.nodes, name, [_value_info(helper, k, graph.types[k]) for k in graph.inputs],
        [_value_info(helper, o, graph.types[k]) for o, k in zip(outputs, graph.outputs)],
        ex.initializers, sparse_initializer=sparse_initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    domains = sorted({n.domain for n in ex.nodes} - {"", "ai.onnx"})
    opsets += [helper.make_opsetid(domain, 1) for domain in domains]  # com.microsoft
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="minnet-optim")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes
    # ONNX's shape inference does not type sparse initialisers: check structure only then
    onnx.checker.check_model(model, full_check=not sparse_initializers)
    if path is not None:
        with atomic_write(path) as f:
            f.write(model.SerializeToString())
    return model
