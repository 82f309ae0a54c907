"""Rewrite passes: pure ``Graph -> Graph`` functions that keep the outputs and never grow the
constant bytes.

Local rewrites are *rules*: ``rule(view, node) -> Rewrite | None`` looks at one node (and its
neighbours) and proposes a replacement. A pass applies its rule wherever it fires until none
does, so every pass is idempotent (a second run finds no site and returns its input). The
rewrite search (``optim.graph.search``) uses the same rules one site at a time.

==========================  ==================================================================
pass                        rewrite
==========================  ==================================================================
``eliminate_identities``    Identity, Dropout (inference), Reshape to the same shape and the
                            identity Transpose are dropped (``onnxsim``'s eliminations)
``simplify_algebra``        x·1, 1·x, x+0, 0+x, x−0, x/1, x^1 -> x; −(−x) -> x;
                            reshape∘reshape -> reshape; transpose∘transpose -> one transpose
``fold_constants``          a node whose inputs are all constants becomes a constant, unless its
                            output is larger than the constants it frees (size guard)
``fold_batchnorms``         Conv2d/Linear followed by inference BatchNorm -> one Conv2d/Linear
                            (``fold_batchnorm``)
``fuse_biases``             Conv2d/Linear + per-channel constant Add -> bias of the layer
``fuse_activations``        Conv2d + ReLU, Linear + ReLU, Add + ReLU -> fused kernels
``eliminate_common``        CSE: equal constants merged; nodes with equal op, inputs and
                            attributes merged (Cocke 1970)
``eliminate_dead``          DCE: nodes without a path to an output and unread constants removed
==========================  ==================================================================

``optimize`` runs them all in that order until the graph stops changing.
Tests: ``tests/optim/graph/test_graph_passes.py`` (outputs preserved on traced models and
hypothesis-drawn random graphs, idempotence, the DCE/CSE laws, the size guard).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator

import numpy as np

from optim.graph.fold import fold_batchnorm
from optim.graph.ir import Graph, Node, attr_key, fresh_name
from optim.graph.ops import FUSED_RELU, run_node

__all__ = ["Rewrite", "GraphView", "RULES", "apply_rewrite", "rewrites", "eliminate_identities",
           "simplify_algebra", "fold_constants", "fold_batchnorms", "fuse_biases",
           "fuse_activations", "eliminate_common", "eliminate_dead", "PIPELINE", "optimize"]


@dataclass
class Rewrite:
    """Delete the nodes producing ``remove``, add ``add``, add ``constants``, and make every
    reader of a value in ``rename`` (and the graph outputs) read its replacement instead."""
    remove: tuple[str, ...] = ()
    add: tuple[Node, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)


class GraphView:
    """A graph with the lookups rules need (computed once per graph)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.outputs = set(graph.outputs)

    @cached_property
    def producers(self) -> dict[str, Node]:
        return self.graph.producers()

    @cached_property
    def readers(self) -> dict[str, list[Node]]:
        return self.graph.consumers()

    @cached_property
    def taken(self) -> set[str]:
        return self.graph.names()

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.constants.get(name) if name else None

    def only_reader(self, name: str, node: Node) -> bool:
        """``node`` is the single reader of ``name`` and ``name`` is not a graph output."""
        readers = self.readers.get(name, [])
        return (len(readers) == 1 and readers[0] is node and name not in self.outputs
                and node.inputs.count(name) == 1)

    def fresh(self, base: str) -> str:
        name = fresh_name(self.taken, base)
        self.taken.add(name)
        return name

    def type(self, name: str):
        return self.graph.types[name]


