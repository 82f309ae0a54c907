"""The graph IR: typed values, single-output nodes, constants, and the checks that keep a graph
well formed.

A ``Graph`` is a pure data object (frozen; passes return new graphs):

- ``inputs``: names of the values fed at run time, in call order;
- ``constants``: name -> read-only ndarray (parameters, buffers, folded values);
- ``nodes``: single-output ``Node(op, inputs, output, attrs)`` in topological order; an absent
  optional input (a Linear without bias) is the empty name ``""``, as in ONNX;
- ``outputs``: names of the returned values;
- ``types``: name -> ``TensorType(shape, dtype)`` for every value, from shape inference.

A dimension is an int or a symbolic name (``optim.graph.dims``): ``trace(..., dynamic_axes=)``
and ``from_onnx`` (ONNX ``dim_param``) give graphs whose batch axis is ``"N"``; shape inference
propagates names through every op and rejects what it cannot prove. ``specialise`` binds the
names to the concrete shapes of a call and returns the static graph that the executors run.
``Graph.build`` sorts the nodes topologically and infers every type; ``validate`` re-checks an
existing graph for cycles, dangling or doubly defined values and recorded shapes that disagree
with inference.
Tests: ``tests/optim/graph/test_graph_ir.py``.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from optim.graph import dims
from optim.graph.ops import OPS, infer_node
from optim.graph.types import GraphError, Node, TensorType, as_type, attr_key

__all__ = ["TensorType", "Node", "Graph", "GraphError", "validate", "topological_order",
           "attr_key", "fresh_name", "specialise", "input_shapes"]


def fresh_name(taken: set[str] | Mapping[str, Any], base: str) -> str:
    """``base`` if unused, else ``base_1``, ``base_2``, ..."""
    if base and base not in taken:
        return base
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def _read_only(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.flags.writeable:
        array = array.copy()
        array.setflags(write=False)
    return array


def topological_order(nodes: Sequence[Node], available: Iterable[str]) -> list[Node]:
    """Kahn's algorithm, stable: among ready nodes the earliest in ``nodes`` comes first.

    Raises ``GraphError`` naming the nodes on a cycle, or a value that nothing defines.
    """
    defined = set(available)
    producer = {}
    for node in nodes:
        if node.output in producer or node.output in defined:
            raise GraphError(f"value {node.output!r} is defined more than once")
        producer[node.output] = node
    for node in nodes:
        for name in node.inputs:
            if name and name not in defined and name not in producer:
                raise GraphError(f"node {node.output!r} ({node.op}) reads {name!r}, which no "
                                 "input, constant or node defines (dangling value)")
    waiting = {i: sum(1 for n in set(nd.inputs) if n in producer) for i, nd in enumerate(nodes)}
    users: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in set(node.inputs):
            if name in producer:
                users.setdefault(name, []).append(i)
    ready = [i for i, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users.get(nodes[i].output, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(nodes):
        raise GraphError(f"the graph has a cycle through {_find_cycle(nodes, producer)}")
    return order


def _find_cycle(nodes: Sequence[Node], producer: Mapping[str, Node]) -> str:
    """One cycle, as 'a -> b -> a' (iterative DFS over producer edges)."""
    color: dict[str, int] = {}
    for start in nodes:
        stack = [(start.output, iter(producer[start.output].inputs))]
        path = [start.output]
        if color.get(start.output):
            continue
        color[start.output] = 1
        while stack:
            name, children = stack[-1]
            child = next((c for c in children if c in producer), None)
            if child is None:
                color[name] = 2
                stack.pop()
                path.pop()
            elif color.get(child) == 1:
                cycle = path[path.index(child):] + [child]
                return " -> ".join(reversed(cycle))
            elif not color.get(child):
                color[child] = 1
                stack.append((child, iter(producer[child].inputs)))
                path.append(child)
    return "?"


@dataclass(frozen=True, eq=False)
class Graph:
    """A typed dataflow graph; see the module docstring. Build with ``Graph.build``."""
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    constants: Mapping[str, np.ndarray]
    types: Mapping[str, TensorType]

    @classmethod
    def build(cls, inputs: Mapping[str, TensorType], nodes: Iterable[Node],
              outputs: Sequence[str], constants: Mapping[str, Any]) -> Graph:
        """Sort ``nodes`` topologically, infer every value's type and check the result.

        ``inputs`` maps input names (in call order) to their types. Raises ``GraphError`` for a
        cycle, a dangling value, an unknown output or an op whose shapes do not fit.
        """
        constants = {k: _read_only(v) for k, v in constants.items()}
        clash = set(inputs) & set(constants)
        if clash:
            raise GraphError(f"names {sorted(clash)} are both inputs and constants")
        nodes = topological_order(list(nodes), list(inputs) + list(constants))
        types = {k: as_type(*t) for k, t in inputs.items()}
        types.update({k: as_type(v.shape, v.dtype) for k, v in constants.items()})
        types = _infer(nodes, types)
        for name in outputs:
            if name not in types:
                raise GraphError(f"graph output {name!r} is not defined")
        return cls(tuple(inputs), tuple(outputs), tuple(nodes), constants, types)

    def replace(self, *, inputs: Mapping[str, TensorType] | None = None,
                nodes: Iterable[Node] | None = None, outputs: Sequence[str] | None = None,
                constants: Mapping[str, Any] | None = None) -> Graph:
        """A new graph with some parts replaced (re-sorted and re-typed); unused constants kept."""
        return Graph.build(
            {k: self.types[k] for k in self.inputs} if inputs is None else inputs,
            self.nodes if nodes is None else nodes,
            self.outputs if outputs is None else outputs,
            self.constants if constants is None else constants)

    # ---- queries -----------------------------------------------------------------------
    @property
    def input_types(self) -> dict[str, TensorType]:
        return {k: self.types[k] for k in self.inputs}

    def producers(self) -> dict[str, Node]:
        return {n.output: n for n in self.nodes}

    def consumers(self) -> dict[str, list[Node]]:
        """value name -> nodes reading it (a node reading a value twice is listed once)."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.inputs):
                if name:
                    users.setdefault(name, []).append(node)
        return users

    def names(self) -> set[str]:
        return set(self.types)

    @property
    def static(self) -> bool:
        """True when every value's shape is concrete."""
        return all(t.static for t in self.types.values())

    @property
    def symbols(self) -> set[str]:
        """The plain symbols of the input shapes (what a call binds)."""
        return {d for k in self.inputs for d in self.types[k].shape if dims.is_symbol(d)}

    @property
    def constant_bytes(self) -> int:
        return sum(a.nbytes for a in self.constants.values())

    def signature(self, data: bool = True) -> tuple:
        """Structural identity: equal signatures mean equal graphs (constants compared by value
        when ``data``)."""
        consts = tuple(sorted(
            (k, v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v)).hexdigest() if data else "")
            for k, v in self.constants.items()))
        nodes = tuple((n.op, n.inputs, n.output, attr_key(n.attrs)) for n in self.nodes)
        ins = tuple((k, self.types[k]) for k in self.inputs)
        return ins, self.outputs, nodes, consts

    def dump(self) -> str:
        """A readable listing: inputs, constants, one line per node with its output type."""
        lines = ["graph(" + ", ".join(f"{k}: {self.types[k]}" for k in self.inputs) + ")"]
        lines += [f"  const {k}: {self.types[k]}" for k in self.constants]
        lines += [f"  {node} : {self.types[node.output]}" for node in self.nodes]
        lines.append("  return " + ", ".join(f"%{k}" for k in self.outputs))
        return "\n".join(lines)

    __str__ = dump


