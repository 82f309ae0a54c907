"""batch_norm (training and eval; 2-D, 3-D, 4-D; PyTorch's running statistics) and dropout."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F
from minnet.ops.norm import Dropout, LocalResponseNorm

MOMENTUM, EPS = 0.1, 1e-5


@st.composite
def batch_norm_cases(draw, min_spatial_dims=0):
    """x of shape (N, C, *spatial) with distinct values (no near-zero batch variance),
    per-channel weight and bias, running mean and a positive running variance."""
    n_spatial = draw(st.integers(min_spatial_dims, 2))
    shape = (draw(st.integers(2, 3)), draw(st.integers(1, 2))) + tuple(
        draw(st.integers(1, 2)) for _ in range(n_spatial))
    channels = shape[1]
    return dict(x=draw(helpers.float_arrays(shape, margin=0.1, unique=True)),
                weight=draw(helpers.float_arrays((channels,), 0.5, 2.0)),
                bias=draw(helpers.float_arrays((channels,))),
                running_mean=draw(helpers.float_arrays((channels,), -1.0, 1.0)),
                running_var=draw(helpers.float_arrays((channels,), 0.5, 2.0)))


def _ours(case, training):
    """batch_norm of (x, weight, bias) with copies of the case's running statistics."""
    mean, var = case["running_mean"].copy(), case["running_var"].copy()
    return lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=training,
                                        momentum=MOMENTUM, eps=EPS)


@pytest.mark.parametrize("training", [True, False])
@given(case=batch_norm_cases())
def test_batch_norm_gradients(training, case):
    helpers.check_gradients(_ours(case, training), case["x"], case["weight"], case["bias"])


@given(case=batch_norm_cases())
def test_batch_norm_without_affine_parameters_gradient(case):
    helpers.check_gradients(lambda x: F.batch_norm(x, None, None, training=True), case["x"])


@pytest.mark.parametrize("training", [True, False])
@given(case=batch_norm_cases())
def test_batch_norm_matches_torch_including_running_statistics(training, case):
    torch = pytest.importorskip("torch")
    mean, var = case["running_mean"].copy(), case["running_var"].copy()
    torch_mean, torch_var = torch.tensor(case["running_mean"]), torch.tensor(case["running_var"])
    helpers.compare_with_torch(
        lambda x, w, b: F.batch_norm(x, mean, var, w, b, training, MOMENTUM, EPS),
        lambda x, w, b: torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b, training,
                                                       MOMENTUM, EPS),
        case["x"], case["weight"], case["bias"])
    np.testing.assert_allclose(mean, torch_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(var, torch_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (4, 3, 2, 5)])
def test_running_statistics_over_several_steps_match_torch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    mean, var = np.zeros(shape[1]), np.ones(shape[1])
    torch_mean, torch_var = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    for step in range(5):
        x = rng.normal(step, 1 + step, shape)
        ours = F.batch_norm(x, mean, var, training=True, momentum=0.2)
        theirs = torch.nn.functional.batch_norm(torch.tensor(x), torch_mean, torch_var,
                                                training=True, momentum=0.2)
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mean, torch_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(var, torch_var.numpy(), rtol=1e-12)


@given(case=batch_norm_cases(), steps=st.integers(1, 4))
def test_running_statistics_follow_the_momentum_recursion_with_unbiased_variance(case, steps):
    """r <- (1 - m) r + m s, with s the batch mean and the unbiased batch variance."""
    x = case["x"]
    axes = (0,) + tuple(range(2, x.ndim))
    n = x.size // x.shape[1]
    mean, var = case["running_mean"].copy(), case["running_var"].copy()
    expected_mean, expected_var = mean.copy(), var.copy()
    for step in range(steps):
        batch = x + step
        F.batch_norm(batch, mean, var, training=True, momentum=MOMENTUM)
        expected_mean = (1 - MOMENTUM) * expected_mean + MOMENTUM * batch.mean(axis=axes)
        expected_var = (1 - MOMENTUM) * expected_var + MOMENTUM * batch.var(axis=axes) * n / (n - 1)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(var, expected_var, rtol=1e-12)


@given(case=batch_norm_cases())
def test_training_output_is_standardized_per_channel(case):
    x = case["x"]
    axes = (0,) + tuple(range(2, x.ndim))
    y = F.batch_norm(x, None, None, training=True, eps=EPS).data
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), x.var(axis=axes) / (x.var(axis=axes) + EPS), rtol=1e-9)


