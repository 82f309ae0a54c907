"""The graph IR: typed values, single-output nodes, constants, and the checks that keep a graph
well formed.

A ``Graph`` is a pure data object (frozen; passes return new graphs):

- ``inputs``: names of the values fed at run time, in call order;
- ``constants``: name -> read-only ndarray (parameters, buffers, folded values);
- ``nodes``: single-output ``Node(op, inputs, output, attrs)`` in topological order; an absent
  optional input (a Linear without bias) is the empty name ``""``, as in ONNX;
- ``outputs``: names of the returned values;
- ``types``: name -> ``TensorType(shape, dtype)`` for every value, from shape inference.

Shapes are static (those of the traced example input). ``Graph.build`` sorts the nodes
topologically and infers every type; ``validate`` re-checks an existing graph for cycles,
dangling or doubly defined values and recorded shapes that disagree with inference.
Tests: ``tests/optim/graph/test_graph_ir.py``.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = ["TensorType", "Node", "Graph", "GraphError", "validate", "topological_order",
           "attr_key", "fresh_name"]


class GraphError(ValueError):
    """A malformed graph: cycle, dangling or duplicate value, shape or dtype mismatch."""


class TensorType(NamedTuple):
    """Static shape and dtype of a value."""
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{np.dtype(self.dtype).name}[{', '.join(map(str, self.shape))}]"


def as_type(shape: Iterable[int], dtype: Any) -> TensorType:
    return TensorType(tuple(int(n) for n in shape), np.dtype(dtype))


@dataclass(frozen=True)
class Node:
    """``output = op(*inputs, **attrs)``; the output name also names the node."""
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        args = ", ".join(name or "None" for name in self.inputs)
        attrs = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.attrs.items()))
        return f"%{self.output} = {self.op}({args})" + (f" {{{attrs}}}" if attrs else "")


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    return repr(value)


def attr_key(attrs: Mapping[str, Any]) -> tuple:
    """A hashable, order-independent key of an attribute dict (arrays by dtype, shape, bytes)."""
    def freeze(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return ("array", v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v)).hexdigest())
        if isinstance(v, (list, tuple)):
            return (type(v).__name__,) + tuple(freeze(x) for x in v)
        if isinstance(v, slice):
            return ("slice", v.start, v.stop, v.step)
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, dict):
            return tuple(sorted((k, freeze(x)) for k, x in v.items()))
        return v
    return tuple(sorted((k, freeze(v)) for k, v in attrs.items()))


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
    from optim.graph.ops import infer_node
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
