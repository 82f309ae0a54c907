"""The roofline latency model: each node is bound by its compute or by its memory traffic,
whichever takes longer.

For node v with F floating-point operations and Q bytes of compulsory traffic, on a machine
with peak FLOP rate P and memory bandwidth B:

.. math::
    t(v) = \\max\\Big(\\frac{F}{P},\\ \\frac{Q}{B}\\Big), \\qquad
    T(G) = \\sum_{v \\in G} t(v)

(Williams, Waterman & Patterson 2009, "Roofline: An Insightful Visual Performance Model for
Multicore Architectures", CACM 52(4): attainable FLOP/s = min(P, B · F/Q), F/Q the
operational intensity). F is read
from the op table (``optim.graph.ops.node_work``: 2 FLOPs per multiply-accumulate for conv,
linear and matmul, the work count otherwise) and Q from the value types: every input read once
(weights included) and the output written once. Views move nothing and cost 0.

This is the bound, with no fitted coefficient and no per-call overhead; the calibrated
``optim.graph.cost.CostModel`` is instead additive, θ₀ + θ₁F/P + θ₂Q/B + θ₃L per kernel
(Paleo-style: Qi, Sparks & Talwalkar 2017 sum a layer's compute and memory times).
``benchmarks/bench_cost_models.py`` compares the two by Spearman's ρ against measured node
and graph times on held-out graphs.
Tests: ``tests/optim/graph/test_graph_roofline.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from optim.graph.ir import Graph, Node
from optim.graph.ops import OPS, UNFUSED, node_work

__all__ = ["RooflineModel", "roofline_time", "node_flops", "node_bytes"]

MAC_OPS = frozenset({"Conv2d", "Linear", "MatMul"})


def roofline_time(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> float:
    r"""Roofline latency :math:`t = \max(F/P,\ Q/B)` in seconds.

    Source: Williams, Waterman & Patterson 2009 (attainable performance
    :math:`\min(P, B \cdot F/Q)`, so time :math:`F / \min(P, B F / Q) = \max(F/P, Q/B)`).
    Checked by ``tests/optim/graph/test_graph_roofline.py::test_roofline_time_is_the_max_of_the_two_bounds``.
    """
    if not (peak_flops > 0 and bandwidth > 0):
        raise ValueError(f"peak_flops and bandwidth must be positive, got {peak_flops} and {bandwidth}")
    if flops < 0 or nbytes < 0:
        raise ValueError(f"flops and nbytes must be non-negative, got {flops} and {nbytes}")
    return max(flops / peak_flops, nbytes / bandwidth)


def node_flops(node: Node, graph: Graph) -> float:
    """F of a node: ``2 * node_work`` for conv, linear and matmul (multiply and add),
    ``node_work`` for every other op (one operation per counted element or window read)."""
    work = node_work(node, graph.types)
    return 2.0 * work if UNFUSED.get(node.op, node.op) in MAC_OPS else float(work)


def node_bytes(node: Node, graph: Graph) -> float:
    """Q of a node: the bytes of its inputs (weights included) plus its output; 0 for views."""
    if OPS[UNFUSED.get(node.op, node.op)].kind == "view":
        return 0.0
    return float(sum(graph.types[n].nbytes for n in node.inputs if n) + graph.types[node.output].nbytes)


@dataclass
class RooflineModel:
    """Roofline predictions on a machine of peak FLOP rate ``peak_flops`` (FLOP/s) and memory
    bandwidth ``bandwidth`` (bytes/s), e.g. ``optim.graph.cost.measure_peaks()`` or a
    calibrated ``CostModel``'s own two peaks."""
    peak_flops: float
    bandwidth: float

    def __post_init__(self) -> None:
        if not (self.peak_flops > 0 and self.bandwidth > 0):
            raise ValueError(f"peak_flops and bandwidth must be positive, got {self.peak_flops} "
                             f"and {self.bandwidth}")

    def node_cost(self, node: Node, graph: Graph, algorithm: str | None = None) -> float:
        """t(v) in seconds. The bound counts compulsory work and traffic only, so every kernel
        (``algorithm``, accepted as ``CostModel.node_cost`` takes it) gets the same time."""
        return roofline_time(node_flops(node, graph), node_bytes(node, graph),
                             self.peak_flops, self.bandwidth)

    def graph_cost(self, graph: Graph, algorithms: Mapping[str, str] | None = None) -> float:
        """T(G) = Σ_v t(v); nodes computed from constants alone are free (``compile``
        precomputes them), as in ``CostModel.graph_cost``."""
        algorithms = algorithms or {}
        constants = set(graph.constants)
        total = 0.0
        for node in graph.nodes:
            if node.inputs and all(not n or n in constants for n in node.inputs):
                constants.add(node.output)
                continue
            total += self.node_cost(node, graph, algorithms.get(node.output))
        return total
