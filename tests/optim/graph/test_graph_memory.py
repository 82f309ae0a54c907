"""Memory planning: live values never share bytes, the arena sits between the live-bytes lower
bound and separate allocation, and LeNet-5's plan saves at least 30 %."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet.models import lenet5
from optim.graph import trace
from optim.graph.compiled import compile
from optim.graph.memory import assign_offsets, liveness, peak_live_bytes, plan_memory
from optim.graph.ops import OPS
from optim.graph.passes import optimize

from graph_helpers import random_graphs, sample


def _disjoint(a, b):
    return a[1] <= b[0] or b[1] <= a[0]


def _overlap(a, b):
    return a[0] <= b[1] and b[0] <= a[1]


@given(st.lists(st.tuples(st.integers(0, 512), st.integers(0, 12), st.integers(0, 6)), max_size=25))
def test_offsets_never_overlap_for_overlapping_lifetimes(buffers):
    sizes = [s for s, _, _ in buffers]
    intervals = [(start, start + length) for _, start, length in buffers]
    offsets, arena = assign_offsets(sizes, intervals)
    for i, j in itertools.combinations(range(len(sizes)), 2):
        if _overlap(intervals[i], intervals[j]) and sizes[i] and sizes[j]:
            assert _disjoint((offsets[i], offsets[i] + sizes[i]), (offsets[j], offsets[j] + sizes[j]))
    assert all(o + s <= arena for o, s in zip(offsets, sizes))
    assert peak_live_bytes(sizes, intervals) <= arena <= sum(sizes)


def test_a_chain_ping_pongs_between_two_buffers():
    offsets, arena = assign_offsets([100] * 6, [(i, i + 1) for i in range(6)])
    assert arena == 200 and set(offsets) == {0, 100}


def test_a_freed_gap_is_reused():
    # the 100-byte buffer dies at step 1; the 60-byte one born at step 2 goes into its hole,
    # below the 80-byte buffer that lives throughout
    offsets, arena = assign_offsets([100, 80, 60], [(0, 1), (0, 4), (2, 4)])
    assert offsets == [0, 100, 0] and arena == 180


def _check_plan(graph, plan):
    live = liveness(graph)
    for u, v in itertools.combinations(live, 2):
        if plan.buffer[u] != plan.buffer[v] and _overlap(live[u], live[v]):
            assert _disjoint(plan.byte_range(u), plan.byte_range(v)), (u, v)
    producers = graph.producers()
    for v, root in plan.buffer.items():  # a shared buffer is a view or an in-place update
        if root != v:
            kind = OPS[producers[v].op].kind
            assert kind in ("view", "elementwise")
            sources = [n for n in producers[v].inputs if plan.buffer.get(n) == root]
            assert sources, v
            if kind == "elementwise":  # the overwritten buffer is read by no later step
                step = live[v][0]
                assert all(live[m][1] <= step for m, r in plan.buffer.items()
                           if r == root and live[m][0] < step)


@given(random_graphs())
def test_live_values_never_share_memory(graph):
    plan = plan_memory(graph)
    _check_plan(graph, plan)
    assert plan.lower_bound <= plan.arena_bytes <= plan_memory(graph, reuse=False).arena_bytes


@given(random_graphs())
def test_compiled_buffers_of_live_values_are_disjoint(graph):
    compiled = compile(graph)
    live = liveness(compiled.graph)
    for u, v in itertools.combinations(live, 2):
        if compiled.plan.buffer[u] != compiled.plan.buffer[v] and _overlap(live[u], live[v]):
            assert not np.shares_memory(compiled.buffers[u], compiled.buffers[v])


def test_separate_allocation_is_the_naive_sum():
    graph = optimize(trace(lenet5(), sample((2, 1, 28, 28))))
    plan = plan_memory(graph, reuse=False)
    assert plan.arena_bytes == plan.naive_bytes
    assert len(set(plan.buffer.values())) == len(plan.buffer)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_lenet5_plan_saves_at_least_30_percent_at_batch_64(batch_norm):
    graph = optimize(trace(lenet5(batch_norm=batch_norm), sample((64, 1, 28, 28))))
    planned, separate = compile(graph), compile(graph, reuse=False)
    assert planned.arena.nbytes <= 0.7 * separate.arena.nbytes
    x = sample((64, 1, 28, 28), seed=4)
    np.testing.assert_array_equal(planned(x), separate(x))