def apply_rewrite(graph: Graph, rewrite: Rewrite) -> Graph:
    """The graph after ``rewrite``; constants only the removed nodes read are dropped."""
    def renamed(name: str) -> str:
        while name in rewrite.rename:
            name = rewrite.rename[name]
        return name

    removed = set(rewrite.remove)
    kept = [n for n in graph.nodes if n.output not in removed] + list(rewrite.add)
    nodes = [Node(n.op, tuple(renamed(i) for i in n.inputs), n.output, n.attrs) for n in kept]
    outputs = [renamed(o) for o in graph.outputs]
    read = {i for n in nodes for i in n.inputs} | set(outputs)
    freed = {i for n in graph.nodes if n.output in removed for i in n.inputs}
    constants = {k: v for k, v in graph.constants.items()
                 if k not in rewrite.rename and (k in read or k not in freed)}
    constants.update(rewrite.constants)
    return graph.replace(nodes=nodes, outputs=outputs, constants=constants)


Rule = Callable[[GraphView, Node], "Rewrite | None"]


def rewrites(graph: Graph, rule: Rule) -> Iterator[Rewrite]:
    """Every rewrite ``rule`` proposes on ``graph``, one per site, in node order."""
    view = GraphView(graph)
    for node in graph.nodes:
        rewrite = rule(view, node)
        if rewrite is not None:
            yield rewrite


def _exhaust(name: str) -> Callable[[Graph], Graph]:
    """The pass applying ``RULES[name]`` at its first site until no site is left."""
    rule = RULES[name]

    def run(graph: Graph) -> Graph:
        while True:
            rewrite = next(rewrites(graph, rule), None)
            if rewrite is None:
                return graph
            graph = apply_rewrite(graph, rewrite)
    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"Apply ``{rule.__name__}`` until it no longer fires: {rule.__doc__}"
    return run


def _bypass(view: GraphView, node: Node, source: str) -> Rewrite | None:
    """Replace ``node`` by the value ``source`` when that keeps shape and dtype."""
    if view.type(source) != view.type(node.output):
        return None
    return Rewrite(remove=(node.output,), rename={node.output: source})


# ---- eliminations ------------------------------------------------------------------------


def identity_rule(view: GraphView, node: Node) -> Rewrite | None:
    """Identity / Dropout / same-shape Reshape / identity Transpose -> its input."""
    if node.op in ("Identity", "Dropout", "Reshape"):
        return _bypass(view, node, node.inputs[0])
    if node.op == "Transpose" and tuple(node.attrs["axes"]) == tuple(range(len(node.attrs["axes"]))):
        return _bypass(view, node, node.inputs[0])
    return None


def _is_fill(array: np.ndarray | None, value: float) -> bool:
    return array is not None and array.size > 0 and bool(np.all(array == value))


_NEUTRAL = {"Mul": (1, 1), "Add": (0, 0), "Sub": (None, 0), "Div": (None, 1), "Pow": (None, 1)}


def algebra_rule(view: GraphView, node: Node) -> Rewrite | None:
    """x·1, x+0, x−0, x/1, x^1, −(−x), reshape∘reshape, transpose∘transpose."""
    if node.op in _NEUTRAL:
        left, right = _NEUTRAL[node.op]
        a, b = node.inputs
        if _is_fill(view.const(b), right):
            return _bypass(view, node, a)
        if left is not None and _is_fill(view.const(a), left):
            return _bypass(view, node, b)
        return None
    inner = view.producers.get(node.inputs[0]) if node.inputs else None
    if inner is None or inner.op != node.op or node.op not in ("Neg", "Reshape", "Transpose"):
        return None
    drop_inner = (inner.output,) if view.only_reader(inner.output, node) else ()
    if node.op == "Neg":
        rewrite = _bypass(view, node, inner.inputs[0])
        return rewrite and Rewrite(remove=rewrite.remove + drop_inner, rename=rewrite.rename)
    attrs = dict(node.attrs)
    if node.op == "Transpose":
        attrs["axes"] = tuple(inner.attrs["axes"][a] for a in node.attrs["axes"])
    merged = Node(node.op, inner.inputs, node.output, attrs)
    return Rewrite(remove=(node.output,) + drop_inner, add=(merged,))


