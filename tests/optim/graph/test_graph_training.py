"""Training in the graph IR: plans with inputs bound by reference (external buffers: a model
parameter is read where it lives, never copied into or written by the arena), gradient ops
equal to minnet's own backward, and the compiled training step against eager training."""
import copy

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minnet
import minnet.functional as F
from minnet import models, optimizers
from minnet.train import fit
from optim.graph.grad_ops import (channel_bias_grad, conv2d_input_grad, conv2d_weight_grad,
                                  conv_grad, conv_grad_algorithms, linear_input_grad,
                                  linear_weight_grad, max_pool2d_grad, relu_grad,
                                  softmax_cross_entropy, softmax_cross_entropy_grad)
from optim.graph import grad_kernels as GK
from optim.graph.training import compile_training
from optim.graph.ops import OPS
from optim.graph.types import TensorType

from optim.graph import execute, plan_memory
from optim.graph.compiled import Plan, choose_algorithms, precompute_constants

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
    plan = Plan(graph, memory, choose_algorithms(graph, {}, None), external={name: bound})
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
    algorithms = choose_algorithms(graph, {}, None)
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


@given(seed=st.integers(0, 2**16), n=st.integers(1, 3), c_in=st.integers(1, 4),
       c_out=st.integers(1, 4), size=st.integers(4, 9), kernel=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 1), groups=st.sampled_from([1, 2]))
