"""The compiled executor: preallocated buffers, fused kernels, a chosen algorithm per node.

``compile(graph)`` does the work once that an interpreter would repeat on every call:

- nodes whose inputs are all constants are evaluated (their outputs become constants);
- the memory plan (``optim.graph.memory``) places every activation in one arena, allocated
  once; each value is a fixed view of it, views and in-place updates share their input's bytes;
- weights are pre-packed for their algorithm (transposed for GEMM, CSR for sparse
  (``minnet.kernels.csr``), spectra for FFT);
- each node becomes a closure over its input and output arrays that calls its kernel with
  ``out=``: no autograd bookkeeping, no allocation except kernel workspaces (im2col columns,
  FFT spectra).

Calling the result copies the inputs into their buffers, runs the closures in order and
returns copies of the outputs. Results equal the reference ``execute`` up to float rounding.
Tests: ``tests/optim/graph/test_graph_compiled.py``.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np
import scipy.special

from minnet.kernels.csr import LOOPS, csr_matmul, to_csr
from optim.graph import grad_kernels as GK
from optim.graph import grad_ops as GO
from optim.graph import kernels as K
from optim.graph.execute import check_inputs
from optim.graph.ir import Graph, Node, input_shapes, specialise, validate
from optim.graph.memory import ALIGNMENT, MemoryPlan, plan_memory
from optim.graph.ops import OPS, UNFUSED, run_node

__all__ = ["compile", "CompiledGraph", "Plan", "algorithm_options", "default_algorithm",
           "choose_algorithms",
           "precompute_constants", "UFUNCS"]

Step = Callable[[], Any]

UFUNCS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
           "Pow": np.power, "Maximum": np.maximum, "Minimum": np.minimum, "Neg": np.negative,
           "Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt, "Abs": np.abs, "Tanh": np.tanh,
           "Sigmoid": scipy.special.expit}


def _base(op: str) -> str:
    return UNFUSED.get(op, op)


def _conv_grad_shapes(node: Node, graph: Graph) -> tuple[tuple, tuple, tuple]:
    """(dy, x, W) shapes of a convolution gradient node."""
    dy, other = (tuple(graph.types[n].shape) for n in node.inputs[:2])
    out = tuple(graph.types[node.output].shape)
    return (dy, tuple(node.attrs["input_shape"]), other) if node.op == "Conv2dInputGrad" \
        else (dy, other, out)


def algorithm_options(node: Node, graph: Graph) -> list[str]:
    """The kernels that can run ``node``: conv algorithms; dense or CSR linear (gather or axpy
    loop) when the weight is a constant; the column or forward-convolution form of a
    convolution gradient (``grad_ops.conv_grad_algorithms``); else default."""
    op = _base(node.op)
    if op in GO.CONV_GRAD_ALGORITHMS:
        return GO.conv_grad_algorithms(op, _conv_grad_shapes(node, graph)[2], node.attrs)
    if op == "Conv2d":
        a = node.attrs
        return K.conv_algorithms(graph.types[node.inputs[1]].shape, a["stride"], a["padding"],
                                 a["dilation"], a["groups"])
    if op == "Linear":
        return (["dense"] + [f"sparse_{loop}" for loop in LOOPS]
                if node.inputs[1] in graph.constants else ["dense"])
    return ["default"]


def default_algorithm(node: Node, graph: Graph) -> str:
    """The choice without a cost model: pointwise for 1x1 convolutions, else im2col; dense;
    for a convolution gradient the cheaper form by minnet's lane-MAC model
    (``grad_ops.choose_conv_grad``, deterministic, so a resumed run repeats it)."""
    if node.op in GO.CONV_GRAD_ALGORITHMS:
        return GO.choose_conv_grad(node.op, *_conv_grad_shapes(node, graph), node.attrs,
                                   graph.types[node.output].dtype)
    options = algorithm_options(node, graph)
    return "pointwise" if "pointwise" in options else options[0]


def precompute_constants(graph: Graph) -> Graph:
    """Evaluate every node whose inputs are all constants (no size guard: this is for running,
    not for storing)."""
    constants, nodes = dict(graph.constants), []
    for node in graph.nodes:
        if node.inputs and all(not n or n in constants for n in node.inputs):
            constants[node.output] = run_node(node, [constants.get(n) for n in node.inputs])
        else:
            nodes.append(node)
    if len(nodes) == len(graph.nodes):
        return graph
    return Graph.build(graph.input_types, nodes, graph.outputs, constants)


# ---- step builders -----------------------------------------------------------------------


def _bias_relu(out: np.ndarray, bias: np.ndarray | None, relu: bool) -> list[Step]:
    steps = []
    if bias is not None:
        steps.append(partial(np.add, out, bias, out=out))
    if relu:
        steps.append(partial(np.maximum, out, 0, out=out))
    return steps


def _conv_steps(node, ins, out, algorithm) -> list[Step]:
    x, w = ins[0], np.ascontiguousarray(ins[1])
    bias = ins[2] if len(ins) > 2 else None
    a = node.attrs
    kernel = K.CONV_ALGORITHMS[algorithm]
    if algorithm == "fft":
        kernel = partial(kernel, w_fft=K.fft_weight(w, x.shape, a["padding"]))
    return [partial(kernel, x, w, bias, a["stride"], a["padding"], a["dilation"], a["groups"],
                    node.op == "Conv2dReLU", out)]


def _linear_steps(node, ins, out, algorithm, pack: bool) -> list[Step]:
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    relu = node.op == "LinearReLU"
    if algorithm.startswith("sparse_"):
        if not pack:
            raise ValueError(f"node {node.output!r}: a weight bound by reference runs dense, "
                             f"not {algorithm!r}")
        csr, loop = to_csr(w), algorithm.removeprefix("sparse_")
        x2, out2 = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])

        def product():
            out2[...] = csr_matmul(x2, csr, loop)
        return [product] + _bias_relu(out, bias, relu)
    # a weight bound by reference is read where it is at every run (its transpose is a view)
    w_t = np.ascontiguousarray(w.T) if pack else w.T
    return [partial(K.linear_into, x, w_t, bias, relu, out)]


def _batchnorm_steps(node, ins, out) -> list[Step]:
    """The reference's arithmetic, (x - mean) · (1/sqrt(var + eps)) · gamma + beta, in place."""
    x, gamma, beta, mean, var = (list(ins) + [None] * 5)[:5]
    shape = (-1,) + (1,) * (x.ndim - 2)
    inv_std = (1 / np.sqrt(var + node.attrs["eps"])).astype(x.dtype).reshape(shape)
    steps = [partial(np.subtract, x, mean.astype(x.dtype).reshape(shape), out=out),
             partial(np.multiply, out, inv_std, out=out)]
    if gamma is not None:
        steps.append(partial(np.multiply, out, gamma.reshape(shape), out=out))
    if beta is not None:
        steps.append(partial(np.add, out, beta.reshape(shape), out=out))
    return steps


