"""Memory planning: liveness, buffer sharing by views and in-place ops, and offsets in one arena.

Steps: the graph inputs are written at step 0, node i runs at step i + 1. A value is *live*
from the step that writes it to the last step that reads it (graph outputs: to the end).

1. **Aliasing.** A view op's output (Reshape, Identity, Dropout) shares its input's buffer;
   an elementwise op may write over one of its inputs when that input's buffer is read by no
   later step and has the output's size (in place). Values sharing a buffer form a group whose
   lifetime is the union of theirs.
2. **Offsets.** Greedy by size (Pisarchyk & Lee 2020, "Efficient Memory Management for Deep
   Neural Net Inference", section 4.3): take buffers from largest to smallest, and put each at
   the smallest gap between the already placed buffers whose lifetimes overlap its own that can
   hold it (best fit), or after the last of them.

The law: two buffers with overlapping lifetimes get disjoint byte ranges, so two values alive at
the same time never share memory unless one is a view or an in-place update of the other.
The arena is at least the largest total of simultaneously live bytes (a lower bound no plan can
beat) and at most the sum of all buffers (every value allocated separately).
Tests: ``tests/optim/graph/test_graph_memory.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from optim.graph.ir import Graph
from optim.graph.ops import OPS

__all__ = ["liveness", "assign_offsets", "MemoryPlan", "plan_memory", "peak_live_bytes"]

ALIGNMENT = 64


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def liveness(graph: Graph) -> dict[str, tuple[int, int]]:
    """value -> (first step, last step) for the graph inputs and node outputs (not constants)."""
    last_step = len(graph.nodes) + 1
    live = {name: (0, 0) for name in graph.inputs}
    for step, node in enumerate(graph.nodes, start=1):
        live[node.output] = (step, step)
        for name in node.inputs:
            if name in live:
                live[name] = (live[name][0], step)
    for name in graph.outputs:
        if name in live:
            live[name] = (live[name][0], last_step)
    return live


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def assign_offsets(sizes: Sequence[int], intervals: Sequence[tuple[int, int]]) -> tuple[list[int], int]:
    """Greedy-by-size offsets: (offset per buffer, arena size). Buffers whose inclusive step
    intervals overlap get disjoint [offset, offset + size) ranges."""
    if len(sizes) != len(intervals):
        raise ValueError(f"sizes ({len(sizes)}) and intervals ({len(intervals)}) differ in length")
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], intervals[i][0], i))
    offsets: list[int | None] = [None] * len(sizes)
    placed: list[int] = []
    for i in order:
        if sizes[i] < 0:
            raise ValueError(f"buffer size must be non-negative, got {sizes[i]}")
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in placed
                      if _overlap(intervals[i], intervals[j]))
        best, best_gap, end = None, None, 0
        for start, stop in busy:
            gap = start - end
            if gap >= sizes[i] and (best_gap is None or gap < best_gap):
                best, best_gap = end, gap
            end = max(end, stop)
        offsets[i] = end if best is None else best
        placed.append(i)
    arena = max((o + s for o, s in zip(offsets, sizes)), default=0)
    return offsets, arena


def peak_live_bytes(sizes: Sequence[int], intervals: Sequence[tuple[int, int]]) -> int:
    """max over steps of the bytes of the buffers live at that step (the plan's lower bound)."""
    if not sizes:
        return 0
    last = max(end for _, end in intervals)
    load = np.zeros(last + 2, dtype=np.int64)
    for size, (start, end) in zip(sizes, intervals):
        load[start] += size
        load[end + 1] -= size
    return int(np.cumsum(load).max())


@dataclass(frozen=True)
class MemoryPlan:
    """Where each value lives: ``buffer[v]`` names its group's root value, ``offset[root]`` its
    byte offset in an arena of ``arena_bytes``; ``naive_bytes`` is every value allocated apart."""
    buffer: Mapping[str, str]
    offset: Mapping[str, int]
    size: Mapping[str, int]
    interval: Mapping[str, tuple[int, int]]
    arena_bytes: int
    naive_bytes: int
    lower_bound: int

    def byte_range(self, value: str) -> tuple[int, int]:
        root = self.buffer[value]
        return self.offset[root], self.offset[root] + self.size[root]


def plan_memory(graph: Graph, reuse: bool = True, inplace: bool = True,
                external: Sequence[str] = ()) -> MemoryPlan:
    """Plan the activation memory of ``graph`` (see the module docstring).

    ``reuse=False`` gives every value its own bytes (no views, no in-place, no reuse of dead
    buffers): the baseline the plan is measured against. ``inplace=False`` keeps views but never overwrites
    an input. ``external`` names graph inputs that live outside the arena (bound by reference,
    e.g. a model's parameters): they get no bytes, and no view or in-place op shares them, so
    running the plan never writes them.
    """
    unknown = [name for name in external if name not in graph.inputs]
    if unknown:
        raise ValueError(f"external must name graph inputs; not inputs: {unknown} "
                         f"(inputs: {list(graph.inputs)})")
    live = {v: span for v, span in liveness(graph).items() if v not in set(external)}
    nbytes = {v: graph.types[v].nbytes for v in live}
    root = {v: v for v in live}
    group_end = dict((v, end) for v, (_, end) in live.items())
    if reuse:
        for step, node in enumerate(graph.nodes, start=1):
            kind = OPS[node.op].kind
            sources = [n for n in dict.fromkeys(node.inputs) if n in live]
            if kind == "view" and sources:
                target = root[sources[0]]
            elif kind == "elementwise" and inplace:
                target = next((root[n] for n in sources if group_end[root[n]] == step
                               and nbytes[root[n]] == nbytes[node.output]
                               and graph.types[n].dtype == graph.types[node.output].dtype), None)
            else:
                target = None
            if target is not None:
                root[node.output] = target
                group_end[target] = max(group_end[target], live[node.output][1])
    roots = list(dict.fromkeys(root.values()))
    members: dict[str, list[str]] = {r: [] for r in roots}
    for v, r in root.items():
        members[r].append(v)
    size = {r: _aligned(max(nbytes[v] for v in members[r])) for r in roots}
    interval = {r: (min(live[v][0] for v in members[r]), max(live[v][1] for v in members[r]))
                for r in roots}
    spans = [interval[r] for r in roots] if reuse else [(0, len(graph.nodes) + 1)] * len(roots)
    offsets, arena = assign_offsets([size[r] for r in roots], spans)
    return MemoryPlan(root, dict(zip(roots, offsets)), size, interval, arena,
                      naive_bytes=sum(_aligned(b) for b in nbytes.values()),
                      lower_bound=peak_live_bytes([size[r] for r in roots],
                                                  [interval[r] for r in roots]))