def test_conv_and_pool_grads_equal_minnet_backward(seed, n, c_in, c_out, size, kernel, stride,
                                                    padding, groups):
    c_in, c_out = c_in * groups, c_out * groups
    rng = np.random.default_rng(seed)
    x = minnet.Tensor(rng.normal(size=(n, c_in, size, size)).astype(np.float32),
                      requires_grad=True)
    w = minnet.Tensor(rng.normal(size=(c_out, c_in // groups, kernel, kernel))
                      .astype(np.float32), requires_grad=True)
    b = minnet.Tensor(rng.normal(size=c_out).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    dy = rng.normal(size=y.shape).astype(np.float32)
    y.backward(dy)
    geometry = ((stride, stride), (padding, padding), (1, 1), groups)
    np.testing.assert_allclose(conv2d_input_grad(dy, w.data, x.shape, *geometry), x.grad,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv2d_weight_grad(dy, x.data, (kernel, kernel), *geometry),
                               w.grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(channel_bias_grad(dy), b.grad, rtol=1e-5, atol=1e-5)
    x.grad = None
    pooled = F.max_pool2d(x, 2, stride=stride)
    dp = rng.normal(size=pooled.shape).astype(np.float32)
    pooled.backward(dp)
    np.testing.assert_array_equal(max_pool2d_grad(dp, x.data, (2, 2), (stride, stride), (0, 0)),
                                  x.grad)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 3), c_in=st.integers(1, 5),
       c_out=st.integers(1, 5), size=st.integers(5, 9), kernel=st.integers(1, 4),
       padding=st.integers(0, 3), stride=st.sampled_from([1, 1, 2]),
       groups=st.sampled_from([1, 1, 2]), dtype=st.sampled_from([np.float32, np.float64]))
def test_conv_grad_algorithms_equal_the_reference(seed, n, c_in, c_out, size, kernel, padding,
                                                  stride, groups, dtype):
    """Every applicable algorithm of each convolution gradient equals the column reference;
    the forward-convolution forms apply exactly at stride 1, one group (and p <= k - 1 for
    x's gradient)."""
    c_in, c_out = c_in * groups, c_out * groups
    padding = min(padding, kernel)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c_in, size, size)).astype(dtype)
    w = rng.normal(size=(c_out, c_in // groups, kernel, kernel)).astype(dtype)
    out_size = (size + 2 * padding - kernel) // stride + 1
    dy = rng.normal(size=(n, c_out, out_size, out_size)).astype(dtype)
    attrs = {"stride": (stride, stride), "padding": (padding, padding), "dilation": (1, 1),
             "groups": groups, "input_shape": x.shape, "kernel_size": (kernel, kernel)}
    geometry = ((stride, stride), (padding, padding), (1, 1), groups)
    want = {"Conv2dInputGrad": (w, conv2d_input_grad(dy, w, x.shape, *geometry)),
            "Conv2dWeightGrad": (x, conv2d_weight_grad(dy, x, (kernel, kernel), *geometry))}
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for op, (other, reference) in want.items():
        options = conv_grad_algorithms(op, w.shape, attrs)
        unit = stride == 1 and groups == 1 and (op == "Conv2dWeightGrad" or padding < kernel)
        assert len(options) == (2 if unit else 1), (op, options)
        for algorithm in options:
            got = conv_grad(op, algorithm, dy, other, attrs)
            assert got.shape == reference.shape, (op, algorithm)
            np.testing.assert_allclose(got, reference, rtol=tol, atol=tol, err_msg=algorithm)


def test_forced_gradient_algorithms_train_alike():
    """LeNet-5: the column forms and the forward-convolution forms of both convolution
    gradients, forced, give the same losses over 5 SGD steps; unknown nodes are refused."""
    x_all, y_all = _data(64, 4)
    losses = {}
    for choice in ({"grad.2.maxpool2d": "col2im", "grad.3.weight": "im2col",
                    "grad.0.weight": "im2col"},
                   {"grad.2.maxpool2d": "transposed", "grad.3.weight": "swapped",
                    "grad.0.weight": "swapped"}):
        minnet.manual_seed(0)
        model = models.lenet5()
        step = compile_training(model, x_all, algorithms=choice)
        assert {k: step.plan_for(16).algorithms[k] for k in choice} == choice
        opt = optimizers.SGD(model.parameters(), lr=0.1)
        run = losses[choice["grad.3.weight"]] = []
        for i in range(0, 64, 16):
            run.append(step(x_all[i:i + 16], y_all[i:i + 16])[0])
            opt.step()
    np.testing.assert_allclose(losses["swapped"], losses["im2col"], rtol=1e-5)
    with pytest.raises(ValueError, match="not nodes of the graph"):
        compile_training(models.lenet5(), x_all, algorithms={"nope": "im2col"})


@given(seed=st.integers(0, 2**16), n=st.integers(1, 8), c=st.integers(2, 6))
def test_softmax_cross_entropy_equals_minnet(seed, n, c):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, c)) * 30).astype(np.float32)  # large: the max shift matters
    target = rng.integers(0, c, n)
    expected = F.cross_entropy(minnet.Tensor(logits), target).data
    np.testing.assert_allclose(softmax_cross_entropy(logits, target), expected, rtol=1e-5)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("build", [models.lenet5, models.lenet_300_100])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_compiled_step_gradients_equal_eager_backward(build, batch):
    x, y = _data(batch, batch)
    minnet.manual_seed(0)
    model = build()
    twin = copy.deepcopy(model)
    step = compile_training(model, _data(4)[0])  # traced on another batch size
    loss, logits = step(x, y)
    eager = F.cross_entropy(twin(minnet.Tensor(x)), y)
    eager.backward()
    np.testing.assert_allclose(loss, eager.data, rtol=1e-5)
    np.testing.assert_allclose(logits, twin(minnet.Tensor(x)).data, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_compiled_adam_training_follows_eager_for_100_steps():
    """Same model, batches and Adam: the losses agree step by step and the weights after 100
    steps to float tolerance (the kernels sum in other orders)."""
    minnet.manual_seed(0)
    model = models.lenet5()
    twin = copy.deepcopy(model)
    step = compile_training(model, _data(2)[0])
    opt, twin_opt = (optimizers.Adam(m.parameters(), lr=1e-3) for m in (model, twin))
    rng = np.random.default_rng(1)
    x_all, y_all = _data(512, 2)
    for _ in range(100):
        idx = rng.choice(512, 16, replace=False)
        loss, _ = step(x_all[idx], y_all[idx])
        opt.step()
        twin_opt.zero_grad()
        eager = F.cross_entropy(twin(minnet.Tensor(x_all[idx])), y_all[idx])
        eager.backward()
        twin_opt.step()
        np.testing.assert_allclose(loss, eager.data, rtol=2e-4)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-3, atol=2e-5, err_msg=name)


def test_fit_runs_the_compiled_step_and_resumes_it_bitwise(tmp_path):
    data = _data(64, 3)

    def train(epochs, path, resume=False):
        minnet.manual_seed(0)
        model = models.lenet_300_100()
        fit(model, optimizers.Adam(model.parameters(), lr=1e-3), data, epochs, batch_size=24,
            checkpoint_path=path, resume=resume, progress=False,
            train_step=compile_training(model, data[0]))
        return model

    full = train(2, tmp_path / "full.npz")
    train(1, tmp_path / "cut.npz")
    resumed = train(2, tmp_path / "cut.npz", resume=True)
    for key, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    minnet.manual_seed(0)
    eager = models.lenet_300_100()
    history = fit(eager, optimizers.Adam(eager.parameters(), lr=1e-3), data, 2, batch_size=24,
                  progress=False)
    for key, value in full.state_dict().items():
        np.testing.assert_allclose(eager.state_dict()[key], value, rtol=1e-3, atol=1e-5)
    assert np.all(np.isfinite(history["train_loss"]))


