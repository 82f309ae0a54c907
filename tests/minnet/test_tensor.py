"""The autograd engine: graph recording, reverse mode, memory, dtypes, grad mode, hooks, errors."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F
from minnet.tensor import Function, unbroadcast

# ---- unbroadcast and reverse mode --------------------------------------------------------


@given(st.data())
def test_unbroadcast_is_adjoint_of_broadcast(data):
    """<broadcast(x), y> = <x, unbroadcast(y)> for every x of the small shape and y of the
    broadcast shape: summing over broadcast axes is the adjoint of broadcasting."""
    small, other = data.draw(helpers.broadcastable_shapes())
    big = np.broadcast_shapes(small, other)
    x = data.draw(helpers.float_arrays(small))
    y = data.draw(helpers.float_arrays(big))
    reduced = unbroadcast(y, small)
    assert reduced.shape == small
    np.testing.assert_allclose(np.sum(np.broadcast_to(x, big) * y), np.sum(x * reduced),
                               rtol=1e-10, atol=1e-10)


def test_unbroadcast_rejects_a_shape_it_cannot_come_from():
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*\(3, 2\)"):
        unbroadcast(np.ones((2, 3)), (3, 2))
    with pytest.raises(RuntimeError, match=r"\(3,\).*\(2, 3\)"):
        unbroadcast(np.ones(3), (2, 3))


def test_a_10000_op_chain_backpropagates():
    x = minnet.tensor(np.array(1.0), requires_grad=True)
    c = 1 + 1e-5
    y = x
    for _ in range(10_000):
        y = y * c
    y.backward()
    np.testing.assert_allclose(x.grad, c ** 10_000, rtol=1e-9)


def test_a_node_used_twice_in_one_op_gets_both_contributions():
    x = minnet.tensor(np.array([1.5, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)


def test_gram_matrix_gradient_counts_both_uses_of_x():
    """L = <G, X^T X> has dL/dX = X (G + G^T)."""
    rng = np.random.default_rng(0)
    data, upstream = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    x = minnet.tensor(data, requires_grad=True)
    (x.T @ x).backward(upstream)
    np.testing.assert_allclose(x.grad, data @ (upstream + upstream.T), rtol=1e-12)


def test_an_intermediate_used_by_two_later_ops_sums_its_gradients():
    x = minnet.tensor(np.array([2.0, 3.0]), requires_grad=True)
    h = x * 3
    (h * h + h).sum().backward()  # d/dx (9x^2 + 3x) = 18x + 3
    np.testing.assert_allclose(x.grad, 18 * x.data + 3)


@st.composite
def random_graphs(draw):
    """A random DAG over two inputs: each step combines two earlier nodes (possibly the same
    one) with +, - or *, then applies tanh."""
    return [(draw(st.sampled_from(["add", "sub", "mul"])), draw(st.integers(0, 1 + k)),
             draw(st.integers(0, 1 + k))) for k in range(draw(st.integers(1, 8)))]


@given(random_graphs(), st.data())
def test_random_graph_gradients_match_finite_differences(steps, data):
    """The output sums every node, so nodes are reached along paths of different lengths: each
    must collect all its contributions before passing its gradient on."""
    def evaluate(a, b):
        nodes = [a, b]
        for op, i, j in steps:
            nodes.append(F.tanh(getattr(F, op)(nodes[i], nodes[j])))
        return F.stack(nodes).sum(axis=0)

    a = data.draw(helpers.float_arrays((3,), -1.0, 1.0))
    b = data.draw(helpers.float_arrays((3,), -1.0, 1.0))
    helpers.check_gradients(evaluate, a, b)


def test_the_graph_is_freed_after_backward_while_the_loss_lives():
    x = minnet.tensor(np.ones(5), requires_grad=True)
    hidden = F.tanh(x * 2)
    loss = (hidden * hidden).sum()
    ref = weakref.ref(hidden)
    del hidden
    assert ref() is not None, "the graph must keep the intermediate alive before backward"
    loss.backward()
    gc.collect()
    assert ref() is None
    assert loss.data is not None


def test_retain_graph_keeps_the_intermediates_alive():
    x = minnet.tensor(np.ones(5), requires_grad=True)
    hidden = F.tanh(x * 2)
    loss = (hidden * hidden).sum()
    ref = weakref.ref(hidden)
    del hidden
    loss.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None


def test_second_backward_without_retain_graph_raises():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_second_backward_with_retain_graph_accumulates_twice():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * (2 * x.data))


def test_grad_accumulates_across_backward_calls():
    x = minnet.tensor(np.array([1.0, -1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3 + 2 * x.data)


def test_backward_on_a_leaf_sets_its_gradient_to_the_upstream_copy():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    upstream = np.array([0.5, -1.0])
    x.backward(upstream)
    np.testing.assert_array_equal(x.grad, upstream)
    assert not np.shares_memory(x.grad, upstream)


def test_only_tensors_that_require_grad_receive_gradients():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    c = minnet.tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    np.testing.assert_array_equal(x.grad, c.data)
    assert c.grad is None


# ---- dtypes ------------------------------------------------------------------------------


def _ops_on(dtype):
    """Every differentiable op of minnet.functional and Tensor (except conv/pool), as functions
    of two (2, 3) tensors x, y of ``dtype`` with positive entries."""
    labels = np.array([0, 2])
    cond = np.array([[True, False, True], [False, True, False]])
    stats = lambda: (np.zeros(3, dtype), np.ones(3, dtype))  # noqa: E731
    return {
        "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
        "div": lambda x, y: x / y, "pow": lambda x, y: x ** y, "neg": lambda x, y: -x,
        "add_int": lambda x, y: x + 1, "rsub_float": lambda x, y: 1.5 - x,
        "mul_float": lambda x, y: 2.5 * x, "div_int": lambda x, y: x / 3,
        "rdiv_float": lambda x, y: 3.0 / x, "pow_int": lambda x, y: x ** 2,
        "pow_float": lambda x, y: x ** 0.5, "rpow_int": lambda x, y: 2 ** x,
        "maximum": lambda x, y: F.maximum(x, y), "minimum_float": lambda x, y: F.minimum(x, 0.7),
        "where": lambda x, y: F.where(cond, x, y), "where_float": lambda x, y: F.where(cond, x, 0.0),
        "exp": lambda x, y: x.exp(), "log": lambda x, y: x.log(), "sqrt": lambda x, y: x.sqrt(),
        "abs": lambda x, y: x.abs(), "clip": lambda x, y: x.clip(0.6, 1.2),
        "relu": lambda x, y: F.relu(x - 1), "leaky_relu": lambda x, y: F.leaky_relu(x - 1, 0.1),
        "sigmoid": lambda x, y: F.sigmoid(x), "tanh": lambda x, y: F.tanh(x),
        "gelu": lambda x, y: F.gelu(x),
        "sum": lambda x, y: x.sum(axis=1), "mean": lambda x, y: x.mean(axis=0, keepdims=True),
        "max": lambda x, y: x.max(), "min": lambda x, y: x.min(axis=1),
        "var": lambda x, y: x.var(axis=1, ddof=1), "softmax": lambda x, y: F.softmax(x, axis=0),
        "log_softmax": lambda x, y: F.log_softmax(x),
        "reshape": lambda x, y: x.reshape(3, 2), "transpose": lambda x, y: x.T,
        "permute": lambda x, y: x.permute(1, 0), "flatten": lambda x, y: x.flatten(),
        "getitem_slice": lambda x, y: x[:, 1:], "getitem_array": lambda x, y: x[[1, 1, 0]],
        "concatenate": lambda x, y: F.concatenate([x, y], axis=1),
        "stack": lambda x, y: F.stack([x, y], axis=-1),
        "pad": lambda x, y: F.pad(x, ((1, 0), (0, 2)), value=0.5),
        "matmul": lambda x, y: x @ y.T, "matmul_vector": lambda x, y: x @ y[0],
        "linear": lambda x, y: F.linear(x, y, y[:, 0]),
        "batch_norm_train": lambda x, y: F.batch_norm(x, *stats(), y[0], y[1], training=True),
        "batch_norm_eval": lambda x, y: F.batch_norm(x, *stats(), y[0], y[1]),
        "dropout": lambda x, y: F.dropout(x, 0.5),
        "cross_entropy": lambda x, y: F.cross_entropy(x, labels, label_smoothing=0.1),
        "nll_loss": lambda x, y: F.nll_loss(F.log_softmax(x), labels, reduction="sum"),
        "mse_loss": lambda x, y: F.mse_loss(x, y),
        "kl_div": lambda x, y: F.kl_div(F.log_softmax(x), F.softmax(y), reduction="batchmean"),
        "bce_with_logits": lambda x, y: F.binary_cross_entropy_with_logits(x, F.sigmoid(y)),
    }


OP_NAMES = sorted(_ops_on(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_the_input_dtype_in_outputs_and_gradients(name, dtype):
    """float32 stays float32 (Python scalars take the tensor's dtype), float64 stays float64."""
    rng = np.random.default_rng(0)
    x = minnet.tensor(rng.uniform(0.5, 2.0, (2, 3)).astype(dtype), requires_grad=True)
    y = minnet.tensor(rng.uniform(0.5, 2.0, (2, 3)).astype(dtype), requires_grad=True)
    out = _ops_on(dtype)[name](x, y)
    assert out.dtype == dtype
    out.sum().backward()
    for t in (x, y):
        assert t.grad is None or t.grad.dtype == dtype


def test_python_scalars_and_lists_become_float32_and_float64_arrays_stay_float64():
    assert minnet.tensor(1.5).dtype == np.float32
    assert minnet.tensor([[1.0, 2.0]]).dtype == np.float32
    assert minnet.tensor([1, 2]).dtype.kind == "i"
    assert minnet.tensor(np.zeros(2)).dtype == np.float64
    assert minnet.Tensor(np.zeros(2, np.float16)).dtype == np.float16


def test_only_floating_tensors_can_require_grad():
    with pytest.raises(TypeError, match="int"):
        minnet.tensor(np.array([1, 2]), requires_grad=True)


def test_zero_dimensional_float64_arithmetic_stays_float64():
    """0-d NumPy arithmetic returns a NumPy scalar; the result must keep its float64 dtype."""
    x = minnet.tensor(np.array(2.0), requires_grad=True)
    y = (x * 1.5 + 1) / 3
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(y.data, (2.0 * 1.5 + 1) / 3, rtol=1e-15)


# ---- grad mode ---------------------------------------------------------------------------


def _records_graph(x):
    y = x * 2
    return y.requires_grad and not y.is_leaf


def test_no_grad_context_records_no_graph():
    x = minnet.tensor(np.ones(2), requires_grad=True)
    with minnet.no_grad():
        assert not minnet.is_grad_enabled()
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    assert _records_graph(x)


def test_no_grad_decorator_records_no_graph():
    @minnet.no_grad()
    def double(t):
        return t * 2

    x = minnet.tensor(np.ones(2), requires_grad=True)
    y = double(x)
    assert not y.requires_grad and y.is_leaf
    assert minnet.is_grad_enabled()


def test_enable_grad_inside_no_grad_records_again():
    x = minnet.tensor(np.ones(2), requires_grad=True)
    with minnet.no_grad():
        with minnet.enable_grad():
            assert _records_graph(x)
        assert not _records_graph(x)
    assert _records_graph(x)


def test_grad_mode_is_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with minnet.no_grad():
            1 / 0
    assert minnet.is_grad_enabled()


def test_a_recursive_no_grad_function_restores_grad_mode():
    @minnet.no_grad()
    def countdown(n):
        return 0 if n == 0 else countdown(n - 1)

    countdown(3)
    assert minnet.is_grad_enabled()


def test_one_no_grad_object_entered_twice_restores_grad_mode():
    guard = minnet.no_grad()
    with guard:
        with guard:
            pass
        assert not minnet.is_grad_enabled()
    assert minnet.is_grad_enabled()


def test_detach_shares_data_and_cuts_the_graph():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 3
    d = y.detach()
    assert np.shares_memory(d.data, y.data)
    assert not d.requires_grad and d.is_leaf
    (d * x).sum().backward()  # d is a constant: the gradient is d, not d + 3x
    np.testing.assert_array_equal(x.grad, d.data)


# ---- hooks -------------------------------------------------------------------------------


def test_hook_replaces_the_gradient_of_a_leaf():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    x.register_hook(lambda g: 10 * g)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 10 * 2 * x.data)


