r"""Dependency-aware structured pruning on graphs (Fang et al. 2023, "DepGraph: Towards Any
Structural Pruning", CVPR; the convention of Torch-Pruning).

Removing channel k of a layer's output forces other removals: the BatchNorm entries of k, the
k-th input slice of every consumer, the same channel of every tensor added to it (both branches
of a residual ``Add``), the matching rows of a ``Concat`` and, through a flatten, the k-th block
of the next Linear's inputs. DepGraph models these couplings as a graph over layer dimensions
and prunes its connected components together. Here the components are built per channel
*index* with a union–find over

- ``(value, c)``: channel c of an activation (axis 1 of NCHW or of (N, F));
- ``(constant, axis, i)``: slice i of a parameter along one axis,

uniting across every node the indices its op couples (conv/linear output c with weight row c
and bias c; their input c with weight column c; BatchNorm, elementwise ops and pooling pass c
through; a depthwise conv couples its input and output channel c; Concat offsets; a flatten
maps c to the features c·HW … (c+1)·HW − 1). A component is *frozen* when it touches a graph
input or output or an op whose channels cannot be cut (grouped convs, transposes, norms over
channels, ...). The prunable components with the same parameter slices (the channels of one
coupled layer dimension) form one ``ChannelGroup``.

Group importance (DepGraph eq. 4–5, Torch-Pruning's ``GroupMagnitudeImportance``): a per-weight
saliency s(w) (default w², the L2 criterion) summed over each slice, then reduced over the
group's slices: :math:`I_k = \sum_{(W, a) \in g} \sum_{w \in W[k \text{ along } a]} s(w)`
(``reduction="sum"``) or its mean over the slices (``"mean"``), each slice's scores first divided
by their mean over the group's channels if ``normalize``. The lowest ``amount`` of each group's
channels (at least one kept) are removed.

``mask_channels`` zeroes every slice of the removed channels (the masked model);
``remove_channels`` cuts them out and re-types the graph: the two compute the same function,
since every consumer's input slice of a removed channel is itself zero.
Tests: ``tests/optim/prune/test_prune_dependency.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from optim.graph import dims
from optim.graph.ir import Graph, Node
from optim.graph.ops import OPS, UNFUSED, infer_node
from optim.graph.types import as_type

__all__ = ["ChannelGroup", "dependency_groups", "group_importance", "select_channels",
           "mask_channels", "remove_channels", "prune_graph_channels"]

_PASS_THROUGH = {"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Neg", "Exp", "Log", "Sqrt",
                 "Abs", "Clip", "Identity", "Dropout", "MaxPool2d", "AvgPool2d",
                 "AdaptiveAvgPool2d", "Erf", "HardSigmoid", "HardSwish", "Cast"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Maximum", "Minimum", "Pow"}


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together: ``channels[k]`` maps (constant, axis) to the indices
    that channel k owns along that axis (one for a conv row, H·W for a flattened block)."""
    slices: tuple[tuple[str, int], ...]
    channels: tuple[dict[tuple[str, int], np.ndarray], ...]

    def __len__(self) -> int:
        return len(self.channels)


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, *items) -> None:
        first = self.find(items[0])
        for item in items[1:]:
            self.parent[self.find(item)] = first


def _channels(graph: Graph, name: str) -> int | None:
    """Channel count of a value (axis 1, static), None if it has none."""
    shape = graph.types[name].shape
    return shape[1] if len(shape) >= 2 and isinstance(shape[1], int) else None


class _Coupling:
    """The union–find of one graph and the set of frozen elements."""

    def __init__(self, graph: Graph):
        self.graph, self.uf, self.frozen = graph, _UnionFind(), set()

    def value(self, name: str, c: int):
        return ("v", name, c) if name not in self.graph.constants else None

    def freeze(self, name: str) -> None:
        if name and name not in self.graph.constants and _channels(self.graph, name):
            self.frozen.update(("v", name, c) for c in range(_channels(self.graph, name)))

    def param(self, name: str, axis: int, index: int):
        return ("p", name, axis, index)

    def join(self, *items) -> None:
        items = [i for i in items if i is not None]
        if len(items) > 1:
            self.uf.union(*items)
        elif items:
            self.uf.find(items[0])


