"""Reductions (sum, mean, max, min, var) and the softmax family: gradients over any axis and
keepdims, PyTorch agreement, ties, stability."""
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import helpers
import minnet
from minnet import functional as F


def _dims(axis, ndim):
    """NumPy's axis as a torch ``dim`` tuple (torch has no axis=None for every reduction)."""
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else axis


# name: (minnet reduction as a Tensor method, torch reduction given the torch module, unique values)
REDUCTIONS = {
    "sum": (lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims),
            lambda torch: torch.sum, False),
    "mean": (lambda x, axis, keepdims: x.mean(axis=axis, keepdims=keepdims),
             lambda torch: torch.mean, False),
    "max": (lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims),
            lambda torch: torch.amax, True),
    "min": (lambda x, axis, keepdims: x.min(axis=axis, keepdims=keepdims),
            lambda torch: torch.amin, True),
    "var": (lambda x, axis, keepdims: x.var(axis=axis, keepdims=keepdims),
            lambda torch: lambda t, dim, keepdim: torch.var(t, dim=dim, keepdim=keepdim, correction=0),
            False),
    "var_unbiased": (lambda x, axis, keepdims: F.var(x, axis=axis, keepdims=keepdims, ddof=1),
                     lambda torch: lambda t, dim, keepdim: torch.var(t, dim=dim, keepdim=keepdim),
                     False),
}


def _draw_reduction_case(data, name):
    """An array (without ties for max/min), an axis argument and keepdims."""
    shape = data.draw(helpers.shapes(min_dims=1))
    axis = data.draw(helpers.axes(len(shape)))
    if name == "var_unbiased":
        assume(np.prod([shape[a] for a in _dims(axis, len(shape))]) > 1)
    x = data.draw(helpers.float_arrays(shape, unique=REDUCTIONS[name][2]))
    return x, axis, data.draw(st.booleans())


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reduction_gradients_over_any_axes(name, data):
    x, axis, keepdims = _draw_reduction_case(data, name)
    reduce = REDUCTIONS[name][0]
    helpers.check_gradients(lambda t: reduce(t, axis, keepdims), x)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reduction_matches_torch(name, data):
    torch = pytest.importorskip("torch")
    x, axis, keepdims = _draw_reduction_case(data, name)
    ours, theirs, _ = REDUCTIONS[name]
    dims = _dims(axis, x.ndim)
    helpers.compare_with_torch(lambda t: ours(t, axis, keepdims),
                               lambda t: theirs(torch)(t, dim=dims, keepdim=keepdims), x)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_values_equal_numpy(name):
    x = np.random.default_rng(0).standard_normal((3, 4, 2))
    numpy_fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "var": np.var,
                "var_unbiased": lambda a, axis, keepdims: np.var(a, axis=axis, keepdims=keepdims, ddof=1)}[name]
    for axis in (None, 0, -1, (0, 2)):
        for keepdims in (False, True):
            out = REDUCTIONS[name][0](minnet.tensor(x), axis, keepdims)
            np.testing.assert_allclose(out.data, numpy_fn(x, axis=axis, keepdims=keepdims), rtol=1e-12)


# ---- ties ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["max", "min"])
def test_tied_extremes_share_the_gradient_evenly(op):
    x = minnet.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    sign = 1.0 if op == "max" else -1.0
    getattr(sign * x, op)(axis=1).backward(np.array([1.0, 6.0]))
    np.testing.assert_allclose(x.grad, sign * np.array([[0.0, 0.5, 0.5], [2.0, 2.0, 2.0]]))


@pytest.mark.parametrize("op", ["max", "min"])
@given(data=st.data())
def test_reduction_ties_law(op, data):
    """With many ties (small integers): the gradient of each reduced slice sums to its upstream
    value, is zero off the extremes and equal on all tied extremes."""
    shape = data.draw(helpers.shapes(min_dims=1))
    axis = data.draw(helpers.axes(len(shape)))
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.integers(-2, 2).map(float)))
    t = minnet.tensor(x, requires_grad=True)
    out = getattr(t, op)(axis=axis, keepdims=True)
    upstream = np.random.default_rng(0).uniform(1.0, 2.0, out.shape)
    out.backward(upstream)
    dims = _dims(axis, x.ndim)
    is_extreme = x == out.data
    count = is_extreme.sum(axis=dims, keepdims=True)
    np.testing.assert_allclose(t.grad, np.where(is_extreme, upstream / count, 0.0), rtol=1e-12)


@pytest.mark.parametrize("name", ["amax", "amin"])
@given(data=st.data())
def test_reduction_ties_match_torch(name, data):
    torch = pytest.importorskip("torch")
    x = data.draw(hnp.arrays(np.float64, data.draw(helpers.shapes(min_dims=1)),
                             elements=st.integers(-1, 1).map(float)))
    axis = data.draw(helpers.axes(x.ndim))
    ours = F.max if name == "amax" else F.min
    helpers.compare_with_torch(lambda t: ours(t, axis=axis),
                               lambda t: getattr(torch, name)(t, dim=_dims(axis, x.ndim)), x)


# ---- softmax family --------------------------------------------------------------------


def _draw_softmax_case(data):
    shape = data.draw(helpers.shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    return data.draw(helpers.float_arrays(shape, -5, 5)), axis


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_family_gradients_on_any_axis(name, data):
    x, axis = _draw_softmax_case(data)
    helpers.check_gradients(lambda t: getattr(F, name)(t, axis=axis), x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_family_matches_torch(name, data):
    torch = pytest.importorskip("torch")
    x, axis = _draw_softmax_case(data)
    helpers.compare_with_torch(lambda t: getattr(F, name)(t, axis=axis),
                               lambda t: getattr(torch, name)(t, dim=axis), x)


@given(data=st.data())
def test_log_softmax_is_log_of_softmax(data):
    x, axis = _draw_softmax_case(data)
    fused = F.log_softmax(minnet.tensor(x), axis=axis)
    composite = F.log(F.softmax(minnet.tensor(x), axis=axis))
    np.testing.assert_allclose(fused.data, composite.data, rtol=1e-10, atol=1e-12)
    helpers.check_gradients(lambda t: F.log(F.softmax(t, axis=axis)) - F.log_softmax(t, axis=axis), x)


@given(data=st.data(), shift=st.floats(-100, 100))
def test_softmax_is_a_distribution_invariant_to_shifts(data, shift):
    x, axis = _draw_softmax_case(data)
    s = F.softmax(minnet.tensor(x), axis=axis).data
    assert np.all(s > 0)
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-12)
    np.testing.assert_allclose(F.softmax(minnet.tensor(x + shift), axis=axis).data, s, atol=1e-12)


def test_log_softmax_is_stable_for_huge_logits():
    x = minnet.tensor(np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = F.log_softmax(x, axis=1)
        out.backward(np.ones((2, 3)))
    np.testing.assert_allclose(out.data, [[0.0, -1000.0, -2000.0], [-np.log(3)] * 3], rtol=1e-12)
    # d/dx sum_j log_softmax(x)_j = 1 - C softmax(x)
    np.testing.assert_allclose(x.grad, [[1 - 3.0, 1.0, 1.0], [0.0, 0.0, 0.0]], atol=1e-12)


# ---- errors ----------------------------------------------------------------------------


def test_axis_out_of_range_names_the_axis():
    with pytest.raises(ValueError, match="axis 2"):
        F.sum(np.ones((2, 3)), axis=2)


def test_unbiased_variance_of_one_element_is_rejected():
    with pytest.raises(ValueError, match="ddof=1"):
        F.var(np.ones((1, 3)), axis=0, ddof=1)