def _copy_result(node: Node, ins: list, out: np.ndarray) -> Step:
    def step():
        np.copyto(out, run_node(node, ins))
    return step


def _steps(node: Node, ins: list, out: np.ndarray, algorithm: str, pack: bool = True
           ) -> list[Step]:
    """The closures computing ``node`` into ``out`` (none if ``out`` already is a view of it);
    ``pack=False``: its weight is bound by reference, so no packed copy of it is made."""
    op = node.op
    if _base(op) == "Conv2d":
        if not pack and algorithm == "fft":
            raise ValueError(f"node {node.output!r}: a weight bound by reference cannot use "
                             f"the FFT algorithm (its spectrum is precomputed)")
        return _conv_steps(node, ins, out, algorithm)
    if _base(op) == "Linear":
        return _linear_steps(node, ins, out, algorithm, pack)
    if OPS[op].kind == "view":
        source = ins[0].reshape(out.shape)
        return [] if np.shares_memory(source, out) else [partial(np.copyto, out, source)]
    if op in UFUNCS:
        return [partial(UFUNCS[op], *ins, out=out)]
    if op == "ReLU":
        return [partial(np.maximum, ins[0], 0, out=out)]
    if op in GO.CONV_GRAD_ALGORITHMS:
        def conv_grad():
            np.copyto(out, GO.conv_grad(op, algorithm, ins[0], ins[1], node.attrs))
        return [conv_grad]
    if op == "ReluGrad":
        return [partial(GK.relu_grad_into, ins[0], ins[1], out)]
    if op == "MaxPool2dGrad":
        a = node.attrs
        return [partial(GK.max_pool2d_grad_into, ins[0], ins[1], tuple(a["kernel_size"]),
                        tuple(a["stride"]), tuple(a["padding"]), a.get("relu", False), out)]
    if op == "AddReLU":
        return [partial(np.add, *ins, out=out), partial(np.maximum, out, 0, out=out)]
    if (op == "MaxPool2d" or op == "AvgPool2d") and not node.attrs.get("ceil_mode", False) \
            and node.attrs.get("count_include_pad", True):
        kernel = K.max_pool2d_into if op == "MaxPool2d" else K.avg_pool2d_into
        a = node.attrs
        return [partial(kernel, ins[0], a["kernel_size"], a["stride"], a["padding"], out)]
    if op == "AdaptiveAvgPool2d" and tuple(node.attrs["output_size"]) == (1, 1):
        return [partial(np.mean, ins[0], axis=(2, 3), out=out.reshape(out.shape[:2]))]
    if op == "BatchNorm" and not node.attrs.get("training", False):
        return _batchnorm_steps(node, ins, out)
    return [_copy_result(node, ins, out)]


