"""The cost model: per-node latency from operation and memory-traffic counts, calibrated on this
machine, and the per-node algorithm choice that minimises the graph's summed cost.

For node v run by kernel a, with F its floating-point operations, Q the bytes it reads and
writes (workspaces included: im2col columns, FFT spectra), L its kernel launches (matrix
products issued, window taps, ...), and the machine's measured peak FLOP rate P and memory
bandwidth B:

.. math::
    C(v, a) = \\theta_{k,0} + \\theta_{k,1} \\frac{F}{P} + \\theta_{k,2} \\frac{Q}{B} + \\theta_{k,3} L,
    \\qquad \\theta_k \\ge 0,

one coefficient vector per kernel class k (``conv.im2col``, ``linear.dense``, ``pool``, ...).
F/P and Q/B are the two roofline terms (Williams, Waterman & Patterson 2009, "Roofline"), summed
rather than maxed, as Paleo (Qi, Sparks & Talwalkar 2017) sums a layer's compute and memory
times, with θ₁, θ₂ the inverse efficiencies the kernel reaches; θ₀ and θ₃ are fixed and per-launch overheads. The θ come from non-negative least
squares on relative errors, min Σ_i ((x_i·θ − t_i) / t_i)², over micro-benchmarks of single
nodes (``calibrate``), and are saved as a JSON profile. A graph's predicted latency is the
call overhead plus Σ_i C(v_i, a_i), the objective min Σ C(v_i) of dynamic graph optimization;
since the terms are independent, each node's best algorithm is a_i = argmin_a C(v_i, a).
Tests: ``tests/optim/graph/test_graph_cost.py``.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import scipy.optimize

from minnet.io import atomic_write
from optim.graph.compiled import algorithm_options, compile
from optim.graph.ir import Graph, Node, as_type
from optim.graph.ops import OPS, UNFUSED, node_work

__all__ = ["CostModel", "kernel_class", "family", "cost_features", "fit_costs", "calibrate",
           "measure_peaks", "time_callable"]

MIN_SAMPLES = 6  # fewer, and an op uses its family's coefficients
CHEAP = frozenset({"Add", "Sub", "Mul", "Div", "Maximum", "Minimum", "Neg", "Abs", "ReLU",
                   "AddReLU", "BatchNorm", "Clip", "LeakyReLU", "Where"})
TRANSCENDENTAL = frozenset({"Exp", "Log", "Sqrt", "Tanh", "Sigmoid", "GELU", "Pow", "Softmax",
                            "LogSoftmax"})


def kernel_class(node: Node, algorithm: str) -> str:
    """The coefficient set a node uses: ``conv.<algorithm>``, ``linear.<algorithm>``, ``view``
    (free: an alias of its input) or the op's own name (``MaxPool2d``, ``Tanh``, ...)."""
    op = UNFUSED.get(node.op, node.op)
    if op in ("Conv2d", "Linear"):
        return f"{op.lower().removesuffix('2d')}.{algorithm}"
    return "view" if OPS[op].kind == "view" else node.op


def family(kind: str) -> str:
    """The fallback of an op class with too few calibration samples: ``cheap`` (arithmetic
    elementwise), ``transcendental`` (exp, tanh, ... elementwise) or ``generic``."""
    if kind in CHEAP:
        return "cheap"
    return "transcendental" if kind in TRANSCENDENTAL else "generic"


def _passes(node: Node) -> int:
    """Full passes a kernel makes over its output (fused epilogues, BatchNorm's 2-4 updates)."""
    if node.op == "AddReLU":
        return 2
    if node.op == "BatchNorm":
        return 2 + sum(1 for n in node.inputs[1:3] if n)
    return 1