def constant_rule(view: GraphView, node: Node) -> Rewrite | None:
    """A node of constants becomes a constant if that frees at least as many bytes as it adds."""
    names = [n for n in node.inputs if n]
    if not names or any(n not in view.graph.constants for n in names):
        return None
    freed = sum(view.const(n).nbytes for n in set(names) if view.only_reader(n, node))
    if view.type(node.output).nbytes > freed:
        return None
    value = np.asarray(run_node(node, [view.const(n) for n in node.inputs]))
    name = view.fresh(node.output + ".const")
    return Rewrite(remove=(node.output,), rename={node.output: name}, constants={name: value})


# ---- layer rewrites ----------------------------------------------------------------------


def _layer_before(view: GraphView, node: Node, ops: tuple[str, ...]) -> Node | None:
    """The Conv2d/Linear (in ``ops``) feeding ``node`` alone, with constant weight and bias."""
    layer = view.producers.get(node.inputs[0])
    if layer is None or layer.op not in ops or not view.only_reader(layer.output, node):
        return None
    weight, bias = (list(layer.inputs) + [""])[1:3]
    if view.const(weight) is None or (bias and view.const(bias) is None):
        return None
    if layer.op == "Linear" and len(view.type(layer.output).shape) != 2:
        return None  # channels are axis 1 only for (N, C) outputs
    return layer


def _relayer(view: GraphView, layer: Node, node: Node, weight: np.ndarray | None,
             bias: np.ndarray, tag: str) -> Rewrite:
    """Replace ``layer`` -> ``node`` by ``layer`` with new constants, named like ``node``."""
    inputs = list(layer.inputs)
    constants = {}
    if weight is not None:
        inputs[1] = view.fresh(f"{inputs[1]}.{tag}")
        constants[inputs[1]] = weight
    old_bias = inputs[2] if len(inputs) > 2 and inputs[2] else f"{layer.output}.bias"
    inputs = inputs[:2] + [view.fresh(f"{old_bias}.{tag}")]
    constants[inputs[2]] = bias
    fused = Node(layer.op, tuple(inputs), node.output, layer.attrs)
    return Rewrite(remove=(layer.output, node.output), add=(fused,), constants=constants)


def batchnorm_rule(view: GraphView, node: Node) -> Rewrite | None:
    """Conv2d/Linear -> BatchNorm (inference, constant statistics) -> one layer."""
    if node.op != "BatchNorm" or node.attrs.get("training", False):
        return None
    layer = _layer_before(view, node, ("Conv2d", "Linear"))
    params = (list(node.inputs) + [""] * 5)[1:5]
    if layer is None or any(p and view.const(p) is None for p in params):
        return None
    owned = [layer.inputs[1]] + [n for n in params + list(layer.inputs[2:]) if n]
    if not all(view.only_reader(n, layer if n in layer.inputs else node) for n in owned):
        return None  # a shared constant would be duplicated
    gamma, beta, mean, var = (view.const(p) for p in params)
    bias = view.const(layer.inputs[2]) if len(layer.inputs) > 2 else None
    weight, bias = fold_batchnorm(view.const(layer.inputs[1]), bias, mean, var, gamma, beta,
                                  node.attrs["eps"])
    return _relayer(view, layer, node, weight, bias, "bnfold")


def _channel_vector(array: np.ndarray | None, channels: int, ndim: int) -> np.ndarray | None:
    """``array`` as a (channels,) vector if it broadcasts along axis 1 only, else None."""
    if array is None or array.ndim > ndim:
        return None
    shape = (1,) * (ndim - array.ndim) + array.shape
    if shape[1] != channels or any(n != 1 for i, n in enumerate(shape) if i != 1):
        return None
    return array.reshape(channels)


def bias_rule(view: GraphView, node: Node) -> Rewrite | None:
    """Conv2d/Linear + per-channel constant c -> the layer with bias b + c."""
    if node.op != "Add":
        return None
    layer = _layer_before(view, node, ("Conv2d", "Linear"))
    c_name = node.inputs[1]
    out = view.type(node.output)
    if layer is None or view.type(layer.output) != out or not view.only_reader(c_name, node):
        return None
    c = _channel_vector(view.const(c_name), out.shape[1], len(out.shape))
    if c is None:
        return None
    bias = view.const(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] else 0
    return _relayer(view, layer, node, None, (bias + c).astype(out.dtype), "fused")