class Plan:
    """The graph specialised to one set of input shapes, ready to run fast.

    Attributes: ``graph`` (static, after constant precomputation), ``plan`` (``MemoryPlan``),
    ``algorithms`` (node output name -> kernel), ``arena`` (the one activation allocation),
    ``node_steps`` (node output name -> the closures computing it, timed by the cost model).
    ``external`` binds graph inputs to given arrays by reference (the memory plan must have
    been made with the same names as ``external``): the plan reads them where they are, so an
    in-place change of such an array is seen by the next ``run``, which takes arrays for the
    other inputs only.
    """

    def __init__(self, graph: Graph, plan: MemoryPlan, algorithms: Mapping[str, str],
                 external: Mapping[str, np.ndarray] | None = None):
        self.graph, self.plan, self.algorithms = graph, plan, dict(algorithms)
        external = dict(external or {})
        for name, array in external.items():
            if name not in graph.inputs or name in plan.buffer:
                raise ValueError(f"external input {name!r} is not a graph input planned outside "
                                 f"the arena (plan_memory(..., external=...))")
            t = graph.types[name]
            if (not isinstance(array, np.ndarray) or array.shape != tuple(t.shape)
                    or array.dtype != t.dtype or not array.flags.c_contiguous):
                raise ValueError(f"external input {name!r} must be a C-contiguous {t.dtype} array "
                                 f"of shape {tuple(t.shape)}, got "
                                 f"{getattr(array, 'dtype', type(array).__name__)} "
                                 f"{getattr(array, 'shape', '')}")
        unbound = [k for k in graph.inputs if k not in plan.buffer and k not in external]
        if unbound:
            raise ValueError(f"external: no array given for the inputs planned outside the "
                             f"arena: {unbound}")
        raw = np.empty(plan.arena_bytes + ALIGNMENT, dtype=np.uint8)
        start = -raw.ctypes.data % ALIGNMENT
        self.arena = raw[start:start + plan.arena_bytes]
        self.buffers: dict[str, np.ndarray] = {}
        for value, root in plan.buffer.items():
            t = graph.types[value]
            offset = plan.offset[root]
            self.buffers[value] = self.arena[offset:offset + t.nbytes].view(t.dtype).reshape(t.shape)
        self.buffers.update(external)
        env = {**graph.constants, **self.buffers}
        self._inputs = [self.buffers[k] for k in graph.inputs if k not in external]
        self.node_steps: dict[str, list[Step]] = {}
        for node in graph.nodes:
            ins = [env[n] if n else None for n in node.inputs]
            self.node_steps[node.output] = _steps(node, ins, env[node.output],
                                                  self.algorithms.get(node.output, "default"),
                                                  pack=not external.keys() & set(node.inputs))
        self._steps = [step for steps in self.node_steps.values() for step in steps]
        self._outputs = [env[k] for k in graph.outputs]

    def accepts(self, inputs: tuple) -> bool:
        """Whether ``inputs`` are ndarrays of exactly this plan's input shapes and dtypes, so
        ``run`` can take them as they are."""
        if len(inputs) != len(self._inputs):
            return False
        for array, buffer in zip(inputs, self._inputs):
            if type(array) is not np.ndarray or array.shape != buffer.shape \
                    or array.dtype != buffer.dtype:
                return False
        return True

    def run(self, arrays: list[np.ndarray], copy: bool = True
            ) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run on arrays already checked to have this plan's shapes and dtypes; the outputs
        are copies, or with ``copy=False`` the arena's own arrays (valid until the next run)."""
        for buffer, array in zip(self._inputs, arrays):
            np.copyto(buffer, array)
        for step in self._steps:
            step()
        outputs = tuple(out.copy() if copy else out for out in self._outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    @property
    def arena_bytes(self) -> int:
        return self.arena.nbytes


def choose_algorithms(graph: Graph, requested: Mapping[str, str], cost_model: Any
                      ) -> dict[str, str]:
    """Each node's kernel: the requested one (checked), else the cost model's, else the default."""
    chosen = {}
    for node in graph.nodes:
        options = algorithm_options(node, graph)
        if node.output in requested:
            if requested[node.output] not in options:
                raise ValueError(f"algorithm {requested[node.output]!r} cannot run node "
                                 f"{node.output!r} ({node.op}); options: {options}")
            chosen[node.output] = requested[node.output]
        elif cost_model is not None:
            chosen[node.output] = cost_model.choose(node, graph)
        else:
            chosen[node.output] = default_algorithm(node, graph)
    return chosen


class CompiledGraph:
    """One callable for every input shape the graph admits: ``compiled(*inputs)``.

    Each call binds the graph's symbolic dimensions to the inputs' shapes and looks the shapes
    up in a bounded LRU cache of ``Plan``s; on a miss it specialises the graph, precomputes
    constants, lets the cost model choose each node's kernel *for those shapes* and plans the
    memory (the seeds' dynamic computation-graph optimization, 002 §3.5: minimise Σ C(v_i) at
    run time for the inputs at hand). A static graph has one plan, built at compile time. A
    call with ndarrays of exactly the last call's shapes and dtypes goes straight to its plan.

    ``graph``, ``plan``, ``algorithms``, ``arena``, ``buffers``, ``node_steps`` and ``arena_bytes``
    are those of the most recently used plan; ``plans`` lists the cached ones, ``explain()`` shows them.
    """

    def __init__(self, graph: Graph, algorithms: Mapping[str, str] | None = None,
                 cost_model: Any = None, reuse: bool = True, inplace: bool = True,
                 cache_size: int = 8):
        if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 1:
            raise ValueError(f"cache_size must be a positive integer, got {cache_size!r}")
        self.source, self.cost_model, self.cache_size = graph, cost_model, cache_size
        self._requested = dict(algorithms or {})
        self._memory = {"reuse": reuse, "inplace": inplace}
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._last: Plan | None = None
        if graph.static:
            self.plan_for(*(graph.types[k].shape for k in graph.inputs))

    def plan_for(self, *shapes: tuple[int, ...]) -> Plan:
        """The plan for these input shapes (built and cached on a miss, least recent evicted)."""
        key = tuple(tuple(int(n) for n in s) for s in shapes)
        plan = self._plans.get(key)
        if plan is None:
            bindings = input_shapes(self.source, [np.empty(s, np.bool_) for s in key])
            graph = precompute_constants(specialise(self.source, bindings))
            plan = Plan(graph, plan_memory(graph, **self._memory),
                        choose_algorithms(graph, self._requested, self.cost_model))
            self._plans[key] = plan
            while len(self._plans) > self.cache_size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        self._last = plan
        return plan

    def __call__(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        plan = self._last
        if plan is not None and plan.accepts(inputs):  # the last shapes again: checked before
            return plan.run(inputs)
        arrays = check_inputs(self.source, inputs)
        return self.plan_for(*(a.shape for a in arrays)).run(arrays)

    @property
    def plans(self) -> dict[tuple, Plan]:
        """Input shapes -> cached plan, least recently used first."""
        return dict(self._plans)

    def _latest(self) -> Plan:
        if self._last is None:
            raise ValueError("this graph has symbolic shapes and has not been called yet; "
                             "call it or use plan_for(shapes)")
        return self._last

    @property
    def graph(self) -> Graph:
        return self._latest().graph

    @property
    def plan(self) -> MemoryPlan:
        return self._latest().plan

    @property
    def algorithms(self) -> dict[str, str]:
        return self._latest().algorithms

    @property
    def arena(self) -> np.ndarray:
        return self._latest().arena

    @property
    def node_steps(self) -> dict[str, list[Step]]:
        return self._latest().node_steps

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return self._latest().buffers

    @property
    def arena_bytes(self) -> int:
        return self._latest().arena_bytes

    def explain(self, measure: bool = False) -> str:
        """One table per cached plan: each node's op, output shape and chosen kernel, with the
        cost model's predicted time and, if ``measure``, the measured time of its steps."""
        from optim.graph.cost import time_callable
        lines = []
        for key, plan in self._plans.items():
            lines.append(f"input shapes {list(key)}: arena {plan.arena_bytes} bytes")
            lines.append("  node | op | shape | kernel | predicted ms | measured ms")
            for node in plan.graph.nodes:
                shape = "x".join(map(str, plan.graph.types[node.output].shape))
                algorithm = plan.algorithms.get(node.output, "default")
                predicted = (f"{1e3 * self.cost_model.node_cost(node, plan.graph, algorithm):.4f}"
                             if self.cost_model is not None else "-")
                steps = plan.node_steps[node.output]
                measured = (f"{1e3 * time_callable(lambda: [s() for s in steps]):.4f}"
                            if measure else "-")
                lines.append(f"  {node.output} | {node.op} | {shape} | {algorithm} | "
                             f"{predicted} | {measured}")
        return "\n".join(lines)


def compile(graph: Graph, algorithms: Mapping[str, str] | None = None, cost_model: Any = None,
            reuse: bool = True, inplace: bool = True, cache_size: int = 8) -> CompiledGraph:
    """Prepare ``graph`` for fast repeated execution at any input shape it admits (see
    ``CompiledGraph`` and the module docstring).

    Parameters
    ----------
    graph : a valid Graph, static or symbolic (run ``optimize`` first to get fused kernels).
    algorithms : node output name -> kernel name, overriding the choice for those nodes.
    cost_model : a ``CostModel``; when given, every other node gets the kernel it predicts
        fastest for each call's shapes, else ``default_algorithm``.
    reuse, inplace : memory plan options (``plan_memory``); ``reuse=False`` allocates every
        value separately.
    cache_size : how many input-shape plans are kept (least recently used evicted).

    Raises ValueError if ``algorithms`` names an unknown node or a kernel that cannot run it.
    """
    validate(graph)
    producers = graph.producers()
    for name in algorithms or {}:
        if name not in producers:
            raise ValueError(f"algorithms names {name!r}, which is not a node of the graph")
    return CompiledGraph(graph, algorithms, cost_model, reuse, inplace, cache_size)