def cost_features(node: Node, graph: Graph, algorithm: str) -> tuple[float, float, float]:
    """(F, Q, L): operations, bytes moved and launches of ``node`` under ``algorithm``."""
    types = graph.types
    out = types[node.output]
    ins = [types[n] for n in node.inputs if n]
    in_bytes = sum(t.nbytes for t in ins)
    kind = kernel_class(node, algorithm)
    epilogue = (node.op in ("Conv2dReLU", "LinearReLU")) + (len(node.inputs) > 2 and bool(node.inputs[2]))
    if kind.startswith("conv."):
        macs = node_work(node, types)
        n, c = ins[0].shape[:2]
        o, oh, ow = out.shape[1:]
        groups, (kh, kw) = node.attrs["groups"], types[node.inputs[1]].shape[2:]
        extra = 2 * epilogue * out.nbytes
        if algorithm == "im2col":
            cols = n * c * kh * kw * oh * ow * out.dtype.itemsize
            return 2 * macs, in_bytes + out.nbytes + 2 * cols + extra, n * groups
        if algorithm == "direct":
            return 2 * macs, in_bytes + out.nbytes + extra, n * oh * ow * groups
        if algorithm == "pointwise":
            return 2 * macs, in_bytes + out.nbytes + extra, n
        hp, wp = ins[0].shape[2] + 2 * node.attrs["padding"][0], ins[0].shape[3] + 2 * node.attrs["padding"][1]
        bins = hp * (wp // 2 + 1)
        flops = 2.5 * n * (c + o) * hp * wp * math.log2(max(hp * wp, 2)) + 8 * n * c * o * bins
        spectra = 2 * out.dtype.itemsize * bins * (n * c + n * o + c * o)
        return flops, in_bytes + out.nbytes + 2 * spectra + extra, bins
    if kind.startswith("linear."):
        x, w = ins[0], ins[1]
        rows = x.size // x.shape[-1]
        extra = 2 * epilogue * out.nbytes
        if algorithm.startswith("sparse_"):
            nnz = int(np.count_nonzero(graph.constants[node.inputs[1]]))
            nbytes = x.nbytes + out.nbytes + nnz * (w.dtype.itemsize + 4) + extra
            # the gather loop runs one dot per sample and row, the axpy loop one per non-zero
            launches = rows * w.shape[0] if algorithm == "sparse_gather" else nnz
            return 2 * rows * nnz, nbytes, launches
        return 2 * rows * w.shape[0] * w.shape[1], in_bytes + out.nbytes + extra, 1
    if node.op in ("MaxPool2d", "AvgPool2d"):
        taps = math.prod(node.attrs["kernel_size"])
        padded = 2 * ins[0].nbytes if any(node.attrs["padding"]) else 0
        return out.size * taps, ins[0].nbytes + padded + 2 * taps * out.nbytes, taps + bool(padded)
    if kind == "view":
        return 0.0, 0.0, 0.0
    passes = _passes(node)
    return max(node_work(node, types), out.size) * passes, in_bytes + 2 * passes * out.nbytes, passes


def fit_costs(features: np.ndarray, times: np.ndarray) -> np.ndarray:
    """θ ≥ 0 minimising Σ_i ((features_i · θ − t_i) / t_i)² (non-negative least squares on
    relative errors; Lawson & Hanson 1974 via ``scipy.optimize.nnls``)."""
    features, times = np.asarray(features, dtype=np.float64), np.asarray(times, dtype=np.float64)
    if features.ndim != 2 or times.shape != (features.shape[0],):
        raise ValueError(f"features must be (m, k) and times (m,), got {features.shape} and {times.shape}")
    if (times <= 0).any():
        raise ValueError("times must be positive")
    theta, _ = scipy.optimize.nnls(features / times[:, None], np.ones(len(times)))
    return theta


@dataclass
class CostModel:
    """Calibrated coefficients (see the module docstring); ``call`` = (θ₀, θ_bytes) of the
    per-call overhead of a compiled graph (input checks and copies)."""
    peak_flops: float
    bandwidth: float
    coefficients: dict[str, list[float]]
    call: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    def _row(self, flops: float, nbytes: float, launches: float) -> np.ndarray:
        return np.array([1.0, flops / self.peak_flops, nbytes / self.bandwidth, launches])

    def node_cost(self, node: Node, graph: Graph, algorithm: str) -> float:
        """C(v, a) in seconds."""
        kind = kernel_class(node, algorithm)
        if kind == "view":
            return 0.0
        theta = next((self.coefficients[k] for k in (kind, family(kind), "generic")
                      if k in self.coefficients), None)
        if theta is None:
            raise ValueError(f"the profile has no coefficients for kernel class {kind!r} "
                             "and no generic ones")
        return float(self._row(*cost_features(node, graph, algorithm)) @ np.asarray(theta))

    def choose(self, node: Node, graph: Graph) -> str:
        """argmin over the node's applicable algorithms of C(v, a)."""
        options = algorithm_options(node, graph)
        return min(options, key=lambda a: self.node_cost(node, graph, a))

    def call_cost(self, graph: Graph) -> float:
        moved = sum(graph.types[k].nbytes for k in (*graph.inputs, *graph.outputs))
        return self.call[0] + self.call[1] * moved / self.bandwidth

    def graph_cost(self, graph: Graph, algorithms: Mapping[str, str] | None = None) -> float:
        """Predicted latency: call overhead + Σ_i C(v_i, a_i), a_i from ``algorithms`` or the
        cheapest; nodes of constants are free (precomputed by ``compile``)."""
        algorithms = algorithms or {}
        total = self.call_cost(graph)
        constants = set(graph.constants)
        for node in graph.nodes:
            if node.inputs and all(not n or n in constants for n in node.inputs):
                constants.add(node.output)
                continue
            a = algorithms.get(node.output)
            total += self.node_cost(node, graph, a) if a else min(
                self.node_cost(node, graph, o) for o in algorithm_options(node, graph))
        return total

    # ---- persistence ---------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"peak_flops": self.peak_flops, "bandwidth": self.bandwidth,
                           "coefficients": self.coefficients, "call": self.call,
                           "info": self.info}, indent=1, sort_keys=True)

    def save(self, path) -> None:
        """Write the profile as JSON, atomically."""
        with atomic_write(path) as f:
            f.write(self.to_json().encode())

    @classmethod
    def load(cls, path) -> CostModel:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        missing = {"peak_flops", "bandwidth", "coefficients", "call"} - set(data)
        if missing:
            raise ValueError(f"cost profile {path} lacks {sorted(missing)}")
        return cls(float(data["peak_flops"]), float(data["bandwidth"]),
                   {k: [float(x) for x in v] for k, v in data["coefficients"].items()},
                   [float(x) for x in data["call"]], data.get("info", {}))


