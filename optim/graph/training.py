"""A compiled training step: forward, loss and backward of a model as one planned graph, the
optimizer's update after it.

``training_graph(graph, parameters)`` extends a traced forward graph with the mean softmax
cross entropy and its reverse-mode gradient (Griewank & Walther 2008, ch. 3: one
vector-Jacobian product node per input of each forward node, in reverse order, summed where
a value feeds several nodes), with the parameters as graph inputs. Its outputs are the loss,
the logits and one gradient per parameter.

``compile_training(model, x)`` traces ``model`` (symbolic batch), builds that graph, fuses
bias and ReLU into the forward kernels (``optimize``) and, per batch size, plans the memory of
forward and backward together: every activation lives in one arena only until its last reader
(the backward node that needs it), and the parameters are read in place from the model
(``plan_memory(external=...)``). Each convolution gradient runs in column form (col2im /
im2col and a GEMM) or, at unit stride, as a forward convolution (the flipped kernel for x, batch
and channels swapped for W) by minnet's register-tiled kernels, whichever minnet's lane-MAC
model predicts cheaper for the batch. ``step(x, y)`` runs the plan and leaves each parameter's
gradient in its ``.grad`` (a view of the arena, valid until the next step); the optimizer then
steps as in eager training (minnet's Adam updates each parameter in one fused pass,
``minnet.kernels.adam``), so the model, the optimizer's state and checkpoints are those of
eager training: ``minnet.train.fit(..., train_step=step)`` uses it.

Supported ops: Conv2d, Linear, ReLU (and their fusions), MaxPool2d, Reshape; BatchNorm and
Dropout (training-mode statistics, randomness) are refused. Tests:
``tests/optim/graph/test_graph_training.py``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from minnet import nn
from optim.graph import grad_ops  # noqa: F401  registers the gradient ops
from optim.graph.compiled import Plan, choose_algorithms
from optim.graph.ir import Graph, Node, TensorType, fresh_name, specialise
from optim.graph.memory import plan_memory
from optim.graph.ops import UNFUSED

__all__ = ["training_graph", "compile_training", "TrainingStep", "TRAINABLE_OPS"]

TRAINABLE_OPS = ("Conv2d", "Linear", "ReLU", "MaxPool2d", "Reshape")
TARGET = "target"


class _Builder:
    """Appends backward nodes to a node list, with fresh value names."""

    def __init__(self, graph: Graph):
        self.nodes = list(graph.nodes)
        self.taken = set(graph.types)
        self.types = dict(graph.types)
        self.producers = graph.producers()
        self.relu_applied: set[str] = set()  # gradients that already include a ReLU's mask

    def emit(self, op: str, inputs: Sequence[str], base: str, **attrs) -> str:
        name = fresh_name(self.taken, base)
        self.taken.add(name)
        self.nodes.append(Node(op, tuple(inputs), name, attrs))
        return name


def _requiring(graph: Graph, parameters: set[str]) -> set[str]:
    """Values that depend on a parameter (their gradient is needed)."""
    needs = set(parameters)
    for node in graph.nodes:
        if any(n in needs for n in node.inputs):
            needs.add(node.output)
    return needs


def _check_ops(graph: Graph) -> None:
    unsupported = sorted({n.op for n in graph.nodes if UNFUSED.get(n.op, n.op)
                          not in TRAINABLE_OPS})
    if unsupported:
        raise ValueError(f"the compiled training step supports {list(TRAINABLE_OPS)} (and their "
                         f"ReLU fusions); the graph has {unsupported}")


def training_graph(graph: Graph, parameters: Sequence[str]) -> Graph:
    """``graph`` (one input, one output: the logits (N, C)) with the loss and the gradients of
    ``parameters`` (names of its constants). Inputs: the graph's input, ``target`` (N,) int64,
    then the parameters; outputs: ``loss`` (0-d), the logits, then the parameters' gradients
    in ``parameters``' order (see the module docstring)."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"a training graph needs one input and one output, got inputs "
                         f"{list(graph.inputs)} and outputs {list(graph.outputs)}")
    _check_ops(graph)
    unknown = [p for p in parameters if p not in graph.constants]
    if unknown:
        raise ValueError(f"parameters {unknown} are not constants of the graph")
    (x,), (logits,) = graph.inputs, graph.outputs
    if len(graph.types[logits].shape) != 2:
        raise ValueError(f"the output must be logits (N, C), got {graph.types[logits]}")
    batch = graph.types[logits].shape[0]
    b = _Builder(graph)
    b.types[TARGET] = TensorType((batch,), np.dtype(np.int64))
    loss = b.emit("SoftmaxCrossEntropy", (logits, TARGET), "loss")
    needs = _requiring(graph, set(parameters))
    grads: dict[str, list[str]] = {logits: [b.emit("SoftmaxCrossEntropyGrad", (logits, TARGET),
                                                   f"grad.{logits}")]}
    for node in reversed(graph.nodes):
        if node.output not in grads:
            continue
        g = _summed(b, grads.pop(node.output), node.output)
        for value, grad in _vjp(b, node, g, graph, needs):
            grads.setdefault(value, []).append(grad)
    outputs = [loss, logits]
    for p in parameters:
        if p not in grads:
            raise ValueError(f"parameter {p!r} does not reach the output")
        outputs.append(_summed(b, grads[p], p))
    inputs = {x: graph.types[x], TARGET: b.types[TARGET],
              **{p: graph.types[p] for p in parameters}}
    constants = {k: v for k, v in graph.constants.items() if k not in set(parameters)}
    return Graph.build(inputs, b.nodes, outputs, constants)


