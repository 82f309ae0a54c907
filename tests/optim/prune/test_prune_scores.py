"""Saliency scores against their definitions: Taylor expansions checked by finite differences,
SNIP's gate derivative, per-sample influence, activation statistics, FPGM by brute force."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.prune import (activation_entropy, activation_variance, bn_scale_scores, fpgm_scores,
                         influence_scores, random_scores, slimming_penalty_grad, snip_scores,
                         structured_mask, taylor_group_scores, taylor_scores)

from prune_helpers import float_arrays


def _logistic_problem(seed, n=40, d=5):
    """Binary logistic regression: per-sample losses and gradients as functions of w."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.5).astype(np.float64)

    def losses(w):  # l_n = log(1 + e^z) - y z with z = x_n . w
        z = x @ w
        return np.logaddexp(0.0, z) - y * z

    def grads(w):  # per-sample gradients (sigma(z) - y) x_n
        return (1 / (1 + np.exp(-(x @ w))) - y)[:, None] * x

    return x, losses, grads, rng.normal(size=d)


@given(seed=st.integers(0, 10_000))
def test_taylor_score_is_the_first_order_loss_change(seed):
    x, losses, grads, w = _logistic_problem(seed)
    g = grads(w).mean(axis=0)
    scores = taylor_scores(w, g)
    for i in range(w.size):
        e = np.zeros_like(w)
        e[i] = w[i]
        t = 1e-6  # d/dt L(w - t w_i e_i) at 0 is -g_i w_i
        slope = (losses(w - t * e).mean() - losses(w + t * e).mean()) / (2 * t)
        np.testing.assert_allclose(abs(slope), scores[i], rtol=1e-5, atol=1e-9)
        # removing the weight: the error of the first-order estimate is at most sup h_ii w_i^2 / 2,
        # with h_ii <= mean(x_i^2) / 4 for the logistic loss
        change = losses(w - e).mean() - losses(w).mean()
        assert abs(change + g[i] * w[i]) <= 0.125 * np.mean(x[:, i] ** 2) * w[i] ** 2 + 1e-12
    np.testing.assert_allclose(taylor_scores(w, g, squared=True), scores ** 2)


@given(seed=st.integers(0, 10_000))
def test_taylor_group_score_is_squared_loss_change(seed):
    rng = np.random.default_rng(seed)
    x, losses, grads, _ = _logistic_problem(seed, d=6)
    w = rng.normal(size=(3, 2))  # 3 "filters" of 2 weights, flattened into the 6 inputs
    g = grads(w.ravel()).mean(axis=0).reshape(3, 2)
    scores = taylor_group_scores(w, g)
    for c in range(3):
        e = np.zeros_like(w)
        e[c] = w[c]
        t = 1e-6
        slope = (losses((w - t * e).ravel()).mean() - losses((w + t * e).ravel()).mean()) / (2 * t)
        np.testing.assert_allclose(slope ** 2, scores[c], rtol=1e-4, atol=1e-12)


@given(seed=st.integers(0, 10_000))
def test_influence_is_mean_absolute_per_sample_change(seed):
    x, losses, grads, w = _logistic_problem(seed)
    per_sample = grads(w)
    scores = influence_scores(w, per_sample)
    t = 1e-6
    for i in range(w.size):
        e = np.zeros_like(w)
        e[i] = w[i]
        slopes = (losses(w - t * e) - losses(w + t * e)) / (2 * t)  # one per sample
        np.testing.assert_allclose(np.mean(np.abs(slopes)), scores[i], rtol=1e-5, atol=1e-9)
    # absolute values per sample never cancel: influence >= Taylor score of the mean gradient
    assert np.all(scores >= taylor_scores(w, per_sample.mean(axis=0)) - 1e-12)


@given(seed=st.integers(0, 10_000))
def test_snip_is_the_normalised_derivative_wrt_the_gate(seed):
    x, losses, grads, w = _logistic_problem(seed)
    g = grads(w).mean(axis=0)
    (scores,) = snip_scores([w], [g])
    t = 1e-6
    sensitivity = np.empty_like(w)
    for j in range(w.size):
        c = np.ones_like(w)
        c[j] += t
        up = losses(c * w).mean()
        c[j] -= 2 * t
        sensitivity[j] = abs((up - losses(c * w).mean()) / (2 * t))
    np.testing.assert_allclose(scores, sensitivity / sensitivity.sum(), rtol=1e-4, atol=1e-9)
    assert scores.sum() == pytest.approx(1.0)