def _infer(nodes: Sequence[Node], types: dict[str, TensorType]) -> dict[str, TensorType]:
    for node in nodes:
        types[node.output] = infer_node(node, [types[n] if n else None for n in node.inputs])
    return types


def validate(graph: Graph) -> Graph:
    """Check a graph built by any means; return it unchanged, or raise ``GraphError``.

    Checks: every name read is defined exactly once before use (a misordered graph that has
    a cycle is reported with the cycle), outputs exist, constants are arrays whose types match,
    and every node's recorded output type equals the one shape inference gives.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a Graph, got {type(graph).__name__}")
    available = list(graph.inputs) + list(graph.constants)
    if len(set(available)) != len(available):
        raise GraphError("a name is used for two inputs/constants")
    order = topological_order(list(graph.nodes), available)
    if [n.output for n in order] != [n.output for n in graph.nodes]:
        defined = set(available)
        for node in graph.nodes:
            late = [n for n in node.inputs if n and n not in defined]
            if late:
                raise GraphError(f"node {node.output!r} reads {late[0]!r} before it is computed "
                                 "(nodes are not in topological order)")
            defined.add(node.output)
    types = {k: graph.types.get(k) for k in graph.inputs}
    if None in types.values():
        raise GraphError("every graph input needs a type")
    for name, array in graph.constants.items():
        if not isinstance(array, np.ndarray):
            raise GraphError(f"constant {name!r} must be an ndarray, got {type(array).__name__}")
        types[name] = as_type(array.shape, array.dtype)
        recorded = graph.types.get(name)
        if recorded is not None and recorded != types[name]:
            raise GraphError(f"constant {name!r} is {types[name]} but recorded as {recorded}")
    types = _infer(graph.nodes, types)
    for node in graph.nodes:
        recorded = graph.types.get(node.output)
        if recorded != types[node.output]:
            raise GraphError(f"node {node.output!r} ({node.op}) is recorded as {recorded} but its "
                             f"inputs give {types[node.output]} (shape mismatch)")
    for name in graph.outputs:
        if name not in types:
            raise GraphError(f"graph output {name!r} is not defined")
    return graph


def input_shapes(graph: Graph, arrays: Sequence[Any]) -> dict[str, int]:
    """The symbol bindings that the concrete ``arrays`` (one per graph input) give; GraphError
    naming the input, axis and sizes when a shape cannot match (``dims.bind``)."""
    if len(arrays) != len(graph.inputs):
        raise GraphError(f"the graph takes {len(graph.inputs)} input(s) {list(graph.inputs)}, "
                         f"got {len(arrays)}")
    expected = {k: graph.types[k].shape for k in graph.inputs}
    actual = {k: np.shape(a) for k, a in zip(graph.inputs, arrays)}
    try:
        return dims.bind(expected, actual)
    except dims.DimError as e:
        raise GraphError(f"input {e}") from None


def specialise(graph: Graph, bindings: Mapping[str, int]) -> Graph:
    """The static graph for ``bindings`` (symbol -> size): input types, every shape-valued
    attribute (``OpDef.shape_attrs``) and so every inferred type made concrete.

    Returns ``graph`` itself when it is already static. Raises GraphError when a binding makes
    a node invalid (a window larger than its input, a reshape that does not divide).
    """
    if graph.static:
        return graph
    try:
        inputs = {k: TensorType(dims.substitute(graph.types[k].shape, bindings),
                                graph.types[k].dtype) for k in graph.inputs}
        nodes = []
        for node in graph.nodes:
            shape_attrs = [a for a in OPS[node.op].shape_attrs if a in node.attrs]
            if shape_attrs:
                attrs = dict(node.attrs)
                for a in shape_attrs:
                    attrs[a] = dims.substitute(attrs[a], bindings)
                node = Node(node.op, node.inputs, node.output, attrs)
            nodes.append(node)
    except dims.DimError as e:
        raise GraphError(str(e)) from None
    return Graph.build(inputs, nodes, graph.outputs, graph.constants)
