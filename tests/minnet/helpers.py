"""Test helpers, one per contract, imported by the minnet tests as ``import helpers``.

- ``check_gradients``: the gradients of an op match finite differences in float64, and the
  engine's memory contracts hold (inputs and upstream gradient unchanged, fresh gradient arrays
  of the inputs' shapes).
- ``compare_with_torch``: forward and gradients equal PyTorch's (skipped without torch).
- ``fixed_seed``: seed minnet's global generator for a block, then restore its state.
- hypothesis strategies: shapes, broadcastable shape tuples, bounded float64 arrays that keep
  away from kinks and ties, reduction axes.

``tests/minnet`` is on ``sys.path`` because pytest's default ``prepend`` import mode inserts the
directory of ``tests/minnet/conftest.py``.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet.random import get_rng_state, set_rng_state

# ---- gradients ---------------------------------------------------------------------------


def _backward_once(fn: Callable, arrays: tuple[np.ndarray, ...], seed: int):
    """Run fn on tensors wrapping ``arrays`` (no copy) and backpropagate a random upstream
    gradient; return the input tensors and the upstream array."""
    tensors = [minnet.Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    return tensors, upstream


def check_gradients(fn: Callable[..., minnet.Tensor], *arrays: np.ndarray, eps: float = 1e-6,
                    atol: float = 1e-5, rtol: float = 1e-3, seed: int = 0) -> None:
    """Assert that ``fn``'s gradients at the float64 ``arrays`` match central differences
    (``minnet.gradcheck``: full Jacobian for small inputs, a random projection always), and
    that forward + backward
    - leave every input array and the upstream gradient unchanged,
    - give each input a ``.grad`` of its shape and dtype that shares no memory with any input,
      with the upstream gradient or with another input's gradient.
    """
    for i, a in enumerate(arrays):
        assert a.dtype == np.float64, f"input {i} must be float64, got {a.dtype}"
    assert minnet.gradcheck(fn, arrays, eps=eps, atol=atol, rtol=rtol, seed=seed)

    inputs_before = [a.copy() for a in arrays]
    tensors, upstream = _backward_once(fn, arrays, seed)
    upstream_before = upstream.copy()
    for i, (a, before) in enumerate(zip(arrays, inputs_before)):
        np.testing.assert_array_equal(a, before, err_msg=f"input {i} was mutated")
    np.testing.assert_array_equal(upstream, upstream_before, err_msg="upstream gradient was mutated")
    grads = [t.grad for t in tensors]
    for i, (g, a) in enumerate(zip(grads, arrays)):
        assert g is not None, f"input {i} received no gradient"
        assert g.shape == a.shape and g.dtype == a.dtype, \
            f"input {i}: grad {g.dtype}{g.shape} for input {a.dtype}{a.shape}"
        for other in (*arrays, upstream):
            assert not np.shares_memory(g, other), f"grad of input {i} shares memory"
    for (i, g), (j, h) in itertools.combinations(enumerate(grads), 2):
        assert not np.shares_memory(g, h), f"grads of inputs {i} and {j} share memory"


def compare_with_torch(minnet_fn: Callable, torch_fn: Callable, *arrays: np.ndarray,
                       atol: float = 1e-9, rtol: float = 1e-7, seed: int = 0) -> None:
    """Assert that ``minnet_fn`` and ``torch_fn`` give equal outputs and equal gradients for
    every input, in float64, under the same random upstream gradient. Skipped without torch."""
    torch = pytest.importorskip("torch")
    arrays = tuple(np.asarray(a, dtype=np.float64) for a in arrays)
    ours = [minnet.Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = minnet_fn(*ours), torch_fn(*theirs)
    assert out.shape == tuple(expected.shape), f"shape {out.shape}, torch {tuple(expected.shape)}"
    np.testing.assert_allclose(out.data, expected.detach().numpy(), atol=atol, rtol=rtol,
                               err_msg="forward differs from torch")
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    for i, (t, tt) in enumerate(zip(ours, theirs)):
        torch_grad = np.zeros_like(arrays[i]) if tt.grad is None else tt.grad.numpy()
        our_grad = np.zeros_like(arrays[i]) if t.grad is None else t.grad
        np.testing.assert_allclose(our_grad, torch_grad, atol=atol, rtol=rtol,
                                   err_msg=f"gradient of input {i} differs from torch")


# ---- hypothesis strategies ---------------------------------------------------------------


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4):
    """Array shapes."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_shapes(num_shapes: int = 2, min_dims: int = 0, max_dims: int = 3,
                         max_side: int = 4):
    """Tuples of ``num_shapes`` shapes that broadcast together under NumPy's rules."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims,
                                             max_dims=max_dims, max_side=max_side
                                             ).map(lambda b: b.input_shapes)


def float_arrays(shape, low: float = -3.0, high: float = 3.0, *, avoid=(), margin: float = 1e-2,
                 unique: bool = False):
    """float64 arrays of ``shape`` with elements in [low, high].

    Elements within ``margin`` of a point of ``avoid`` are excluded (keep away from an op's
    kinks, where finite differences are invalid). ``unique=True`` draws from a grid of step
    ``margin``, so elements differ pairwise by at least ``margin`` (no ties in max).
    """
    points = np.asarray(avoid, dtype=np.float64).ravel()
    if unique:
        elements = st.integers(math.ceil(low / margin), math.floor(high / margin)).map(
            lambda k: k * margin)
    else:
        elements = st.floats(low, high, allow_nan=False, allow_infinity=False)
    if points.size:
        elements = elements.filter(lambda v: np.all(np.abs(points - v) >= margin))
    return hnp.arrays(np.float64, shape, elements=elements, unique=unique)


def axes(ndim: int):
    """``axis`` arguments of a reduction over ``ndim`` >= 1 axes: None, an int (maybe
    negative) or a tuple of distinct axes."""
    return st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    )


# ---- global random state -----------------------------------------------------------------


@contextlib.contextmanager
def fixed_seed(seed: int):
    """``minnet.manual_seed(seed)`` inside the block; the generator's previous state after it."""
    state = get_rng_state()
    minnet.manual_seed(seed)
    try:
        yield
    finally:
        set_rng_state(state)
