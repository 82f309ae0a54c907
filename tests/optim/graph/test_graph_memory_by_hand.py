"""The memory planner on examples worked by hand: liveness, in-place reuse along a chain,
greedy offsets (size, then start step, then index; the smallest, lowest gap), the peak of live
bytes, alignment and the external and no-reuse options."""
import numpy as np
import pytest

from optim.graph import Graph, Node, plan_memory
from optim.graph.memory import ALIGNMENT, assign_offsets, liveness, peak_live_bytes

F32 = np.float32


def _chain():
    """x (4,) -> a = Exp(x) (step 1) -> b = Neg(a) (step 2), output b."""
    return Graph.build({"x": ((4,), F32)}, [Node("Exp", ("x",), "a"), Node("Neg", ("a",), "b")],
                       ["b"], {})


def test_liveness_of_a_chain():
    """The input lives from step 0 to its reader, each value from its step to its last reader,
    the output to one past the last node."""
    assert liveness(_chain()) == {"x": (0, 1), "a": (1, 2), "b": (2, 3)}
    both = Graph.build({"x": ((4,), F32)}, [Node("Exp", ("x",), "a"), Node("Neg", ("a",), "b")],
                       ["a", "b"], {})
    assert liveness(both)["a"] == (1, 3)  # an output read by a later node: from 1 to the end


def test_a_chain_runs_in_place_in_one_aligned_buffer():
    """a overwrites x (dead after step 1, same bytes and dtype), b overwrites a: one group
    rooted at x over steps 0..3, 16 bytes aligned to 64; byte_range is [offset, offset + 64)."""
    plan = plan_memory(_chain())
    assert plan.buffer == {"x": "x", "a": "x", "b": "x"}
    assert plan.interval == {"x": (0, 3)} and plan.arena_bytes == ALIGNMENT == 64
    assert plan.byte_range("b") == (0, 64)
    assert plan_memory(_chain(), reuse=True, inplace=True) == plan  # the defaults


def test_without_in_place_or_reuse():
    """inplace=False: a and b cannot overwrite their inputs, but b may take x's dead buffer
    (x ends at step 1, b starts at 2): two buffers. reuse=False: three."""
    assert plan_memory(_chain(), inplace=False).arena_bytes == 2 * 64
    assert plan_memory(_chain(), reuse=False).arena_bytes == 3 * 64


def test_a_graph_without_nodes_keeps_its_inputs_apart():
    """Two inputs returned as they are, no reuse: both live throughout, 2 buffers."""
    graph = Graph.build({"x": ((3,), F32), "y": ((3,), F32)}, [], ["x", "y"], {})
    plan = plan_memory(graph, reuse=False)
    assert plan.arena_bytes == 128 and plan.offset["x"] != plan.offset["y"]


def test_in_place_needs_the_same_bytes():
    """z = x + y with y (3,) broadcast over x (2, 3): z may overwrite x, never the smaller y."""
    graph = Graph.build({"x": ((2, 3), F32), "y": ((3,), F32)},
                        [Node("Add", ("y", "x"), "z")], ["z"], {})
    assert plan_memory(graph).buffer["z"] == "x"


def test_external_inputs_must_be_inputs():
    assert "x" not in plan_memory(_chain(), external=["x"]).buffer
    with pytest.raises(ValueError, match="external"):
        plan_memory(_chain(), external=["a"])


def test_offsets_order_by_size_then_start_step():
    """Sizes (128, 192, 192, 64, 192), steps (3-4, 4-5, 0-4, 0, 3-5). Placed: buffer 2 (192,
    from 0) at 0; 4 (from 3) at 192; 1 (from 4) at 384; 0 (128) above all three it meets at
    576; 3 (64, step 0) meets only buffer 2: at 192. Arena 704."""
    offsets, arena = assign_offsets([128, 192, 192, 64, 192],
                                    [(3, 4), (4, 5), (0, 4), (0, 0), (3, 5)])
    assert (offsets, arena) == ([576, 384, 0, 192, 192], 704)


def test_offsets_take_the_lowest_of_equal_gaps():
    """Sizes (128, 64, 64, 128, 128), steps (0-1, 3, 1-5, 0-5, 1). The last placed, buffer 1
    (64 bytes, step 3), meets buffers at [128, 256) and [384, 448): the gaps [0, 128) and
    [256, 384) are equally small; it takes the lower, 0."""
    offsets, arena = assign_offsets([128, 64, 64, 128, 128],
                                    [(0, 1), (3, 3), (1, 5), (0, 5), (1, 1)])
    assert (offsets, arena) == ([0, 0, 384, 128, 256], 448)


def test_peak_live_bytes_by_hand():
    """10 bytes live at steps 0-1, 20 at 1-2, 5 at 3: the load is 10, 30, 20, 5; peak 30."""
    assert peak_live_bytes([10, 20, 5], [(0, 1), (1, 2), (3, 3)]) == 30
    assert peak_live_bytes([], []) == 0


def test_liveness_of_an_unused_input_and_a_value_read_twice():
    """u is never read: (0, 0). x is read at steps 1 and 2: it lives from 0 to 2."""
    graph = Graph.build({"x": ((4,), F32), "u": ((4,), F32)},
                        [Node("Exp", ("x",), "a"), Node("Add", ("a", "x"), "b")], ["b"], {})
    live = liveness(graph)
    assert live["u"] == (0, 0) and live["x"] == (0, 2)