def test_snip_normalises_over_all_layers():
    a, b = snip_scores([np.array([1.0, -2.0]), np.array([[3.0]])],
                       [np.array([1.0, 1.0]), np.array([[-1.0]])])
    np.testing.assert_allclose(a, [1 / 6, 2 / 6])
    np.testing.assert_allclose(b, [[3 / 6]])


@given(acts=float_arrays(hnp.array_shapes(min_dims=2, max_dims=4, max_side=5)),
       shift=st.floats(-5, 5), scale=st.floats(-3, 3))
def test_activation_variance_is_per_channel_variance(acts, shift, scale):
    v = activation_variance(acts)
    assert v.shape == (acts.shape[1],) and np.all(v >= 0)
    # shifting a channel does not change it; scaling by a multiplies it by a^2
    np.testing.assert_allclose(activation_variance(scale * acts + shift), scale ** 2 * v,
                               rtol=1e-6, atol=1e-6)
    per_channel = [np.var(acts[:, c]) for c in range(acts.shape[1])]
    np.testing.assert_allclose(v, per_channel, rtol=1e-9, atol=1e-12)


@given(acts=float_arrays(hnp.array_shapes(min_dims=2, max_dims=4, min_side=2, max_side=6)),
       bins=st.integers(1, 20))
def test_activation_entropy_bounds_and_uniform_case(acts, bins):
    h = activation_entropy(acts, bins)
    assert h.shape == (acts.shape[1],)
    assert np.all(h >= 0) and np.all(h <= np.log(min(bins, acts.shape[0])) + 1e-12)
    constant = np.broadcast_to(acts[:1], acts.shape)
    np.testing.assert_array_equal(activation_entropy(constant, bins), 0.0)
    # the bins span each channel's range: scaling (exactly, by a power of two) changes nothing
    np.testing.assert_allclose(activation_entropy(4.0 * acts.astype(np.float64), bins), h,
                               atol=1e-12)


def test_activation_entropy_of_evenly_spread_values_is_log_bins():
    acts = np.repeat(np.arange(8.0), 3)[:, None]  # 8 values, 3 samples each, one channel
    np.testing.assert_allclose(activation_entropy(acts, bins=8), [np.log(8)])


@given(seed=st.integers(0, 10_000), n=st.integers(2, 7))
def test_fpgm_prunes_the_brute_force_geometric_median_filter(seed, n):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, 2, 3, 3))
    # brute force: the filter minimising the total distance to all filters
    totals = [sum(np.sqrt(np.sum((w[i] - w[j]) ** 2)) for j in range(n)) for i in range(n)]
    median = int(np.argmin(totals))
    scores = fpgm_scores(w)
    np.testing.assert_allclose(scores, totals, rtol=1e-9)
    mask = structured_mask(scores, 1, w.shape)
    assert not mask[median].any() and mask[np.arange(n) != median].all()


def test_random_scores_are_seeded_and_uniform():
    a, b = random_scores((1000,), 7), random_scores((1000,), 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_scores((1000,), 8))
    assert a.min() >= 0 and a.max() < 1 and abs(a.mean() - 0.5) < 0.05


def test_slimming_scores_and_penalty():
    gamma = np.array([-2.0, 0.0, 0.5])
    np.testing.assert_array_equal(bn_scale_scores(gamma), [2.0, 0.0, 0.5])
    grad = slimming_penalty_grad(gamma, 1e-2)
    t = 1e-6
    for c in (0, 2):  # finite difference of lambda * sum |gamma| away from its kink
        e = np.zeros(3)
        e[c] = t
        penalty = lambda g: 1e-2 * np.abs(g).sum()  # noqa: E731
        assert grad[c] == pytest.approx((penalty(gamma + e) - penalty(gamma - e)) / (2 * t))
    assert grad[1] == 0.0


def test_score_inputs_are_validated():
    with pytest.raises(ValueError, match="grad has shape"):
        taylor_scores(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"per_sample_grads must have shape \(N,\) \+ \(3,\)"):
        influence_scores(np.ones(3), np.ones((5, 4)))
    with pytest.raises(ValueError, match="activations must have shape"):
        activation_variance(np.ones(3))
    with pytest.raises(ValueError, match="bins must be >= 1"):
        activation_entropy(np.ones((3, 2)), bins=0)
    with pytest.raises(ValueError, match="gamma must be 1-D"):
        bn_scale_scores(np.ones((2, 2)))
    with pytest.raises(ValueError, match="w must be finite"):
        fpgm_scores(np.array([[np.inf]]))