def _couple_node(cp: _Coupling, node: Node) -> None:
    graph, op = cp.graph, UNFUSED.get(node.op, node.op)
    out, ins = node.output, [n for n in node.inputs]
    n_out = _channels(graph, out)
    consts = graph.constants
    if op == "Conv2d":
        x, w, b = (ins + [""] * 3)[:3]
        o, c = graph.types[w].shape[:2]
        groups = node.attrs["groups"]
        if groups == 1:
            for k in range(o):
                cp.join(cp.value(out, k), cp.param(w, 0, k), cp.param(b, 0, k) if b else None)
            for k in range(_channels(graph, x) or 0):
                cp.join(cp.value(x, k), cp.param(w, 1, k))
        elif c == 1 and groups == o == _channels(graph, x):
            for k in range(o):
                cp.join(cp.value(out, k), cp.value(x, k), cp.param(w, 0, k),
                        cp.param(b, 0, k) if b else None)
        else:
            cp.freeze(x), cp.freeze(out)
        return
    if op == "Linear" and len(graph.types[ins[0]].shape) == 2:
        x, w, b = (ins + [""] * 3)[:3]
        for k in range(graph.types[w].shape[0]):
            cp.join(cp.value(out, k), cp.param(w, 0, k), cp.param(b, 0, k) if b else None)
        for k in range(graph.types[w].shape[1]):
            cp.join(cp.value(x, k), cp.param(w, 1, k))
        return
    if op == "MatMul" and ins[1] in consts and consts[ins[1]].ndim == 2 \
            and len(graph.types[ins[0]].shape) == 2:
        w = ins[1]
        for k in range(consts[w].shape[1]):
            cp.join(cp.value(out, k), cp.param(w, 1, k))
        for k in range(consts[w].shape[0]):
            cp.join(cp.value(ins[0], k), cp.param(w, 0, k))
        return
    if op == "BatchNorm":
        for k in range(n_out or 0):
            cp.join(cp.value(out, k), cp.value(ins[0], k),
                    *(cp.param(p, 0, k) for p in ins[1:] if p))
        return
    if op in _PASS_THROUGH and n_out is not None and _channels(graph, ins[0]) == n_out:
        for k in range(n_out):
            cp.join(cp.value(out, k), cp.value(ins[0], k))
        return
    if op in _BINARY and n_out is not None:
        ndim = len(graph.types[out].shape)
        for name in ins:
            shape = graph.types[name].shape
            if name in consts:
                axis = len(shape) - ndim + 1  # the operand's axis aligned with channels
                if 0 <= axis < len(shape) and shape[axis] == n_out and n_out > 1:
                    for k in range(n_out):
                        cp.join(cp.value(out, k), cp.param(name, axis, k))
                elif 0 <= axis < len(shape) and shape[axis] not in (1,):
                    cp.freeze(out)
            elif len(shape) == ndim and shape[1] == n_out:
                for k in range(n_out):
                    cp.join(cp.value(out, k), cp.value(name, k))
            else:
                cp.freeze(name), cp.freeze(out)
        return
    if op == "Concatenate" and node.attrs.get("axis", 0) in (1, 1 - len(graph.types[out].shape)):
        offset = 0
        for name in ins:
            for k in range(_channels(graph, name)):
                cp.join(cp.value(out, offset + k), cp.value(name, k))
            offset += _channels(graph, name)
        return
    if op == "Reshape" and _flatten_block(graph, node):
        block = _flatten_block(graph, node)
        for k in range(_channels(graph, ins[0])):
            cp.join(cp.value(ins[0], k), *(cp.value(out, k * block + s) for s in range(block)))
        return
    for name in ins:
        cp.freeze(name)
    cp.freeze(out)


def _flatten_block(graph: Graph, node: Node) -> int:
    """H·W if ``node`` flattens (N, C, H, W...) to (N, C·H·W...), else 0."""
    x, y = graph.types[node.inputs[0]].shape, graph.types[node.output].shape
    if len(x) < 3 or len(y) != 2 or not dims.same(x[0], y[0]) or not dims.is_static(x[1:]):
        return 0
    block = int(np.prod(x[2:]))
    return block if y[1] == x[1] * block else 0


def dependency_groups(graph: Graph) -> list[ChannelGroup]:
    """The prunable channel groups of ``graph`` (see the module docstring), largest first."""
    cp = _Coupling(graph)
    for node in graph.nodes:
        if node.op not in OPS:
            raise ValueError(f"node {node.output!r} has unknown op {node.op!r}")
        _couple_node(cp, node)
    for name in list(graph.inputs) + list(graph.outputs):
        cp.freeze(name)
    members: dict = {}
    for item in list(cp.uf.parent):
        members.setdefault(cp.uf.find(item), []).append(item)
    frozen_roots = {cp.uf.find(item) for item in cp.frozen if item in cp.uf.parent}
    by_signature: dict[tuple, list[dict]] = {}
    for root, items in members.items():
        if root in frozen_roots:
            continue
        channel: dict[tuple[str, int], list[int]] = {}
        for item in items:
            if item[0] == "p":
                channel.setdefault((item[1], item[2]), []).append(item[3])
        if not channel:
            continue
        signature = tuple(sorted((key, len(v)) for key, v in channel.items()))
        by_signature.setdefault(signature, []).append(
            {key: np.array(sorted(v)) for key, v in channel.items()})
    groups = []
    for signature, channels in by_signature.items():
        channels.sort(key=lambda ch: min(int(v[0]) for v in ch.values()))
        groups.append(ChannelGroup(tuple(key for key, _ in signature), tuple(channels)))
    groups.sort(key=lambda g: (-len(g), g.slices))
    return groups


