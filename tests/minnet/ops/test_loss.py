"""Losses with every reduction: gradients, PyTorch agreement, fused ops against their
composites, stability, and errors for bad targets."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F

REDUCTIONS = ["none", "mean", "sum"]


@st.composite
def classification_cases(draw):
    """logits (N, C) and integer targets (N,)."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    logits = draw(helpers.float_arrays((n, c), -5, 5))
    target = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    return logits, target


smoothing = st.sampled_from([0.0, 0.1, 0.5, 1.0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=classification_cases(), label_smoothing=smoothing)
def test_cross_entropy_gradient(reduction, case, label_smoothing):
    logits, target = case
    helpers.check_gradients(
        lambda x: F.cross_entropy(x, target, reduction, label_smoothing=label_smoothing), logits)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=classification_cases(), label_smoothing=smoothing)
def test_cross_entropy_matches_torch(reduction, case, label_smoothing):
    torch = pytest.importorskip("torch")
    logits, target = case
    helpers.compare_with_torch(
        lambda x: F.cross_entropy(x, target, reduction, label_smoothing=label_smoothing),
        lambda x: torch.nn.functional.cross_entropy(x, torch.from_numpy(target), reduction=reduction,
                                                    label_smoothing=label_smoothing), logits)


def _assert_same_value_and_gradient(f, g, x):
    """f(x) == g(x) and their gradients agree."""
    tf, tg = minnet.tensor(x, requires_grad=True), minnet.tensor(x, requires_grad=True)
    yf, yg = f(tf), g(tg)
    np.testing.assert_allclose(yf.data, yg.data, rtol=1e-10, atol=1e-12)
    upstream = np.random.default_rng(0).standard_normal(yf.shape)
    yf.backward(upstream)
    yg.backward(upstream)
    np.testing.assert_allclose(tf.grad, tg.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=classification_cases())
def test_cross_entropy_equals_nll_of_log_softmax(reduction, case):
    logits, target = case
    _assert_same_value_and_gradient(
        lambda x: F.cross_entropy(x, target, reduction),
        lambda x: F.nll_loss(F.log_softmax(x, axis=1), target, reduction), logits)


@given(case=classification_cases(), label_smoothing=smoothing)
def test_label_smoothing_is_cross_entropy_against_the_smoothed_distribution(case, label_smoothing):
    """l_i = -sum_c q_ic log softmax(x_i)_c with q = (1 - eps) onehot + eps / C."""
    logits, target = case
    n, c = logits.shape
    q = (1 - label_smoothing) * np.eye(c)[target] + label_smoothing / c
    _assert_same_value_and_gradient(
        lambda x: F.cross_entropy(x, target, "none", label_smoothing=label_smoothing),
        lambda x: -(F.log_softmax(x, axis=1) * q).sum(axis=1), logits)


def test_cross_entropy_is_stable_for_huge_logits():
    x = minnet.tensor(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.cross_entropy(x, np.array([0, 0]), reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.data, [0.0, 2000.0])
    np.testing.assert_allclose(x.grad, [[0.0, 0.0], [-1.0, 1.0]])


def test_cross_entropy_accepts_a_tensor_target():
    logits = np.array([[2.0, 0.0, -1.0]])
    np.testing.assert_allclose(F.cross_entropy(logits, minnet.tensor(np.array([2]))).data,
                               F.cross_entropy(logits, np.array([2])).data)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=classification_cases())
def test_nll_loss_gradient(reduction, case):
    log_probs, target = case
    helpers.check_gradients(lambda x: F.nll_loss(x, target, reduction), log_probs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=classification_cases())
def test_nll_loss_matches_torch(reduction, case):
    torch = pytest.importorskip("torch")
    log_probs, target = case
    helpers.compare_with_torch(
        lambda x: F.nll_loss(x, target, reduction),
        lambda x: torch.nn.functional.nll_loss(x, torch.from_numpy(target), reduction=reduction),
        log_probs)


@st.composite
def same_shape_pairs(draw, low=-3.0, high=3.0):
    shape = draw(helpers.shapes(min_dims=1))
    return draw(helpers.float_arrays(shape, low, high)), draw(helpers.float_arrays(shape, low, high))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(pair=same_shape_pairs())
def test_mse_loss_gradient(reduction, pair):
    helpers.check_gradients(lambda a, b: F.mse_loss(a, b, reduction), *pair)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(pair=same_shape_pairs())
def test_mse_loss_matches_torch(reduction, pair):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(lambda a, b: F.mse_loss(a, b, reduction),
                               lambda a, b: torch.nn.functional.mse_loss(a, b, reduction=reduction),
                               *pair)


