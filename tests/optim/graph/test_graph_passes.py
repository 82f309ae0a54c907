"""Rewrite passes: each preserves outputs, is idempotent, never grows the constants, and
obeys its own law (DCE: everything reaches an output; CSE: no two equal nodes)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import functional as F
from minnet.models import lenet5
from optim.graph import execute, trace
from optim.graph.fold import fold_batchnorm
from optim.graph.ir import Graph, Node, as_type, attr_key
from optim.graph.passes import (PIPELINE, RULES, eliminate_common, eliminate_dead, fold_constants,
                                optimize, rewrites)

from graph_helpers import eager, named_models, random_graphs, sample

PASSES = {p.__name__: p for p in PIPELINE}


def _inputs(graph: Graph, seed: int = 0):
    return [sample(graph.types[k].shape, seed) for k in graph.inputs]


def _outputs(graph: Graph, inputs):
    out = execute(graph, *inputs)
    return out if isinstance(out, tuple) else (out,)


def assert_same_outputs(before: Graph, after: Graph, seed: int = 0) -> None:
    inputs = _inputs(before, seed)
    for a, b in zip(_outputs(before, inputs), _outputs(after, inputs), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PASSES) + ["optimize"])
@given(graph=random_graphs())
def test_pass_laws_on_random_graphs(name, graph):
    run = optimize if name == "optimize" else PASSES[name]
    once = run(graph)
    assert_same_outputs(graph, once)
    assert once.constant_bytes <= graph.constant_bytes
    assert run(once).signature() == once.signature()  # idempotent


@given(graph=random_graphs())
def test_optimize_reaches_a_fixed_point_of_every_rule(graph):
    done = optimize(graph)
    for name, rule in RULES.items():
        assert next(rewrites(done, rule), None) is None, name


@given(graph=random_graphs())
def test_dead_code_elimination_leaves_only_live_nodes(graph):
    done = eliminate_dead(graph)
    producers = done.producers()
    live, stack = set(), list(done.outputs)
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack += [i for i in producers[name].inputs if i] if name in producers else []
    assert {n.output for n in done.nodes} <= live
    assert set(done.constants) <= live
    assert set(done.outputs) == set(graph.outputs)


@given(graph=random_graphs())
def test_common_subexpression_elimination_leaves_no_duplicates(graph):
    done = eliminate_common(graph)
    keys = [(n.op, n.inputs, attr_key(n.attrs)) for n in done.nodes]
    assert len(keys) == len(set(keys))
    consts = [(a.dtype.str, a.shape, a.tobytes()) for a in done.constants.values()]
    assert len(consts) == len(set(consts))


MODELS = named_models()


@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_optimized_graph_equals_eager_model(name, model, shape):
    x = sample(shape, seed=3)
    graph = optimize(trace(model, x))
    np.testing.assert_allclose(execute(graph, x), eager(model, x), rtol=1e-5, atol=1e-5)
    producers = graph.producers()
    for node in graph.nodes:  # every BatchNorm after a layer was folded into it
        source = producers.get(node.inputs[0])
        assert not (node.op == "BatchNorm" and source and source.op in ("Conv2d", "Linear"))


def test_lenet5_with_batchnorm_becomes_fused_layers():
    graph = optimize(trace(lenet5(batch_norm=True), sample((2, 1, 28, 28))))
    assert [n.op for n in graph.nodes] == ["Conv2dReLU", "MaxPool2d", "Conv2dReLU", "MaxPool2d",
                                           "Reshape", "LinearReLU", "LinearReLU", "Linear"]


@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**16), st.booleans(),
       st.sampled_from([np.float32, np.float64]))
def test_fold_batchnorm_matches_conv_then_bn(c_out, c_in, seed, with_bias, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, 5, 5)).astype(dtype)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    gamma, beta = rng.uniform(0.5, 2, c_out).astype(dtype), rng.standard_normal(c_out).astype(dtype)
    mean, var = rng.standard_normal(c_out).astype(dtype), rng.uniform(0.1, 3, c_out).astype(dtype)
    want = F.batch_norm(F.conv2d(x, w, b, padding=1), mean, var, gamma, beta, eps=1e-3).data
    w2, b2 = fold_batchnorm(w, b, mean, var, gamma, beta, 1e-3)
    assert w2.dtype == b2.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(F.conv2d(x, w2, b2, padding=1).data, want, rtol=tol, atol=tol)


def test_fold_batchnorm_agrees_with_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    conv, bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4).eval()
    bn.running_mean.copy_(torch.tensor(rng.standard_normal(4)))
    bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, 4)))
    bn.weight.data.copy_(torch.tensor(rng.uniform(0.5, 2, 4)))
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn)
    params = [t.detach().numpy() for t in (conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                           bn.weight, bn.bias)]
    w, b = fold_batchnorm(*params, bn.eps)
    np.testing.assert_allclose(w, fused.weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, fused.bias.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_fold_batchnorm_for_linear_and_defaults():
    w = np.arange(6.0).reshape(2, 3)
    folded, bias = fold_batchnorm(w, None, np.array([1.0, -1.0]), np.array([3.0, 0.0]), None, None, 1.0)
    np.testing.assert_allclose(folded, w / np.array([[2.0], [1.0]]))
    np.testing.assert_allclose(bias, [-0.5, 1.0])


def test_fold_batchnorm_validation():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match="var must have shape"):
        fold_batchnorm(w, None, np.zeros(2), np.ones(3), None, None, 1e-5)
    with pytest.raises(ValueError, match="eps must be positive"):
        fold_batchnorm(w, None, np.zeros(2), np.ones(2), None, None, 0.0)
    with pytest.raises(ValueError, match="var must be non-negative"):
        fold_batchnorm(w, None, np.zeros(2), -np.ones(2), None, None, 1e-5)
    with pytest.raises(ValueError, match="weight must be a floating array"):
        fold_batchnorm(np.ones(2), None, np.zeros(2), np.ones(2), None, None, 1e-5)


def test_constant_folding_size_guard():
    # Add(c (4,), d (3, 1)) would make a (3, 4) constant from 7 values: it must stay a node
    t = {"x": as_type((3, 4), np.float32)}
    consts = {"c": np.ones(4, np.float32), "d": np.ones((3, 1), np.float32)}
    g = Graph.build(t, [Node("Add", ("c", "d"), "s"), Node("Mul", ("x", "s"), "y")], ["y"], consts)
    assert fold_constants(g) is g
    small = Graph.build(t, [Node("Mul", ("c", "c2"), "s"), Node("Mul", ("x", "s"), "y")], ["y"],
                        {"c": consts["c"], "c2": 2 * consts["c"]})
    folded = fold_constants(small)
    assert [n.op for n in folded.nodes] == ["Mul"] and folded.constant_bytes == 16
    np.testing.assert_array_equal(folded.constants[folded.nodes[0].inputs[1]], np.full(4, 2.0))
