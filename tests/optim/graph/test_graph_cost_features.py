"""The cost model's features (F operations, Q bytes moved, L launches) of each kernel class,
computed by hand from the formulas in ``optim.graph.cost.cost_features`` for small nodes:
convolution by im2col, direct, pointwise and FFT; dense and sparse (CSR gather / axpy) linear
layers; max pooling with and without padding; fused elementwise passes; views; and the
coefficient classes and families that fall back on them."""
import math

import numpy as np
import pytest

from optim.graph import Graph, Node
from optim.graph.cost import cost_features, family, kernel_class
from optim.graph.ops import node_work

F32 = np.float32


def _graph(inputs, nodes, constants):
    return Graph.build(inputs, nodes, [nodes[-1].output], constants)


@pytest.fixture
def conv():
    """x (2, 3, 8, 8), w (4, 3, 3, 3), b (4,), padding 1, ReLU fused: y (2, 4, 8, 8)."""
    node = Node("Conv2dReLU", ("x", "w", "b"), "y",
                {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1})
    rng = np.random.default_rng(0)
    graph = _graph({"x": ((2, 3, 8, 8), F32)}, [node],
                   {"w": rng.random((4, 3, 3, 3)).astype(F32), "b": np.zeros(4, F32)})
    return node, graph


# bytes: x 1536 + w 432 + b 16 = 1984 in, y 2048 out; ReLU + bias: epilogue 2, 2·2·2048 = 8192
IN, OUT, EXTRA, MACS = 1984, 2048, 8192, 2 * 4 * 64 * 27


def test_convolution_features_by_algorithm(conv):
    node, graph = conv
    cols = 2 * 3 * 3 * 3 * 8 * 8 * 4  # n c kh kw oh ow itemsize = 13,824
    assert cost_features(node, graph, "im2col") == (2 * MACS, IN + OUT + 2 * cols + EXTRA, 2)
    assert cost_features(node, graph, "direct") == (2 * MACS, IN + OUT + EXTRA, 2 * 64)
    assert cost_features(node, graph, "pointwise") == (2 * MACS, IN + OUT + EXTRA, 2)
    # padded 10 x 10, 10 · (5 + 1) = 60 half-spectrum bins
    flops = 2.5 * 2 * 7 * 100 * math.log2(100) + 8 * 2 * 3 * 4 * 60
    spectra = 2 * 4 * 60 * (2 * 3 + 2 * 4 + 3 * 4)
    f, q, launches = cost_features(node, graph, "fft")
    assert f == pytest.approx(flops, rel=1e-12)
    assert (q, launches) == (IN + OUT + 2 * spectra + EXTRA, 60)


def test_a_grouped_convolution_launches_per_group():
    node = Node("Conv2d", ("x", "w", ""), "y",
                {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 2})
    graph = _graph({"x": ((1, 4, 5, 5), F32)}, [node], {"w": np.ones((6, 2, 3, 3), F32)})
    f, q, launches = cost_features(node, graph, "im2col")
    assert (f, launches) == (2 * 6 * 9 * 18, 2)  # 6 · 3 · 3 outputs, 2 · 3 · 3 MACs each
    assert cost_features(node, graph, "direct")[2] == 1 * 3 * 3 * 2


def test_linear_features_dense_and_sparse():
    """x (2, 5), w (3, 5) with 4 non-zeros, bias, ReLU fused: y (2, 3)."""
    w = np.zeros((3, 5), F32)
    w[0, 0], w[1, 2], w[2, 3], w[2, 4] = 1, 2, 3, 4
    node = Node("LinearReLU", ("x", "w", "b"), "y", {})
    graph = _graph({"x": ((2, 5), F32)}, [node], {"w": w, "b": np.zeros(3, F32)})
    extra = 2 * 2 * 24
    assert cost_features(node, graph, "dense") == (2 * 2 * 3 * 5, 40 + 60 + 12 + 24 + extra, 1)
    sparse_bytes = 40 + 24 + 4 * (4 + 4) + extra
    assert cost_features(node, graph, "sparse_gather") == (2 * 2 * 4, sparse_bytes, 2 * 3)
    assert cost_features(node, graph, "sparse_axpy") == (2 * 2 * 4, sparse_bytes, 4)


