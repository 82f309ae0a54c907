"""Each op's Function used directly, as torch.autograd.Function is: its keyword defaults are
PyTorch's (and the functional API's), and its backward returns gradients shaped like its inputs
even when the engine is not there to reshape them."""
import numpy as np
import pytest

import minnet
from minnet.ops.elementwise import HardSigmoid, LeakyReLU
from minnet.ops.linalg import Linear, MatMul
from minnet.ops.loss import CrossEntropy
from minnet.ops.norm import LayerNorm
from minnet.ops.pool import AvgPool2d, MaxPool2d
from minnet.ops.reduce import LogSoftmax, Max, Mean, Softmax, Sum, Var
from minnet.ops.shape import Concatenate, Pad, Stack
from minnet.tensor import Context

X = np.array([[1.0, -2.0, 4.0], [0.5, 3.0, -1.0]])


@pytest.mark.parametrize("function, reference", [
    (Sum, np.sum), (Mean, np.mean), (Max, np.max), (Var, np.var)])
def test_reductions_default_to_every_axis_without_keepdims_and_ddof_0(function, reference):
    """torch.sum(x) / mean / amax: a 0-d result over all axes; var here is NumPy's ddof = 0."""
    out = function.apply(minnet.Tensor(X)).data
    assert out.shape == ()
    np.testing.assert_allclose(out, reference(X), rtol=1e-6)


@pytest.mark.parametrize("function, log", [(Softmax, False), (LogSoftmax, True)])
def test_softmax_family_defaults_to_the_last_axis(function, log):
    """dim = -1 of a (2, 2, 3) input: each innermost row sums to 1 (in probability)."""
    x = np.stack([X, X[::-1]])
    out = function.apply(minnet.Tensor(x)).data
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    expected = e / e.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(out, np.log(expected) if log else expected, rtol=1e-5)


def test_max_pool_defaults_to_floor_output_size():
    """5x5 input, 2x2 window, stride 2: floor((5 - 2) / 2) + 1 = 2 per side (ceil_mode off)."""
    x = minnet.Tensor(np.arange(25.0).reshape(1, 1, 5, 5))
    out = MaxPool2d.apply(x, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)).data
    np.testing.assert_array_equal(out, [[[[6.0, 8.0], [16.0, 18.0]]]])


def test_avg_pool_defaults_to_floor_output_size_and_counting_the_padding():
    """Ones 2x2 padded by 1, 2x2 windows, stride 2: every window holds one 1 and three pads,
    so each mean is 1/4 (count_include_pad); 4x4 padded gives 2x2 windows (ceil_mode off)."""
    x = minnet.Tensor(np.ones((1, 1, 2, 2)))
    out = AvgPool2d.apply(x, kernel_size=(2, 2), stride=(2, 2), padding=(1, 1)).data
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 0.25))
    x = minnet.Tensor(np.ones((1, 1, 5, 5)))
    out = AvgPool2d.apply(x, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
    assert out.shape == (1, 1, 2, 2)


def test_concatenate_and_stack_default_to_axis_0_and_pad_to_zeros():
    a, b = minnet.Tensor(X), minnet.Tensor(2 * X)
    np.testing.assert_array_equal(Concatenate.apply(a, b).data, np.concatenate([X, 2 * X]))
    np.testing.assert_array_equal(Stack.apply(a, b).data, np.stack([X, 2 * X]))
    padded = Pad.apply(minnet.Tensor(np.ones((1, 1))), pad_width=((1, 0), (0, 1))).data
    np.testing.assert_array_equal(padded, [[0.0, 0.0], [1.0, 0.0]])


def test_cross_entropy_defaults_to_no_label_smoothing():
    """l_i = -log softmax(x_i)[t_i], the plain negative log-likelihood."""
    out = CrossEntropy.apply(minnet.Tensor(X), target=np.array([2, 1])).data
    log_p = X - X.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out, -log_p[[0, 1], [2, 1]], rtol=1e-6)


def test_linear_applied_to_two_inputs_has_no_bias_gradient():
    """Linear.apply(x, W) without a bias: two inputs, two gradients (dL/dx = G W, dL/dW = G^T x)."""
    x = minnet.Tensor(X, requires_grad=True)
    w = minnet.Tensor(np.eye(3)[:2], requires_grad=True)
    Linear.apply(x, w).sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones((2, 2)) @ np.eye(3)[:2])
    np.testing.assert_array_equal(w.grad, np.ones((2, 2)).T @ X)


def test_matmul_backward_of_a_vector_times_a_matrix_is_vector_shaped():
    """a (3,) @ B (3, 2): dL/da = B g has a's shape (3,), not the promoted row (1, 3)."""
    a, b, g = np.array([1.0, 2.0, 3.0]), np.arange(6.0).reshape(3, 2), np.array([1.0, -1.0])
    ctx = Context((True, True))
    MatMul.forward(ctx, a, b)
    ga, gb = MatMul.backward(ctx, g)
    assert ga.shape == (3,) and gb.shape == (3, 2)
    np.testing.assert_array_equal(ga, b @ g)
    np.testing.assert_array_equal(gb, np.outer(a, g))


def test_leaky_relu_and_hard_sigmoid_default_to_pytorchs_constants():
    """leaky_relu's slope 0.01; hardsigmoid = max(0, min(1, x / 6 + 1 / 2))."""
    x = minnet.Tensor(np.array([-3.0, -1.0, 0.0, 1.5, 6.0]))
    np.testing.assert_allclose(LeakyReLU.apply(x).data, [-0.03, -0.01, 0.0, 1.5, 6.0])
    np.testing.assert_allclose(HardSigmoid.apply(x).data, [0.0, 1 / 3, 0.5, 0.75, 1.0])


def test_layer_norm_defaults_to_eps_1e_5():
    """Rows (0, 1e-3): variance 2.5e-7 is far below eps, so eps = 1e-5 shows in the output."""
    x = np.array([[0.0, 1e-3]])
    got = LayerNorm.apply(minnet.Tensor(x), None, None, normalized_shape=(2,)).data
    np.testing.assert_allclose(got, (x - 5e-4) / np.sqrt(2.5e-7 + 1e-5), rtol=1e-6)
