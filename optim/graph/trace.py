"""Tracing: record the minnet ops of one forward pass into a Graph.

``minnet.tensor.observe_ops`` reports every applied ``Function`` with its input tensors,
attributes and output tensor. The tracer maps

- the example input (by identity) to the graph input ``input``;
- module parameters and buffers (by identity against ``named_parameters`` /
  ``named_buffers``) to constants named like ``state_dict`` keys (``0.weight``,
  ``1.running_mean``), other captured tensors to constants ``const``, ``const_1``, ...;
- each op output to a value named after the module that ran it and the op (``0.conv2d``).

The model runs in eval mode under ``no_grad`` (its mode is restored). Like ``torch.jit.trace``
the graph records no Python control flow. It is specialised to the example input's shape unless
``dynamic_axes`` names axes to keep symbolic (``{0: "N"}``, as ``torch.onnx.export``'s
``dynamic_axes``): the model is then traced a second time with those axes one longer, and every
shape attribute that follows an axis's size (``x.reshape(x.shape[0], -1)`` records 2, then 3) is
written as that axis's symbol (or an integer multiple of it). A graph whose ops differ in any
other way between the two traces is refused, never guessed.
Tests: ``tests/optim/graph/test_graph_trace.py``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import minnet
from minnet import nn
from minnet.tensor import Tensor, observe_ops
from optim.graph import dims as D
from optim.graph.ir import Graph, Node, as_type, fresh_name, specialise
from optim.graph.ops import OP_BY_FUNCTION, OPS

__all__ = ["trace"]


def _named_arrays(model: nn.Module) -> dict[int, tuple[str, np.ndarray]]:
    """id -> (state_dict-style name, array) for parameters (by Tensor) and buffers (by ndarray)."""
    found: dict[int, tuple[str, np.ndarray]] = {}
    for name, param in model.named_parameters():
        found.setdefault(id(param), (name, param.data))
    for name, buf in model.named_buffers():
        if isinstance(buf, np.ndarray):
            found.setdefault(id(buf), (name, buf))
    return found


def _canonical_attrs(op: str, attrs: dict, output: Tensor) -> dict:
    """Attributes as the IR stores them: reshape targets resolved, BN statistics moved out."""
    attrs = dict(attrs)
    if op == "Reshape":
        attrs["shape"] = tuple(output.shape)
    if op == "BatchNorm":
        attrs = {"eps": float(attrs["eps"]), "training": bool(attrs["training"])}
    return attrs


def trace(model: nn.Module, example_input: Any,
          dynamic_axes: Mapping[int, str] | None = None) -> Graph:
    """Record one forward pass of ``model`` on ``example_input`` as a ``Graph``.

    Parameters
    ----------
    model : a minnet Module; run in eval mode under ``no_grad``, its mode restored after.
    example_input : Tensor or ndarray (N, ...); fixes the graph's input shape and dtype.
    dynamic_axes : axis -> symbol name (``{0: "N"}``) for the axes the graph keeps symbolic;
        ValueError if the model's ops depend on such an axis in a way a symbol cannot express.

    Returns
    -------
    Graph with one input ``input``, parameters and buffers as constants, one node per op.

    Raises
    ------
    TypeError if ``model`` is not a Module; NotImplementedError naming the op if the forward
    pass applies a Function the IR does not know (a loss, say).

    Examples
    --------
    >>> import numpy as np
    >>> from minnet.models import lenet_300_100
    >>> g = trace(lenet_300_100(), np.zeros((2, 1, 28, 28), np.float32))
    >>> [n.op for n in g.nodes]
    ['Reshape', 'Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a minnet.nn.Module, got {type(model).__name__}")
    x = example_input if isinstance(example_input, Tensor) else Tensor(np.asarray(example_input))
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"example_input must be floating, got dtype {x.dtype}")
    graph = _trace_once(model, x)
    if not dynamic_axes:
        return graph
    axes = _check_axes(dynamic_axes, x.ndim)
    longer = x.data
    for axis in axes:
        longer = np.concatenate([longer, np.take(longer, [0], axis=axis)], axis=axis)
    return _generalise(graph, _trace_once(model, Tensor(longer)), axes)


def _check_axes(dynamic_axes: Mapping[int, str], ndim: int) -> dict[int, str]:
    if not isinstance(dynamic_axes, Mapping):
        raise TypeError(f"dynamic_axes must map axis -> name, got {type(dynamic_axes).__name__}")
    axes = {}
    for axis, name in dynamic_axes.items():
        if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
            raise ValueError(f"dynamic_axes: axis {axis!r} is out of range for {ndim} dimensions")
        if not D.is_symbol(name):
            raise ValueError(f"dynamic_axes: name {name!r} for axis {axis} must be an identifier")
        axes[int(axis) % ndim] = name
    if len(set(axes.values())) != len(axes):
        raise ValueError(f"dynamic_axes: names {list(axes.values())} must be distinct")
    return axes


