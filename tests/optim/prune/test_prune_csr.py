"""CSR sparse inference: the NumPy and Numba kernels equal each other and the dense product;
the sparse layers equal their dense twins."""
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn
from minnet.kernels.backend import HAVE_NUMBA, use_backend
from optim.prune import (SparseConv2d, SparseLinear, apply_mask, csr_matmul, csr_to_dense,
                         magnitude_mask, sparsify, to_csr)
from minnet.kernels.csr import BATCHED_FROM, csr_matmul_numba, csr_matmul_numpy

from prune_helpers import FLOAT_DTYPES, forward


@st.composite
def sparse_matrices(draw, dtype=np.float64):
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    dense = draw(hnp.arrays(dtype, (rows, cols), elements=st.floats(-4, 4, width=32)))
    keep = draw(hnp.arrays(np.bool_, (rows, cols)))
    return np.where(keep, dense, 0).astype(dtype)


@given(w=sparse_matrices())
def test_to_csr_matches_scipy_and_round_trips(w):
    csr = to_csr(w)
    reference = scipy.sparse.csr_matrix(w)
    reference.eliminate_zeros()
    np.testing.assert_array_equal(csr.indptr, reference.indptr)
    np.testing.assert_array_equal(csr.indices, reference.indices)
    np.testing.assert_array_equal(csr.data, reference.data)
    np.testing.assert_array_equal(csr_to_dense(csr), w)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
@given(data=st.data(), dtype=FLOAT_DTYPES, batch=st.integers(1, 2 * BATCHED_FROM))
def test_numba_csr_matmul_equals_numpy_and_dense(data, dtype, batch):
    # batches below and above BATCHED_FROM take the two Numba loops
    w = data.draw(sparse_matrices(dtype))
    x = data.draw(hnp.arrays(dtype, (batch, w.shape[1]), elements=st.floats(-4, 4, width=32)))
    csr = to_csr(w)
    args = (x, csr.data, csr.indices, csr.indptr, w.shape[0])
    reference, fast = csr_matmul_numpy(*args), csr_matmul_numba(*args)
    assert reference.dtype == fast.dtype == dtype and fast.shape == (batch, w.shape[0])
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    # rounding error of an n-term dot product in any order: at most n eps sum_j |x_j w_rj|
    n = w.shape[1] + 1
    bound = n * np.finfo(dtype).eps * (np.abs(x).astype(np.float64) @ np.abs(w).T) + 1e-30
    assert np.all(np.abs(fast - exact) <= bound)
    assert np.all(np.abs(reference - exact) <= bound)


@given(w=sparse_matrices(), batch=st.integers(1, 4))
def test_csr_matmul_dispatches_to_the_active_backend(w, batch):
    x = np.arange(batch * w.shape[1], dtype=np.float64).reshape(batch, -1) / 7
    with use_backend("numpy"):
        np.testing.assert_allclose(csr_matmul(x, to_csr(w)), x @ w.T, rtol=1e-12, atol=1e-12)


@given(seed=st.integers(0, 1000), amount=st.floats(0.0, 1.0), lead=st.sampled_from([(3,), (2, 2)]))
def test_sparse_linear_equals_the_masked_linear(seed, amount, lead):
    minnet.manual_seed(seed)
    layer = nn.Linear(7, 5, bias=seed % 2 == 0)
    apply_mask(layer, "weight", magnitude_mask(layer.weight.data, amount))
    x = np.random.default_rng(seed).normal(size=lead + (7,)).astype(np.float32)
    sparse = SparseLinear(layer)
    assert sparse.data.size == np.count_nonzero(layer.weight.data)
    np.testing.assert_allclose(forward(sparse, x), forward(layer, x), rtol=1e-5, atol=1e-5)


@given(seed=st.integers(0, 1000), stride=st.integers(1, 2), padding=st.integers(0, 1),
       dilation=st.integers(1, 2), bias=st.booleans())
def test_sparse_conv2d_equals_the_masked_conv2d(seed, stride, padding, dilation, bias):
    minnet.manual_seed(seed)
    conv = nn.Conv2d(2, 3, (3, 2), stride=stride, padding=padding, dilation=dilation, bias=bias)
    apply_mask(conv, "weight", magnitude_mask(conv.weight.data, 0.7))
    x = np.random.default_rng(seed).normal(size=(2, 2, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(forward(SparseConv2d(conv), x), forward(conv, x),
                               rtol=1e-5, atol=1e-5)


def test_sparsify_swaps_only_sparse_enough_layers():
    minnet.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))
    apply_mask(model[0][0], "weight", magnitude_mask(model[0][0].weight.data, 0.9))
    apply_mask(model[2], "weight", magnitude_mask(model[2].weight.data, 0.95))
    apply_mask(model[4], "weight", magnitude_mask(model[4].weight.data, 0.5))
    fast = sparsify(model, 0.8, types=(nn.Linear, nn.Conv2d))
    assert isinstance(fast[0][0], SparseConv2d) and isinstance(fast[2], SparseLinear)
    assert isinstance(fast[4], nn.Linear) and isinstance(model[2], nn.Linear)
    x = np.random.default_rng(0).normal(size=(3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(forward(fast, x), forward(model, x), rtol=1e-5, atol=1e-5)


def test_sparsify_with_a_cost_model_follows_its_prediction_at_the_batch_size():
    """The swap is the cost model's argmin for that layer at that batch: a model in which the
    gather loop has no fixed cost swaps at batch 1 and keeps the dense layer at batch 64."""
    from optim.graph import CostModel
    from optim.prune.sparse import linear_kernel_choice
    minnet.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    apply_mask(model[1], "weight", magnitude_mask(model[1].weight.data, 0.9))
    cost = CostModel(1e10, 1e10, {"linear.dense": [1e-4, 1.0, 0.0, 0.0],
                                  "linear.sparse_gather": [0.0, 20.0, 0.0, 0.0],
                                  "linear.sparse_axpy": [1.0, 20.0, 0.0, 0.0]}, [0.0, 0.0])
    small = sparsify(model, cost_model=cost, batch_size=1)
    assert isinstance(small[1], SparseLinear) and small[1].loop == "gather"
    assert isinstance(small[3], SparseLinear) == (
        linear_kernel_choice(model[3].weight.data, 1, cost) != "dense")
    assert isinstance(sparsify(model, cost_model=cost, batch_size=64)[1], nn.Linear)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(forward(small, x), forward(model, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        sparsify(model, cost_model=cost, batch_size=0)
    with pytest.raises(ValueError, match="loop"):
        SparseLinear(model[1], loop="scatter")


def test_sparse_layers_refuse_to_build_a_graph():
    sparse = SparseLinear(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="inference"):
        sparse(minnet.Tensor(np.ones((1, 3), dtype=np.float32), requires_grad=True))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        csr_matmul(np.ones((2, 4)), to_csr(np.ones((2, 3))))
    with pytest.raises(ValueError, match="groups=1"):
        SparseConv2d(nn.Conv2d(2, 2, 1, groups=2))