# ---- measurement -------------------------------------------------------------------------


def time_callable(fn: Callable[[], Any], min_time: float = 2e-3, rounds: int = 7) -> float:
    """Seconds per call of ``fn()``: the fastest of ``rounds`` batches each lasting at least
    ``min_time`` (as ``timeit`` advises: slower rounds measure interference, not the code)."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(min_time / once))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return float(min(samples))


def measure_peaks(size: int = 384, copy_bytes: int = 1 << 24) -> tuple[float, float]:
    """(FLOP/s of a float32 ``size``² GEMM, bytes/s of a large array copy: read + write)."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    c = np.empty_like(a)
    flops = 2 * size ** 3 / time_callable(lambda: np.matmul(a, a, out=c), 5e-3)
    src = np.ones(copy_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    bandwidth = 2 * src.nbytes / time_callable(lambda: np.copyto(dst, src), 5e-3)
    return flops, bandwidth


def _single_node(op: str, shapes: list, attrs: dict, rng: np.random.Generator,
                 constants: int = 1, density: float = 1.0) -> Graph:
    """A graph of one node; inputs after the first ``len(shapes) - constants`` are constants."""
    names = [f"in{i}" for i in range(len(shapes))]
    n_inputs = len(shapes) - constants
    consts = {}
    for name, shape in zip(names[n_inputs:], shapes[n_inputs:]):
        value = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:  # biases and BatchNorm statistics: positive, so var is valid
            value = np.abs(value) + 0.5
        if density < 1 and len(shape) == 2:
            value *= rng.random(shape) < density
        consts[name] = value
    return Graph.build({k: as_type(s, np.float32) for k, s in zip(names[:n_inputs], shapes[:n_inputs])},
                       [Node(op, tuple(names), "out", attrs)], ["out"], consts)


def _conv_cases(rng, count: int):
    for _ in range(count):
        n = int(rng.choice([1, 1, 4, 16, 64]))
        k = int(rng.choice([1, 3, 5]))
        depthwise = rng.random() < 0.15
        c = int(rng.choice([1, 3, 6, 8, 16, 32]))
        o = c if depthwise else int(rng.choice([4, 8, 16, 32]))
        size = int(rng.choice([6, 10, 14, 20, 28]))
        stride = int(rng.choice([1, 1, 2]))
        groups = c if depthwise else 1
        if n * o * c // groups * k * k * (size // stride) ** 2 > 3e7:
            n = 1
        attrs = dict(stride=(stride, stride), padding=(k // 2,) * 2, dilation=(1, 1), groups=groups)
        yield str(rng.choice(["Conv2d", "Conv2dReLU"])), [(n, c, size, size), (o, c // groups, k, k), (o,)], attrs, 1.0


def _linear_cases(rng, count: int):
    for _ in range(count):
        rows, n_in, n_out = (int(rng.choice(v)) for v in ([1, 8, 64, 256], [16, 84, 120, 400, 784], [10, 84, 120, 300]))
        yield str(rng.choice(["Linear", "LinearReLU"])), [(rows, n_in), (n_out, n_in), (n_out,)], {}, float(
            rng.choice([1.0, 0.5, 0.1, 0.02]))


def _other_cases(rng, count: int):
    for _ in range(count):
        shape = (int(rng.choice([1, 8, 64])), int(rng.choice([4, 8, 16])), *(int(rng.choice([4, 8, 14, 28])),) * 2)
        c = shape[1]
        kind = rng.integers(6)
        if kind == 0:
            k = int(rng.choice([2, 3]))
            yield str(rng.choice(["MaxPool2d", "AvgPool2d"])), [shape], dict(
                kernel_size=(k, k), stride=(2, 2), padding=(k // 2,) * 2), 0
        elif kind == 1:
            yield str(rng.choice(["ReLU", "Tanh", "Sigmoid"])), [shape], {}, 0
        elif kind == 2:
            yield str(rng.choice(["Add", "AddReLU", "Mul"])), [shape, shape], {}, 0
        elif kind == 3:
            yield "BatchNorm", [shape, (c,), (c,), (c,), (c,)], dict(eps=1e-5, training=False), 4
        elif kind == 4:
            yield "Softmax", [shape[:2]], dict(axis=-1), 0
        else:
            yield "Transpose", [shape], dict(axes=(0, 2, 3, 1)), 0


def isolate(graph: Graph, node: Node) -> Graph:
    """``node`` alone: its non-constant inputs become graph inputs, its constants stay."""
    inputs = {n: graph.types[n] for n in dict.fromkeys(node.inputs) if n and n not in graph.constants}
    constants = {n: graph.constants[n] for n in node.inputs if n in graph.constants}
    return Graph.build(inputs, [node], [node.output], constants)


def _workload_nodes(seeds: range, batches: tuple[int, ...]):
    """The nodes of optimized random architectures (``zoo.random_model``) at several batches."""
    from optim.graph.passes import optimize
    from optim.graph.trace import trace
    from optim.graph.zoo import random_model
    for seed in seeds:
        model, shape = random_model(seed)
        batch = batches[seed % len(batches)]
        graph = optimize(trace(model, np.zeros((batch,) + shape[1:], np.float32)))
        for node in graph.nodes:
            yield isolate(graph, node)


def _timed_rows(graph: Graph, model: CostModel, rng: np.random.Generator, min_time: float):
    """(class, feature row, seconds) for each algorithm that can run the graph's single node."""
    node = graph.nodes[0]
    inputs = [np.abs(rng.standard_normal(graph.types[k].shape)) + 0.1 for k in graph.inputs]
    for algorithm in algorithm_options(node, graph):
        flops, nbytes, launches = cost_features(node, graph, algorithm)
        if algorithm == "direct" and flops > 4e7:
            continue  # minutes of loops that would never be chosen
        compiled = compile(graph, {node.output: algorithm}, inplace=False)  # timed repeatedly
        compiled(*inputs)
        steps = compiled.node_steps[node.output]
        if steps:
            seconds = time_callable(lambda: [s() for s in steps], min_time)
            yield kernel_class(node, algorithm), model._row(flops, nbytes, launches), seconds


def calibrate(quick: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None) -> CostModel:
    """Fit a ``CostModel`` on this machine from micro-benchmarks of single nodes.

    The nodes are synthetic convolutions and linear layers (every applicable algorithm timed),
    assorted other ops, and the nodes of optimized random architectures drawn with seeds
    1000 + k (so graphs evaluated with ``zoo.random_model(s)``, s < 1000, are held out).
    ``quick`` measures a few cases per class (seconds, for tests); the default takes about a
    minute.
    """
    rng = np.random.default_rng(seed)
    peak, bandwidth = measure_peaks()
    model = CostModel(peak, bandwidth, {}, [0.0, 0.0])
    graphs = []
    for op, shapes, attrs, extra in [*_conv_cases(rng, 8 if quick else 40),
                                     *_linear_cases(rng, 6 if quick else 24),
                                     *_other_cases(rng, 10 if quick else 40)]:
        is_layer = UNFUSED.get(op, op) in ("Conv2d", "Linear")
        graphs.append(_single_node(op, shapes, attrs, rng, constants=2 if is_layer else extra,
                                   density=extra if UNFUSED.get(op, op) == "Linear" else 1.0))
    graphs += list(_workload_nodes(range(1000, 1003 if quick else 1030), (1, 8, 64)))
    rows: dict[str, list] = {}
    min_time = 5e-4 if quick else 2e-3
    for i, graph in enumerate(graphs):
        for kind, row, seconds in _timed_rows(graph, model, rng, min_time):
            rows.setdefault(kind, []).append((row, seconds))
        if progress:
            progress(f"calibrated {i + 1}/{len(graphs)}")
    classes = {k: v for k, v in rows.items() if k.startswith(("conv.", "linear.")) or len(v) >= MIN_SAMPLES}
    classes["generic"] = []
    for kind, data in rows.items():
        if not kind.startswith(("conv.", "linear.")):
            classes["generic"] += data
            if family(kind) != "generic":
                classes.setdefault(family(kind), []).extend(data)
    for kind, data in classes.items():
        model.coefficients[kind] = fit_costs(np.array([r for r, _ in data]),
                                             np.array([t for _, t in data])).tolist()
    call_rows = []
    for size in (16, 784, 8 * 784, 64 * 784, 256 * 784):
        graph = _single_node("Identity", [(size,)], {}, rng, constants=0)
        compiled = compile(graph)
        x = np.zeros(size, np.float32)
        call_rows.append(([1.0, 2 * x.nbytes / bandwidth, 0.0, 0.0], time_callable(lambda: compiled(x), min_time)))
    theta = fit_costs(np.array([r for r, _ in call_rows]), np.array([t for _, t in call_rows]))
    model.call = [float(theta[0]), float(theta[1])]
    model.info = {"machine": platform.machine(), "processor": platform.processor(),
                  "python": platform.python_version(), "numpy": np.__version__,
                  "samples": {k: len(v) for k, v in classes.items()}, "quick": quick,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return model