def test_hook_on_an_intermediate_changes_what_flows_to_the_leaves():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))
    h2 = x * 5
    h2.register_hook(lambda g: np.zeros_like(g))
    (h * h2).sum().backward()
    np.testing.assert_allclose(seen[0], 5 * x.data)  # dL/dh = h2, observed, unchanged
    np.testing.assert_allclose(x.grad, 3 * 5 * x.data)  # only the path through h remains


def test_removed_hook_no_longer_runs():
    x = minnet.tensor(np.array([1.0, 2.0]), requires_grad=True)
    handle = x.register_hook(lambda g: 0 * g)
    handle.remove()
    handle.remove()  # idempotent
    x.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones(2))


def test_hook_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="require grad"):
        minnet.tensor(np.ones(2)).register_hook(lambda g: g)


def test_a_hook_result_takes_the_tensor_dtype():
    x = minnet.tensor(np.ones(3, np.float32), requires_grad=True)
    x.register_hook(lambda g: g * np.float64(2))
    (x * 2).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, 4.0)


def test_a_hook_returning_a_wrong_shape_is_reported():
    x = minnet.tensor(np.ones(3), requires_grad=True)
    h = x * 2
    h.register_hook(lambda g: np.ones(5))
    with pytest.raises(RuntimeError, match=r"hook.*\(5,\).*\(3,\)"):
        h.sum().backward()