def _summed(b: _Builder, parts: list[str], value: str) -> str:
    total = parts[0]
    for part in parts[1:]:
        total = b.emit("Add", (total, part), f"grad.{value}")
    return total


def _vjp(b: _Builder, node: Node, g: str, graph: Graph, needs: set[str]
         ) -> list[tuple[str, str]]:
    """``(input, its gradient)`` for each input of ``node`` in ``needs``, given the output's
    gradient ``g``."""
    op, ins, a = UNFUSED.get(node.op, node.op), node.inputs, node.attrs
    if (node.op in UNFUSED or op == "ReLU") and g not in b.relu_applied:
        g = b.emit("ReluGrad", (g, node.output), f"grad.{node.output}.pre")  # dz = dy 1[y > 0]
        if op == "ReLU":
            return [(ins[0], g)]
    x = ins[0]
    if op in ("Linear", "Conv2d"):
        w, bias = (list(ins[1:]) + [""])[:2]
        if op == "Linear":
            rules = {x: ("LinearInputGrad", (g, w), {}), w: ("LinearWeightGrad", (g, x), {}),
                     bias: ("BiasGrad", (g,), {})}
        else:
            geometry = {k: a[k] for k in ("stride", "padding", "dilation", "groups")}
            rules = {x: ("Conv2dInputGrad", (g, w),
                         {"input_shape": tuple(graph.types[x].shape), **geometry}),
                     w: ("Conv2dWeightGrad", (g, x),
                         {"kernel_size": tuple(graph.types[w].shape[2:]), **geometry}),
                     bias: ("ChannelBiasGrad", (g,), {})}
        return [(value, b.emit(rule, inputs, f"grad.{value}", **attrs))
                for value, (rule, inputs, attrs) in rules.items() if value and value in needs]
    if x not in needs:
        return []
    if op == "MaxPool2d":
        if a.get("ceil_mode", False):
            raise ValueError(f"node {node.output!r}: max pooling with ceil_mode is not supported")
        producer = b.producers.get(x)
        relu = producer is not None and (producer.op in UNFUSED or producer.op == "ReLU")
        grad = b.emit("MaxPool2dGrad", (g, x), f"grad.{x}", kernel_size=a["kernel_size"],
                      stride=a["stride"], padding=a["padding"], relu=relu)
        if relu:  # the ReLU before the pooling, fused: its own ReluGrad is left out
            b.relu_applied.add(grad)
        return [(x, grad)]
    # Reshape: the gradient takes the input's shape back
    return [(x, b.emit("Reshape", (g,), f"grad.{x}", shape=tuple(graph.types[x].shape)))]


class TrainingStep:
    """``step(x, y) -> (loss, logits)``: forward, loss and backward of ``model`` as one compiled
    plan per batch size (built on first use), the gradients left in the parameters' ``.grad``
    (see the module docstring). ``parameters``: the trained Parameters, in the graph's order."""

    def __init__(self, model: nn.Module, graph: Graph, names: list[str],
                 algorithms: Mapping[str, str] | None = None):
        self.model, self.graph = model, graph
        self.parameters = [dict(model.named_parameters())[k] for k in names]
        self.requested = dict(algorithms or {})
        producers = graph.producers()
        unknown = [k for k in self.requested if k not in producers]
        if unknown:
            raise ValueError(f"algorithms names {unknown}, which are not nodes of the graph")
        self._plans: dict[int, Plan] = {}

    def plan_for(self, batch: int) -> Plan:
        plan = self._plans.get(batch)
        if plan is None or any(plan.buffers[n] is not p.data for n, p in
                               zip(plan.graph.inputs[2:], self.parameters)):
            static = specialise(self.graph, {"N": batch})
            external = {n: p.data for n, p in zip(static.inputs[2:], self.parameters)}
            algorithms = choose_algorithms(static, self.requested, None)
            for node in static.nodes:  # forward convolutions: eager minnet's per-shape kernel
                if UNFUSED.get(node.op, node.op) == "Conv2d" and node.output not in self.requested:
                    algorithms[node.output] = "minnet"
            plan = Plan(static, plan_memory(static, external=list(external)), algorithms,
                        external)
            self._plans[batch] = plan
        return plan

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        plan = self.plan_for(len(x))
        loss, logits, *grads = plan.run([x, np.asarray(y, np.int64)], copy=False)
        for p, grad in zip(self.parameters, grads):
            p.grad = grad
        return float(loss), logits


def compile_training(model: nn.Module, example: np.ndarray,
                     algorithms: Mapping[str, str] | None = None) -> TrainingStep:
    """The compiled training step of ``model``'s trainable parameters, traced in eval mode on
    ``example`` (a batch of inputs; the batch axis is symbolic). ``algorithms`` (node output
    -> kernel, ``compiled.algorithm_options``) overrides the choice for those nodes: forward
    convolutions run eager minnet's per-shape kernel, each convolution gradient the column or
    forward-convolution form that minnet's lane-MAC model predicts cheaper for the batch
    (``grad_ops.choose_conv_grad``)."""
    from optim.graph import optimize, trace
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    try:
        traced = trace(model.eval(), np.asarray(example, np.float32)[:2], dynamic_axes={0: "N"})
    finally:
        model.train(was_training)
    _check_ops(traced)  # before optimize, which would fold a BatchNorm by its running statistics
    forward = optimize(traced)
    return TrainingStep(model, training_graph(forward, names), names, algorithms)
