"""Training in the graph IR: plans with inputs bound by reference (external buffers: a model
parameter is read where it lives, never copied into or written by the arena) and gradient ops
equal to minnet's own backward."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minnet
import minnet.functional as F
from optim.graph.grad_ops import (linear_input_grad, linear_weight_grad, relu_grad,
                                  softmax_cross_entropy_grad)
from optim.graph.ops import OPS
from optim.graph.types import TensorType

from optim.graph import execute, plan_memory
from optim.graph.compiled import Plan, _choose, precompute_constants

from graph_helpers import random_graphs, sample


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@given(random_graphs())
def test_external_input_is_read_by_reference_and_never_written(graph):
    graph = precompute_constants(graph)
    name = graph.inputs[0]
    inputs = [sample(graph.types[k].shape, i + 1) for i, k in enumerate(graph.inputs)]
    bound = inputs[0].copy()
    memory = plan_memory(graph, external=[name])
    plan = Plan(graph, memory, _choose(graph, {}, None), external={name: bound})
    assert name not in memory.buffer
    assert memory.arena_bytes <= plan_memory(graph).arena_bytes
    for seed in (7, 8):
        got = _outputs(plan.run(inputs[1:]))
        np.testing.assert_array_equal(bound, inputs[0])  # the plan never writes it
        want = _outputs(execute(graph, *inputs))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        inputs[0] = sample(bound.shape, seed)
        bound[...] = inputs[0]  # an in-place change is seen by the next run


def test_external_binding_rejects_bad_arrays():
    from optim.graph import trace
    from minnet.models import lenet_300_100
    graph = precompute_constants(trace(lenet_300_100(), sample((2, 1, 28, 28))))
    name = graph.inputs[0]
    t = graph.types[name]
    memory = plan_memory(graph, external=[name])
    algorithms = _choose(graph, {}, None)
    with pytest.raises(ValueError, match="external must name graph inputs"):
        plan_memory(graph, external=["no_such_input"])
    with pytest.raises(ValueError, match=repr(name)):
        Plan(graph, memory, algorithms, external={name: np.zeros(t.shape, np.float64)})
    with pytest.raises(ValueError, match=repr(name)):
        Plan(graph, memory, algorithms,
             external={name: np.zeros(tuple(t.shape)[::-1], t.dtype).T})
    with pytest.raises(ValueError, match="no array given"):
        Plan(graph, memory, algorithms)


@st.composite
def _logits_and_targets(draw):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    return (scale * rng.standard_normal((n, c))).astype(np.float32), rng.integers(0, c, n)


@given(_logits_and_targets())
def test_softmax_cross_entropy_grad_equals_minnet_backward(case):
    logits, target = case
    z = minnet.Tensor(logits, requires_grad=True)
    F.cross_entropy(z, target).backward()
    got = OPS["SoftmaxCrossEntropyGrad"].run([logits, target], {})
    np.testing.assert_allclose(got, z.grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 0, atol=1e-6)  # softmax and one-hot both sum to 1


@given(st.integers(0, 2**16), st.tuples(st.integers(1, 4), st.integers(1, 5)))
def test_relu_grad_equals_minnet_backward(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.2] = 0  # the kink: gradient 0 there, as PyTorch
    dy = rng.standard_normal(shape).astype(np.float32)
    t = minnet.Tensor(x, requires_grad=True)
    (F.relu(t) * minnet.Tensor(dy)).sum().backward()
    np.testing.assert_array_equal(OPS["ReluGrad"].run([dy, x], {}), t.grad)


def test_gradient_ops_reject_bad_shapes():
    with pytest.raises(ValueError, match="dy of shape"):
        relu_grad(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        softmax_cross_entropy_grad(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="target must have shape"):
        softmax_cross_entropy_grad(np.zeros((2, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="target values"):
        softmax_cross_entropy_grad(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="dy must end in out"):
        linear_input_grad(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="leading axes"):
        linear_weight_grad(np.zeros((2, 3)), np.zeros((3, 5)))


@given(st.integers(0, 2**16), st.lists(st.integers(1, 4), min_size=0, max_size=2),
       st.integers(1, 5), st.integers(1, 5))
def test_linear_grads_equal_minnet_backward(seed, lead, n_in, n_out):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, n_in)).astype(np.float32)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    dy = rng.standard_normal((*lead, n_out)).astype(np.float32)
    tx, tw, tb = (minnet.Tensor(a, requires_grad=True) for a in (x, w, b))
    (F.linear(tx, tw, tb) * minnet.Tensor(dy)).sum().backward()
    for op, arrays, want in (("LinearInputGrad", [dy, w], tx.grad),
                             ("LinearWeightGrad", [dy, x], tw.grad), ("BiasGrad", [dy], tb.grad)):
        got = OPS[op].run(arrays, {})
        inferred = OPS[op].infer([TensorType(a.shape, a.dtype) for a in arrays], {})
        assert got.shape == want.shape == tuple(inferred.shape) and got.dtype == inferred.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=op)