def test_pooling_features():
    """x (2, 4, 8, 8) = 2048 bytes. 2x2 stride 2: 128 outputs of 4 taps, out 512 bytes.
    3x3 stride 2 padding 1: 128 outputs of 9 taps plus a padded copy (2 · 2048 bytes)."""
    plain = Node("MaxPool2d", ("x",), "y", {"kernel_size": (2, 2), "stride": (2, 2),
                                            "padding": (0, 0), "ceil_mode": False})
    graph = _graph({"x": ((2, 4, 8, 8), F32)}, [plain], {})
    assert cost_features(plain, graph, "default") == (128 * 4, 2048 + 2 * 4 * 512, 4)
    padded = Node("MaxPool2d", ("x",), "y", {"kernel_size": (3, 3), "stride": (2, 2),
                                             "padding": (1, 1), "ceil_mode": False})
    graph = _graph({"x": ((2, 4, 8, 8), F32)}, [padded], {})
    assert cost_features(padded, graph, "default") == (128 * 9, 2048 + 4096 + 2 * 9 * 512, 10)


def test_elementwise_passes_and_views():
    """AddReLU makes 2 passes over (2, 4): F 2 · 8, Q 64 in + 2 · 2 · 32; Tanh one pass; a
    reshape is free."""
    add = Node("AddReLU", ("a", "b"), "y", {})
    graph = _graph({"a": ((2, 4), F32), "b": ((2, 4), F32)}, [add], {})
    assert cost_features(add, graph, "default") == (16, 64 + 128, 2)
    tanh = Node("Tanh", ("a",), "y", {})
    graph = _graph({"a": ((2, 4), F32)}, [tanh], {})
    f, q, launches = cost_features(tanh, graph, "default")
    assert (q, launches) == (32 + 64, 1) and f >= 8
    view = Node("Reshape", ("a",), "y", {"shape": (8,)})
    graph = _graph({"a": ((2, 4), F32)}, [view], {})
    assert cost_features(view, graph, "default") == (0.0, 0.0, 0.0)


def test_kernel_classes_and_families():
    conv = Node("Conv2dReLU", ("x", "w", ""), "y", {})
    assert kernel_class(conv, "im2col") == "conv.im2col"
    assert kernel_class(Node("LinearReLU", ("x", "w", ""), "y", {}), "dense") == "linear.dense"
    assert kernel_class(Node("Reshape", ("x",), "y", {}), "default") == "view"
    assert kernel_class(Node("MaxPool2d", ("x",), "y", {}), "default") == "MaxPool2d"
    assert [family(k) for k in ("Add", "AddReLU", "Tanh", "Softmax", "MaxPool2d")] == \
        ["cheap", "cheap", "transcendental", "transcendental", "generic"]


def json_round_trip(model):
    import json

    from optim.graph.cost import CostModel
    data = json.loads(model.to_json())
    return CostModel(data["peak_flops"], data["bandwidth"], data["coefficients"], data["call"],
                     data["info"])