def _symbolic(first: Any, second: Any, steps: Mapping[str, tuple[int, int]]) -> Any:
    """A shape attribute from two traces: equal values stay; a value that moved with a symbol's
    size (k·s₁ then k·s₂) becomes k·symbol; anything else raises ValueError."""
    if isinstance(first, (tuple, list)) and isinstance(second, (tuple, list)) \
            and len(first) == len(second):
        return type(first)(_symbolic(a, b, steps) for a, b in zip(first, second))
    if first == second:
        return first
    for name, (s1, s2) in steps.items():
        if isinstance(first, int) and isinstance(second, int) and first * s2 == second * s1 \
                and first % s1 == 0:
            return D.mul(name, first // s1)
    raise ValueError(f"a shape attribute changed from {first!r} to {second!r} with the dynamic "
                     "axes, not as a multiple of one axis")


def _generalise(first: Graph, second: Graph, axes: Mapping[int, str]) -> Graph:
    """The symbolic graph that both static traces are instances of (see the module docstring)."""
    shape1, shape2 = first.types["input"].shape, second.types["input"].shape
    steps = {name: (shape1[axis], shape2[axis]) for axis, name in axes.items()}
    same_structure = (len(first.nodes) == len(second.nodes) and first.outputs == second.outputs
                      and all((a.op, a.inputs, a.output) == (b.op, b.inputs, b.output)
                              for a, b in zip(first.nodes, second.nodes)))
    if not same_structure or first.constants.keys() != second.constants.keys():
        raise ValueError("the model runs different ops when a dynamic axis changes size; trace "
                         "it with static shapes")
    for name, array in first.constants.items():
        if array.shape != second.constants[name].shape:
            raise ValueError(f"constant {name!r} changes shape with a dynamic axis ({array.shape} "
                             f"vs {second.constants[name].shape}); it cannot be symbolic")
    nodes = []
    for a, b in zip(first.nodes, second.nodes):
        attrs = dict(a.attrs)
        for key in set(a.attrs) | set(b.attrs):
            if key in OPS[a.op].shape_attrs:
                attrs[key] = _symbolic(a.attrs[key], b.attrs[key], steps)
            elif key not in a.attrs or key not in b.attrs or \
                    repr(a.attrs[key]) != repr(b.attrs[key]):
                raise ValueError(f"node {a.output!r} ({a.op}) attribute {key!r} depends on a "
                                 "dynamic axis; trace with static shapes")
        nodes.append(Node(a.op, a.inputs, a.output, attrs))
    shape = tuple(axes.get(i, n) for i, n in enumerate(shape1))
    graph = Graph.build({"input": as_type(shape, first.types["input"].dtype)}, nodes,
                        first.outputs, first.constants)
    for static, (s1, s2) in ((first, (0, 0)), (second, (1, 1))):
        bound = specialise(graph, {name: pair[s1] for name, pair in steps.items()})
        if any(bound.types[k] != static.types[k] for k in static.types):
            raise ValueError("the symbolic graph does not reproduce the traced shapes")
    return graph


def _trace_once(model: nn.Module, x: Tensor) -> Graph:
    named = _named_arrays(model)
    module_names = {id(m): name for name, m in model.named_modules()}
    records: list[tuple] = []
    scope: list[str] = []

    def enter(module, args):
        scope.append(module_names.get(id(module), ""))

    def leave(module, args, output):
        scope.pop()

    def observe(fn, inputs, attrs, output):
        records.append((fn, list(inputs), attrs, output, scope[-1] if scope else ""))

    handles = []
    for m in model.modules():
        handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    was_training = model.training
    try:
        model.eval()
        with minnet.no_grad(), observe_ops(observe):
            result = model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return _build(x, result, records, named)


def _build(x: Tensor, result: Any, records: list, named: dict) -> Graph:
    constants: dict[str, np.ndarray] = {}
    values: dict[int, str] = {id(x): "input"}
    taken = {"input"} | {name for name, _ in named.values()}
    nodes = []

    def constant(obj: Any) -> str:
        key = id(obj)
        if key not in values:
            array = obj.data if isinstance(obj, Tensor) else np.asarray(obj)
            name = named[key][0] if key in named else fresh_name(taken, "const")
            taken.add(name)
            constants[name] = array.copy()
            values[key] = name
        return values[key]

    def value(obj: Any) -> str:
        if obj is None:
            return ""
        return values.get(id(obj)) or constant(obj)

    for fn, inputs, attrs, output, scope in records:
        op = OP_BY_FUNCTION.get(fn)
        if op is None:
            raise NotImplementedError(f"op {fn.__name__} (in module {scope or 'model'!r}) has no "
                                      "graph IR equivalent")
        names = [value(t) for t in inputs]
        if op == "BatchNorm":
            names += [value(attrs["running_mean"]), value(attrs["running_var"])]
        name = fresh_name(taken, f"{scope}.{op.lower()}" if scope else op.lower())
        taken.add(name)
        values[id(output)] = name
        nodes.append(Node(op, tuple(names), name, _canonical_attrs(op, attrs, output)))
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    out_names = [value(t) for t in outputs]
    # records keeps every traced tensor alive, so ids are never reused during the build
    return Graph.build({"input": as_type(x.shape, x.dtype)}, nodes, out_names, constants)
