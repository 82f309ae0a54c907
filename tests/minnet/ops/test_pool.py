"""Pooling ops: float64 finite-difference gradients (ceil_mode, count_include_pad), the first-max
rule on ties, NaN windows against PyTorch, PyTorch, dtypes, and one test per validation error."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from kernels.cases import adaptive_cases, needs_numba, pool_cases, random_array, tied_array
from minnet import functional as F

seeds = st.integers(0, 2**16)


def _window(case):
    return dict(kernel_size=case.kernel_size, stride=case.stride, padding=case.padding)


@given(case=pool_cases(), data=st.data())
def test_max_pool_gradients_match_finite_differences(case, data):
    # distinct values 0.01 apart: no ties, so max is differentiable with step 1e-6
    x = data.draw(helpers.float_arrays(case.x_shape, unique=True))
    helpers.check_gradients(lambda t: F.max_pool2d(t, **_window(case)), x)


@given(case=pool_cases(), seed=seeds)
def test_avg_pool_gradients_match_finite_differences(case, seed):
    helpers.check_gradients(lambda t: F.avg_pool2d(t, **_window(case)),
                            random_array(case.x_shape, np.float64, seed))


@given(case=adaptive_cases(), seed=seeds)
def test_adaptive_avg_pool_gradients_match_finite_differences(case, seed):
    shape, out = case
    helpers.check_gradients(lambda t: F.adaptive_avg_pool2d(t, out), random_array(shape, np.float64, seed))


@given(case=pool_cases(), seed=seeds)
def test_max_pool_ties_send_the_gradient_to_the_first_max(case, seed):
    """With tied maxima finite differences are invalid; the rule is: each window's gradient goes
    to its first maximal cell in row-major order, nowhere else."""
    x = minnet.Tensor(tied_array(case.x_shape, np.float64, seed), requires_grad=True)
    y = F.max_pool2d(x, **_window(case))
    g = random_array(y.shape, np.float64, seed + 1)
    y.backward(g)
    (kh, kw), (sh, sw), (ph, pw) = case.kernel_size, case.stride, case.padding
    _, _, h, w = case.x_shape
    expected = np.zeros(case.x_shape)
    for n, c, u, v in np.ndindex(y.shape):
        cells = [(r, s) for r in range(u * sh - ph, u * sh - ph + kh)
                 for s in range(v * sw - pw, v * sw - pw + kw) if 0 <= r < h and 0 <= s < w]
        top = max(x.data[n, c, r, s] for r, s in cells)
        r, s = next(cell for cell in cells if x.data[n, c][cell] == top)
        assert y.data[n, c, u, v] == top
        expected[n, c, r, s] += g[n, c, u, v]
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12, atol=1e-12)


@given(case=pool_cases(), seed=seeds, ties=st.booleans())
def test_agrees_with_torch(case, seed, ties):
    torch = pytest.importorskip("torch")
    x = (tied_array if ties else random_array)(case.x_shape, np.float64, seed)
    for ours, theirs in ((F.max_pool2d, torch.nn.functional.max_pool2d),
                         (F.avg_pool2d, torch.nn.functional.avg_pool2d)):
        helpers.compare_with_torch(lambda t: ours(t, **_window(case)),
                                   lambda t: theirs(t, **_window(case)), x)


@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_pool_options_gradients_match_finite_differences(case, seed, ceil_mode, count_include_pad):
    x = np.random.default_rng(seed).permutation(np.prod(case.x_shape)).reshape(case.x_shape) * 0.01
    helpers.check_gradients(lambda t: F.max_pool2d(t, **_window(case), ceil_mode=ceil_mode), x)
    helpers.check_gradients(lambda t: F.avg_pool2d(t, **_window(case), ceil_mode=ceil_mode,
                                                   count_include_pad=count_include_pad), x)


@given(case=pool_cases(), seed=seeds, ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       ties=st.booleans())
def test_pool_options_agree_with_torch(case, seed, ceil_mode, count_include_pad, ties):
    torch = pytest.importorskip("torch")
    x = (tied_array if ties else random_array)(case.x_shape, np.float64, seed)
    helpers.compare_with_torch(lambda t: F.max_pool2d(t, **_window(case), ceil_mode=ceil_mode),
                               lambda t: torch.nn.functional.max_pool2d(t, **_window(case),
                                                                        ceil_mode=ceil_mode), x)
    options = dict(ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    helpers.compare_with_torch(lambda t: F.avg_pool2d(t, **_window(case), **options),
                               lambda t: torch.nn.functional.avg_pool2d(t, **_window(case), **options), x)


@given(case=pool_cases(), seed=seeds)
def test_max_pool_nan_gradient_agrees_with_torch(case, seed):
    """Windows with several NaNs: NaN out, and the gradient goes where PyTorch's CPU kernel
    sends it (the window's last NaN)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape)
    x[rng.random(case.x_shape) < 0.35] = np.nan
    ours = minnet.Tensor(x.copy(), requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    y, ty = F.max_pool2d(ours, **_window(case)), torch.nn.functional.max_pool2d(theirs, **_window(case))
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_avg_pool_count_include_pad_false_hand_example():
    """ONNX AveragePool's default: a 3x3 window at a corner of a padded 2x2 input of ones
    averages its 4 in-bounds cells (1), not 4/9."""
    x = np.ones((1, 1, 2, 2))
    y = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_array_equal(y.data, np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(F.avg_pool2d(x, 3, stride=1, padding=1).data, np.full((1, 1, 2, 2), 4 / 9))


def test_pool_modules_pass_their_options():
    x = random_array((1, 2, 5, 5), np.float32, 0)
    assert minnet.nn.MaxPool2d(2, ceil_mode=True)(x).shape == (1, 2, 3, 3)
    pool = minnet.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_array_equal(pool(x).data, F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                              count_include_pad=False).data)


@given(case=adaptive_cases(), seed=seeds)
def test_adaptive_agrees_with_torch(case, seed):
    torch = pytest.importorskip("torch")
    shape, out = case
    helpers.compare_with_torch(lambda t: F.adaptive_avg_pool2d(t, out),
                               lambda t: torch.nn.functional.adaptive_avg_pool2d(t, out),
                               random_array(shape, np.float64, seed))


@pytest.mark.parametrize("pool", [lambda t: F.max_pool2d(t, 2), lambda t: F.avg_pool2d(t, 3, 1, 1),
                                  lambda t: F.adaptive_avg_pool2d(t, (2, 3))])
def test_float32_stays_float32(pool):
    x = minnet.Tensor(random_array((2, 3, 6, 7), np.float32, 0), requires_grad=True)
    y = pool(x)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("pool", [lambda t: F.max_pool2d(t, 2, ceil_mode=True),
                                  lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False),
                                  lambda t: F.adaptive_avg_pool2d(t, (2, 3))])
def test_float16_is_pooled_in_float32_and_rounded_back(pool, backend):
    from minnet.kernels.backend import use_backend
    x16 = random_array((2, 3, 6, 7), np.float16, 0)
    g16 = None
    results = []
    with use_backend(backend):
        for dtype in (np.float16, np.float32):
            x = minnet.Tensor(x16.astype(dtype), requires_grad=True)
            y = pool(x)
            g16 = random_array(y.shape, np.float16, 1) if g16 is None else g16
            y.backward(g16.astype(dtype))
            results.append((y.data, x.grad))
    for half, single in zip(*results):
        assert half.dtype == np.float16
        np.testing.assert_array_equal(half, single.astype(np.float16))


def test_stride_defaults_to_kernel_size():
    x = random_array((1, 1, 6, 6), np.float32, 0)
    np.testing.assert_array_equal(F.max_pool2d(x, 3).data, F.max_pool2d(x, 3, stride=3).data)
    np.testing.assert_array_equal(F.avg_pool2d(x, (2, 3)).data, F.avg_pool2d(x, (2, 3), (2, 3)).data)


X = np.zeros((2, 3, 6, 6), np.float32)

INVALID = [
    ("x_not_4d", F.max_pool2d, dict(x=np.zeros((3, 6, 6), np.float32), kernel_size=2), ValueError,
     r"x must be 4-D .*\(3, 6, 6\)"),
    ("integer_x", F.avg_pool2d, dict(x=np.zeros((1, 1, 4, 4), np.int32), kernel_size=2), TypeError,
     r"x must be a floating tensor.*int32"),
    ("kernel_zero", F.max_pool2d, dict(x=X, kernel_size=0), ValueError, r"kernel_size must be positive, got 0"),
    ("stride_zero", F.avg_pool2d, dict(x=X, kernel_size=2, stride=(1, 0)), ValueError,
     r"stride must be positive, got \(1, 0\)"),
    ("padding_negative", F.max_pool2d, dict(x=X, kernel_size=2, padding=-1), ValueError,
     r"padding must be at least 0, got -1"),
    ("padding_over_half_kernel", F.max_pool2d, dict(x=X, kernel_size=3, padding=2), ValueError,
     r"padding \(2, 2\) must be at most half of kernel_size \(3, 3\)"),
    ("empty_output", F.avg_pool2d, dict(x=X, kernel_size=7), ValueError, r"output size \(0, 0\) is empty"),
    ("kernel_not_int", F.max_pool2d, dict(x=X, kernel_size=(2, 2.0)), TypeError,
     r"kernel_size must be an int or a pair of ints"),
    ("ceil_mode_not_bool", F.max_pool2d, dict(x=X, kernel_size=2, ceil_mode=1), TypeError,
     r"ceil_mode must be a bool, got 1"),
    ("count_include_pad_not_bool", F.avg_pool2d, dict(x=X, kernel_size=2, count_include_pad="no"),
     TypeError, r"count_include_pad must be a bool, got 'no'"),
    ("adaptive_output_zero", F.adaptive_avg_pool2d, dict(x=X, output_size=(0, 2)), ValueError,
     r"output_size must be positive, got \(0, 2\)"),
    ("adaptive_empty_input", F.adaptive_avg_pool2d, dict(x=np.zeros((1, 1, 0, 3), np.float32), output_size=1),
     ValueError, r"non-empty height and width.*\(1, 1, 0, 3\)"),
]


@pytest.mark.parametrize("name, fn, kwargs, error, message", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_arguments_are_named(name, fn, kwargs, error, message):
    with pytest.raises(error, match=message):
        fn(**kwargs)