def test_node_call_and_graph_costs_by_hand(conv):
    """C(v, a) = θ · (1, F/P, Q/B, L); the call overhead θ₀ + θ_b · (input + output bytes)/B;
    a graph's cost is the call plus every node's, a node of constants only free. Peak
    P = 1e9 operations/s, B = 1e8 bytes/s; im2col θ = (1e-6, 1, 2, 3e-7)."""
    from optim.graph.cost import CostModel
    node, graph = conv
    model = CostModel(1e9, 1e8, {"conv.im2col": [1e-6, 1.0, 2.0, 3e-7],
                                 "conv.direct": [1.0, 0.0, 0.0, 0.0],
                                 "generic": [0.0, 0.0, 0.0, 0.0]}, [5e-6, 0.5])
    f, q, launches = cost_features(node, graph, "im2col")
    expected = 1e-6 + f / 1e9 + 2.0 * q / 1e8 + 3e-7 * launches
    assert model.node_cost(node, graph, "im2col") == pytest.approx(expected, rel=1e-12)
    moved = 1536 + 2048  # graph input x and output y
    assert model.call_cost(graph) == pytest.approx(5e-6 + 0.5 * moved / 1e8, rel=1e-12)
    assert model.graph_cost(graph, {"y": "im2col"}) == \
        pytest.approx(model.call_cost(graph) + expected, rel=1e-12)
    # unforced, the cheaper algorithm is taken: direct costs 1 s here
    assert model.graph_cost(graph) <= model.graph_cost(graph, {"y": "im2col"})
    folded = Node("Add", ("w", "w"), "w2", {})
    with_constants = Graph.build({"x": ((2, 3, 8, 8), F32)}, [folded, node], ["y"],
                                 dict(graph.constants))
    assert model.graph_cost(with_constants, {"y": "im2col"}) == pytest.approx(
        model.call_cost(with_constants) + expected, rel=1e-12)
    text = model.to_json()  # one-space indent, sorted keys: diff-friendly profiles
    assert '\n "bandwidth"' in text and text.index('"bandwidth"') < text.index('"peak_flops"')
    assert json_round_trip(model) == model


def test_batchnorm_passes():
    """Eval-mode BatchNorm over x (2, 4): normalise and scale-shift passes, 2 + one per affine
    parameter present — 4 with weight and bias, 2 without (Q counts 2 bytes moved per pass)."""
    stats = {"m": np.zeros(4, F32), "v": np.ones(4, F32), "g": np.ones(4, F32),
             "b": np.zeros(4, F32)}
    for inputs, passes in ((("x", "g", "b", "m", "v"), 4), (("x", "", "", "m", "v"), 2)):
        node = Node("BatchNorm", inputs, "y", {"eps": 1e-5, "training": False})
        graph = _graph({"x": ((2, 4), F32)}, [node], stats)
        f, q, launches = cost_features(node, graph, "default")
        in_bytes = 32 + 16 * sum(1 for n in inputs[1:] if n)
        assert (q, launches) == (in_bytes + 2 * passes * 32, passes)
        assert f == passes * max(node_work(node, graph.types), 8)  # per pass: the op's work


def test_fft_features_with_uneven_padding_and_tiny_images():
    """x (1, 2, 6, 5), w (3, 2, 3, 3), padding (1, 0): padded 8 x 5, 8 · (5 // 2 + 1) = 24
    bins; a 1 x 2 image with a 1 x 1 kernel: 2 pixels, log2 2 = 1, 1 · 2 = 2 bins."""
    node = Node("Conv2d", ("x", "w", ""), "y",
                {"stride": (1, 1), "padding": (1, 0), "dilation": (1, 1), "groups": 1})
    graph = _graph({"x": ((1, 2, 6, 5), F32)}, [node], {"w": np.ones((3, 2, 3, 3), F32)})
    f, _, bins = cost_features(node, graph, "fft")
    assert bins == 24
    assert f == pytest.approx(2.5 * 1 * 5 * 40 * math.log2(40) + 8 * 1 * 2 * 3 * 24, rel=1e-12)
    tiny = Node("Conv2d", ("x", "w", ""), "y",
                {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1})
    graph = _graph({"x": ((1, 1, 1, 2), F32)}, [tiny], {"w": np.ones((1, 1, 1, 1), F32)})
    f, _, bins = cost_features(tiny, graph, "fft")
    assert bins == 2 and f == pytest.approx(2.5 * 2 * 2 * 1 + 8 * 2, rel=1e-12)


def test_linear_rows_count_every_leading_axis():
    """x (2, 3, 5) through w (4, 5): 6 rows, F = 2 · 6 · 4 · 5."""
    node = Node("Linear", ("x", "w", ""), "y", {})
    graph = _graph({"x": ((2, 3, 5), F32)}, [node], {"w": np.ones((4, 5), F32)})
    assert cost_features(node, graph, "dense")[0] == 2 * 6 * 4 * 5