# ---- errors ------------------------------------------------------------------------------


def test_backward_on_a_non_scalar_without_grad_names_the_shape():
    x = minnet.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        (x * 2).backward()


def test_backward_with_a_grad_of_the_wrong_shape_names_both_shapes():
    x = minnet.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        (x * 2).backward(np.ones((3, 2)))


def test_backward_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        minnet.tensor(np.ones(1)).backward()


class _TransposedGrad(Function):
    """Broken on purpose: y = 2 x for a (2, 3) x, but backward returns a (3, 2) gradient."""
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g.T


class _TooFewGrads(Function):
    """Broken on purpose: two inputs, one gradient."""
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return (g,)


def test_a_function_returning_a_wrong_shape_gradient_is_reported():
    x = minnet.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"_TransposedGrad.*\(3, 2\).*\(2, 3\)"):
        _TransposedGrad.apply(x).sum().backward()


def test_a_function_returning_too_few_gradients_is_reported():
    a = minnet.tensor(np.ones(2), requires_grad=True)
    b = minnet.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="_TooFewGrads.*1 gradients for 2 inputs"):
        _TooFewGrads.apply(a, b).sum().backward()


def test_function_apply_records_the_node_name_inputs_and_attributes():
    x = minnet.tensor(np.ones((2, 3)), requires_grad=True)
    y = x.sum(axis=1, keepdims=True)
    assert y._node.fn.__name__ == "Sum"
    assert y._node.inputs == [x]
    assert y._node.attrs == {"axis": 1, "keepdims": True}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_scalars_keep_their_dtype(dtype):
    assert minnet.tensor(dtype(1.5)).dtype == dtype
    assert minnet.Tensor(dtype(1.5)).dtype == dtype
