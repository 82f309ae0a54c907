"""The reference executor: run a graph node by node with minnet's own op kernels.

Each node calls its op's reference kernel (the minnet ``Function.forward`` on arrays, see
``optim.graph.ops``) in topological order; a value is dropped after its last use. No autograd
graph is built. The fast, memory-planned executor is ``optim.graph.compiled``.
Tests: ``tests/optim/graph/test_graph_trace.py`` (equal to eager minnet on many models).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from optim.graph.ir import Graph, input_shapes, specialise, validate
from optim.graph.ops import run_node

__all__ = ["execute", "check_inputs", "last_uses"]


def check_inputs(graph: Graph, inputs: Sequence[Any]) -> list[np.ndarray]:
    """The run-time inputs as arrays of the graph's input types.

    Raises ValueError naming the input and both shapes when a shape differs, TypeError for a
    non-numeric input or a dtype that cannot be cast safely (float64 into float32 is allowed,
    as the eager ops would compute in the parameters' dtype anyway).
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"the graph takes {len(graph.inputs)} input(s) {list(graph.inputs)}, "
                         f"got {len(inputs)}")
    arrays = [np.asarray(getattr(value, "data", value)) for value in inputs]
    input_shapes(graph, arrays)
    for i, (name, array) in enumerate(zip(graph.inputs, arrays)):
        expected = graph.types[name]
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f"input {name!r} must be numeric, got dtype {array.dtype}")
        if array.dtype != expected.dtype:
            if np.issubdtype(array.dtype, np.floating) != np.issubdtype(expected.dtype, np.floating):
                raise TypeError(f"input {name!r} has dtype {array.dtype}, but the graph expects "
                                f"{expected.dtype}")
            arrays[i] = array.astype(expected.dtype)
    return arrays


def last_uses(graph: Graph) -> dict[str, int]:
    """value -> index of the last node reading it (graph outputs: ``len(graph.nodes)``)."""
    last = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name:
                last[name] = i
    for name in graph.outputs:
        last[name] = len(graph.nodes)
    return last


def execute(graph: Graph, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
    """Run ``graph`` on ``inputs`` with the reference kernels.

    A symbolic graph is specialised to the inputs' shapes first (``ir.specialise``). Returns the
    output array, or a tuple when the graph has several outputs. Raises ``GraphError`` (a
    ValueError) for a malformed graph and for an input whose shape the graph cannot take,
    naming the input, the axis and both sizes.

    Examples
    --------
    >>> import numpy as np
    >>> from minnet.models import lenet_300_100
    >>> from optim.graph.trace import trace
    >>> x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    >>> execute(trace(lenet_300_100(), x), x).shape
    (2, 10)
    """
    validate(graph)
    arrays = check_inputs(graph, inputs)
    graph = specialise(graph, input_shapes(graph, arrays))
    env: dict[str, np.ndarray] = dict(graph.constants)
    env.update(zip(graph.inputs, arrays))
    last = last_uses(graph)
    for i, node in enumerate(graph.nodes):
        env[node.output] = run_node(node, [env[n] if n else None for n in node.inputs])
        for name in dict.fromkeys(node.inputs):
            if name and last.get(name) == i and name not in graph.constants:
                del env[name]
    outputs = tuple(env[name] for name in graph.outputs)
    return outputs[0] if len(outputs) == 1 else outputs
