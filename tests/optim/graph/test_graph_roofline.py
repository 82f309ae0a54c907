"""The roofline model: max(F/P, Q/B) per node with F and Q counted by hand from the shapes, and
a graph's time the sum over its non-constant nodes."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.graph import trace
from optim.graph.ir import Graph, Node, as_type
from optim.graph.passes import optimize
from optim.graph.roofline import RooflineModel, roofline_time
from optim.graph.zoo import residual_cnn

from graph_helpers import sample

POSITIVE = st.floats(1e-3, 1e12, allow_nan=False)


@given(flops=st.floats(0, 1e12), nbytes=st.floats(0, 1e12), peak=POSITIVE, bandwidth=POSITIVE)
def test_roofline_time_is_the_max_of_the_two_bounds(flops, nbytes, peak, bandwidth):
    """t = F / min(P, B·F/Q), the attainable rate of the roofline, which is max(F/P, Q/B)."""
    t = roofline_time(flops, nbytes, peak, bandwidth)
    assert t >= flops / peak and t >= nbytes / bandwidth
    assert t in (flops / peak, nbytes / bandwidth)
    if flops > 0 and nbytes > 0:
        attainable = min(peak, bandwidth * flops / nbytes)
        assert math.isclose(t, flops / attainable, rel_tol=1e-12)


def _one_node(op, shapes, attrs, constants=0):
    """A graph of one float32 node; the last ``constants`` inputs are constants."""
    names = [f"in{i}" for i in range(len(shapes))]
    split = len(shapes) - constants
    values = {n: np.ones(s, np.float32) for n, s in zip(names[split:], shapes[split:])}
    return Graph.build({n: as_type(s, np.float32) for n, s in zip(names[:split], shapes[:split])},
                       [Node(op, tuple(names), "out", attrs)], ["out"], values)


@given(n=st.integers(1, 4), c=st.integers(1, 6), o=st.integers(1, 6), size=st.integers(3, 9),
       k=st.sampled_from([1, 3]), stride=st.integers(1, 2), fused=st.booleans())
def test_conv_node_by_hand(n, c, o, size, k, stride, fused):
    """F = 2·N·O·H_out·W_out·C·k², Q = 4·(|x| + |w| + |b| + |y|) bytes, from the shapes alone."""
    attrs = dict(stride=(stride, stride), padding=(0, 0), dilation=(1, 1), groups=1)
    graph = _one_node("Conv2dReLU" if fused else "Conv2d",
                      [(n, c, size, size), (o, c, k, k), (o,)], attrs, constants=2)
    out = (size - k) // stride + 1
    flops = 2 * n * o * out * out * c * k * k
    nbytes = 4 * (n * c * size * size + o * c * k * k + o + n * o * out * out)
    for peak, bandwidth in ((1e9, 1e9), (1e12, 1e6), (1e6, 1e12)):
        model = RooflineModel(peak, bandwidth)
        expected = max(flops / peak, nbytes / bandwidth)
        assert model.node_cost(graph.nodes[0], graph) == pytest.approx(expected, rel=1e-12)
        assert model.graph_cost(graph) == pytest.approx(expected, rel=1e-12)


def test_linear_elementwise_and_view_nodes_by_hand():
    model = RooflineModel(2e9, 1e9)
    linear = _one_node("Linear", [(8, 20), (5, 20), (5,)], {}, constants=2)
    assert model.graph_cost(linear) == pytest.approx(
        max(2 * 8 * 5 * 20 / 2e9, 4 * (8 * 20 + 5 * 20 + 5 + 8 * 5) / 1e9))
    add = _one_node("Add", [(3, 7), (3, 7)], {})
    assert model.graph_cost(add) == pytest.approx(max(21 / 2e9, 4 * 63 / 1e9))
    view = _one_node("Reshape", [(3, 7)], {"shape": (21,)})
    assert model.graph_cost(view) == 0.0


def test_graph_cost_sums_the_nodes_and_skips_constant_ones():
    """On the residual CNN every non-constant node adds max(F/P, Q/B) and nothing else does:
    doubling both peaks halves the total exactly, and the total lies between the larger of the
    two summed bounds and their sum."""
    graph = optimize(trace(residual_cnn(), sample((2, 1, 28, 28))))
    slow, fast = RooflineModel(1e9, 2e9), RooflineModel(2e9, 4e9)
    assert fast.graph_cost(graph) == pytest.approx(slow.graph_cost(graph) / 2, rel=1e-12)
    compute_only, memory_only = RooflineModel(1e9, 1e30), RooflineModel(1e30, 2e9)
    total = slow.graph_cost(graph)
    bounds = compute_only.graph_cost(graph), memory_only.graph_cost(graph)
    assert max(bounds) <= total * (1 + 1e-12) and total <= sum(bounds) * (1 + 1e-12)


def test_validation():
    with pytest.raises(ValueError, match="positive"):
        RooflineModel(0.0, 1e9)
    with pytest.raises(ValueError, match="non-negative"):
        roofline_time(-1.0, 0.0, 1.0, 1.0)


def test_equal_flop_kernels_get_different_costs():
    """Seed 002 §3.5 takes an op's cost to be its computational complexity. im2col and direct
    convolution do the same multiply-accumulates (equal F) but im2col also writes and reads
    its column buffer and issues one GEMM per image where direct loops over every output pixel
    (Q and L differ), so a cost model of time must tell them apart; the complexity (and the
    roofline bound, which sees only compulsory traffic) cannot."""
    from optim.graph.compiled import algorithm_options
    from optim.graph.cost import CostModel, cost_features

    attrs = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    graph = _one_node("Conv2d", [(4, 3, 12, 12), (8, 3, 3, 3), (8,)], attrs, constants=2)
    conv = graph.nodes[0]
    assert {"im2col", "direct"} <= set(algorithm_options(conv, graph))
    (f_i, q_i, l_i), (f_d, q_d, l_d) = (cost_features(conv, graph, a) for a in ("im2col", "direct"))
    assert f_i == f_d == 2 * 4 * 8 * 12 * 12 * 3 * 3 * 3
    columns = 4 * 3 * 3 * 3 * 12 * 12 * 4  # N·C·kh·kw·H_out·W_out float32 bytes
    assert q_i - q_d == 2 * columns and l_i == 4 and l_d == 4 * 12 * 12
    theta = [1e-6, 1.0, 1.0, 1e-7]
    model = CostModel(1e10, 1e10, {"conv.im2col": theta, "conv.direct": theta}, [0.0, 0.0])
    assert model.node_cost(conv, graph, "im2col") != model.node_cost(conv, graph, "direct")
    roofline = RooflineModel(1e10, 1e10)
    assert roofline.node_cost(conv, graph, "im2col") == roofline.node_cost(conv, graph, "direct")