def test_training_graph_plans_memory_across_both_passes_and_refuses_other_ops():
    step = compile_training(models.lenet5(), _data(2)[0])
    plan = step.plan_for(64)
    memory, order = plan.plan, [n.output for n in plan.graph.nodes]
    # the activations a backward node reads live until that node
    kept = 0
    for node in plan.graph.nodes[:order.index("loss")]:
        readers = [i for i, n in enumerate(plan.graph.nodes, 1) if node.output in n.inputs]
        if max(readers, default=0) > order.index("loss") + 1:
            assert memory.interval[memory.buffer[node.output]][1] >= max(readers)
            kept += 1
    assert kept >= 5  # both convolutions' outputs and inputs, the linears' inputs
    # the arena is the peak of live bytes (the bound), below every value kept apart
    assert memory.arena_bytes == memory.lower_bound < 0.7 * memory.naive_bytes
    assert all(name not in memory.buffer for name in plan.graph.inputs[2:])  # read in place
    with pytest.raises(ValueError, match="BatchNorm"):
        compile_training(models.lenet5(batch_norm=True), _data(2)[0])


def test_a_weight_bound_by_reference_is_read_at_every_run():
    """An optimizer updates parameters in place between runs: a plan binding them by reference
    must not compute with a copy packed when it was built."""
    minnet.manual_seed(0)
    model = models.lenet_300_100()
    step = compile_training(model, _data(2)[0])
    x, y = _data(8, 5)
    first, _ = step(x, y)
    for p in model.parameters():
        p.data *= 0.5
    second, logits = step(x, y)
    with minnet.no_grad():
        expected = model(minnet.Tensor(x)).data
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert second != first


@given(seed=st.integers(0, 2**16), n=st.integers(1, 2), c=st.integers(1, 3),
       h=st.integers(2, 9), w=st.integers(2, 9), kernel=st.integers(1, 3),
       stride=st.integers(1, 3), padding=st.integers(0, 1), relu=st.booleans(),
       nans=st.booleans(), ties=st.booleans())
def test_gradient_kernels_numba_equal_numpy(seed, n, c, h, w, kernel, stride, padding, relu,
                                            nans, ties):
    """The fused max-pooling (+ ReLU) gradient and the ReLU gradient: Numba twins equal the
    NumPy references bitwise, 2x2 fast path included, with ties, NaNs and padding."""
    padding = min(padding, kernel // 2)
    kernel, stride = (2, 2) if ties else (kernel, kernel), (2, 2) if ties else (stride, stride)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, h, w)).astype(np.float32)
    if ties:
        x = np.round(x)  # many equal values and zeros
    if nans:
        x[rng.random(x.shape) < 0.2] = np.nan
    pads = (padding, padding) if not ties else (0, 0)
    oh = (h + 2 * pads[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * pads[1] - kernel[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        return
    dy = rng.normal(size=(n, c, oh, ow)).astype(np.float32)
    want, got = np.empty_like(x), np.full_like(x, 7.0)
    GK.max_pool2d_grad_into_numpy(dy, x, kernel, stride, pads, relu, want)
    GK.max_pool2d_grad_into_numba(dy, x, kernel, stride, pads, relu, got)
    np.testing.assert_array_equal(got, want)
    if not relu and not nans:  # the reference itself: minnet's pooling backward
        t = minnet.Tensor(x, requires_grad=True)
        F.max_pool2d(t, kernel, stride=stride, padding=pads).backward(dy)
        np.testing.assert_array_equal(want, t.grad)
    relu_want, relu_got = np.empty_like(x), np.full_like(x, 7.0)
    GK.relu_grad_into_numpy(dy[:, :, :1, :1] * np.ones_like(x), x, relu_want)
    GK.relu_grad_into_numba(dy[:, :, :1, :1] * np.ones_like(x), x, relu_got)
    np.testing.assert_array_equal(relu_got, relu_want)
