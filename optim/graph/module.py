"""``GraphModule``: a graph as a trainable ``minnet.nn.Module`` (torch.fx's GraphModule, for the IR).

The graph's constants become the module's state: float constants in a weight position
(``weight_positions``: the weight and bias of Conv2d / Linear / LayerNorm, the scale and shift of
BatchNorm, a non-scalar operand of MatMul, Add, Sub, Mul) are ``Parameter``s, BatchNorm's
running statistics and every other constant are buffers. Their ``state_dict`` keys are the
constants' names, so a traced minnet model's graph module loads the original ``state_dict``
(names with dots become nested submodules, as ``0.weight`` is in ``nn.Sequential``).

``forward`` runs the nodes in order through minnet's differentiable ``Function``s (the ``function``
of each op in ``optim.graph.ops``), so gradients reach every parameter; symbolic dimensions are
bound from the input's shape on each call. ``train()`` / ``eval()`` switch BatchNorm to batch
statistics (updating the running buffers in place, momentum 0.1 as PyTorch's default unless the
node says otherwise) and Dropout on. Ops without a differentiable function (integer ops of a
quantized ONNX model) run their kernel on arrays and refuse an input that needs a gradient.
``to_graph()`` returns the graph with the module's current state as constants.
Tests: ``tests/optim/graph/test_graph_module.py``.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from minnet import functional as F
from minnet import nn
from minnet.tensor import Tensor
from optim.graph import dims
from optim.graph.ir import Graph, input_shapes
from optim.graph.ops import OPS, UNFUSED, run_node

__all__ = ["GraphModule", "weight_positions"]

_WEIGHT_INPUTS = {"Conv2d": (1, 2), "Linear": (1, 2), "BatchNorm": (1, 2), "LayerNorm": (1, 2),
                  "MatMul": (0, 1), "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1)}


def weight_positions(graph: Graph) -> list[str]:
    """Names of the float constants that are trainable weights (see the module docstring)."""
    found = []
    for node in graph.nodes:
        for i in _WEIGHT_INPUTS.get(UNFUSED.get(node.op, node.op), ()):
            name = node.inputs[i] if i < len(node.inputs) else ""
            array = graph.constants.get(name)
            if (array is not None and np.issubdtype(array.dtype, np.floating)
                    and (array.ndim > 0 and array.size > 1 or node.op not in ("Add", "Sub", "Mul"))
                    and name not in found):
                found.append(name)
    return found


class GraphModule(nn.Module):
    """A trainable module running ``graph`` (see the module docstring).

    Parameters
    ----------
    graph : a Graph (static or symbolic), traced or imported.
    parameters : names of the constants to train; default ``weight_positions(graph)``.
    """

    def __init__(self, graph: Graph, parameters: Iterable[str] | None = None):
        super().__init__()
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be an optim.graph.Graph, got {type(graph).__name__}")
        trainable = list(weight_positions(graph) if parameters is None else parameters)
        unknown = [n for n in trainable if n not in graph.constants]
        if unknown:
            raise ValueError(f"parameters names {unknown}, which are not constants of the graph")
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "_slots", {})
        for name, array in graph.constants.items():
            self._slots[name] = self._register(name, np.array(array), name in trainable)

    def _register(self, name: str, array: np.ndarray, trainable: bool) -> tuple[nn.Module, str]:
        """Place ``name`` in the module tree and return (owner, attribute): dots make nested
        submodules; a name whose path clashes with another is kept flat, dots as underscores."""
        owner, leaf = self._path(name)
        if owner is None:
            owner, leaf = self, name.replace(".", "_")
            while leaf in self._parameters or leaf in self._buffers or leaf in self._modules:
                leaf += "_"
        if trainable:
            owner.register_parameter(leaf, nn.Parameter(array))
        else:
            owner.register_buffer(leaf, array)
        return owner, leaf

    def _path(self, name: str) -> tuple[nn.Module | None, str]:
        """The owner and leaf of a dotted name, creating missing submodules; (None, "") when a
        part is empty or already names a parameter, buffer or (for the leaf) a submodule."""
        *path, leaf = name.split(".")
        owner: nn.Module = self
        for depth, part in enumerate(path + [leaf]):
            taken = part in owner._parameters or part in owner._buffers
            if not part or taken or (depth == len(path) and part in owner._modules):
                return None, ""
            if depth < len(path) and part not in owner._modules:
                break
            if depth < len(path):
                owner = owner._modules[part]
        else:
            return owner, leaf
        for part in path[depth:]:
            child = nn.Module()
            setattr(owner, part, child)
            owner = child
        return owner, leaf

    def _value(self, name: str) -> Any:
        owner, leaf = self._slots[name]
        return getattr(owner, leaf)  # a parametrized parameter computes its value

    def forward(self, *inputs: Any) -> Tensor | tuple[Tensor, ...]:
        graph = self.graph
        tensors = [x if isinstance(x, Tensor) else Tensor(np.asarray(x)) for x in inputs]
        bindings = input_shapes(graph, [t.data for t in tensors])
        env: dict[str, Any] = dict(zip(graph.inputs, tensors))
        for node in graph.nodes:
            ins = [self._input(env, n) if n else None for n in node.inputs]
            env[node.output] = self._run(node, ins, bindings)
        outputs = tuple(env[k] if isinstance(env[k], Tensor) else Tensor(env[k])
                        for k in graph.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def _input(self, env: dict, name: str) -> Any:
        if name in env:
            return env[name]
        value = self._value(name)
        return value if isinstance(value, Tensor) else Tensor(value)

    def _run(self, node, ins: list, bindings: dict) -> Tensor:
        op = OPS[node.op]
        attrs = dict(node.attrs)
        for key in op.shape_attrs:
            if key in attrs:
                attrs[key] = dims.substitute(attrs[key], bindings)
        base = UNFUSED.get(node.op, node.op)
        if base == "BatchNorm":
            x, weight, bias = (ins + [None] * 3)[:3]
            stats = [self._value(n) if n else None for n in node.inputs[3:5]]
            out = F.batch_norm(x, *(stats + [None] * 2)[:2], weight, bias,
                               training=self.training, momentum=attrs.get("momentum", 0.1),
                               eps=attrs["eps"])
        elif base == "Dropout":
            out = F.dropout(ins[0], p=attrs.get("p", 0.5), training=self.training)
        elif base == "Identity":
            out = ins[0]
        elif OPS[base].function is not None:
            out = OPS[base].function.apply(*ins, **attrs)
        else:
            if any(t is not None and t.requires_grad for t in ins):
                raise ValueError(f"node {node.output!r} ({node.op}) has no derivative; its "
                                 "inputs must not require gradients")
            out = Tensor(run_node(node, [None if t is None else t.data for t in ins]))
        return F.relu(out) if node.op in UNFUSED else out

    def to_graph(self) -> Graph:
        """The graph with the module's current parameters and buffers as its constants."""
        constants = {name: np.array(getattr(self._value(name), "data", self._value(name)))
                     for name in self.graph.constants}
        return self.graph.replace(constants=constants)
