"""Adversarial catalogue for minnet's ops: malformed attributes and inputs at the op layer.

Issue 15, class 1 (memory safety from attributes: kernel 0, stride 0, negative pads, pads beyond
the kernel), class 6 (silent wrong results from attributes: dilation 0, negative pool pads) and
class 9 (errors as documented: empty batches, 0-d Flatten, float16 conv and pooling, integer
Linear input, reshape sizes below -1). Each parametrised case is a bad input and the exact exception it must
raise; class 9 also lists inputs that must now give a correct result. The kernel-level side of
class 1 (any geometry handed straight to the pool kernels never reads out of bounds) is
``tests/minnet/kernels/test_pool_kernels.py::test_random_geometry_never_crashes_and_numba_equals_numpy``.
"""
import numpy as np
import pytest

import minnet
from minnet import functional as F
from minnet import nn
from minnet.kernels import pool as K

X = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
W = np.ones((4, 3, 3, 3), np.float32)

# ---- class 1: memory safety from attributes ----------------------------------------------

CLASS_1 = [
    ("max_pool_kernel_0", lambda: F.max_pool2d(X, 0), ValueError, r"kernel_size must be positive, got 0"),
    ("avg_pool_kernel_0_1", lambda: F.avg_pool2d(X, (0, 1)), ValueError,
     r"kernel_size must be positive, got \(0, 1\)"),
    ("max_pool_stride_0", lambda: F.max_pool2d(X, 2, stride=0), ValueError, r"stride must be positive, got 0"),
    ("avg_pool_stride_negative", lambda: F.avg_pool2d(X, 2, stride=(1, -2)), ValueError,
     r"stride must be positive, got \(1, -2\)"),
    ("max_pool_pads_negative", lambda: F.max_pool2d(X, 3, padding=(-1, 0)), ValueError,
     r"padding must be at least 0, got \(-1, 0\)"),
    ("max_pool_kernel_1_pads_100", lambda: F.max_pool2d(X, 1, stride=10**9, padding=100), ValueError,
     r"padding \(100, 100\) must be at most half of kernel_size \(1, 1\)"),
    ("avg_pool_pads_equal_kernel", lambda: F.avg_pool2d(X, 2, padding=2), ValueError,
     r"padding \(2, 2\) must be at most half of kernel_size \(2, 2\)"),
    ("max_pool_pads_over_half_kernel", lambda: F.max_pool2d(X, (3, 5), padding=(1, 3)), ValueError,
     r"padding \(1, 3\) must be at most half of kernel_size \(3, 5\)"),
    ("max_pool_window_larger_than_input", lambda: F.max_pool2d(X, 9), ValueError,
     r"output size \(0, 0\) is empty"),
    ("kernel_level_kernel_0", lambda: K.max_pool2d_forward(X, (0, 1), (1, 1), (0, 0)), ValueError,
     r"kernel_size must be a pair of ints >= 1, got \(0, 1\)"),
    ("kernel_level_stride_0", lambda: K.avg_pool2d_forward(X, (2, 2), (0, 1), (0, 0)), ValueError,
     r"stride must be a pair of ints >= 1, got \(0, 1\)"),
    ("kernel_level_pads_negative", lambda: K.max_pool2d_forward(X, (2, 2), (1, 1), (0, -1)), ValueError,
     r"padding must be a pair of ints >= 0, got \(0, -1\)"),
    ("conv_stride_0", lambda: F.conv2d(X, W, stride=0), ValueError, r"stride must be positive, got 0"),
    ("conv_pads_negative", lambda: F.conv2d(X, W, padding=-1), ValueError, r"padding must be at least 0, got -1"),
]