@given(case=batch_norm_cases())
def test_eval_output_is_the_affine_map_of_the_running_statistics(case):
    x, w, b = case["x"], case["weight"], case["bias"]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = case["running_mean"].copy(), case["running_var"].copy()
    y = F.batch_norm(x, mean, var, w, b, training=False, eps=EPS).data
    expected = (w.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS)
                + b.reshape(shape))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(mean, case["running_mean"])  # eval leaves them alone
    np.testing.assert_array_equal(var, case["running_var"])


def test_batch_norm_errors_name_the_argument_and_shape():
    x = np.ones((4, 3))
    stats = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match=r"running_mean.*\(3,\).*\(2,\)"):
        F.batch_norm(x, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"weight.*\(3,\).*\(4,\)"):
        F.batch_norm(x, *stats, weight=np.ones(4))
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        F.batch_norm(np.ones((1, 3)), *stats, training=True)
    with pytest.raises(ValueError, match="eval mode needs running_mean"):
        F.batch_norm(x, None, None)
    with pytest.raises(ValueError, match="momentum.*1.5"):
        F.batch_norm(x, *stats, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="eps.*0"):
        F.batch_norm(x, *stats, eps=0.0)
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\).*\(3,\)"):
        F.batch_norm(np.ones(3), *stats)


# ---- dropout ---------------------------------------------------------------------------


@pytest.fixture
def seeded():
    with helpers.fixed_seed(1234):
        yield


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_zeroes_a_fraction_p_and_scales_survivors(p, seeded):
    x = minnet.tensor(np.random.default_rng(0).uniform(1.0, 2.0, 40_000), requires_grad=True)
    y = F.dropout(x, p)
    kept = y.data != 0
    np.testing.assert_allclose(y.data[kept], x.data[kept] / (1 - p), rtol=1e-12)
    sigma = np.sqrt(p * (1 - p) / x.size)
    assert abs((~kept).mean() - p) < 5 * sigma
    y.sum().backward()
    np.testing.assert_allclose(x.grad, kept / (1 - p), rtol=1e-12)


def test_dropout_is_reproducible_under_manual_seed(seeded):
    x = np.ones(100)
    minnet.manual_seed(7)
    first = F.dropout(x, 0.5).data
    minnet.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, first)


def test_dropout_gradient_matches_finite_differences_for_a_fixed_mask(seeded):
    """The mask is drawn once per call; reseeding before each evaluation fixes it."""
    def fixed_mask_dropout(t):
        minnet.manual_seed(3)
        return F.dropout(t, 0.3)
    helpers.check_gradients(fixed_mask_dropout, np.linspace(-2, 2, 12).reshape(3, 4))


def test_dropout_edge_probabilities_and_eval_mode():
    x = minnet.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    zero = F.dropout(x, 1.0)
    np.testing.assert_array_equal(zero.data, 0.0)
    zero.sum().backward()
    np.testing.assert_array_equal(x.grad, 0.0)
    with pytest.raises(ValueError, match="p must be in \\[0, 1\\], got 1.5"):
        F.dropout(x, 1.5)


# ---- layer normalization -----------------------------------------------------------------


@st.composite
def layer_norm_cases(draw):
    """x with 1-4 axes, the trailing k of them normalized, distinct values (no near-zero group
    variance), weight and bias of the normalized shape."""
    shape = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 4))))
    k = draw(st.integers(1, len(shape)))
    normalized = shape[len(shape) - k:]
    if np.prod(normalized) < 2:  # one element per group: x_hat = 0, nothing to check
        shape, normalized = shape[:-1] + (2,), normalized[:-1] + (2,)
    return dict(x=draw(helpers.float_arrays(shape, margin=0.1, unique=True)),
                weight=draw(helpers.float_arrays(normalized, 0.5, 2.0)),
                bias=draw(helpers.float_arrays(normalized)), normalized_shape=normalized)


@pytest.mark.parametrize("affine", [True, False])
@given(case=layer_norm_cases())
def test_layer_norm_gradients(affine, case):
    shape = case["normalized_shape"]
    if affine:
        helpers.check_gradients(lambda x, w, b: F.layer_norm(x, shape, w, b), case["x"],
                                case["weight"], case["bias"])
    else:
        helpers.check_gradients(lambda x: F.layer_norm(x, shape), case["x"])


@given(case=layer_norm_cases())
def test_layer_norm_matches_torch(case):
    torch = pytest.importorskip("torch")
    shape = case["normalized_shape"]
    helpers.compare_with_torch(lambda x, w, b: F.layer_norm(x, shape, w, b),
                               lambda x, w, b: torch.nn.functional.layer_norm(x, shape, w, b),
                               case["x"], case["weight"], case["bias"])


@given(case=layer_norm_cases())
def test_layer_norm_standardizes_each_group(case):
    """Without weight and bias, every normalized group has mean 0 and variance var/(var + eps)."""
    x, shape = case["x"], case["normalized_shape"]
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    y = F.layer_norm(x, shape, eps=1e-5).data
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), var / (var + 1e-5), rtol=1e-10)


