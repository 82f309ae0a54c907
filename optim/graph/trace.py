"""Tracing: record the minnet ops of one forward pass into a Graph.

``minnet.tensor.observe_ops`` reports every applied ``Function`` with its input tensors,
attributes and output tensor. The tracer maps

- the example input (by identity) to the graph input ``input``;
- module parameters and buffers (by identity against ``named_parameters`` /
  ``named_buffers``) to constants named like ``state_dict`` keys (``0.weight``,
  ``1.running_mean``), other captured tensors to constants ``const``, ``const_1``, ...;
- each op output to a value named after the module that ran it and the op (``0.conv2d``).

The model runs in eval mode under ``no_grad`` (its mode is restored). Like ``torch.jit.trace``
the graph is specialised to the example input's shape and records no Python control flow.
Tests: ``tests/optim/graph/test_graph_trace.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import minnet
from minnet import nn
from minnet.tensor import Tensor, observe_ops
from optim.graph.ir import Graph, Node, as_type, fresh_name
from optim.graph.ops import OP_BY_FUNCTION

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


def trace(model: nn.Module, example_input: Any) -> Graph:
    """Record one forward pass of ``model`` on ``example_input`` as a ``Graph``.

    Parameters
    ----------
    model : a minnet Module; run in eval mode under ``no_grad``, its mode restored after.
    example_input : Tensor or ndarray (N, ...); fixes the graph's input shape and dtype.

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
