"""matmul's gradients in the cases its promotion rules single out, worked by hand: a vector
against a batch of matrices on either side, and one operand without a gradient."""
import numpy as np

import minnet
from minnet import functional as F


def _grads(a, b, needs=(True, True)):
    ta = minnet.Tensor(a, requires_grad=needs[0])
    tb = minnet.Tensor(b, requires_grad=needs[1])
    F.matmul(ta, tb).sum().backward()
    return ta.grad, tb.grad


def test_vector_times_batch():
    """a (3,) @ b (2, 3, 4) = z (2, 4); with G = 1: dL/da_k = Σ_{i,j} b_ikj (a's promoted row is
    shared by the batch), dL/db_ikj = a_k."""
    a = np.array([1.0, 2.0, 3.0])
    b = np.arange(24.0).reshape(2, 3, 4)
    ga, gb = _grads(a, b)
    np.testing.assert_array_equal(ga, b.sum(axis=(0, 2)))
    np.testing.assert_array_equal(gb, np.broadcast_to(a[None, :, None], (2, 3, 4)))


def test_batch_times_vector():
    """a (2, 3, 4) @ b (4,) = z (2, 3); with G = 1: dL/da_ijk = b_k, dL/db_k = Σ_{i,j} a_ijk."""
    a = np.arange(24.0).reshape(2, 3, 4)
    b = np.array([1.0, -1.0, 2.0, 0.5])
    ga, gb = _grads(a, b)
    np.testing.assert_array_equal(ga, np.broadcast_to(b, (2, 3, 4)))
    np.testing.assert_array_equal(gb, a.sum(axis=(0, 1)))


def test_only_one_operand_needs_a_gradient():
    """A (2, 3) @ B (3, 2): dL/dA = G Bᵀ = row sums of B for each row, when B is a constant;
    dL/dB = Aᵀ G = column sums of A repeated, when A is a constant."""
    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(3, 2) - 2
    ga, gb = _grads(a, b, (True, False))
    np.testing.assert_array_equal(ga, np.tile(b.sum(axis=1), (2, 1)))
    assert gb is None
    ga, gb = _grads(a, b, (False, True))
    np.testing.assert_array_equal(gb, np.tile(a.sum(axis=0)[:, None], (1, 2)))
    assert ga is None


def test_linear_bias_gradient_with_and_without_a_bias():
    """y = x Wᵀ + b summed: dL/db = N (the batch size) per output; without a bias, none."""
    x = minnet.Tensor(np.ones((5, 3)), requires_grad=True)
    w = minnet.Tensor(np.ones((2, 3)), requires_grad=True)
    b = minnet.Tensor(np.zeros(2), requires_grad=True)
    F.linear(x, w, b).sum().backward()
    np.testing.assert_array_equal(b.grad, [5.0, 5.0])
    np.testing.assert_array_equal(w.grad, np.full((2, 3), 5.0))
    x.grad = w.grad = None
    F.linear(x, w).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((5, 3), 2.0))


def test_linear_with_one_input_needing_a_gradient():
    """dL/dx = G W (with G = 1: the column sums of W) when W is a
    constant; dL/dW = Gᵀ x when x is a constant."""
    x, w = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3) - 1
    tx, tw = minnet.Tensor(x, requires_grad=True), minnet.Tensor(w)
    F.linear(tx, tw).sum().backward()
    np.testing.assert_array_equal(tx.grad, np.tile(w.sum(axis=0), (2, 1)))
    tx, tw = minnet.Tensor(x), minnet.Tensor(w, requires_grad=True)
    F.linear(tx, tw).sum().backward()
    np.testing.assert_array_equal(tw.grad, np.tile(x.sum(axis=0), (2, 1)))
