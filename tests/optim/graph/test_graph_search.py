"""Rewrite search: never worse than the start, outputs preserved, budgets respected, and an
exhaustive backtracking search at least as good as greedy descent."""
import math

import numpy as np
import pytest
from hypothesis import given, settings

from minnet.models import lenet5
from optim.graph import execute, trace
from optim.graph.cost import CostModel
from optim.graph.passes import optimize
from optim.graph.search import backtracking, greedy, moves

from graph_helpers import random_graphs, sample


def _node_count(graph):
    return float(len(graph.nodes))


def _weighted(graph):
    """A cost that prefers fused kernels and punishes BatchNorm: fold first, fuse second."""
    weight = {"BatchNorm": 3.0, "Conv2dReLU": 0.5, "LinearReLU": 0.5, "AddReLU": 0.7}
    return sum(weight.get(n.op, 1.0) for n in graph.nodes)


def _same_outputs(a, b):
    x = [sample(a.types[k].shape, 2) for k in a.inputs]
    out_a, out_b = execute(a, *x), execute(b, *x)
    for p, q in zip(out_a if isinstance(out_a, tuple) else (out_a,),
                    out_b if isinstance(out_b, tuple) else (out_b,), strict=True):
        np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-5)


@settings(max_examples=15)
@given(random_graphs(max_steps=4))
def test_exhaustive_search_is_no_worse_than_greedy(graph):
    g = greedy(graph, _weighted)
    b = backtracking(graph, _weighted, budget=10_000, alpha=math.inf)
    assert b.cost <= g.cost <= g.initial_cost
    assert b.cost == _weighted(b.graph)
    _same_outputs(graph, b.graph)
    _same_outputs(graph, g.graph)


@settings(max_examples=15)
@given(random_graphs())
def test_search_respects_its_budget_and_never_returns_worse(graph):
    result = backtracking(graph, _node_count, budget=5)
    assert result.expanded <= 5 and result.cost <= result.initial_cost
    _same_outputs(graph, result.graph)


def test_search_with_a_cost_model_reaches_the_pipeline_result_on_lenet5():
    rng = np.random.default_rng(0)
    model = CostModel(1e10, 1e10, {k: rng.uniform(0.5, 2, 4).tolist() for k in (
        "conv.im2col", "conv.direct", "conv.fft", "linear.dense", "linear.sparse_gather", "linear.sparse_axpy", "generic")},
        [1e-6, 1.0])
    graph = trace(lenet5(batch_norm=True), sample((2, 1, 28, 28)))
    result = backtracking(graph, model.graph_cost, budget=200)
    assert result.cost < result.initial_cost
    assert [n.op for n in result.graph.nodes] == [n.op for n in optimize(graph).nodes]
    assert greedy(graph, model.graph_cost).cost == pytest.approx(result.cost)


def test_moves_are_one_rewrite_each():
    graph = trace(lenet5(batch_norm=True), sample((1, 1, 28, 28)))
    # two BatchNorm folds and two Linear+ReLU fusions remove one node each (the conv ReLUs
    # follow BatchNorms, not convs, until a fold); CSE merges the equal fresh BN constants
    assert sorted(len(g.nodes) for g in moves(graph)) == [13, 13, 13, 13, 14]


def test_bad_search_arguments():
    graph = trace(lenet5(), sample((1, 1, 28, 28)))
    with pytest.raises(ValueError, match="budget"):
        backtracking(graph, _node_count, budget=0)
    with pytest.raises(ValueError, match="alpha"):
        backtracking(graph, _node_count, alpha=0.5)