@pytest.mark.parametrize("name, call, error, message", CLASS_1, ids=[c[0] for c in CLASS_1])
def test_class_1_malformed_window_attributes_are_refused(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_class_1_issue_example_reads_no_neighbouring_memory(impl):
    """The issue's MaxPool (kernel 1, huge strides, pads 100) given to the kernel directly: every
    output is -inf (a window of padding) or an input value, never other memory."""
    y, idx = getattr(K.max_pool2d_forward, impl)(X, (1, 1), (37, 53), (100, 100))
    inside = idx >= 0
    assert np.all(y[~inside] == -np.inf)
    np.testing.assert_array_equal(y[inside], np.take_along_axis(
        X.reshape(2, 3, -1), idx.reshape(2, 3, -1).clip(0), axis=2).reshape(idx.shape)[inside])


# ---- class 6: silent wrong results from attributes ---------------------------------------

CLASS_6 = [
    ("conv_dilation_0", lambda: F.conv2d(X, W, dilation=0), ValueError, r"dilation must be positive, got 0"),
    ("conv_dilation_0_1", lambda: F.conv2d(X, W, dilation=(0, 1)), ValueError,
     r"dilation must be positive, got \(0, 1\)"),
    ("avg_pool_pads_negative", lambda: F.avg_pool2d(X, 3, padding=-1), ValueError,
     r"padding must be at least 0, got -1"),
    ("max_pool_ceil_mode_not_bool", lambda: F.max_pool2d(X, 2, ceil_mode="yes"), TypeError,
     r"ceil_mode must be a bool, got 'yes'"),
    ("avg_pool_count_include_pad_not_bool", lambda: F.avg_pool2d(X, 2, count_include_pad=0), TypeError,
     r"count_include_pad must be a bool, got 0"),
    ("lrn_size_0", lambda: F.local_response_norm(X, 0), ValueError, r"size must be a positive int, got 0"),
    ("hardsigmoid_alpha_nan", lambda: F.hardsigmoid(X, alpha=float("nan")), ValueError,
     r"alpha must be a finite number, got nan"),
    ("interpolate_scale_0", lambda: F.interpolate(X, scale_factor=0.0), ValueError,
     r"scale_factor must be positive and finite, got 0.0"),
    ("resize_size_0", lambda: F.resize(X, (0, 4)), ValueError, r"size must be positive, got \(0, 4\)"),
    ("layer_norm_eps_negative", lambda: F.layer_norm(X, 8, eps=-1e-5), ValueError, r"eps must be positive"),
]


@pytest.mark.parametrize("name, call, error, message", CLASS_6, ids=[c[0] for c in CLASS_6])
def test_class_6_attributes_that_would_give_wrong_results_are_refused(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- class 9: errors as documented --------------------------------------------------------

CLASS_9 = [
    ("flatten_module_0d", lambda: nn.Flatten()(minnet.tensor(3.0)), ValueError,
     r"start_axis 1 is out of range for a tensor of shape \(\) \(valid: -1 to 0\)"),
    ("flatten_end_before_start", lambda: F.flatten(X, 3, 1), ValueError, r"start_axis 3 comes after end_axis 1"),
    ("linear_int64_input", lambda: nn.Linear(8, 2)(np.ones((2, 8), np.int64)), TypeError,
     r"x must be a floating tensor, got dtype int64"),
    ("linear_bool_input", lambda: nn.Linear(8, 2)(np.ones((2, 8), bool)), TypeError,
     r"x must be a floating tensor, got dtype bool"),
    ("conv_int_input_same_error", lambda: nn.Conv2d(3, 4, 3)(X.astype(np.int64)), TypeError,
     r"x must be a floating tensor, got dtype int64"),
    ("reshape_minus_2", lambda: minnet.tensor(np.ones(6)).reshape(-2, 3), ValueError,
     r"reshape sizes must be >= -1 \(-1: inferred\), got -2 in shape \(-2, 3\)"),
    ("reshape_two_unknowns", lambda: minnet.tensor(np.ones(6)).reshape(-1, -1), ValueError,
     r"cannot reshape a tensor of shape \(6,\) into shape \(-1, -1\)"),
    ("reshape_float_size", lambda: minnet.tensor(np.ones(6)).reshape(2.0, 3), TypeError,
     r"reshape sizes must be ints, got 2.0"),
]


@pytest.mark.parametrize("name, call, error, message", CLASS_9, ids=[c[0] for c in CLASS_9])
def test_class_9_errors_are_the_documented_ones(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


def _conv_empty_batch():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = minnet.Tensor(np.zeros((0, 3, 8, 8), np.float32), requires_grad=True)
    y = conv(x)
    y.backward(np.zeros(y.shape, np.float32))
    assert y.shape == (0, 4, 8, 8) and x.grad.shape == x.shape
    assert not conv.weight.grad.any() and not conv.bias.grad.any()


def _conv_float16():
    conv = nn.Conv2d(3, 4, 3, dtype=np.float16)
    x = X[:1].astype(np.float16) / 100
    y = conv(x)
    expected = F.conv2d(x.astype(np.float32), conv.weight.data.astype(np.float32),
                        conv.bias.data.astype(np.float32)).data.astype(np.float16)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.data.astype(np.float32), expected.astype(np.float32), rtol=2e-3, atol=2e-3)


def _flatten_0d():
    assert F.flatten(minnet.tensor(3.0)).shape == (1,)


def _pool_empty_batch():
    assert F.max_pool2d(np.zeros((0, 3, 8, 8), np.float32), 2).shape == (0, 3, 4, 4)
    assert F.avg_pool2d(np.zeros((0, 3, 8, 8), np.float32), 3, 2, 1, ceil_mode=True,
                        count_include_pad=False).shape == (0, 3, 5, 5)


def _pool_float16():
    x = X[:1].astype(np.float16)
    for pool in (lambda t: F.max_pool2d(t, 2), lambda t: F.avg_pool2d(t, 2),
                 lambda t: F.adaptive_avg_pool2d(t, 1)):
        y = pool(x)
        assert y.dtype == np.float16
        np.testing.assert_array_equal(y.data, pool(x.astype(np.float32)).data.astype(np.float16))


CLASS_9_RESULTS = [_conv_empty_batch, _conv_float16, _flatten_0d, _pool_empty_batch, _pool_float16]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", CLASS_9_RESULTS, ids=lambda f: f.__name__.strip("_"))
def test_class_9_inputs_that_must_work_give_the_correct_result(case, backend):
    from minnet.kernels.backend import HAVE_NUMBA, use_backend
    if backend == "numba" and not HAVE_NUMBA:
        pytest.skip("numba is not installed")
    with use_backend(backend):
        case()