def test_layer_norm_module_matches_functional_and_keeps_float32():
    x = minnet.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    module = minnet.nn.LayerNorm((3, 4))
    assert set(module.state_dict()) == {"weight", "bias"}
    y = module(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, F.layer_norm(x, (3, 4), module.weight, module.bias).data)
    assert minnet.nn.LayerNorm(4, elementwise_affine=False).state_dict() == {}


# ---- local response normalization --------------------------------------------------------


def _lrn_brute_force(x, size, alpha, beta, k, before):
    """b_c = a_c / (k + alpha/n sum_{c'=c-before}^{c-before+n-1} a_c'^2)^beta, one channel at a time."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        window = [j for j in range(c - before, c - before + size) if 0 <= j < x.shape[1]]
        y[:, c] = x[:, c] / (k + alpha / size * (x[:, window] ** 2).sum(axis=1)) ** beta
    return y


@st.composite
def lrn_cases(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 6))) + tuple(
        draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 2))))
    return dict(x=draw(helpers.float_arrays(shape)), size=draw(st.integers(1, shape[1] + 2)),
                alpha=draw(st.floats(1e-3, 2.0)), beta=draw(st.floats(0.1, 1.5)),
                k=draw(st.floats(0.5, 3.0)))


def _lrn_args(case):
    return case["size"], case["alpha"], case["beta"], case["k"]


@pytest.mark.parametrize("window", ["pytorch", "onnx"])
@given(case=lrn_cases())
def test_local_response_norm_gradients(window, case):
    helpers.check_gradients(lambda x: F.local_response_norm(x, *_lrn_args(case), window=window),
                            case["x"])


@pytest.mark.parametrize("window, before", [("pytorch", lambda n: n // 2),
                                            ("onnx", lambda n: (n - 1) // 2)])
@given(case=lrn_cases())
def test_local_response_norm_is_the_formula(window, before, case):
    expected = _lrn_brute_force(case["x"], *_lrn_args(case), before(case["size"]))
    np.testing.assert_allclose(F.local_response_norm(case["x"], *_lrn_args(case), window=window).data,
                               expected, rtol=1e-12, atol=1e-14)


@given(case=lrn_cases())
def test_local_response_norm_matches_torch(case):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(lambda x: F.local_response_norm(x, *_lrn_args(case)),
                               lambda x: torch.nn.functional.local_response_norm(x, *_lrn_args(case)),
                               case["x"])


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_local_response_norm_onnx_window_matches_onnx(size):
    """The ONNX LRN operator (floor((n-1)/2) channels before c, ceil((n-1)/2) after) in float32:
    onnx's reference evaluator for every size, onnxruntime too for odd sizes (it refuses even
    ones)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    # N = C: onnx's reference LRN iterates its channel loop over axis 0
    x = np.random.default_rng(size).standard_normal((6, 6, 3, 2)).astype(np.float32)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.75, bias=2.0)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    ours = F.local_response_norm(x, size, 0.5, 0.75, 2.0, window="onnx").data
    assert ours.dtype == np.float32
    expected = [ReferenceEvaluator(model).run(None, {"x": x})[0]]
    if size % 2:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected.append(session.run(None, {"x": x})[0])
    for reference in expected:
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_local_response_norm_module_matches_functional():
    x = np.random.default_rng(1).standard_normal((2, 5, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(minnet.nn.LocalResponseNorm(3, 0.1, 0.5, 2.0)(x).data,
                                  F.local_response_norm(x, 3, 0.1, 0.5, 2.0).data)


NORM_ERRORS = [
    (lambda: F.layer_norm(np.ones((2, 3)), (2,)), ValueError,
     r"normalized_shape \(2,\) must be the trailing shape of x, got x \(2, 3\)"),
    (lambda: F.layer_norm(np.ones((2, 3)), (2, 2, 3)), ValueError, r"normalized_shape \(2, 2, 3\)"),
    (lambda: F.layer_norm(np.ones((2, 3)), 3.0), TypeError, r"normalized_shape must be an int"),
    (lambda: F.layer_norm(np.ones((2, 3)), 3, weight=np.ones(2)), ValueError,
     r"weight must have shape \(3,\), got \(2,\)"),
    (lambda: F.layer_norm(np.ones((2, 3)), 3, eps=0), ValueError, r"eps must be positive, got 0"),
    (lambda: F.layer_norm(np.ones((2, 3), np.int64), 3), TypeError, r"x must be a floating tensor"),
    (lambda: F.local_response_norm(np.ones((2, 3)), 3), ValueError, r"at least 3 dimensions, got \(2, 3\)"),
    (lambda: F.local_response_norm(np.ones((2, 3, 4)), 0), ValueError, r"size must be a positive int, got 0"),
    (lambda: F.local_response_norm(np.ones((2, 3, 4)), 3, k=0.0), ValueError, r"k must be positive"),
    (lambda: F.local_response_norm(np.ones((2, 3, 4)), 3, beta=float("inf")), ValueError,
     r"beta must be a finite number, got inf"),
    (lambda: F.local_response_norm(np.ones((2, 3, 4)), 3, window="caffe"), ValueError,
     r"window must be one of \('pytorch', 'onnx'\), got 'caffe'"),
    (lambda: minnet.nn.LayerNorm(0), ValueError, r"normalized_shape must be a positive int"),
]


@pytest.mark.parametrize("call, error, message", NORM_ERRORS)
def test_layer_and_local_response_norm_errors_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("window", ["pytorch", "onnx"])
def test_local_response_norm_window_wider_than_the_channels_sums_them_all(window):
    """size = 10^9 covers every channel from every c: d = k + alpha/n sum over all channels
    (and costs no more than C shifted sums, not n)."""
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    size = 10**9
    expected = x / (1.0 + 0.5 / size * (x ** 2).sum(axis=1, keepdims=True)) ** 0.75
    np.testing.assert_allclose(F.local_response_norm(x, size, 0.5, 0.75, 1.0, window=window).data,
                               expected, rtol=1e-13)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_affine_gradients_when_the_input_needs_none(training):
    """x a constant (no gradient), gamma and beta trained: dL/dgamma = sum g x_hat and
    dL/dbeta = sum g per channel, x_hat standardised by the batch (training) or running
    statistics."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2)).astype(np.float64)
    mean, var = np.array([0.5, -0.5, 0.0]), np.array([2.0, 0.5, 1.0])
    gamma = minnet.tensor(np.array([1.0, 2.0, -1.0]), requires_grad=True)
    beta = minnet.tensor(np.zeros(3), requires_grad=True)
    g = rng.standard_normal(x.shape)
    F.batch_norm(minnet.tensor(x), mean.copy(), var.copy(), gamma, beta,
                 training=training).backward(g)
    if training:
        mu, sigma2 = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    else:
        mu, sigma2 = mean, var
    x_hat = (x - mu[:, None]) / np.sqrt(sigma2[:, None] + EPS)
    np.testing.assert_allclose(gamma.grad, (g * x_hat).sum(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(beta.grad, g.sum(axis=(0, 2)), rtol=1e-12)


class _ConstantDraws:
    """A generator stand-in whose uniform draws all equal ``value``."""

    def __init__(self, value):
        self.value = value

    def random(self, shape):
        return np.full(shape, self.value)


def test_dropout_keeps_a_unit_whose_draw_equals_p():
    """m = 1[u >= p] with u ~ U[0, 1): P(m = 1) = 1 - p exactly, so a draw u = p keeps its
    unit (scaled by 1 / (1 - p)) and u just below p drops it."""
    x = np.ones(3)
    kept = Dropout.apply(minnet.tensor(x), p=0.25, rng=_ConstantDraws(0.25)).data
    np.testing.assert_array_equal(kept, np.full(3, 1 / 0.75))
    dropped = Dropout.apply(minnet.tensor(x), p=0.25, rng=_ConstantDraws(np.nextafter(0.25, 0)))
    np.testing.assert_array_equal(dropped.data, np.zeros(3))


def test_local_response_norm_defaults_are_pytorchs():
    """LocalResponseNorm.apply(x, size=n) alone: alpha 1e-4, beta 0.75, k 1 and floor(n/2)
    channels before c, as torch.nn.functional.local_response_norm."""
    x = np.random.default_rng(0).standard_normal((2, 5, 3)) * 30
    for size in (2, 3, 4):
        want = F.local_response_norm(minnet.tensor(x), size, 1e-4, 0.75, 1.0).data
        got = LocalResponseNorm.apply(minnet.tensor(x), size=size).data
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_layer_norm_affine_gradients_when_the_input_needs_none():
    """x a constant, gamma and beta trained over the last axis: dL/dgamma = sum over the
    leading axes of g x_hat, dL/dbeta = sum of g."""
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    gamma = minnet.tensor(rng.standard_normal(4), requires_grad=True)
    beta = minnet.tensor(np.zeros(4), requires_grad=True)
    F.layer_norm(minnet.tensor(x), (4,), gamma, beta).backward(g)
    x_hat = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + EPS)
    np.testing.assert_allclose(gamma.grad, (g * x_hat).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(beta.grad, g.sum(axis=0), rtol=1e-12)