def activation_rule(view: GraphView, node: Node) -> Rewrite | None:
    """Conv2d / Linear / Add -> ReLU: one fused node."""
    if node.op != "ReLU":
        return None
    source = view.producers.get(node.inputs[0])
    if source is None or source.op not in FUSED_RELU or not view.only_reader(source.output, node):
        return None
    if view.type(source.output) != view.type(node.output):
        return None
    fused = Node(FUSED_RELU[source.op], source.inputs, node.output, source.attrs)
    return Rewrite(remove=(source.output, node.output), add=(fused,))


RULES: dict[str, Rule] = {
    "eliminate_identities": identity_rule, "simplify_algebra": algebra_rule,
    "fold_constants": constant_rule, "fold_batchnorms": batchnorm_rule,
    "fuse_biases": bias_rule, "fuse_activations": activation_rule,
}

eliminate_identities = _exhaust("eliminate_identities")
simplify_algebra = _exhaust("simplify_algebra")
fold_constants = _exhaust("fold_constants")
fold_batchnorms = _exhaust("fold_batchnorms")
fuse_biases = _exhaust("fuse_biases")
fuse_activations = _exhaust("fuse_activations")

# ---- global passes -----------------------------------------------------------------------


def eliminate_common(graph: Graph) -> Graph:
    """Common-subexpression elimination: equal constants (dtype, shape, bytes) become one, then
    nodes with equal (op, inputs, attributes) become one, in topological order so that whole
    duplicated chains collapse in one run."""
    rename: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, array in graph.constants.items():
        key = ("const", array.dtype.str, array.shape,
               hashlib.sha1(np.ascontiguousarray(array)).hexdigest())
        if key in seen:
            rename[name] = seen[key]
        else:
            seen[key] = name
    for node in graph.nodes:
        inputs = tuple(rename.get(i, i) for i in node.inputs)
        key = (node.op, inputs, attr_key(node.attrs))
        if key in seen:
            rename[node.output] = seen[key]
        else:
            seen[key] = node.output
    if not rename:
        return graph
    return apply_rewrite(graph, Rewrite(remove=tuple(k for k in rename if k not in graph.constants),
                                        rename=rename))


def eliminate_dead(graph: Graph) -> Graph:
    """Dead-code elimination: keep the nodes with a path to an output and the constants read."""
    producers = graph.producers()
    live, stack = set(), list(graph.outputs)
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        if name in producers:
            stack.extend(i for i in producers[name].inputs if i)
    nodes = [n for n in graph.nodes if n.output in live]
    constants = {k: v for k, v in graph.constants.items() if k in live}
    if len(nodes) == len(graph.nodes) and len(constants) == len(graph.constants):
        return graph
    return graph.replace(nodes=nodes, constants=constants)


PIPELINE: tuple[Callable[[Graph], Graph], ...] = (
    eliminate_identities, simplify_algebra, fold_constants, fold_batchnorms, fuse_biases,
    fuse_activations, eliminate_common, eliminate_dead)


def optimize(graph: Graph, passes: tuple[Callable[[Graph], Graph], ...] = PIPELINE,
             max_rounds: int = 20) -> Graph:
    """Run ``passes`` in order, repeatedly, until a round changes nothing (a fixed point).

    Examples
    --------
    >>> import numpy as np
    >>> from minnet.models import lenet5
    >>> from optim.graph.trace import trace
    >>> g = optimize(trace(lenet5(batch_norm=True), np.zeros((1, 1, 28, 28), np.float32)))
    >>> [n.op for n in g.nodes]
    ['Conv2dReLU', 'MaxPool2d', 'Conv2dReLU', 'MaxPool2d', 'Reshape', 'LinearReLU', 'LinearReLU', 'Linear']
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a Graph, got {type(graph).__name__}")
    for _ in range(max_rounds):
        before = graph.signature(data=False)
        for run in passes:
            graph = run(graph)
        if graph.signature(data=False) == before:
            return graph
    raise RuntimeError(f"optimize did not reach a fixed point in {max_rounds} rounds")
