"""conv2d op: float64 finite-difference gradients over drawn geometry, PyTorch, dtypes, and one
test per validation error."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from kernels.cases import conv_cases, needs_numba, random_array
from minnet import functional as F

seeds = st.integers(0, 2**16)


def _conv(case, with_bias=True):
    stride, padding, dilation, groups = case.geometry
    if with_bias:
        return lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups)
    return lambda x, w: F.conv2d(x, w, None, stride, padding, dilation, groups)


def _arrays(case, seed, with_bias=True):
    arrays = [random_array(case.x_shape, np.float64, seed), random_array(case.w_shape, np.float64, seed + 1)]
    return arrays + [random_array(case.w_shape[:1], np.float64, seed + 2)] if with_bias else arrays


@given(case=conv_cases(max_batch=2, max_group_channels=2, max_groups=2), seed=seeds,
       with_bias=st.booleans())
def test_gradients_match_finite_differences(case, seed, with_bias):
    helpers.check_gradients(_conv(case, with_bias), *_arrays(case, seed, with_bias))


@given(case=conv_cases(), seed=seeds)
def test_agrees_with_torch(case, seed):
    torch = pytest.importorskip("torch")
    stride, padding, dilation, groups = case.geometry
    helpers.compare_with_torch(
        _conv(case), lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups),
        *_arrays(case, seed))


def test_float32_stays_float32():
    x = minnet.Tensor(random_array((2, 3, 8, 8), np.float32, 0), requires_grad=True)
    w = minnet.Tensor(random_array((4, 3, 3, 3), np.float32, 1), requires_grad=True)
    b = minnet.Tensor(np.zeros(4, np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


def test_only_needed_gradients_are_computed():
    x = minnet.Tensor(random_array((1, 2, 5, 5), np.float64, 0))
    w = minnet.Tensor(random_array((3, 2, 3, 3), np.float64, 1), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad.shape == (3, 2, 3, 3)


X = np.zeros((2, 4, 6, 6), np.float32)
W = np.zeros((6, 2, 3, 3), np.float32)

INVALID = [
    ("x_not_4d", dict(x=np.zeros((4, 6, 6), np.float32)), ValueError, r"x must be 4-D .*\(4, 6, 6\)"),
    ("weight_not_4d", dict(weight=np.zeros((6, 2, 3), np.float32)), ValueError,
     r"weight must be 4-D .*\(6, 2, 3\)"),
    ("channel_mismatch", dict(weight=np.zeros((6, 3, 3, 3), np.float32)), ValueError,
     r"expects 6 input channels.*has 4"),
    ("groups_not_dividing_in", dict(groups=3, weight=np.zeros((6, 1, 3, 3), np.float32)), ValueError,
     r"groups=3 must divide x's 4 input channels"),
    ("groups_not_dividing_out", dict(groups=4, weight=np.zeros((6, 1, 3, 3), np.float32)), ValueError,
     r"groups=4 .* 6 output channels"),
    ("groups_zero", dict(groups=0), ValueError, r"groups must be a positive int, got 0"),
    ("bias_shape", dict(bias=np.zeros(5, np.float32)), ValueError, r"bias must have shape \(6,\), got \(5,\)"),
    ("kernel_too_large", dict(weight=np.zeros((6, 2, 7, 3), np.float32)), ValueError,
     r"kernel height 7 .*padded input height 6"),
    ("dilated_kernel_too_large", dict(dilation=(1, 3)), ValueError, r"kernel width 7 .*padded input width 6"),
    ("stride_zero", dict(stride=0), ValueError, r"stride must be positive, got 0"),
    ("dilation_negative", dict(dilation=(1, -1)), ValueError, r"dilation must be positive, got \(1, -1\)"),
    ("padding_negative", dict(padding=-1), ValueError, r"padding must be at least 0, got -1"),
    ("stride_not_int", dict(stride=1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5"),
    ("integer_x", dict(x=np.zeros((2, 4, 6, 6), np.int64)), TypeError, r"x must be a floating tensor.*int64"),
    ("dtype_mismatch", dict(weight=np.zeros((6, 2, 3, 3), np.float64)), TypeError,
     r"weight dtype float64 differs from x dtype float32"),
]


@pytest.mark.parametrize("name, change, error, message", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_arguments_are_named(name, change, error, message):
    kwargs = dict(x=X, weight=W, bias=None, stride=1, padding=0, dilation=1, groups=2) | change
    with pytest.raises(error, match=message):
        F.conv2d(**kwargs)


def test_padding_lets_a_kernel_larger_than_the_input_fit():
    y = F.conv2d(np.ones((1, 1, 2, 2), np.float32), np.ones((1, 1, 4, 4), np.float32), padding=1)
    assert y.shape == (1, 1, 1, 1) and y.data.item() == 4.0


@pytest.mark.parametrize("bias", [False, True])
def test_empty_batch_gives_an_empty_output_and_zero_parameter_gradients(bias):
    """As Linear and pooling: N = 0 runs (torch gives the same output shape), and the weight and
    bias gradients, sums over no sample, are zero."""
    x = minnet.Tensor(np.zeros((0, 4, 7, 6), np.float32), requires_grad=True)
    w = minnet.Tensor(random_array((6, 2, 3, 2), np.float32, 0), requires_grad=True)
    b = minnet.Tensor(random_array((6,), np.float32, 1), requires_grad=True) if bias else None
    y = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    oh, ow = (7 + 2 - 3) // 2 + 1, (6 + 2 - 2) // 1 + 1
    assert y.shape == (0, 6, oh, ow) and y.dtype == np.float32
    y.backward(np.zeros(y.shape, np.float32))
    assert x.grad.shape == x.shape
    np.testing.assert_array_equal(w.grad, np.zeros_like(w.data))
    if bias:
        np.testing.assert_array_equal(b.grad, np.zeros(6, np.float32))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_float16_is_computed_in_float32_and_rounded_back(backend):
    """Under either backend, a float16 conv equals the float32 conv of the same values rounded
    to float16 (forward and every gradient), as PyTorch's CPU path accumulates half in float."""
    from minnet.kernels.backend import use_backend
    arrays = [random_array(s, np.float16, i) for i, s in enumerate([(2, 4, 6, 5), (6, 2, 3, 3), (6,)])]
    g = random_array((2, 6, 4, 5), np.float16, 9)
    results = {}
    with use_backend(backend):
        for dtype in (np.float16, np.float32):
            ts = [minnet.Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
            y = F.conv2d(*ts, padding=(0, 1), groups=2)
            y.backward(g.astype(dtype))
            results[dtype] = [y.data] + [t.grad for t in ts]
    for half, single in zip(results[np.float16], results[np.float32]):
        assert half.dtype == np.float16
        np.testing.assert_allclose(half.astype(np.float32), single, rtol=2e-3, atol=2e-3)
