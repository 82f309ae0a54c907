"""``GraphModule`` as a stored type of packed model files (``optim.pipeline.kinds``).

The spec holds the graph without its arrays: ``inputs`` (name, shape, dtype; a dimension is an
int or a symbolic name), ``constants`` (name, shape, dtype), ``nodes`` (op, inputs, output,
attributes), ``outputs`` and the trainable ``parameters``; the constants' values are the
module's state (``state_dict`` keys are the constant names), stored by the file's codecs.
Building makes the graph with zero constants (``Graph.build`` checks every op's shapes), the
arrays are loaded after. An untrusted spec is checked first: known ops, allowed dtypes,
well-formed names, shapes and attributes, and the constants' elements against the cap.
Tests: ``tests/optim/pipeline/test_pipeline_store.py::test_graph_module_round_trips``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from minnet.nn import parametrize as P
from optim.graph import GraphModule
from optim.graph.dims import DimError, check_dim
from optim.graph.ir import Graph, Node
from optim.graph.ops import OPS

from .kinds import (MAX_DIM, MAX_MODULES, MAX_NDIM, PackedModelError, StoredType, Walk, is_int,
                    register_stored_type)

MAX_NAME = 256
DTYPES = tuple(np.dtype(t).name for t in (np.bool_, np.int8, np.uint8, np.int32, np.int64,
                                          np.float32, np.float64))


def _attr_to_json(value: Any, where: str) -> Any:
    if isinstance(value, (tuple, list)):
        return [_attr_to_json(v, where) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store attribute {where} of type {type(value).__name__}")


def _attr_from_json(value: Any) -> Any:
    return tuple(_attr_from_json(v) for v in value) if isinstance(value, list) else value


def _spec(module: GraphModule) -> dict:
    if any(P.is_parametrized(m) for m in module.modules()):
        raise TypeError("a GraphModule is stored without parametrizations: bake them in first "
                        "(minnet.nn.parametrize.remove_all_parametrizations)")
    graph = module.graph
    return {
        "inputs": [[k, list(graph.types[k].shape), graph.types[k].dtype.name]
                   for k in graph.inputs],
        "constants": [[k, list(v.shape), v.dtype.name] for k, v in graph.constants.items()],
        "nodes": [[n.op, list(n.inputs), n.output,
                   {a: _attr_to_json(v, f"{n.output}.{a}") for a, v in n.attrs.items()}]
                  for n in graph.nodes],
        "outputs": list(graph.outputs),
        "parameters": [k for k in graph.constants if module._slots[k][1]
                       in module._slots[k][0]._parameters],
    }


def _build(spec: dict) -> GraphModule:
    constants = {name: np.zeros(tuple(shape), dtype) for name, shape, dtype in spec["constants"]}
    graph = Graph.build({name: (tuple(shape), dtype) for name, shape, dtype in spec["inputs"]},
                        [Node(op, tuple(ins), out, {a: _attr_from_json(v) for a, v in attrs.items()})
                         for op, ins, out, attrs in spec["nodes"]],
                        spec["outputs"], constants)
    return GraphModule(graph, spec["parameters"])


def _name(value: Any, field: str, allow_empty: bool = False) -> str:
    if not (isinstance(value, str) and (value or allow_empty) and len(value) <= MAX_NAME):
        raise PackedModelError(field, f"must be a name of at most {MAX_NAME} characters, got "
                                      f"{value!r}"[:200])
    return value


def _typed(entry: Any, field: str, symbolic: bool) -> int:
    """Check ``[name, shape, dtype]``; returns its element count (0 if symbolic)."""
    if not (isinstance(entry, list) and len(entry) == 3):
        raise PackedModelError(field, "must be [name, shape, dtype]")
    _name(entry[0], f"{field}[0]")
    shape, dtype = entry[1], entry[2]
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM):
        raise PackedModelError(f"{field}[1]", f"must be a list of at most {MAX_NDIM} dimensions")
    for d in shape:
        if is_int(d) and 0 <= d <= MAX_DIM:
            continue
        try:
            if not symbolic or not isinstance(d, str) or len(d) > MAX_NAME:
                raise DimError(f"{d!r}")
            check_dim(d)
        except DimError:
            raise PackedModelError(f"{field}[1]", f"dimensions must be integers in [0, {MAX_DIM}]"
                                   f"{' or symbolic names' if symbolic else ''}, got "
                                   f"{d!r}"[:200]) from None
    if dtype not in DTYPES:
        raise PackedModelError(f"{field}[2]", f"must be one of {list(DTYPES)}, got {dtype!r}"[:200])
    return 0 if not all(is_int(d) for d in shape) else math.prod(shape)


def _check_attr(value: Any, field: str, depth: int = 0) -> None:
    if isinstance(value, list) and depth < 4:
        for v in value:
            _check_attr(v, field, depth + 1)
    elif not (value is None or isinstance(value, (bool, int, str))
              or isinstance(value, float) and math.isfinite(value)):
        raise PackedModelError(field, f"must be null, a boolean, a number, a string or a list "
                                      f"of them (nested at most 4 deep), got {value!r}"[:200])


def _check(spec: dict, field: str, depth: int, walk: Walk) -> None:
    for key in ("inputs", "constants", "nodes", "outputs", "parameters"):
        if not isinstance(spec[key], list):
            raise PackedModelError(f"{field}.{key}", "must be a list")
    if len(spec["nodes"]) > MAX_MODULES:
        raise PackedModelError(f"{field}.nodes", f"more than {MAX_MODULES} nodes")
    for i, entry in enumerate(spec["inputs"]):
        _typed(entry, f"{field}.inputs[{i}]", symbolic=True)
    for i, entry in enumerate(spec["constants"]):
        walk.allocate(f"{field}.constants[{i}]", _typed(entry, f"{field}.constants[{i}]",
                                                        symbolic=False))
    for i, node in enumerate(spec["nodes"]):
        where = f"{field}.nodes[{i}]"
        if not (isinstance(node, list) and len(node) == 4):
            raise PackedModelError(where, "must be [op, inputs, output, attributes]")
        op, inputs, output, attrs = node
        if op not in OPS:
            raise PackedModelError(f"{where}[0]", f"unknown op {op!r}"[:200])
        if not isinstance(inputs, list):
            raise PackedModelError(f"{where}[1]", "must be a list of value names")
        for k, name in enumerate(inputs):
            _name(name, f"{where}[1][{k}]", allow_empty=True)
        _name(output, f"{where}[2]")
        if not isinstance(attrs, dict):
            raise PackedModelError(f"{where}[3]", "must be an object")
        for key, value in attrs.items():
            _check_attr(value, f"{where}[3].{_name(key, f'{where}[3]')}")
    constants = {entry[0] for entry in spec["constants"]}
    for key in ("outputs", "parameters"):
        for k, name in enumerate(spec[key]):
            _name(name, f"{field}.{key}[{k}]")
    if not set(spec["parameters"]) <= constants:
        raise PackedModelError(f"{field}.parameters", "must name constants of the graph")


register_stored_type("GraphModule", StoredType(
    GraphModule, frozenset({"inputs", "constants", "nodes", "outputs", "parameters"}),
    spec=_spec, build=_build, check=_check))
