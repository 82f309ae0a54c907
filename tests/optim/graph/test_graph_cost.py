"""The cost model: the fit recovers exact coefficients, predictions are sums of node costs,
the algorithm choice is their argmin, profiles round-trip through JSON."""
import json
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet.models import lenet5
from optim.graph import Graph, Node, trace
from optim.graph.compiled import algorithm_options, compile
from optim.graph.cost import (CostModel, calibrate, cost_features, fit_costs, isolate,
                              kernel_class, time_callable)
from optim.graph.passes import optimize
from optim.graph.zoo import residual_cnn

from graph_helpers import sample


@given(st.integers(0, 2**16), st.integers(4, 30))
def test_fit_recovers_exact_coefficients(seed, m):
    rng = np.random.default_rng(seed)
    features = np.column_stack([np.ones(m), rng.uniform(0, 10, (m, 3))])
    theta = rng.uniform(0, 2, 4)
    theta[0] += 0.1  # positive times
    theta[rng.integers(1, 4)] = 0.0  # a zero coefficient stays zero, not negative
    np.testing.assert_allclose(fit_costs(features, features @ theta), theta, rtol=1e-6, atol=1e-9)


@given(st.integers(0, 2**16))
def test_fit_is_non_negative_even_when_data_disagree(seed):
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 1, (12, 4))
    assert (fit_costs(features, rng.uniform(0.1, 1, 12)) >= 0).all()


def test_fit_validation():
    with pytest.raises(ValueError, match="positive"):
        fit_costs(np.ones((3, 2)), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(m, k\)"):
        fit_costs(np.ones(3), np.ones(3))


def _model():
    classes = ["conv.im2col", "conv.direct", "conv.pointwise", "conv.fft", "linear.dense",
               "linear.sparse_gather", "linear.sparse_axpy", "generic"]
    rng = np.random.default_rng(0)
    return CostModel(1e10, 1e10, {k: rng.uniform(0.5, 2, 4).tolist() for k in classes},
                     [3e-6, 1.0], {"note": "synthetic"})


def test_graph_cost_is_call_overhead_plus_cheapest_node_costs():
    model = _model()
    graph = optimize(trace(residual_cnn(), sample((2, 1, 28, 28))))
    by_hand = model.call_cost(graph) + sum(
        min(model.node_cost(n, graph, a) for a in algorithm_options(n, graph)) for n in graph.nodes)
    assert model.graph_cost(graph) == pytest.approx(by_hand, rel=1e-12)
    chosen = {n.output: model.choose(n, graph) for n in graph.nodes}
    assert model.graph_cost(graph, chosen) == pytest.approx(by_hand, rel=1e-12)
    assert compile(graph, cost_model=model).algorithms == chosen


def test_choice_is_the_argmin_and_views_are_free():
    model = _model()
    graph = optimize(trace(lenet5(), sample((8, 1, 28, 28))))
    for node in graph.nodes:
        costs = {a: model.node_cost(node, graph, a) for a in algorithm_options(node, graph)}
        assert costs[model.choose(node, graph)] == min(costs.values())
        if node.op == "Reshape":
            assert kernel_class(node, "default") == "view" and costs["default"] == 0.0


@pytest.mark.parametrize("algorithm", ["im2col", "direct", "fft"])
def test_conv_cost_grows_with_batch(algorithm):
    model = _model()
    costs = []
    for batch in (1, 2, 8, 32):
        graph = optimize(trace(lenet5(), sample((batch, 1, 28, 28))))
        conv = graph.nodes[0]
        flops, nbytes, launches = cost_features(conv, graph, algorithm)
        assert flops > 0 and nbytes > 0
        costs.append(model.node_cost(conv, graph, algorithm))
    assert costs == sorted(costs)


def test_profile_round_trips_through_json(tmp_path):
    model = _model()
    path = tmp_path / "profile.json"
    model.save(path)
    again = CostModel.load(path)
    assert again == model
    assert json.loads(path.read_text())["coefficients"]["conv.im2col"] == model.coefficients["conv.im2col"]
    path.write_text(json.dumps({"peak_flops": 1.0}))
    with pytest.raises(ValueError, match="lacks"):
        CostModel.load(path)


def test_unknown_class_without_generic_is_an_error():
    graph = optimize(trace(lenet5(), sample((1, 1, 28, 28))))
    model = CostModel(1.0, 1.0, {}, [0.0, 0.0])
    with pytest.raises(ValueError, match="conv.im2col"):
        model.node_cost(graph.nodes[0], graph, "im2col")


def test_isolated_node_keeps_its_constants():
    graph = optimize(trace(lenet5(), sample((1, 1, 28, 28))))
    alone = isolate(graph, graph.nodes[2])
    assert [n.op for n in alone.nodes] == ["Conv2dReLU"] and len(alone.constants) == 2
    assert alone.types[alone.outputs[0]] == graph.types[graph.nodes[2].output]


def test_time_callable_never_reports_less_than_the_work():
    assert time_callable(lambda: time.sleep(1e-3), min_time=1e-3, rounds=2) >= 1e-3


def test_quick_calibration_gives_a_usable_profile(tmp_path):
    model = calibrate(quick=True)
    for kind in ("conv.im2col", "conv.direct", "conv.fft", "linear.dense", "linear.sparse_gather",
                 "linear.sparse_axpy", "generic"):
        assert kind in model.coefficients
    assert all(c >= 0 for theta in model.coefficients.values() for c in theta)
    assert model.peak_flops > 0 and model.bandwidth > 0
    small = optimize(trace(lenet5(), sample((1, 1, 28, 28))))
    large = optimize(trace(lenet5(), sample((64, 1, 28, 28))))
    assert model.graph_cost(large) > model.graph_cost(small)
    model.save(tmp_path / "p.json")
    assert CostModel.load(tmp_path / "p.json") == model


def test_a_node_of_constants_with_an_absent_input_is_free():
    """Linear(c, w, "") reads only constants (its bias is absent): precomputed by compile, so
    graph_cost charges it nothing; the graph costs its call overhead and the Add reading x."""
    model = _model()
    c, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    graph = Graph.build({"x": ((2, 4), np.float32)},
                        [Node("Linear", ("c", "w", ""), "y"), Node("Add", ("x", "y"), "z")],
                        ["z"], {"c": c, "w": w})
    add = graph.nodes[-1]
    expected = model.call_cost(graph) + min(model.node_cost(add, graph, a)
                                            for a in algorithm_options(add, graph))
    assert model.graph_cost(graph) == pytest.approx(expected, rel=1e-12)