def group_importance(graph: Graph, group: ChannelGroup,
                     saliency: Callable[[np.ndarray], np.ndarray] = np.square,
                     reduction: str = "sum", normalize: bool = False) -> np.ndarray:
    """I_k per channel of ``group`` (module docstring): ``saliency`` of each weight, summed per
    slice, optionally mean-normalised per slice, then summed or averaged over the slices."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    per_slice = []
    for key in group.slices:
        name, axis = key
        scores = np.asarray(saliency(np.asarray(graph.constants[name], np.float64)))
        moved = np.moveaxis(scores, axis, 0)
        row = np.array([moved[ch[key]].sum() for ch in group.channels])
        if normalize:
            row = row / max(row.mean(), np.finfo(np.float64).tiny)
        per_slice.append(row)
    stacked = np.stack(per_slice)
    return stacked.sum(axis=0) if reduction == "sum" else stacked.mean(axis=0)


def select_channels(graph: Graph, groups: Sequence[ChannelGroup], amount: float,
                    **importance) -> list[np.ndarray]:
    """Per group, the indices of the round(amount·n) least important channels (at most n − 1)."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount!r}")
    chosen = []
    for group in groups:
        scores = group_importance(graph, group, **importance)
        count = min(int(round(amount * len(group))), len(group) - 1)
        chosen.append(np.sort(np.argsort(scores, kind="stable")[:count]))
    return chosen


def _removed_indices(groups: Sequence[ChannelGroup], removed: Sequence[np.ndarray]) -> dict:
    if len(removed) != len(groups):
        raise ValueError(f"removed must hold one index array per group ({len(groups)}), got "
                         f"{len(removed)}")
    cut: dict[tuple[str, int], list[int]] = {}
    for group, indices in zip(groups, removed):
        for k in np.asarray(indices, dtype=np.int64):
            if not 0 <= k < len(group):
                raise ValueError(f"channel {k} is out of range for a group of {len(group)}")
            for key, idx in group.channels[k].items():
                cut.setdefault(key, []).extend(int(i) for i in idx)
    return cut


def mask_channels(graph: Graph, groups: Sequence[ChannelGroup],
                  removed: Sequence[np.ndarray]) -> Graph:
    """``graph`` with every slice of the removed channels set to zero (same shapes)."""
    constants = {k: np.array(v) for k, v in graph.constants.items()}
    for (name, axis), indices in _removed_indices(groups, removed).items():
        np.moveaxis(constants[name], axis, 0)[indices] = 0
    return graph.replace(constants=constants)


def remove_channels(graph: Graph, groups: Sequence[ChannelGroup],
                    removed: Sequence[np.ndarray]) -> Graph:
    """``graph`` with the removed channels cut out of every coupled parameter; depthwise convs
    get their new group count and flattening reshapes their new width."""
    constants = dict(graph.constants)
    for (name, axis), indices in _removed_indices(groups, removed).items():
        constants[name] = np.delete(constants[name], sorted(set(indices)), axis=axis)
    nodes = []
    for node in graph.nodes:
        attrs = dict(node.attrs)
        op = UNFUSED.get(node.op, node.op)
        if op == "Conv2d" and 1 < attrs["groups"] == graph.types[node.inputs[1]].shape[0]:
            attrs["groups"] = int(constants[node.inputs[1]].shape[0])  # depthwise
        nodes.append(Node(node.op, node.inputs, node.output, attrs))
    nodes = _retarget_flattens(graph, nodes, constants)
    return Graph.build(graph.input_types, nodes, graph.outputs, constants)


def _retarget_flattens(graph: Graph, nodes: list[Node], constants: dict) -> list[Node]:
    """Re-type node by node, giving each flattening Reshape the width of its new input."""
    types = dict(graph.input_types)
    types.update({k: as_type(v.shape, v.dtype) for k, v in constants.items()})
    result = []
    for node, old in zip(nodes, graph.nodes):
        if node.op == "Reshape" and _flatten_block(graph, old):
            x = types[node.inputs[0]].shape
            node = Node(node.op, node.inputs, node.output,
                        {**node.attrs, "shape": (node.attrs["shape"][0], dims.product(x[1:]))})
        types[node.output] = infer_node(node, [types[n] if n else None for n in node.inputs])
        result.append(node)
    return result


def prune_graph_channels(graph: Graph, amount: float, **importance) -> Graph:
    """Remove ``amount`` of every prunable channel group by ``group_importance``."""
    groups = dependency_groups(graph)
    return remove_channels(graph, groups, select_channels(graph, groups, amount, **importance))