@st.composite
def kl_cases(draw):
    """input: log-probability-like values; target: positive probabilities (or their logs)."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    log_input = draw(helpers.float_arrays(shape, -4.0, 0.0))
    target = draw(helpers.float_arrays(shape, 0.05, 1.0))
    return log_input, target


def _kl_target(target, log_target):
    return np.log(target) if log_target else target


@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@given(case=kl_cases())
def test_kl_div_gradient_in_input_and_target(reduction, log_target, case):
    log_input, target = case
    helpers.check_gradients(lambda a, b: F.kl_div(a, b, reduction, log_target=log_target),
                            log_input, _kl_target(target, log_target))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@given(case=kl_cases())
def test_kl_div_matches_torch(reduction, log_target, case):
    torch = pytest.importorskip("torch")
    log_input, target = case
    helpers.compare_with_torch(
        lambda a, b: F.kl_div(a, b, reduction, log_target=log_target),
        lambda a, b: torch.nn.functional.kl_div(a, b, reduction=reduction, log_target=log_target),
        log_input, _kl_target(target, log_target))


def test_kl_div_batchmean_is_the_mean_kl_divergence_per_sample():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=4)
    q = rng.dirichlet(np.ones(5), size=4)
    expected = np.mean(np.sum(p * np.log(p / q), axis=1))
    np.testing.assert_allclose(F.kl_div(np.log(q), p, "batchmean").data, expected, rtol=1e-12)
    np.testing.assert_allclose(F.kl_div(np.log(p), p, "batchmean").data, 0.0, atol=1e-15)


def test_kl_div_terms_with_zero_target_vanish_and_pass_no_gradient():
    log_input = minnet.tensor(np.log(np.array([[0.5, 0.25, 0.25]])), requires_grad=True)
    target = minnet.tensor(np.array([[0.0, 0.5, 0.5]]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.kl_div(log_input, target, "none")
        loss.sum().backward()
    assert loss.data[0, 0] == 0.0 and np.all(np.isfinite(loss.data))
    assert log_input.grad[0, 0] == 0.0 and target.grad[0, 0] == 0.0
    np.testing.assert_allclose(log_input.grad[0, 1:], -target.data[0, 1:])


@st.composite
def bce_cases(draw):
    shape = draw(helpers.shapes(min_dims=1))
    return draw(helpers.float_arrays(shape, -5, 5)), draw(helpers.float_arrays(shape, 0.0, 1.0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=bce_cases())
def test_bce_with_logits_gradient_in_input_and_target(reduction, case):
    helpers.check_gradients(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction), *case)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=bce_cases())
def test_bce_with_logits_matches_torch(reduction, case):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction),
        lambda x, y: torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction=reduction),
        *case)


@given(case=bce_cases())
def test_bce_with_logits_equals_the_naive_formula_for_moderate_inputs(case):
    """l = -y log sigmoid(x) - (1 - y) log(1 - sigmoid(x))."""
    def naive(x, y):
        s = F.sigmoid(x)
        return -(y * F.log(s) + (1 - y) * F.log(1 - s))
    x, y = case
    target = minnet.tensor(y)
    _assert_same_value_and_gradient(lambda t: F.binary_cross_entropy_with_logits(t, target, "none"),
                                    lambda t: naive(t, target), x)


def test_bce_with_logits_is_finite_for_huge_logits():
    x = minnet.tensor(np.array([1000.0, 1000.0, -1000.0, -1000.0, 1000.0]), requires_grad=True)
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.binary_cross_entropy_with_logits(x, y, "none")
        loss.sum().backward()
    # l -> max(x, 0) - x y as |x| -> inf; dl/dx = sigmoid(x) - y
    np.testing.assert_allclose(loss.data, [0.0, 1000.0, 1000.0, 0.0, 500.0])
    np.testing.assert_allclose(x.grad, [0.0, 1.0, -1.0, 0.0, 0.5])


# ---- errors ----------------------------------------------------------------------------


def test_cross_entropy_target_out_of_range_names_the_range():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        F.cross_entropy(logits, np.array([-1, 1]))


def test_cross_entropy_float_target_is_a_type_error():
    with pytest.raises(TypeError, match="integer.*float64"):
        F.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_loss_argument_errors():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"target must have shape \(2,\), got \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"logits must be 2-D.*\(3,\)"):
        F.cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing.*1.5"):
        F.cross_entropy(logits, np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction.*'batchmean'"):
        F.mse_loss(logits, logits, reduction="batchmean")
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        F.mse_loss(logits, np.zeros((3, 2)))
