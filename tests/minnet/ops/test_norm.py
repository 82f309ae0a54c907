"""batch_norm (training and eval; 2-D, 3-D, 4-D; PyTorch's running statistics) and dropout."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F

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
